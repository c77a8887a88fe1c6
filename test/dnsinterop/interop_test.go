package dnsinterop

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/confine-project/mgmtnet/addressing"
	"github.com/confine-project/mgmtnet/mesh/registry"
	"github.com/confine-project/mgmtnet/test/vtb"
)

const (
	zone    = "mgmt.interop.test."
	prefix  = "fdf5:5351:1dfd::/48"
	keyName = "mgmt-xfr"
	secret  = "c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0LTAxMjM="
	wrong   = "b3RoZXItb3RoZXItb3RoZXItb3RoZXItb3RoZXItMDE="
	// nodes is how many nodes the registry starts with.
	nodes = 40
)

// need returns the path of each program, skipping (or failing, under
// MGMTNET_REQUIRE_E2E) when one is missing.
func need(t *testing.T, progs ...string) map[string]string {
	t.Helper()
	if testing.Short() {
		t.Skip("interop test: skipped with -short")
	}
	out := map[string]string{}
	for _, p := range progs {
		path, err := exec.LookPath(p)
		if err != nil {
			path, err = exec.LookPath("/usr/sbin/" + p)
		}
		if err != nil {
			msg := fmt.Sprintf("%s not found (scripts/install-deps.sh installs bind9, bind9-utils, knot, knot-dnssecutils, dnsutils)", p)
			if os.Getenv(vtb.RequireEnv) != "" {
				t.Fatal(msg)
			}
			t.Skip(msg + "; set " + vtb.RequireEnv + "=1 to make this a failure")
		}
		out[p] = path
	}
	return out
}

// proc is a server the test started; stop ends it by its pid.
type proc struct {
	name string
	cmd  *exec.Cmd
	log  string
	done chan struct{}
}

func start(t *testing.T, dir, name string, args ...string) *proc {
	t.Helper()
	log := filepath.Join(dir, name+".log")
	f, err := os.Create(log)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Stdout, cmd.Stderr = f, f
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		f.Close()
		t.Fatalf("start %s: %v", name, err)
	}
	p := &proc{name: name, cmd: cmd, log: log, done: make(chan struct{})}
	go func() {
		cmd.Wait()
		f.Close()
		close(p.done)
	}()
	t.Cleanup(func() {
		p.stop()
		if t.Failed() {
			b, _ := os.ReadFile(log)
			t.Logf("%s log:\n%s", name, b)
		}
	})
	return p
}

func (p *proc) stop() {
	select {
	case <-p.done:
		return
	default:
	}
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(10 * time.Second):
		p.cmd.Process.Kill()
		<-p.done
	}
}

func freePort(t *testing.T) int {
	t.Helper()
	// A port free for both UDP and TCP.
	for range 20 {
		u, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		port := u.LocalAddr().(*net.UDPAddr).Port
		l, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(port))
		u.Close()
		if err == nil {
			l.Close()
			return port
		}
	}
	t.Fatal("no free port")
	return 0
}

// ask queries addr and returns the answer, or nil when there is none.
func ask(addr, name string, qtype uint16) *dns.Msg {
	m := new(dns.Msg)
	m.SetQuestion(name, qtype)
	m.RecursionDesired = false
	c := &dns.Client{Timeout: 2 * time.Second}
	r, _, err := c.Exchange(m, addr)
	if err != nil {
		return nil
	}
	return r
}

func serialAt(addr, name string) (uint32, bool) {
	r := ask(addr, name, dns.TypeSOA)
	if r == nil || r.Rcode != dns.RcodeSuccess || len(r.Answer) != 1 {
		return 0, false
	}
	soa, ok := r.Answer[0].(*dns.SOA)
	if !ok {
		return 0, false
	}
	return soa.Serial, true
}

func waitFor(t *testing.T, what string, timeout time.Duration, ok func() bool) time.Duration {
	t.Helper()
	t0 := time.Now()
	for !ok() {
		if time.Since(t0) > timeout {
			t.Fatalf("%s: not after %v", what, timeout)
		}
		time.Sleep(5 * time.Millisecond)
	}
	return time.Since(t0)
}

// answerKey is what must be the same in two servers' answers: rcode,
// AA, and the records of the answer and authority sections.
func answerKey(r *dns.Msg) string {
	if r == nil {
		return "no answer"
	}
	var rrs []string
	for _, rr := range append(slices.Clone(r.Answer), r.Ns...) {
		rrs = append(rrs, rr.String())
	}
	slices.Sort(rrs)
	return fmt.Sprintf("%s aa=%v\n%s", dns.RcodeToString[r.Rcode], r.Authoritative, strings.Join(rrs, "\n"))
}

func metric(t *testing.T, url, name string) float64 {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	total := 0.0
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, name) && (len(line) == len(name) || line[len(name)] == ' ' || line[len(name)] == '{') {
			f := strings.Fields(line)
			v, _ := strconv.ParseFloat(f[len(f)-1], 64)
			total += v
		}
	}
	return total
}

func TestSecondaries(t *testing.T) {
	bins := need(t, "named", "named-checkzone", "knotd", "kzonecheck", "dig")
	dir := t.TempDir()
	ctx := context.Background()
	mgmtnet, err := vtb.BuildMgmtnet(dir)
	if err != nil {
		t.Fatal(err)
	}
	run := func(args ...string) string {
		t.Helper()
		out, err := exec.CommandContext(ctx, mgmtnet, args...).CombinedOutput()
		if err != nil {
			t.Fatalf("mgmtnet %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return string(out)
	}

	// The registry: a database with a server and nodes, served on loopback.
	db := "sqlite:" + filepath.Join(dir, "registry.db")
	pem, err := registry.GeneratePublicKeyPEM(2048)
	if err != nil {
		t.Fatal(err)
	}
	keyPEM := filepath.Join(dir, "member.pub")
	if err := os.WriteFile(keyPEM, []byte(pem), 0o644); err != nil {
		t.Fatal(err)
	}
	run("registry", "init", "--prefix", prefix, "--db", db)
	run("registry", "server", "add", "2", "--name", "main", "--pubkey", keyPEM, "--db", db)
	for id := 1; id <= nodes; id++ {
		run("registry", "node", "add", strconv.Itoa(id), "--name", fmt.Sprintf("site-%d", id), "--pubkey", keyPEM, "--db", db)
	}
	regPort := freePort(t)
	start(t, dir, "registry", mgmtnet, "registry", "serve", "--db", db, "--listen", fmt.Sprintf("127.0.0.1:%d", regPort))
	regURL := fmt.Sprintf("http://127.0.0.1:%d/api/", regPort)
	if err := vtb.WaitHTTP(ctx, regURL, 30*time.Second); err != nil {
		t.Fatal(err)
	}

	// The TSIG key, in BIND's syntax, for mgmtnet and BIND.
	keyFile := filepath.Join(dir, "xfr.key")
	keyConf := fmt.Sprintf("key %q {\n\talgorithm hmac-sha256;\n\tsecret %q;\n};\n", keyName, secret)
	if err := os.WriteFile(keyFile, []byte(keyConf), 0o600); err != nil {
		t.Fatal(err)
	}

	mPort, bPort, kPort, badPort, metricsPort := freePort(t), freePort(t), freePort(t), freePort(t), freePort(t)
	primary := fmt.Sprintf("127.0.0.1:%d", mPort)
	bind := fmt.Sprintf("127.0.0.1:%d", bPort)
	knot := fmt.Sprintf("127.0.0.1:%d", kPort)
	bad := fmt.Sprintf("127.0.0.1:%d", badPort)
	metrics := fmt.Sprintf("http://127.0.0.1:%d/metrics", metricsPort)
	start(t, dir, "mgmtnet-dns", mgmtnet, "dns", "--registry", regURL, "--zone", zone, "--listen", primary,
		"--tsig-key", keyFile, "--notify", bind, "--notify", knot, "--poll", "10m",
		"--serial-file", filepath.Join(dir, "dns.serial"), "--metrics-listen", fmt.Sprintf("127.0.0.1:%d", metricsPort))
	waitFor(t, "mgmtnet dns serving", 30*time.Second, func() bool { _, ok := serialAt(primary, zone); return ok })
	rev, err := addressing.ReverseZone(netipPrefix(t, prefix))
	if err != nil {
		t.Fatal(err)
	}
	zones := []string{zone, rev}

	// BIND 9: a secondary of both zones, signing its queries to the
	// primary with the key, accepting NOTIFY signed with it.
	bindDir := filepath.Join(dir, "bind")
	os.MkdirAll(bindDir, 0o755)
	bindConf := func(dir string, port int, sec string) string {
		var b strings.Builder
		fmt.Fprintf(&b, `options {
	directory %q;
	pid-file %q;
	session-keyfile %q;
	listen-on port %d { 127.0.0.1; };
	listen-on-v6 { none; };
	recursion no;
	minimal-responses yes;
	dnssec-validation no;
	notify no;
	allow-query { any; };
	transfer-source 127.0.0.1;
};
controls { };
key %q { algorithm hmac-sha256; secret %q; };
server 127.0.0.1 { keys { %s; }; };
`, dir, filepath.Join(dir, "named.pid"), filepath.Join(dir, "session.key"), port, keyName, sec, keyName)
		for i, z := range zones {
			fmt.Fprintf(&b, `zone %q {
	type secondary;
	primaries port %d { 127.0.0.1 key %s; };
	allow-notify { key %s; };
	masterfile-format text;
	file "zone%d.db";
};
`, z, mPort, keyName, keyName, i)
		}
		return b.String()
	}
	if err := os.WriteFile(filepath.Join(bindDir, "named.conf"), []byte(bindConf(bindDir, bPort, secret)), 0o644); err != nil {
		t.Fatal(err)
	}
	start(t, dir, "named", bins["named"], "-g", "-4", "-c", filepath.Join(bindDir, "named.conf"))

	// Knot DNS: the same, in its own syntax.
	knotDir := filepath.Join(dir, "knot")
	os.MkdirAll(knotDir, 0o755)
	var kc strings.Builder
	fmt.Fprintf(&kc, `server:
    rundir: %q
    listen: 127.0.0.1@%d
log:
  - target: stderr
    any: info
database:
    storage: %q
key:
  - id: %s
    algorithm: hmac-sha256
    secret: %s
remote:
  - id: primary
    address: 127.0.0.1@%d
    key: %s
acl:
  - id: notify
    address: 127.0.0.1
    key: %s
    action: notify
template:
  - id: default
    storage: %q
    zonefile-sync: 0
    journal-content: changes
zone:
`, knotDir, kPort, knotDir, keyName, secret, mPort, keyName, keyName, knotDir)
	for i, z := range zones {
		fmt.Fprintf(&kc, "  - domain: %s\n    master: primary\n    acl: notify\n    file: zone%d.zone\n", z, i)
	}
	if err := os.WriteFile(filepath.Join(knotDir, "knot.conf"), []byte(kc.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	start(t, dir, "knotd", bins["knotd"], "-c", filepath.Join(knotDir, "knot.conf"))

	// Both secondaries load both zones at the primary's serial.
	serial, _ := serialAt(primary, zone)
	for _, sec := range []string{bind, knot} {
		for _, z := range zones {
			d := waitFor(t, fmt.Sprintf("%s serving %s", sec, z), 60*time.Second, func() bool {
				s, ok := serialAt(sec, z)
				return ok && s == serial
			})
			t.Logf("%s has %s at serial %d after %v", sec, z, serial, d.Round(time.Millisecond))
		}
	}

	// Their zone files pass their own checks (glue included).
	for i, z := range zones {
		out, err := exec.Command(bins["named-checkzone"], z, filepath.Join(bindDir, fmt.Sprintf("zone%d.db", i))).CombinedOutput()
		if err != nil || strings.Contains(string(out), "has no address") {
			t.Errorf("named-checkzone %s: %v\n%s", z, err, out)
		}
		kfile := filepath.Join(knotDir, fmt.Sprintf("zone%d.zone", i))
		waitFor(t, "knot's zone file "+kfile, 30*time.Second, func() bool { _, err := os.Stat(kfile); return err == nil })
		out, err = exec.Command(bins["kzonecheck"], "-o", z, kfile).CombinedOutput()
		if err != nil || strings.Contains(strings.ToLower(string(out)), "error") || strings.Contains(string(out), "missing glue") {
			t.Errorf("kzonecheck %s: %v\n%s", z, err, out)
		}
	}

	// The same answers from the three servers, for sampled names.
	plan, err := addressing.New(netipPrefix(t, prefix))
	if err != nil {
		t.Fatal(err)
	}
	type q struct {
		name  string
		qtype uint16
	}
	var sample []q
	for _, id := range []uint64{1, 2, 7, 19, 33, nodes} {
		a, _ := plan.Address(addressing.Entity{Kind: addressing.KindNode, ID: id})
		sample = append(sample,
			q{fmt.Sprintf("node-%d.%s", id, zone), dns.TypeAAAA},
			q{fmt.Sprintf("site-%d.%s", id, zone), dns.TypeAAAA},
			q{fmt.Sprintf("node-%d.%s", id, zone), dns.TypeTXT}, // NODATA
			q{addressing.PTRName(a), dns.TypePTR})
	}
	sample = append(sample, q{"server-2." + zone, dns.TypeAAAA}, q{"main." + zone, dns.TypeAAAA},
		q{"node-999." + zone, dns.TypeAAAA}, q{"nothing-here." + zone, dns.TypeAAAA}, // NXDOMAIN
		q{zone, dns.TypeSOA}, q{zone, dns.TypeNS}, q{"ns." + zone, dns.TypeA}, q{rev, dns.TypeNS})
	for _, s := range sample {
		want := answerKey(ask(primary, s.name, s.qtype))
		for _, sec := range []string{bind, knot} {
			if got := answerKey(ask(sec, s.name, s.qtype)); got != want {
				t.Errorf("%s %s from %s:\n%s\nmgmtnet:\n%s", s.name, dns.TypeToString[s.qtype], sec, got, want)
			}
		}
	}
	t.Logf("%d sampled answers identical across mgmtnet, BIND and Knot", len(sample))

	// The transfers were signed: without the key, or with a wrong one, dig
	// gets nothing.
	for _, args := range [][]string{
		{"AXFR", zone},
		{"-y", "hmac-sha256:" + keyName + ":" + wrong, "AXFR", zone},
	} {
		out, _ := exec.Command(bins["dig"], append([]string{"@127.0.0.1", "-p", strconv.Itoa(mPort), "+time=2", "+tries=1"}, args...)...).CombinedOutput()
		if strings.Contains(string(out), "\tAAAA\t") || !strings.Contains(string(out), "Transfer failed") && !strings.Contains(string(out), "tsig") {
			t.Errorf("dig %s: got records, or no failure:\n%s", strings.Join(args, " "), out)
		}
	}
	out, err := exec.Command(bins["dig"], "@127.0.0.1", "-p", strconv.Itoa(mPort), "-y", "hmac-sha256:"+keyName+":"+secret, "AXFR", zone).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "\tAAAA\t") {
		t.Errorf("dig -y with the key: %v\n%s", err, out)
	}

	// A registry change reaches both through NOTIFY and IXFR.
	ixfrBefore := metric(t, metrics, `mgmtnet_dns_transfers_total{kind="ixfr"}`)
	a7, _ := plan.Address(addressing.Entity{Kind: addressing.KindNode, ID: 7})
	t0 := time.Now()
	run("registry", "node", "rm", "7", "--db", db)
	run("registry", "node", "add", "77", "--name", "newcomer", "--pubkey", keyPEM, "--db", db)
	written := time.Since(t0)
	gone := func(sec string) bool {
		r := ask(sec, "node-7."+zone, dns.TypeAAAA)
		p := ask(sec, addressing.PTRName(a7), dns.TypePTR)
		n := ask(sec, "newcomer."+zone, dns.TypeAAAA)
		return r != nil && r.Rcode == dns.RcodeNameError && p != nil && p.Rcode == dns.RcodeNameError &&
			n != nil && n.Rcode == dns.RcodeSuccess && len(n.Answer) == 1
	}
	for _, sec := range []struct{ name, addr string }{{"mgmtnet", primary}, {"BIND", bind}, {"Knot", knot}} {
		waitFor(t, sec.name+" following the change", 60*time.Second, func() bool { return gone(sec.addr) })
		t.Logf("%s: node 7 gone and node 77 (newcomer) there %v after the first write began (the two writes took %v)",
			sec.name, time.Since(t0).Round(time.Millisecond), written.Round(time.Millisecond))
	}
	serial, _ = serialAt(primary, zone)
	for _, sec := range []string{bind, knot} {
		for _, z := range zones {
			waitFor(t, sec+" at the new serial of "+z, 60*time.Second, func() bool { s, ok := serialAt(sec, z); return ok && s == serial })
		}
	}
	if got := metric(t, metrics, `mgmtnet_dns_transfers_total{kind="ixfr"}`) - ixfrBefore; got < 4 {
		t.Errorf("%v incremental transfers after the change, want at least 4 (two zones, two secondaries)", got)
	}
	for _, s := range sample {
		want := answerKey(ask(primary, s.name, s.qtype))
		for _, sec := range []string{bind, knot} {
			if got := answerKey(ask(sec, s.name, s.qtype)); got != want {
				t.Errorf("after the change, %s %s from %s:\n%s\nmgmtnet:\n%s", s.name, dns.TypeToString[s.qtype], sec, got, want)
			}
		}
	}

	// A BIND with the wrong secret under the key's name is refused: it
	// never loads the zones, and mgmtnet counts the bad signatures.
	badDir := filepath.Join(dir, "bind-wrong-key")
	os.MkdirAll(badDir, 0o755)
	if err := os.WriteFile(filepath.Join(badDir, "named.conf"), []byte(bindConf(badDir, badPort, wrong)), 0o644); err != nil {
		t.Fatal(err)
	}
	badsig := metric(t, metrics, `mgmtnet_dns_tsig_failures_total{error="badsig"}`)
	start(t, dir, "named-wrong-key", bins["named"], "-g", "-4", "-c", filepath.Join(badDir, "named.conf"))
	waitFor(t, "mgmtnet counting the wrong key's signatures", 60*time.Second, func() bool {
		return metric(t, metrics, `mgmtnet_dns_tsig_failures_total{error="badsig"}`) > badsig
	})
	waitFor(t, "the wrong-key BIND answering", 30*time.Second, func() bool { return ask(bad, zone, dns.TypeSOA) != nil })
	if r := ask(bad, "site-1."+zone, dns.TypeAAAA); r == nil || r.Rcode == dns.RcodeSuccess && len(r.Answer) > 0 {
		t.Errorf("the BIND with the wrong key answers: %v", r)
	}
	for i := range zones {
		if _, err := os.Stat(filepath.Join(badDir, fmt.Sprintf("zone%d.db", i))); err == nil {
			t.Errorf("the BIND with the wrong key wrote zone%d.db", i)
		}
	}
}

func netipPrefix(t *testing.T, s string) netip.Prefix {
	t.Helper()
	p, err := netip.ParsePrefix(s)
	if err != nil {
		t.Fatal(err)
	}
	return p
}
