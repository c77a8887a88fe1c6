package cli

import (
	"bytes"
	"context"
	"net"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/confine-project/mgmtnet/addressing"
	"github.com/confine-project/mgmtnet/mesh/registry"
)

// dnsTestKey is one RSA key for every member of the DNS tests' registry.
var dnsTestKey = sync.OnceValues(func() (string, error) { return registry.GeneratePublicKeyPEM(2048) })

// dnsTestRegistry serves a testbed of nodes 1..n and server 2 on
// loopback and returns it and its base URI.
func dnsTestRegistry(t *testing.T, n int) (*registry.Server, string) {
	t.Helper()
	key, err := dnsTestKey()
	if err != nil {
		t.Fatal(err)
	}
	srv := registry.NewServer(dnsTestFile(key, n), nil)
	ts := httptest.NewServer(srv)
	t.Cleanup(ts.Close)
	return srv, ts.URL + registry.PathPrefix
}

func dnsTestFile(key string, n int) *registry.File {
	f := &registry.File{MgmtPrefix: addressing.DefaultMgmtPrefix(),
		Servers: []registry.FileMember{{ID: 2, Name: "main", Tinc: &registry.FileTinc{Name: "server", PubKey: key}}}}
	for id := uint64(1); id <= uint64(n); id++ {
		name, _ := addressing.TincName(addressing.KindNode, id)
		f.Nodes = append(f.Nodes, registry.FileMember{ID: id, Name: name, Tinc: &registry.FileTinc{Name: name, PubKey: key}})
	}
	return f
}

// dnsBuffer is a bytes.Buffer that the command writes to from its
// goroutine while the test reads it.
type dnsBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *dnsBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *dnsBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

var dnsServingLine = regexp.MustCompile(`mgmtnet dns: serving mgmt\.example\. and d\.f\.d\.1\.1\.5\.3\.5\.5\.f\.d\.f\.ip6\.arpa\. \((\d+) names, serial \d+\) on (\S+) udp\+tcp`)

// TestDNS runs "mgmtnet dns" against a registry on loopback, queries it
// like a client, changes the registry, and stops it as a signal would.
func TestDNS(t *testing.T) {
	reg, base := dnsTestRegistry(t, 3)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var stdout, stderr dnsBuffer
	code := make(chan int, 1)
	go func() {
		code <- Run(ctx, []string{"dns", "--registry", base, "--zone", "mgmt.example", "--listen", "127.0.0.1:0", "--poll", "50ms", "--serial-file", filepath.Join(t.TempDir(), "dns.serial")},
			Env{Stdout: &stdout, Stderr: &stderr})
	}()
	var addr string
	dnsWaitFor(t, "the serving line", func() bool {
		m := dnsServingLine.FindStringSubmatch(stderr.String())
		if m == nil {
			return false
		}
		if m[1] != "6" { // node-1..3, server-2, main, and ns with the loopback address
			t.Errorf("serving %s names, want 6:\n%s", m[1], stderr.String())
		}
		addr = m[2]
		return true
	}, code, &stderr)

	c := &dns.Client{Timeout: 5 * time.Second}
	ask := func(name string) *dns.Msg {
		t.Helper()
		r, _, err := c.Exchange(new(dns.Msg).SetQuestion(name, dns.TypeAAAA), addr)
		if err != nil {
			t.Fatalf("query %s at %s: %v", name, addr, err)
		}
		return r
	}
	r := ask("node-2.mgmt.example.")
	if r.Rcode != dns.RcodeSuccess || !r.Authoritative || len(r.Answer) != 1 || r.Answer[0].(*dns.AAAA).AAAA.String() != "fdf5:5351:1dfd:2::2" {
		t.Fatalf("AAAA node-2: %v", r)
	}
	if r := ask("main.mgmt.example."); len(r.Answer) != 1 || r.Answer[0].(*dns.AAAA).AAAA.String() != "fdf5:5351:1dfd::2" {
		t.Errorf("AAAA main (the server's registry name): %v", r)
	}
	if r := ask("node-4.mgmt.example."); r.Rcode != dns.RcodeNameError {
		t.Errorf("AAAA node-4 before it joins: %v", r)
	}

	// A new node in the registry is served after a poll.
	key, _ := dnsTestKey()
	reg.SetFile(dnsTestFile(key, 4))
	dnsWaitFor(t, "node-4 to resolve", func() bool { return ask("node-4.mgmt.example.").Rcode == dns.RcodeSuccess }, code, &stderr)

	cancel()
	select {
	case c := <-code:
		if c != 0 {
			t.Fatalf("exit %d after cancel:\n%s", c, stderr.String())
		}
	case <-time.After(30 * time.Second):
		t.Fatal("mgmtnet dns did not stop after cancel")
	}
	if stdout.String() != "" {
		t.Errorf("stdout: %q", stdout.String())
	}
}

// TestDNSKeepsZone: a registry that goes away, or answers with most
// members gone, leaves the last zone served.
func TestDNSKeepsZone(t *testing.T) {
	reg, base := dnsTestRegistry(t, 4)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var stderr dnsBuffer
	code := make(chan int, 1)
	go func() {
		code <- Run(ctx, []string{"dns", "--registry", base, "--zone", "mgmt.example.", "--listen", "127.0.0.1:0", "--poll", "50ms", "--serial-file", filepath.Join(t.TempDir(), "dns.serial")},
			Env{Stdout: &bytes.Buffer{}, Stderr: &stderr})
	}()
	var addr string
	dnsWaitFor(t, "the serving line", func() bool {
		m := dnsServingLine.FindStringSubmatch(stderr.String())
		if m != nil {
			addr = m[2]
		}
		return m != nil
	}, code, &stderr)
	key, _ := dnsTestKey()
	reg.SetFile(dnsTestFile(key, 1))
	dnsWaitFor(t, "the mass-deletion guard", func() bool {
		return strings.Contains(stderr.String(), "registry snapshot refused: it would remove more than half of the members")
	}, code, &stderr)
	r, _, err := (&dns.Client{Timeout: 5 * time.Second}).Exchange(new(dns.Msg).SetQuestion("node-4.mgmt.example.", dns.TypeAAAA), addr)
	if err != nil || r.Rcode != dns.RcodeSuccess || len(r.Answer) != 1 {
		t.Errorf("node-4 after a refused snapshot: %v, %v", r, err)
	}
	cancel()
	if c := <-code; c != 0 {
		t.Fatalf("exit %d:\n%s", c, stderr.String())
	}
}

// dnsWaitFor polls cond until it holds, failing the test if the command
// exits first or nothing happens for a long while.
func dnsWaitFor(t *testing.T, what string, cond func() bool, code chan int, stderr *dnsBuffer) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		select {
		case c := <-code:
			t.Fatalf("waiting for %s: mgmtnet dns exited %d:\n%s", what, c, stderr.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("waiting for %s: nothing after 30s:\n%s", what, stderr.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestDNSUsage(t *testing.T) {
	openKey := filepath.Join(t.TempDir(), "xfr.key")
	if err := os.WriteFile(openKey, []byte(`key "x" { algorithm hmac-sha256; secret "c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0LTAxMjM="; };`), 0o644); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		args []string
		code int
		want string
	}{
		{[]string{"dns", "--registry", "http://127.0.0.1:1/api/"}, 2, "--zone is required"},
		{[]string{"dns", "--zone", "mgmt.example"}, 2, "--registry is required"},
		{[]string{"dns", "--registry", "ftp://x/", "--zone", "mgmt.example"}, 2, "bad registry base URI"},
		{[]string{"dns", "--registry", "http://127.0.0.1:1/api/", "--zone", "a b"}, 2, "not a domain name"},
		{[]string{"dns", "--registry", "http://127.0.0.1:1/api/", "--zone", "mgmt.example", "--allow", "nope"}, 2, "--allow nope"},
		{[]string{"dns", "--registry", "http://127.0.0.1:1/api/", "--zone", "mgmt.example", "--forward", "dns.google"}, 2, "want an IP address"},
		{[]string{"dns", "--registry", "http://127.0.0.1:1/api/", "--zone", "mgmt.example", "--listen", "53"}, 2, "--listen 53"},
		{[]string{"dns", "--registry", "http://127.0.0.1:1/api/", "--zone", "mgmt.example", "--ttl", "1500ms"}, 2, "whole seconds"},
		{[]string{"dns", "--registry", "http://127.0.0.1:1/api/", "--zone", "mgmt.example", "--ca", "x", "--insecure"}, 2, "exclude each other"},
		{[]string{"dns", "--registry", "http://127.0.0.1:1/api/", "--zone", "mgmt.example", "extra"}, 2, "unexpected arguments"},
		{[]string{"dns", "--help"}, 0, "mgmtnet dns --registry URI --zone ZONE"},
		{[]string{"dns", "--registry", "http://127.0.0.1:1/api/", "--zone", "mgmt.example", "--listen", "[::]:53"}, 2, "give --ns-addr"},
		{[]string{"dns", "--registry", "http://127.0.0.1:1/api/", "--zone", "mgmt.example", "--tsig-key", openKey}, 2, "chmod 640"},
		{[]string{"dns", "--registry", "http://127.0.0.1:1/api/", "--zone", "mgmt.example", "--tsig-key", "/nonexistent.key"}, 2, "no such file"},
		{[]string{"dns", "--registry", "http://127.0.0.1:1/api/", "--zone", "mgmt.example", "--max-tcp-conns", "0"}, 2, "--max-tcp-conns 0"},
	}
	for _, tt := range tests {
		stdout, stderr, code := run(t, tt.args...)
		if code != tt.code || !strings.Contains(stdout+stderr, tt.want) {
			t.Errorf("%q: exit %d, want %d with %q\nstdout: %s\nstderr: %s", tt.args, code, tt.code, tt.want, stdout, stderr)
		}
	}
}

// TestDNSAddressInUse: a listen address that is taken is an error (exit
// 1) at start, not a silent half-working server.
func TestDNSAddressInUse(t *testing.T) {
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	_, stderr, code := run(t, "dns", "--registry", "http://127.0.0.1:1/api/", "--zone", "mgmt.example", "--listen", pc.LocalAddr().String())
	if code != 1 || !strings.Contains(stderr, "address already in use") {
		t.Errorf("exit %d, want 1 with \"address already in use\":\n%s", code, stderr)
	}
}
