package cli

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/confine-project/mgmtnet/addressing"
	"github.com/confine-project/mgmtnet/fetchhosts"
	"github.com/confine-project/mgmtnet/mesh/registry"
	"github.com/confine-project/mgmtnet/test/vtb"
)

var (
	keyOnce  sync.Once
	testKeys []string
)

func pubKeys(t *testing.T) []string {
	t.Helper()
	keyOnce.Do(func() {
		for i := 0; i < 3; i++ {
			k, err := registry.GeneratePublicKeyPEM(2048)
			if err != nil {
				panic(err)
			}
			testKeys = append(testKeys, k)
		}
	})
	return testKeys
}

func testbed(t *testing.T, nodes int) *registry.File {
	t.Helper()
	k := pubKeys(t)
	f := &registry.File{MgmtPrefix: addressing.DefaultMgmtPrefix(),
		Islands: []registry.FileIsland{{ID: 1, Name: "one"}, {ID: 2, Name: "two"}},
		Servers: []registry.FileMember{{ID: 2, Name: "main", Tinc: &registry.FileTinc{Name: "server", PubKey: k[0],
			Addresses: []registry.FileAddress{{Addr: "gw.example.net", Port: 655, Island: 1}, {Addr: "10.241.0.254", Port: 655, Island: 2}}}}},
	}
	for i := 1; i <= nodes; i++ {
		name, _ := addressing.TincName(addressing.KindNode, uint64(i))
		f.Nodes = append(f.Nodes, registry.FileMember{ID: uint64(i), Name: name, Tinc: &registry.FileTinc{Name: name, PubKey: k[i%len(k)]}})
	}
	return f
}

func serve(t *testing.T, f *registry.File) (*registry.Server, string) {
	t.Helper()
	s := registry.NewServer(f, nil)
	ts := httptest.NewServer(s)
	t.Cleanup(ts.Close)
	return s, ts.URL + "/api/"
}

func TestFetchHosts(t *testing.T) {
	srv, base := serve(t, testbed(t, 4))
	dir := t.TempDir()
	hosts := filepath.Join(dir, "hosts")
	if err := os.MkdirAll(hosts, 0o755); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(hosts, "README"), []byte("not ours\n"), 0o644)

	_, errOut, code := run(t, "fetch-hosts", base, "--hosts-dir", hosts, "--island", "2")
	if code != 0 || !strings.Contains(errOut, "fetch-hosts: 4 nodes, 1 servers; 0 rejected, 0 skipped; written 5, unchanged 0, removed 0") {
		t.Fatalf("cold run: exit %d\n%s", code, errOut)
	}
	b, _ := os.ReadFile(filepath.Join(hosts, "server"))
	if !strings.HasPrefix(string(b), "Address = 10.241.0.254 655\nAddress = gw.example.net 655\nSubnet = fdf5:5351:1dfd:0:0:0:0:2\n\n-----BEGIN RSA PUBLIC KEY-----\n") {
		t.Errorf("server host file (island 2 first):\n%s", b)
	}
	// Warm: the registry answers 304; nothing is written.
	st, _ := os.Stat(filepath.Join(hosts, "node_1"))
	_, errOut, code = run(t, "fetch-hosts", base, "--hosts-dir", hosts, "--island", "2")
	if code != 0 || !strings.Contains(errOut, "unchanged: the registry has not changed since the last run") {
		t.Fatalf("warm run: exit %d\n%s", code, errOut)
	}
	// A different island is a different output: no cache hit.
	_, errOut, _ = run(t, "fetch-hosts", base, "--hosts-dir", hosts, "--island", "1")
	if !strings.Contains(errOut, "written 1, unchanged 4, removed 0") {
		t.Fatalf("island change: %s", errOut)
	}
	// One member changes: exactly one file is written; the others keep
	// their mtime.
	f := testbed(t, 4)
	f.Nodes[2].Tinc.PubKey = pubKeys(t)[0]
	if f.Nodes[2].Tinc.PubKey == testbed(t, 4).Nodes[2].Tinc.PubKey {
		f.Nodes[2].Tinc.PubKey = pubKeys(t)[1]
	}
	srv.SetFile(f)
	out, errOut, code := run(t, "fetch-hosts", base, "--hosts-dir", hosts, "--island", "1", "--json")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	var one fetchhosts.Summary
	if err := json.Unmarshal([]byte(out), &one); err != nil {
		t.Fatalf("--json output %q: %v", out, err)
	}
	if len(one.Written) != 1 || one.Written[0] != "node_3" || one.Unchanged != 4 || len(one.Removed) != 0 {
		t.Errorf("one member changed: written %v, unchanged %d, removed %v; want exactly node_3 written", one.Written, one.Unchanged, one.Removed)
	}
	st2, _ := os.Stat(filepath.Join(hosts, "node_1"))
	if !st.ModTime().Equal(st2.ModTime()) {
		t.Error("node_1 was rewritten although it did not change")
	}
	if _, err := os.Stat(filepath.Join(hosts, "README")); err != nil {
		t.Error("a file that is not ours was removed")
	}

	// A member removed: its file goes.
	f = testbed(t, 4)
	f.Nodes = f.Nodes[:3]
	srv.SetFile(f)
	out, _, _ = run(t, "fetch-hosts", base, "--hosts-dir", hosts, "--island", "1", "--json")
	var sum fetchhosts.Summary
	if err := json.Unmarshal([]byte(out), &sum); err != nil {
		t.Fatalf("--json output %q: %v", out, err)
	}
	if len(sum.Removed) != 1 || sum.Removed[0] != "node_4" || sum.Members["nodes"] != 3 {
		t.Errorf("summary %+v", sum)
	}
}

func TestFetchHostsRejectsAndGuards(t *testing.T) {
	f := testbed(t, 6)
	f.Nodes[0].Tinc.Name = "../x"                   // rejected by name
	f.Nodes[1].Tinc.PubKey = "garbage"              // rejected: key
	f.Nodes[2].MgmtAddr = "fdf5:5351:1dfd:99::2"    // rejected: address of node 0x99
	f.Nodes[3].Tinc = nil                           // skipped
	f.Servers[0].Tinc.Addresses[1].Addr = "0.0.0.0" // warning, address dropped
	srv, base := serve(t, f)
	hosts := filepath.Join(t.TempDir(), "hosts")
	_, errOut, code := run(t, "fetch-hosts", base, "--hosts-dir", hosts)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	for _, want := range []string{
		`rejected node 1: tinc name "../x"`,
		"rejected node 2 (node_2): public key is not PEM",
		"rejected node 3 (node_3): mgmt_net.addr fdf5:5351:1dfd:99::2 disagrees with the plan: it is the address of node 153",
		"warning: server 2 (server): tinc address 0.0.0.0 dropped",
		"2 nodes, 1 servers; 3 rejected, 1 skipped; written 3,",
	} {
		if !strings.Contains(errOut, want) {
			t.Errorf("output lacks %q:\n%s", want, errOut)
		}
	}
	entries, _ := os.ReadDir(hosts)
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	if strings.Join(names, " ") != ".mgmtnet-fetch-hosts.json node_5 node_6 server" && strings.Join(names, " ") != "node_5 node_6 server" {
		t.Errorf("hosts dir holds %v", names)
	}

	// An empty registry would remove every file: refused, nothing changes.
	srv.SetFile(&registry.File{MgmtPrefix: addressing.DefaultMgmtPrefix()})
	_, errOut, code = run(t, "fetch-hosts", base, "--hosts-dir", hosts)
	if code != 1 || !strings.Contains(errOut, "would remove 3 of 3 owned host files") || !strings.Contains(errOut, "--force") {
		t.Fatalf("mass deletion: exit %d: %s", code, errOut)
	}
	if entries2, _ := os.ReadDir(hosts); len(entries2) != len(entries) {
		t.Errorf("refused sync changed the directory")
	}
	// --dry-run with --force shows the diff and writes nothing.
	out, _, code := run(t, "fetch-hosts", base, "--hosts-dir", hosts, "--force", "--dry-run")
	if code != 0 || !strings.Contains(out, "--- a/node_5") || !strings.Contains(out, "-Subnet = fdf5:5351:1dfd:5:0:0:0:0/64") {
		t.Errorf("dry run: exit %d\n%s", code, out)
	}
	if _, err := os.Stat(filepath.Join(hosts, "node_5")); err != nil {
		t.Error("dry run removed a file")
	}
}

func TestFetchHostsKeepsOwnHostFile(t *testing.T) {
	_, base := serve(t, testbed(t, 2))
	netDir := t.TempDir()
	hosts := filepath.Join(netDir, "hosts")
	os.MkdirAll(hosts, 0o755)
	os.WriteFile(filepath.Join(netDir, "tinc.conf"), []byte("Name = node_9\nConnectTo = server\n"), 0o644)
	os.WriteFile(filepath.Join(hosts, "node_9"), []byte("Subnet = fdf5:5351:1dfd:9:0:0:0:0/64\n"), 0o644)
	_, errOut, code := run(t, "fetch-hosts", base, "--hosts-dir", hosts)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	if _, err := os.Stat(filepath.Join(hosts, "node_9")); err != nil {
		t.Error("the node's own host file was removed although tinc.conf names it")
	}
}

func TestFetchHostsErrors(t *testing.T) {
	tests := []struct {
		args []string
		code int
		msg  string
	}{
		{[]string{"fetch-hosts"}, 2, "want exactly one BASE_URI"},
		{[]string{"fetch-hosts", "ftp://x/api/"}, 2, "ftp"},
		{[]string{"fetch-hosts", "http://127.0.0.1:1/api/", "--ca", "x", "--insecure"}, 2, "exclude each other"},
		{[]string{"fetch-hosts", "http://127.0.0.1:1/api/", "--island", "x"}, 2, "--island"},
		{[]string{"fetch-hosts", "http://127.0.0.1:1/api/", "--hosts-dir", "/nonexistent/x", "--timeout", "200ms"}, 1, "fetch members from http://127.0.0.1:1/api/"},
	}
	for _, tt := range tests {
		start := time.Now()
		_, errOut, code := run(t, tt.args...)
		if code != tt.code || !strings.Contains(errOut, tt.msg) {
			t.Errorf("%v: exit %d stderr %q; want exit %d and %q (%s)", tt.args, code, errOut, tt.code, tt.msg, time.Since(start))
		}
	}
}

// fakeTincd starts a vtb.FakeTincd that a SIGHUP ends, which shows that
// it got the signal.
func fakeTincd(t *testing.T) (pidFile string, done chan error) {
	t.Helper()
	f, err := vtb.StartFakeTincd(t.TempDir(), false)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Cmd.Process.Kill() })
	done = make(chan error, 1)
	go func() { done <- f.Cmd.Wait() }()
	return f.PidFile, done
}

// A reload that failed (or never happened because the run was killed) is
// done by the next run, although the files are then unchanged.
func TestFetchHostsReloadPending(t *testing.T) {
	_, base := serve(t, testbed(t, 2))
	netDir := t.TempDir()
	hosts := filepath.Join(netDir, "hosts")
	os.WriteFile(filepath.Join(netDir, "tinc.conf"), []byte("Name = server\nStrictSubnets = yes\n"), 0o644)
	_, errOut, code := run(t, "fetch-hosts", base, "--hosts-dir", hosts, "--reload", "--pidfile", filepath.Join(netDir, "none.pid"))
	if code != 1 || !strings.Contains(errOut, "reload tincd") {
		t.Fatalf("reload without tincd: exit %d: %s", code, errOut)
	}
	pidFile, done := fakeTincd(t)
	_, errOut, code = run(t, "fetch-hosts", base, "--hosts-dir", hosts, "--reload", "--pidfile", pidFile)
	if code != 0 || !strings.Contains(errOut, "unchanged") {
		t.Fatalf("second run: exit %d: %s", code, errOut)
	}
	select {
	case err := <-done:
		if err == nil || !strings.Contains(err.Error(), "hangup") {
			t.Errorf("fake tincd ended with %v, want a SIGHUP", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the pending reload was not done: tincd got no SIGHUP")
	}
	// Nothing pending any more: a third run signals nothing.
	pidFile, done = fakeTincd(t)
	if _, errOut, code = run(t, "fetch-hosts", base, "--hosts-dir", hosts, "--reload", "--pidfile", pidFile); code != 0 {
		t.Fatalf("third run: exit %d: %s", code, errOut)
	}
	select {
	case err := <-done:
		t.Errorf("third run signalled tincd: %v", err)
	case <-time.After(300 * time.Millisecond):
	}
}

// The host's own host file (tinc.conf's Name) is neither overwritten nor
// removed, even when the registry lists the host.
func TestFetchHostsOwnFileNotOverwritten(t *testing.T) {
	_, base := serve(t, testbed(t, 2))
	netDir := t.TempDir()
	hosts := filepath.Join(netDir, "hosts")
	os.MkdirAll(hosts, 0o755)
	os.WriteFile(filepath.Join(netDir, "tinc.conf"), []byte("Name = node_1\nConnectTo = server\n"), 0o644)
	mine := []byte("Subnet = fdf5:5351:1dfd:1:0:0:0:0/64\nSubnet = 100.64.0.1\n")
	os.WriteFile(filepath.Join(hosts, "node_1"), mine, 0o644)
	if _, errOut, code := run(t, "fetch-hosts", base, "--hosts-dir", hosts); code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	if b, _ := os.ReadFile(filepath.Join(hosts, "node_1")); string(b) != string(mine) {
		t.Errorf("own host file overwritten:\n%s", b)
	}
	// A new gateway without its own host file gets it from the registry.
	os.Remove(filepath.Join(hosts, "node_1"))
	if _, errOut, code := run(t, "fetch-hosts", base, "--hosts-dir", hosts, "--full"); code != 0 || !strings.Contains(errOut, "written 1,") {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	if b, _ := os.ReadFile(filepath.Join(hosts, "node_1")); !strings.HasPrefix(string(b), "Subnet = fdf5:5351:1dfd:1:0:0:0:0/64\n\n-----BEGIN") {
		t.Errorf("missing own host file not written from the registry:\n%s", b)
	}
}

// gzipLog records each request to a registry: path, status, whether it
// was conditional and whether the answer was gzipped.
type gzipLog struct {
	h   http.Handler
	mu  sync.Mutex
	log []string
}

type statusWriter struct {
	http.ResponseWriter
	code int
}

func (w *statusWriter) WriteHeader(code int) { w.code = code; w.ResponseWriter.WriteHeader(code) }

func (g *gzipLog) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	sw := &statusWriter{ResponseWriter: w, code: 200}
	g.h.ServeHTTP(sw, r)
	g.mu.Lock()
	defer g.mu.Unlock()
	g.log = append(g.log, fmt.Sprintf("%s %d conditional=%v gzip=%v", r.URL.Path, sw.code,
		r.Header.Get("If-None-Match") != "", w.Header().Get("Content-Encoding") == "gzip"))
}

func (g *gzipLog) take() []string {
	g.mu.Lock()
	defer g.mu.Unlock()
	l := g.log
	g.log = nil
	return l
}

// Against a registry that gzips as the controller does (tags "<md5>;gzip",
// 304 only to the bare tag), a second run prints unchanged and asks only
// conditionally for every collection, each answered 304.
func TestFetchHostsSecondRunAgainstGzipRegistry(t *testing.T) {
	rec := &gzipLog{h: registry.NewServer(testbed(t, 4), nil)}
	ts := httptest.NewServer(rec)
	t.Cleanup(ts.Close)
	hosts := filepath.Join(t.TempDir(), "hosts")
	if _, errOut, code := run(t, "fetch-hosts", ts.URL+"/api/", "--hosts-dir", hosts); code != 0 {
		t.Fatalf("first run: exit %d\n%s", code, errOut)
	}
	first := []string{
		"/api/ 200 conditional=false gzip=true",
		"/api/servers/ 200 conditional=false gzip=true",
		"/api/hosts/ 200 conditional=false gzip=false", // [] is under Django's 200 bytes
		"/api/nodes/ 200 conditional=false gzip=true",
	}
	if diff := cmp.Diff(first, rec.take()); diff != "" {
		t.Errorf("first run's requests (-want +got):\n%s", diff)
	}
	_, errOut, code := run(t, "fetch-hosts", ts.URL+"/api/", "--hosts-dir", hosts)
	if code != 0 || !strings.Contains(errOut, "unchanged: the registry has not changed since the last run") {
		t.Fatalf("second run: exit %d\n%s", code, errOut)
	}
	want := []string{
		"/api/ 200 conditional=false gzip=true", // the base, for its Link header
		"/api/servers/ 304 conditional=true gzip=false",
		"/api/hosts/ 304 conditional=true gzip=false",
		"/api/nodes/ 304 conditional=true gzip=false",
	}
	if diff := cmp.Diff(want, rec.take()); diff != "" {
		t.Errorf("second run's requests (-want +got):\n%s", diff)
	}
}
