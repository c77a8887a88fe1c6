package authdns

import (
	"bytes"
	"context"
	"errors"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/miekg/dns"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/confine-project/mgmtnet/addressing"
)

// noLeaks fails the test if goroutines started during it are still
// running at its end (after every later Cleanup). It waits a little for
// them to finish, since closing a socket does not stop its reader at
// once.
func noLeaks(t *testing.T) {
	t.Helper()
	before := runtime.NumGoroutine()
	t.Cleanup(func() {
		deadline := time.Now().Add(5 * time.Second)
		for runtime.NumGoroutine() > before && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond)
		}
		if n := runtime.NumGoroutine(); n > before {
			buf := make([]byte, 1<<20)
			t.Errorf("%d goroutines left running (%d before):\n%s", n-before, before, buf[:runtime.Stack(buf, true)])
		}
	})
}

// startServer starts a server for cfg (Zone defaulted) on a free
// loopback port, with the testbed of smallTestbed, and returns it and its
// address.
func startServer(t *testing.T, cfg Config, opts ServerOptions) (*Server, string) {
	t.Helper()
	if cfg.Zone == "" {
		cfg.Zone = testZone
	}
	if opts.Listen == nil {
		opts.Listen = []string{"127.0.0.1:0"}
	}
	s, err := New(cfg, opts)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.SetTestbed(smallTestbed(t)); err != nil {
		t.Fatal(err)
	}
	if err := s.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Error(err)
		}
	})
	return s, s.Addrs()[0].String()
}

// startFake serves h on a free loopback port over UDP and TCP: a stand-in
// upstream resolver or secondary.
func startFake(t *testing.T, h dns.HandlerFunc) netip.AddrPort {
	t.Helper()
	l, err := bind(context.Background(), "127.0.0.1:0", 1)
	if err != nil {
		t.Fatal(err)
	}
	for _, srv := range []*dns.Server{{PacketConn: l.udp[0], Handler: h}, {Listener: l.tcp, Handler: h}} {
		started := make(chan struct{})
		srv.NotifyStartedFunc = func() { close(started) }
		done := make(chan struct{})
		go func() {
			defer close(done)
			srv.ActivateAndServe()
		}()
		<-started
		t.Cleanup(func() {
			srv.Shutdown()
			<-done
		})
	}
	return l.udp[0].LocalAddr().(*net.UDPAddr).AddrPort()
}

func exchange(t *testing.T, network, addr string, m *dns.Msg) *dns.Msg {
	t.Helper()
	c := &dns.Client{Net: network, Timeout: 5 * time.Second}
	r, _, err := c.Exchange(m, addr)
	if err != nil {
		t.Fatalf("%s exchange with %s: %v", network, addr, err)
	}
	return r
}

func TestServerUDPAndTCP(t *testing.T) {
	noLeaks(t)
	s, addr := startServer(t, Config{}, ServerOptions{Listen: []string{"127.0.0.1:0", "[::1]:0"}})
	addrs := s.Addrs()
	if len(addrs) != 4 || addrs[0].Network() != "udp" || addrs[1].Network() != "tcp" || addrs[0].String() != addrs[1].String() {
		t.Fatalf("Addrs() = %v; want UDP and TCP on the same port, for each listen address", addrs)
	}
	if want := 2 * udpSockets(); len(s.udpConns)+len(s.rawSocks) != want {
		t.Errorf("%d sockets served by serveUDP and %d by serveUDPRaw, want %d (one per CPU per address)", len(s.udpConns), len(s.rawSocks), want)
	}
	for _, a := range []string{addr, addrs[2].String()} {
		for _, network := range []string{"udp", "tcp"} {
			r := exchange(t, network, a, query("node-31."+testZone, dns.TypeAAAA))
			if r.Rcode != dns.RcodeSuccess || len(r.Answer) != 1 || r.Answer[0].(*dns.AAAA).AAAA.String() != "fdf5:5351:1dfd:1f::2" {
				t.Errorf("%s %s: %v", network, a, r)
			}
		}
	}
	if err := s.Start(context.Background()); err == nil {
		t.Error("a second Start did not fail")
	}
}

func TestStartAddressInUse(t *testing.T) {
	noLeaks(t)
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	s, err := New(Config{Zone: testZone}, ServerOptions{Listen: []string{"127.0.0.1:0", pc.LocalAddr().String()}})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	err = s.Start(context.Background())
	if !errors.Is(err, syscall.EADDRINUSE) || !strings.Contains(err.Error(), pc.LocalAddr().String()) {
		t.Fatalf("Start() = %v, want address in use naming %s", err, pc.LocalAddr())
	}
	// The first address was bound, then released.
	if len(s.Addrs()) != 0 {
		t.Errorf("Addrs() = %v after a failed start", s.Addrs())
	}
}

// digOrSkip returns the path of dig, skipping the test when it is
// missing unless MGMTNET_REQUIRE_E2E=1.
func digOrSkip(t *testing.T) string {
	t.Helper()
	path, err := exec.LookPath("dig")
	if err != nil {
		msg := "dig is not installed (Debian: apt-get install bind9-dnsutils); it is needed to query the server as users do"
		if os.Getenv("MGMTNET_REQUIRE_E2E") == "1" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	return path
}

// dig runs dig against addr and returns the records it printed.
func dig(t *testing.T, digPath, addr string, args ...string) []dns.RR {
	t.Helper()
	host, port, _ := net.SplitHostPort(addr)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	full := append([]string{"@" + host, "-p", port, "+noall", "+answer", "+tries=1", "+time=5"}, args...)
	cmd := exec.CommandContext(ctx, digPath, full...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("dig %s: %v\n%s%s", strings.Join(full, " "), err, out, stderr.Bytes())
	}
	var rrs []dns.RR
	for line := range strings.Lines(string(out)) {
		if strings.TrimSpace(line) == "" || strings.HasPrefix(line, ";") {
			continue
		}
		rr, err := dns.NewRR(line)
		if err != nil {
			t.Fatalf("dig %s printed %q: %v", strings.Join(args, " "), line, err)
		}
		rrs = append(rrs, rr)
	}
	return rrs
}

// TestDig queries a running server with dig, as users and secondaries
// do: AAAA over UDP and TCP, a reverse lookup, and zone transfers.
func TestDig(t *testing.T) {
	digPath := digOrSkip(t)
	noLeaks(t)
	s, addr := startServer(t, Config{}, ServerOptions{})
	want := "node-31." + testZone + "\t300\tIN\tAAAA\tfdf5:5351:1dfd:1f::2"
	for _, transport := range []string{"+notcp", "+tcp"} {
		rrs := dig(t, digPath, addr, transport, "AAAA", "node-31.mgmt.example.net")
		if diff := cmp.Diff([]string{want}, rrStrings(rrs)); diff != "" {
			t.Errorf("dig %s AAAA (-want +got):\n%s", transport, diff)
		}
	}
	rrs := dig(t, digPath, addr, "-x", "fdf5:5351:1dfd:1f:1001::5")
	if diff := cmp.Diff([]string{ptr(ptrName("fdf5:5351:1dfd:1f:1001::5"), "slice-5.node-31."+testZone)}, rrStrings(rrs)); diff != "" {
		t.Errorf("dig -x (-want +got):\n%s", diff)
	}

	axfr := dig(t, digPath, addr, "AXFR", testZone)
	if len(axfr) != 16 || axfr[0].Header().Rrtype != dns.TypeSOA || axfr[len(axfr)-1].Header().Rrtype != dns.TypeSOA {
		t.Fatalf("dig AXFR %s: %d records:\n%s", testZone, len(axfr), strings.Join(rrStrings(axfr), "\n"))
	}
	if got := axfr[0].(*dns.SOA).Serial; got != s.Zone().Serial() {
		t.Errorf("AXFR serial %d, want %d", got, s.Zone().Serial())
	}
	if !slices.Contains(rrStrings(axfr), want) || !slices.Contains(rrStrings(axfr), aaaa("lab-router."+testZone, "fdf5:5351:1dfd:20::2")) {
		t.Errorf("AXFR lacks node-31 or lab-router:\n%s", strings.Join(rrStrings(axfr), "\n"))
	}
	raxfr := dig(t, digPath, addr, "AXFR", testReverse)
	if len(raxfr) != 13 || !slices.Contains(rrStrings(raxfr), ptr(ptrName("fdf5:5351:1dfd::2"), "server-2."+testZone)) {
		t.Errorf("dig AXFR %s: %d records:\n%s", testReverse, len(raxfr), strings.Join(rrStrings(raxfr), "\n"))
	}
}

// TestNotify: a secondary is sent NOTIFY for both zones, with the new
// serial, whenever a testbed with another serial is set.
func TestNotify(t *testing.T) {
	noLeaks(t)
	type notice struct {
		zone   string
		serial uint32
	}
	got := make(chan notice, 16)
	secondary := startFake(t, func(w dns.ResponseWriter, r *dns.Msg) {
		if r.Opcode == dns.OpcodeNotify && len(r.Question) == 1 && len(r.Answer) == 1 {
			if soa, ok := r.Answer[0].(*dns.SOA); ok && r.Authoritative {
				got <- notice{r.Question[0].Name, soa.Serial}
			}
		}
		w.WriteMsg(new(dns.Msg).SetReply(r))
	})
	reg := prometheus.NewRegistry()
	s, err := New(Config{Zone: testZone, Notify: []netip.AddrPort{secondary}}, ServerOptions{Registerer: reg})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	wait := func(serial uint32) {
		t.Helper()
		want := map[notice]bool{{testZone, serial}: true, {testReverse, serial}: true}
		for len(want) > 0 {
			select {
			case n := <-got:
				if !want[n] {
					t.Fatalf("unexpected NOTIFY %v; waiting for %v", n, want)
				}
				delete(want, n)
			case <-time.After(10 * time.Second):
				t.Fatalf("no NOTIFY for %v", want)
			}
		}
	}
	tb1 := build(t, cand(t, addressing.KindNode, 1, ""))
	tb2 := build(t, cand(t, addressing.KindNode, 2, ""))
	tb3 := build(t, cand(t, addressing.KindNode, 3, ""))
	if err := s.SetTestbed(tb1); err != nil {
		t.Fatal(err)
	}
	wait(s.Zone().Serial())
	if err := s.SetTestbed(tb2); err != nil {
		t.Fatal(err)
	}
	wait(s.Zone().Serial())
	// The same serial again sends nothing: the next NOTIFYs are tb3's.
	if err := s.SetTestbed(tb2); err != nil {
		t.Fatal(err)
	}
	if err := s.SetTestbed(tb3); err != nil {
		t.Fatal(err)
	}
	wait(s.Zone().Serial())
	s.Close()
	if got := gather(t, reg, "mgmtnet_dns_notify_total"); !slices.Contains(got, `mgmtnet_dns_notify_total{result="ok"} 6`) {
		t.Errorf("notify metrics: %v, want 6 ok", got)
	}
}

// TestForward: names outside our zones are forwarded to upstreams, in
// order, over the client's transport, only for recursive queries from
// allowed clients.
func TestForward(t *testing.T) {
	noLeaks(t)
	var mu sync.Mutex
	var seen []*dns.Msg
	upstream := startFake(t, func(w dns.ResponseWriter, r *dns.Msg) {
		mu.Lock()
		seen = append(seen, r)
		mu.Unlock()
		m := new(dns.Msg).SetReply(r)
		m.RecursionAvailable = true
		rr, _ := dns.NewRR(r.Question[0].Name + " 60 IN A 192.0.2.1")
		m.Answer = []dns.RR{rr}
		w.WriteMsg(m)
	})
	// A dead upstream first: a closed UDP port answers "connection
	// refused" at once, a closed TCP port refuses the connection.
	dead, err := bind(context.Background(), "127.0.0.1:0", 1)
	if err != nil {
		t.Fatal(err)
	}
	deadAddr := dead.udp[0].LocalAddr().(*net.UDPAddr).AddrPort()
	dead.close()
	s := newTestServer(t, Config{Forward: []netip.AddrPort{deadAddr, upstream}}, smallTestbed(t))

	for _, w := range []*recorder{udpFrom("::1"), tcpFrom("fdf5:5351:1dfd:1f::2")} {
		q := query("www.example.org.", dns.TypeA).SetEdns0(4096, true)
		s.ServeDNS(w, q)
		m := w.only(t)
		if m.Rcode != dns.RcodeSuccess || m.Id != q.Id || m.Authoritative || !m.RecursionAvailable ||
			len(m.Answer) != 1 || m.Answer[0].String() != "www.example.org.\t60\tIN\tA\t192.0.2.1" {
			t.Errorf("forwarded from %v: %v", w.remote, m)
		}
		if opt := m.IsEdns0(); opt == nil || opt.UDPSize() != 1232 || len(m.Extra) != 1 {
			t.Errorf("forwarded answer's additional section: %v", m.Extra)
		}
	}
	mu.Lock()
	if len(seen) != 2 {
		t.Fatalf("upstream saw %d queries, want 2", len(seen))
	}
	for _, r := range seen {
		if !r.RecursionDesired || r.IsEdns0() == nil || !r.IsEdns0().Do() {
			t.Errorf("upstream query: %v", r)
		}
	}
	mu.Unlock()

	for _, tt := range []struct {
		name string
		w    *recorder
		q    *dns.Msg
	}{
		{"no recursion desired", udpFrom("::1"), func() *dns.Msg { m := query("www.example.org.", dns.TypeA); m.RecursionDesired = false; return m }()},
		{"client outside allow", udpFrom("2001:db8::1"), query("www.example.org.", dns.TypeA)},
		{"transfer", tcpFrom("::1"), query("example.org.", dns.TypeAXFR)},
	} {
		s.ServeDNS(tt.w, tt.q)
		if m := tt.w.only(t); m.Rcode != dns.RcodeRefused {
			t.Errorf("%s: %s, want REFUSED", tt.name, dns.RcodeToString[m.Rcode])
		}
	}

	// Every upstream down: SERVFAIL.
	s = newTestServer(t, Config{Forward: []netip.AddrPort{deadAddr}}, smallTestbed(t))
	w := udpFrom("::1")
	s.ServeDNS(w, query("www.example.org.", dns.TypeA))
	if m := w.only(t); m.Rcode != dns.RcodeServerFailure {
		t.Errorf("upstream down: %s, want SERVFAIL", dns.RcodeToString[m.Rcode])
	}
}

func TestMetrics(t *testing.T) {
	reg := prometheus.NewRegistry()
	s, err := New(Config{Zone: testZone}, ServerOptions{Registerer: reg})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := s.SetTestbed(smallTestbed(t)); err != nil {
		t.Fatal(err)
	}
	for _, q := range []struct {
		w *recorder
		m *dns.Msg
	}{
		{udpFrom("::1"), query("node-31."+testZone, dns.TypeAAAA)},
		{udpFrom("::1"), query("node-32."+testZone, dns.TypeAAAA)},
		{udpFrom("::1"), query("nope."+testZone, dns.TypeAAAA)},
		{udpFrom("::1"), query(ptrName("fdf5:5351:1dfd:1f::2"), dns.TypePTR)},
		{udpFrom("2001:db8::1"), query("node-31."+testZone, dns.TypeAAAA)},
		{udpFrom("::1"), query("example.org.", dns.TypeNAPTR)},
		{tcpFrom("::1"), query(testZone, dns.TypeAXFR)},
	} {
		s.ServeDNS(q.w, q.m)
	}
	want := []string{
		`mgmtnet_dns_queries_total{qtype="AAAA",rcode="NOERROR"} 2`,
		`mgmtnet_dns_queries_total{qtype="AAAA",rcode="NXDOMAIN"} 1`,
		`mgmtnet_dns_queries_total{qtype="AAAA",rcode="REFUSED"} 1`,
		`mgmtnet_dns_queries_total{qtype="AXFR",rcode="NOERROR"} 1`,
		`mgmtnet_dns_queries_total{qtype="PTR",rcode="NOERROR"} 1`,
		`mgmtnet_dns_queries_total{qtype="other",rcode="REFUSED"} 1`,
		`mgmtnet_dns_refused_total{reason="class"} 0`,
		`mgmtnet_dns_refused_total{reason="client"} 1`,
		`mgmtnet_dns_refused_total{reason="notify"} 0`,
		`mgmtnet_dns_refused_total{reason="transfer"} 0`,
		`mgmtnet_dns_refused_total{reason="unsigned"} 0`,
		`mgmtnet_dns_refused_total{reason="zone"} 1`,
		`mgmtnet_dns_skipped_names{reason="duplicate"} 2`,
		`mgmtnet_dns_skipped_names{reason="invalid"} 1`,
		`mgmtnet_dns_skipped_names{reason="reserved"} 2`,
		`mgmtnet_dns_transfers_total{kind="axfr"} 1`,
		`mgmtnet_dns_transfers_total{kind="current"} 0`,
		`mgmtnet_dns_transfers_total{kind="ixfr"} 0`,
		`mgmtnet_dns_transfers_total{kind="ixfr_full"} 0`,
		`mgmtnet_dns_zone_serial ` + strconv.FormatUint(uint64(s.Zone().Serial()), 10),
	}
	got := gather(t, reg, "mgmtnet_dns_queries_total", "mgmtnet_dns_refused_total", "mgmtnet_dns_skipped_names",
		"mgmtnet_dns_transfers_total", "mgmtnet_dns_zone_serial")
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("metrics (-want +got):\n%s", diff)
	}
	// A second server on the same registry is an error, not a panic.
	if _, err := New(Config{Zone: testZone}, ServerOptions{Registerer: reg}); err == nil {
		t.Error("registering the metrics twice did not fail")
	}
}

// gather returns the samples of the named metrics as sorted
// `name{label="value",...} value` lines.
func gather(t *testing.T, reg *prometheus.Registry, names ...string) []string {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, mf := range mfs {
		if !slices.Contains(names, mf.GetName()) {
			continue
		}
		for _, m := range mf.GetMetric() {
			var labels []string
			for _, l := range m.GetLabel() {
				labels = append(labels, l.GetName()+"="+strconv.Quote(l.GetValue()))
			}
			name := mf.GetName()
			if len(labels) > 0 {
				name += "{" + strings.Join(labels, ",") + "}"
			}
			v := m.GetCounter().GetValue() + m.GetGauge().GetValue()
			out = append(out, name+" "+strconv.FormatFloat(v, 'f', -1, 64))
		}
	}
	slices.Sort(out)
	return out
}

// TestServerUDPPath sends raw datagrams to a running server: what
// serveUDP answers, and what it drops, before a query reaches ServeDNS;
// and a forwarded query, answered from a goroutine of its own.
func TestServerUDPPath(t *testing.T) {
	noLeaks(t)
	upstream := startFake(t, func(w dns.ResponseWriter, r *dns.Msg) {
		m := new(dns.Msg).SetReply(r)
		rr, _ := dns.NewRR(r.Question[0].Name + " 60 IN A 192.0.2.1")
		m.Answer = []dns.RR{rr}
		w.WriteMsg(m)
	})
	_, addr := startServer(t, Config{Forward: []netip.AddrPort{upstream}}, ServerOptions{})
	conn, err := net.Dial("udp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	send := func(b []byte) {
		t.Helper()
		if _, err := conn.Write(b); err != nil {
			t.Fatal(err)
		}
	}
	recv := func() *dns.Msg {
		t.Helper()
		buf := make([]byte, 4096)
		n, err := conn.Read(buf)
		if err != nil {
			t.Fatal(err)
		}
		m := new(dns.Msg)
		if err := m.Unpack(buf[:n]); err != nil {
			t.Fatal(err)
		}
		return m
	}
	pack := func(m *dns.Msg) []byte {
		b, err := m.Pack()
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	valid := query("node-31."+testZone, dns.TypeAAAA)
	valid.Id = 1000

	// Ignored: a response, a runt. The next answer is the valid query's.
	resp := query("node-31."+testZone, dns.TypeAAAA)
	resp.Id, resp.Response = 1, true
	send(pack(resp))
	send([]byte{0, 2, 0, 0, 0})
	send(pack(valid))
	if m := recv(); m.Id != valid.Id || len(m.Answer) != 1 {
		t.Fatalf("after a response and a runt: %v", m)
	}
	// A body that does not unpack: FORMERR with the header alone.
	b := pack(query("node-31."+testZone, dns.TypeAAAA))
	b[0], b[1] = 0, 3
	send(b[:len(b)-3])
	if m := recv(); m.Id != 3 || m.Rcode != dns.RcodeFormatError || len(m.Question) != 0 {
		t.Errorf("truncated body: %v", m)
	}
	// An UPDATE: NOTIMP from the header alone.
	up := withOpcode(query(testZone, dns.TypeSOA), dns.OpcodeUpdate)
	up.Id = 4
	send(pack(up))
	if m := recv(); m.Id != 4 || m.Rcode != dns.RcodeNotImplemented || m.Opcode != dns.OpcodeUpdate {
		t.Errorf("update: %v", m)
	}
	// Forwarded, and answered later, from another goroutine.
	fwd := query("www.example.org.", dns.TypeA)
	fwd.Id = 5
	send(pack(fwd))
	if m := recv(); m.Id != 5 || m.Rcode != dns.RcodeSuccess || len(m.Answer) != 1 || m.Question[0].Name != "www.example.org." {
		t.Errorf("forwarded: %v", m)
	}
}

// TestServerWildcard: a wildcard listen address is served by dns.Server,
// which answers from the address the query was sent to.
func TestServerWildcard(t *testing.T) {
	noLeaks(t)
	for listen, hosts := range map[string][]string{"[::]:0": {"::1", "127.0.0.1"}, "0.0.0.0:0": {"127.0.0.1"}} {
		s, _ := startServer(t, Config{}, ServerOptions{Listen: []string{listen}})
		if len(s.udpConns) != 0 {
			t.Errorf("%s: %d sockets served by serveUDP, want none (dns.Server with IP_PKTINFO)", listen, len(s.udpConns))
		}
		_, port, _ := net.SplitHostPort(s.Addrs()[0].String())
		for _, host := range hosts {
			for _, network := range []string{"udp", "tcp"} {
				r := exchange(t, network, net.JoinHostPort(host, port), query("node-31."+testZone, dns.TypeAAAA))
				if r.Rcode != dns.RcodeSuccess || len(r.Answer) != 1 {
					t.Errorf("%s: %s %s: %v", listen, network, host, r)
				}
			}
		}
	}
}

// TestRawReadersYield: the blocking UDP readers (serveUDPRaw) wait in a
// system call the runtime cannot stop them in; a garbage collection, which
// stops every goroutine, must still complete while they wait, and queries
// must still be answered after it.
func TestRawReadersYield(t *testing.T) {
	noLeaks(t)
	if !rawSupported || runtime.GOMAXPROCS(0) < 2 {
		t.Skip("blocking UDP readers need Linux and two Ps")
	}
	s, addr := startServer(t, Config{}, ServerOptions{})
	if len(s.rawSocks) == 0 {
		t.Fatal("no socket served by serveUDPRaw")
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for range 20 {
			runtime.GC()
		}
	}()
	select {
	case <-done:
	case <-time.After(time.Minute): // a hang, not a timing: 20 collections take milliseconds
		t.Fatal("garbage collection blocked by the UDP readers")
	}
	if r := exchange(t, "udp", addr, query("node-31."+testZone, dns.TypeAAAA)); len(r.Answer) != 1 {
		t.Errorf("after the collections: %v", r)
	}
}
