package authdns

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"github.com/miekg/dns"

	"github.com/confine-project/mgmtnet/addressing"
	"github.com/confine-project/mgmtnet/mesh"
)

func TestConfigValidate(t *testing.T) {
	good := Config{Zone: "mgmt.example.net"}
	if err := good.Validate(); err != nil {
		t.Fatalf("minimal config: %v", err)
	}
	tests := []struct {
		name string
		edit func(*Config)
		want string
	}{
		{"no zone", func(c *Config) { c.Zone = "" }, "zone is empty"},
		{"bad zone", func(c *Config) { c.Zone = "a..b" }, "not a domain name"},
		{"zone with a space", func(c *Config) { c.Zone = "a b.net." }, "not a domain name"},
		{"root", func(c *Config) { c.Zone = "." }, "the root"},
		{"arpa", func(c *Config) { c.Zone = "d.f.ip6.arpa." }, "under arpa."},
		{"negative ttl", func(c *Config) { c.TTL = -time.Second }, "ttl -1s"},
		{"fractional ttl", func(c *Config) { c.TTL = 1500 * time.Millisecond }, "whole seconds"},
		{"huge expire", func(c *Config) { c.SOA.Expire = 100 * 365 * 24 * time.Hour }, "soa expire"},
		{"bad mbox", func(c *Config) { c.SOA.Mbox = "hostmaster@example.net" }, "soa mbox"},
		{"ns twice", func(c *Config) { c.NS = []NameServer{{Name: "a.example.org."}, {Name: "A.example.org"}} }, "listed twice"},
		{"ns at apex", func(c *Config) { c.NS = []NameServer{{Name: "mgmt.example.net."}} }, "zone apex"},
		{"ns is a plan name", func(c *Config) { c.NS = []NameServer{{Name: "node-3.mgmt.example.net."}} }, "name of the addressing plan"},
		{"ns below a plan name", func(c *Config) { c.NS = []NameServer{{Name: "ns.node-3.mgmt.example.net."}} }, "name of the addressing plan"},
		{"out-of-zone ns with addresses", func(c *Config) {
			c.NS = []NameServer{{Name: "ns.example.org.", Addrs: []netip.Addr{netip.MustParseAddr("192.0.2.1")}}}
		}, "only for names inside"},
		{"ns address with a zone", func(c *Config) {
			c.NS = []NameServer{{Name: "ns.mgmt.example.net.", Addrs: []netip.Addr{netip.MustParseAddr("fe80::1%eth0")}}}
		}, "plain IPv4 or IPv6"},
		{"bad allow", func(c *Config) { c.Allow = []netip.Prefix{{}} }, "allow: invalid prefix"},
		{"forward without port", func(c *Config) { c.Forward = []netip.AddrPort{netip.AddrPortFrom(netip.MustParseAddr("192.0.2.1"), 0)} }, "forward 192.0.2.1:0"},
		{"notify unspecified", func(c *Config) { c.Notify = []netip.AddrPort{netip.MustParseAddrPort("[::]:53")} }, "unspecified"},
		{"udp size", func(c *Config) { c.UDPSize = 100 }, "udp size 100"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := good
			tt.edit(&c)
			err := c.Validate()
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Validate() = %v, want an error containing %q", err, tt.want)
			}
			if _, err := New(c, ServerOptions{}); err == nil {
				t.Error("New accepted the config")
			}
		})
	}
}

func TestConfigDefaults(t *testing.T) {
	c, err := Config{Zone: "MGMT.Example.net"}.normalized()
	if err != nil {
		t.Fatal(err)
	}
	want := Config{
		Zone:           "mgmt.example.net.",
		TTL:            5 * time.Minute,
		NS:             []NameServer{{Name: "ns.mgmt.example.net."}},
		SOA:            SOA{Mbox: "hostmaster.mgmt.example.net.", Refresh: 15 * time.Minute, Retry: 5 * time.Minute, Expire: 14 * 24 * time.Hour, Minimum: time.Minute},
		AllowTransfer:  []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8"), netip.MustParsePrefix("::1/128")},
		ForwardTimeout: 2 * time.Second,
		UDPSize:        1232,
		MaxTCPConns:    256,
		TCPIdleTimeout: 10 * time.Second,
		RateLimitSlip:  2,
	}
	if diff := cmp.Diff(want, c, cmpopts.EquateEmpty(), cmpopts.EquateComparable(netip.Prefix{}, netip.Addr{}, netip.AddrPort{})); diff != "" {
		t.Errorf("defaults (-want +got):\n%s", diff)
	}
}

func TestParseServerAddr(t *testing.T) {
	for in, want := range map[string]string{
		"192.0.2.53":          "192.0.2.53:53",
		"192.0.2.53:5353":     "192.0.2.53:5353",
		"2001:db8::53":        "[2001:db8::53]:53",
		"[2001:db8::53]":      "[2001:db8::53]:53",
		"[2001:db8::53]:5353": "[2001:db8::53]:5353",
	} {
		got, err := ParseServerAddr(in, 53)
		if err != nil || got.String() != want {
			t.Errorf("ParseServerAddr(%q) = %v, %v; want %s", in, got, err, want)
		}
	}
	for _, in := range []string{"", "ns.example.org", "ns.example.org:53", "192.0.2.1:0", "192.0.2.1:99999", "[::1"} {
		if got, err := ParseServerAddr(in, 53); err == nil {
			t.Errorf("ParseServerAddr(%q) = %v, want an error", in, got)
		}
	}
}

func TestZoneSkippedNames(t *testing.T) {
	z, err := NewZone(Config{Zone: testZone}, smallTestbed(t))
	if err != nil {
		t.Fatal(err)
	}
	want := []SkippedName{
		{Member: "host_7", Name: "laptop", Reason: SkipDuplicate},
		{Member: "host_8", Name: "LAPTOP", Reason: SkipDuplicate},
		{Member: "node_40", Name: "bad name", Reason: SkipInvalid},
		{Member: "node_41", Name: "server-9", Reason: SkipReserved},
		{Member: "node_42", Name: "ns", Reason: SkipReserved},
	}
	if diff := cmp.Diff(want, z.Skipped()); diff != "" {
		t.Errorf("skipped (-want +got):\n%s", diff)
	}
	// 10 plan names, lab-router, main, old-gw; ns has no address.
	if z.Len() != 13 {
		t.Errorf("Len() = %d, want 13", z.Len())
	}
	if got := z.Skipped()[2].String(); got != `node_40: name "bad name": not a DNS label (letters, digits and inner hyphens, at most 63)` {
		t.Errorf("String() = %s", got)
	}
	if z.Origin() != testZone || z.ReverseOrigin() != testReverse {
		t.Errorf("origins %s %s", z.Origin(), z.ReverseOrigin())
	}
	if _, err := NewZone(Config{Zone: testZone}, nil); err == nil {
		t.Error("NewZone(nil testbed) did not fail")
	}
}

// TestZoneSwap: SetTestbed swaps in a zone with the new members at once,
// and a serial that grows with every new snapshot version (RFC 1982): the
// time of the change, or the last serial plus one when the clock does not
// move on or goes back; the same snapshot again keeps the serial.
func TestZoneSwap(t *testing.T) {
	tb1 := build(t, cand(t, addressing.KindNode, 1, ""))
	tb2 := build(t, cand(t, addressing.KindNode, 1, ""), cand(t, addressing.KindNode, 2, ""))
	tb3 := build(t, cand(t, addressing.KindNode, 3, ""))
	clock := time.Unix(1_800_000_000, 0)
	s := newTestServer(t, Config{}, nil)
	s.now = func() time.Time { return clock }
	ask := func(name string, qt uint16) *dns.Msg {
		w := udpFrom("::1")
		s.ServeDNS(w, query(name, qt))
		return w.only(t)
	}
	serialOf := func() uint32 { return ask(testZone, dns.TypeSOA).Answer[0].(*dns.SOA).Serial }
	steps := []struct {
		tb      *mesh.Testbed
		advance time.Duration
		want    uint32
	}{
		{tb1, 0, 1_800_000_000},
		{tb2, 0, 1_800_000_001},              // same second: last plus one
		{tb2, time.Hour, 1_800_000_001},      // same snapshot: same serial
		{tb3, -2 * time.Hour, 1_800_000_002}, // clock set back: still grows
		{tb1, 4 * time.Hour, 1_800_010_800},  // the clock again
	}
	for i, st := range steps {
		clock = clock.Add(st.advance)
		if err := s.SetTestbed(st.tb); err != nil {
			t.Fatal(err)
		}
		if got := serialOf(); got != st.want {
			t.Errorf("step %d: serial %d, want %d", i, got, st.want)
		}
		if m := ask(testReverse, dns.TypeSOA); m.Answer[0].(*dns.SOA).Serial != st.want {
			t.Errorf("step %d: reverse serial %d, want %d", i, m.Answer[0].(*dns.SOA).Serial, st.want)
		}
		if s.Zone().Testbed() != st.tb {
			t.Errorf("step %d: Zone().Testbed() is not the new testbed", i)
		}
	}
	if m := ask("node-1."+testZone, dns.TypeAAAA); m.Rcode != dns.RcodeSuccess || len(m.Answer) != 1 {
		t.Errorf("node-1 after the swaps: %v", m)
	}
	if m := ask("node-2."+testZone, dns.TypeAAAA); m.Rcode != dns.RcodeNameError {
		t.Errorf("node-2 after it left: %s", dns.RcodeToString[m.Rcode])
	}
	if err := s.SetTestbed(nil); err == nil || s.Zone().Testbed() != tb1 {
		t.Errorf("SetTestbed(nil) = %v; the zone must stay", err)
	}
}

// TestBeforeFirstTestbed: without a testbed, names that may be ours
// fail, others are refused.
func TestBeforeFirstTestbed(t *testing.T) {
	s := newTestServer(t, Config{}, nil)
	for name, want := range map[string]int{
		"node-1." + testZone:              dns.RcodeServerFailure,
		testZone:                          dns.RcodeServerFailure,
		ptrName("fdf5:5351:1dfd:1f::2"):   dns.RcodeServerFailure,
		"www.example.org.":                dns.RcodeRefused,
		"1.0.0.127.in-addr.arpa.":         dns.RcodeRefused,
		"node-1.mgmt.other.example.":      dns.RcodeRefused,
		"xmgmt.example.net.":              dns.RcodeRefused,
		"mgmt.example.net.other.example.": dns.RcodeRefused,
	} {
		w := udpFrom("127.0.0.1")
		s.ServeDNS(w, query(name, dns.TypeAAAA))
		if m := w.only(t); m.Rcode != want {
			t.Errorf("%s: %s, want %s", name, dns.RcodeToString[m.Rcode], dns.RcodeToString[want])
		}
	}
	// Before a testbed, only loopback is allowed by default (the /48 is
	// not known yet).
	w := udpFrom("fdf5:5351:1dfd:1f::2")
	s.ServeDNS(w, query("node-1."+testZone, dns.TypeAAAA))
	if m := w.only(t); m.Rcode != dns.RcodeRefused {
		t.Errorf("a node before the testbed: %s, want REFUSED", dns.RcodeToString[m.Rcode])
	}
}

// TestNameServers: in-zone name servers get address records, glue in NS
// answers, and empty non-terminals above them.
func TestNameServers(t *testing.T) {
	cfg := Config{NS: []NameServer{
		{Name: "ns1.dns." + testZone, Addrs: []netip.Addr{netip.MustParseAddr("fdf5:5351:1dfd::53"), netip.MustParseAddr("192.0.2.53")}},
		{Name: "ns.example.org."},
	}}
	s := newTestServer(t, cfg, smallTestbed(t))
	ask := func(name string, qt uint16) *dns.Msg {
		w := udpFrom("::1")
		s.ServeDNS(w, query(name, qt))
		return w.only(t)
	}
	m := ask(testZone, dns.TypeNS)
	want := []string{
		testZone + "\t300\tIN\tNS\tns1.dns." + testZone,
		testZone + "\t300\tIN\tNS\tns.example.org.",
	}
	if diff := cmp.Diff(want, rrStrings(m.Answer)); diff != "" {
		t.Errorf("NS (-want +got):\n%s", diff)
	}
	want = []string{
		"ns1.dns." + testZone + "\t300\tIN\tAAAA\tfdf5:5351:1dfd::53",
		"ns1.dns." + testZone + "\t300\tIN\tA\t192.0.2.53",
	}
	if diff := cmp.Diff(want, rrStrings(m.Extra)); diff != "" {
		t.Errorf("NS glue (-want +got):\n%s", diff)
	}
	if m := ask("ns1.dns."+testZone, dns.TypeA); len(m.Answer) != 1 || m.Answer[0].(*dns.A).A.String() != "192.0.2.53" {
		t.Errorf("A of the name server: %v", m)
	}
	if m := ask("dns."+testZone, dns.TypeA); m.Rcode != dns.RcodeSuccess || len(m.Answer) != 0 || len(m.Ns) != 1 {
		t.Errorf("empty non-terminal dns.%s: want NODATA, got %v", testZone, m)
	}
	soa := ask(testZone, dns.TypeSOA).Answer[0].(*dns.SOA)
	if soa.Ns != "ns1.dns."+testZone {
		t.Errorf("SOA primary %s, want the first NS", soa.Ns)
	}
	// With EDNS the glue goes before the OPT record.
	w := udpFrom("::1")
	s.ServeDNS(w, query(testZone, dns.TypeNS).SetEdns0(1232, false))
	if m := w.only(t); len(m.Extra) != 3 || m.Extra[2].Header().Rrtype != dns.TypeOPT {
		t.Errorf("NS with EDNS: additional %v", m.Extra)
	}
}

// TestEDNS: the OPT record is echoed with our size and the DO bit, the
// client's size bounds the answer, and an unknown version is BADVERS.
func TestEDNS(t *testing.T) {
	s := newTestServer(t, Config{}, smallTestbed(t))
	w := udpFrom("::1")
	s.ServeDNS(w, query("node-31."+testZone, dns.TypeAAAA).SetEdns0(4096, true))
	m := w.only(t)
	opt := m.IsEdns0()
	if opt == nil || opt.UDPSize() != 1232 || !opt.Do() || opt.Version() != 0 || len(m.Answer) != 1 {
		t.Errorf("EDNS answer: %v", m)
	}
	w = udpFrom("::1")
	s.ServeDNS(w, query("node-31."+testZone, dns.TypeAAAA))
	if m := w.only(t); m.IsEdns0() != nil {
		t.Error("OPT record in the answer to a query without one")
	}
	q := query("node-31."+testZone, dns.TypeAAAA).SetEdns0(1232, false)
	q.IsEdns0().SetVersion(1)
	w = udpFrom("::1")
	s.ServeDNS(w, q)
	m = w.only(t)
	if m.Rcode != dns.RcodeBadVers || m.IsEdns0() == nil || len(m.Answer) != 0 {
		t.Errorf("EDNS version 1: %v", m)
	}
}

// TestTruncation: an answer larger than the client's EDNS buffer is cut
// and flagged TC over UDP, and whole over TCP.
func TestTruncation(t *testing.T) {
	var addrs []netip.Addr
	for i := range 60 {
		addrs = append(addrs, netip.AddrFrom16([16]byte{0xfd, 0xf5, 0x53, 0x51, 0x1d, 0xfd, 15: byte(i + 1)}))
	}
	s := newTestServer(t, Config{NS: []NameServer{{Name: "ns." + testZone, Addrs: addrs}}}, smallTestbed(t))
	q := query("ns."+testZone, dns.TypeAAAA).SetEdns0(512, false)

	w := udpFrom("::1")
	s.ServeDNS(w, q)
	m := w.only(t)
	if !m.Truncated || len(m.Answer) >= 60 || w.sizes[0] > 512 || m.IsEdns0() == nil {
		t.Errorf("UDP with a 512-byte buffer: TC %v, %d answers, %d bytes, OPT %v", m.Truncated, len(m.Answer), w.sizes[0], m.IsEdns0())
	}
	w = udpFrom("::1")
	s.ServeDNS(w, query("ns."+testZone, dns.TypeAAAA).SetEdns0(4096, false))
	if m := w.only(t); !m.Truncated || w.sizes[0] > 1232 {
		t.Errorf("UDP with a 4096-byte buffer: TC %v, %d bytes; want at most our 1232", m.Truncated, w.sizes[0])
	}
	w = tcpFrom("::1")
	s.ServeDNS(w, q)
	if m := w.only(t); m.Truncated || len(m.Answer) != 60 {
		t.Errorf("TCP: TC %v, %d answers, want all 60", m.Truncated, len(m.Answer))
	}
}

// TestAXFR transfers both zones through ServeDNS and checks the records
// and their order: SOA, NS, addresses, SOA.
func TestAXFR(t *testing.T) {
	tb := smallTestbed(t)
	s := newTestServer(t, Config{}, tb)
	transfer := func(zone string) []string {
		t.Helper()
		w := tcpFrom("127.0.0.1")
		s.ServeDNS(w, query(zone, dns.TypeAXFR))
		if w.err != nil || len(w.msgs) == 0 {
			t.Fatalf("AXFR %s: %d messages, %v", zone, len(w.msgs), w.err)
		}
		var rrs []string
		for _, m := range w.msgs {
			if m.Rcode != dns.RcodeSuccess || !m.Authoritative {
				t.Fatalf("AXFR %s: %v", zone, m)
			}
			rrs = append(rrs, rrStrings(m.Answer)...)
		}
		return rrs
	}
	fq := func(rel string) string { return rel + "." + testZone }
	want := []string{
		soa(testZone, 300, s.Zone().Serial()),
		testZone + "\t300\tIN\tNS\tns." + testZone,
		aaaa(fq("server-2"), "fdf5:5351:1dfd::2"),
		aaaa(fq("gateway-3"), "fdf5:5351:1dfd:0:1::3"),
		aaaa(fq("host-7"), "fdf5:5351:1dfd:0:2000::7"),
		aaaa(fq("host-8"), "fdf5:5351:1dfd:0:2000::8"),
		aaaa(fq("host-1250999896491"), "fdf5:5351:1dfd:0:2000:123:4567:89ab"),
		aaaa(fq("node-31"), "fdf5:5351:1dfd:1f::2"),
		aaaa(fq("node-32"), "fdf5:5351:1dfd:20::2"),
		aaaa(fq("node-40"), "fdf5:5351:1dfd:28::2"),
		aaaa(fq("node-41"), "fdf5:5351:1dfd:29::2"),
		aaaa(fq("node-42"), "fdf5:5351:1dfd:2a::2"),
		aaaa(fq("lab-router"), "fdf5:5351:1dfd:20::2"),
		aaaa(fq("main"), "fdf5:5351:1dfd::2"),
		aaaa(fq("old-gw"), "fdf5:5351:1dfd:0:1::3"),
		soa(testZone, 300, s.Zone().Serial()),
	}
	if diff := cmp.Diff(want, transfer(testZone)); diff != "" {
		t.Errorf("forward AXFR (-want +got):\n%s", diff)
	}
	rev := transfer(testReverse)
	if len(rev) != 2+1+10 || rev[0] != soa(testReverse, 300, s.Zone().Serial()) || rev[len(rev)-1] != rev[0] {
		t.Fatalf("reverse AXFR: %d records:\n%s", len(rev), strings.Join(rev, "\n"))
	}
	if want := ptr(ptrName("fdf5:5351:1dfd:1f::2"), fq("node-31")); !strings.Contains(strings.Join(rev, "\n"), want) {
		t.Errorf("reverse AXFR lacks %s", want)
	}
}

// TestAXFRChunks: a large zone goes out in several messages, each well
// under the 64 KiB of a TCP message.
func TestAXFRChunks(t *testing.T) {
	var cands []mesh.Candidate
	for id := uint64(1); id <= 2000; id++ {
		cands = append(cands, cand(t, addressing.KindNode, id, ""))
	}
	s := newTestServer(t, Config{}, build(t, cands...))
	for _, zone := range []string{testZone, testReverse} {
		w := tcpFrom("::1")
		s.ServeDNS(w, query(zone, dns.TypeAXFR))
		n := 0
		for i, m := range w.msgs {
			n += len(m.Answer)
			if w.sizes[i] > dns.MaxMsgSize {
				t.Errorf("%s: message %d is %d bytes", zone, i, w.sizes[i])
			}
		}
		if w.err != nil || len(w.msgs) < 2 || n != 2000+3 {
			t.Errorf("%s: %d messages, %d records, %v; want several messages, 2003 records", zone, len(w.msgs), n, w.err)
		}
	}
}

// TestZoneReservedLabels: a member may not claim a name that clients
// trust (localhost, wpad, isatap...), a service label, a name server's
// first label (in the zone or not), or a name that passes for one of the
// plan's; such names are skipped as reserved, and their members keep
// their plan names.
func TestZoneReservedLabels(t *testing.T) {
	reserved := []string{"localhost", "LocalHost6", "localhost4", "wpad", "ISATAP", "autodiscover",
		"_ldap", "_wpad", "ns", "ns2", "node-031", "server-99999999999", "host-1x", "gateway-3",
		"slice-5", "slice-web", "ip6-localhost"}
	fine := []string{"lab-router", "hostel", "node", "slicer", "wpad-printer", "nsa"}
	var cands []mesh.Candidate
	for i, name := range append(slices.Clone(reserved), fine...) {
		cands = append(cands, cand(t, addressing.KindNode, uint64(100+i), name))
	}
	cfg := Config{Zone: testZone, NS: []NameServer{
		{Name: "ns." + testZone, Addrs: []netip.Addr{netip.MustParseAddr("fdf5:5351:1dfd::53")}},
		{Name: "ns2.example.org."}, // outside the zone: its first label is still reserved
	}}
	z, err := NewZone(cfg, build(t, cands...))
	if err != nil {
		t.Fatal(err)
	}
	var want []SkippedName
	for i, name := range reserved {
		want = append(want, SkippedName{Member: fmt.Sprintf("node_%d", 100+i), Name: name, Reason: SkipReserved})
	}
	slices.SortFunc(want, func(a, b SkippedName) int { return strings.Compare(a.Member, b.Member) })
	if diff := cmp.Diff(want, z.Skipped()); diff != "" {
		t.Errorf("skipped (-want +got):\n%s", diff)
	}
	for _, name := range reserved {
		fqdn := strings.ToLower(name) + "." + testZone
		if i, ok := z.names[fqdn]; ok {
			t.Errorf("%s is served (as %s)", fqdn, z.members[i].addr)
		}
	}
	for _, name := range fine {
		if _, ok := z.names[name+"."+testZone]; !ok {
			t.Errorf("%s.%s is not served", name, testZone)
		}
	}
	// The plan names stay: node-100 is the member that asked for localhost.
	if _, ok := z.names["node-100."+testZone]; !ok {
		t.Errorf("node-100 lost its plan name")
	}
	if got := z.Skipped()[0].String(); !strings.Contains(got, `name "localhost": reserved`) {
		t.Errorf("String() = %s", got)
	}
}
