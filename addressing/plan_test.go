package addressing

import (
	"errors"
	"net/netip"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

var (
	clab = Default()
	vct  = mustPlan(netip.MustParsePrefix("fd65:fc41:c50f::/48"))
)

func mustPlan(p netip.Prefix) Plan {
	pl, err := New(p)
	if err != nil {
		panic(err)
	}
	return pl
}

// The vectors of confine.md §2, and more.
func TestForwardVectors(t *testing.T) {
	tests := []struct {
		name string
		plan Plan
		e    Entity
		want string
	}{
		{"node 31", clab, Entity{Kind: KindNode, ID: 31}, "fdf5:5351:1dfd:1f::2"},
		{"node 1", clab, Entity{Kind: KindNode, ID: 1}, "fdf5:5351:1dfd:1::2"},
		{"node max", clab, Entity{Kind: KindNode, ID: 0xfff0}, "fdf5:5351:1dfd:fff0::2"},
		{"server 2 is P::2", clab, Entity{Kind: KindServer, ID: 2}, "fdf5:5351:1dfd::2"},
		{"server 3", clab, Entity{Kind: KindServer, ID: 3}, "fdf5:5351:1dfd::3"},
		{"server 48-bit", clab, Entity{Kind: KindServer, ID: 0xffffffffffff}, "fdf5:5351:1dfd::ffff:ffff:ffff"},
		{"host 7", clab, Entity{Kind: KindHost, ID: 7}, "fdf5:5351:1dfd:0:2000::7"},
		{"host 0x123456789ab", clab, Entity{Kind: KindHost, ID: 0x123456789ab}, "fdf5:5351:1dfd:0:2000:123:4567:89ab"},
		{"legacy gateway 4", clab, Entity{Kind: KindGateway, ID: 4}, "fdf5:5351:1dfd:0:1::4"},
		{"sliver slice 5 node 31 iface 1", clab, Entity{Kind: KindSliver, ID: 5, Node: 31, Iface: 1}, "fdf5:5351:1dfd:1f:1001::5"},
		{"sliver debug iface 4", clab, Entity{Kind: KindSliver, ID: 5, Node: 31, Iface: 4, Space: SpaceDebug}, "fd5f:eee5:e6ad:1f:1004::5"},
		{"sliver private", clab, Entity{Kind: KindSliver, ID: 0xabcdef, Space: SpacePrivate}, "fdbd:e804:6aa9:0:1000:0:ab:cdef"},
		{"sliver ipv4 container 3", clab, Entity{Kind: KindSliver, Space: SpaceIPv4, Container: 3}, "192.168.157.3"},
		{"vct node 0x1f", vct, Entity{Kind: KindNode, ID: 0x1f}, "fd65:fc41:c50f:1f::2"},
		{"vct server 2", vct, Entity{Kind: KindServer, ID: 2}, "fd65:fc41:c50f::2"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := tt.plan.Address(tt.e)
			if err != nil {
				t.Fatalf("Address(%v): %v", tt.e, err)
			}
			if got.String() != tt.want {
				t.Errorf("Address(%v) = %s, want %s", tt.e, got, tt.want)
			}
			back, err := tt.plan.Reverse(got)
			if tt.e.Kind == KindSliver && tt.e.Space == SpacePrivate {
				tt.e.Node = 0 // node-local: not in the address
			}
			if err != nil {
				t.Fatalf("Reverse(%s): %v", got, err)
			}
			if diff := cmp.Diff(tt.e, back); diff != "" {
				t.Errorf("Reverse(%s) mismatch (-want +got):\n%s", got, diff)
			}
		})
	}
}

func TestSubnetsAndNames(t *testing.T) {
	sub, err := clab.TincSubnet(KindNode, 31)
	if err != nil || sub.String() != "fdf5:5351:1dfd:1f::/64" {
		t.Errorf("node 31 subnet = %v, %v; want fdf5:5351:1dfd:1f::/64", sub, err)
	}
	sub, err = clab.TincSubnet(KindServer, 2)
	if err != nil || sub.String() != "fdf5:5351:1dfd::2/128" {
		t.Errorf("server 2 subnet = %v, %v; want fdf5:5351:1dfd::2/128", sub, err)
	}
	if _, err := clab.TincSubnet(KindSliver, 2); err == nil {
		t.Error("sliver subnet: want error")
	}
	for _, tt := range []struct {
		kind Kind
		id   uint64
		tinc string
		dns  string
	}{
		{KindServer, 2, "server", "server-2"},
		{KindServer, 3, "server_3", "server-3"},
		{KindNode, 31, "node_31", "node-31"},
		{KindNode, 0xfff0, "node_65520", "node-65520"},
		{KindHost, 7, "host_7", "host-7"},
		{KindHost, 0x123456789ab, "host_1250999896491", "host-1250999896491"},
		{KindGateway, 1, "gateway_1", "gateway-1"},
	} {
		name, err := TincName(tt.kind, tt.id)
		if err != nil || name != tt.tinc {
			t.Errorf("TincName(%s, %d) = %q, %v; want %q", tt.kind, tt.id, name, err, tt.tinc)
		}
		k, id, err := ParseTincName(tt.tinc)
		if err != nil || k != tt.kind || id != tt.id {
			t.Errorf("ParseTincName(%q) = %s %d %v; want %s %d", tt.tinc, k, id, err, tt.kind, tt.id)
		}
		label, err := DNSLabel(Entity{Kind: tt.kind, ID: tt.id})
		if err != nil || label != tt.dns {
			t.Errorf("DNSLabel(%s %d) = %q, %v; want %q", tt.kind, tt.id, label, err, tt.dns)
		}
		e, err := ParseDNSLabel(strings.ToUpper(tt.dns))
		if err != nil || e != (Entity{Kind: tt.kind, ID: tt.id}) {
			t.Errorf("ParseDNSLabel(%q) = %v, %v", tt.dns, e, err)
		}
	}
	// server_2 is accepted for the main server, but never emitted.
	if k, id, err := ParseTincName("server_2"); err != nil || k != KindServer || id != 2 {
		t.Errorf("ParseTincName(server_2) = %s %d %v", k, id, err)
	}
	sl := Entity{Kind: KindSliver, ID: 5, Node: 31, Iface: 1}
	if l, _ := DNSLabel(sl); l != "slice-5.node-31" {
		t.Errorf("sliver label = %q", l)
	}
	sl.Iface = 2
	if l, _ := DNSLabel(sl); l != "slice-5-iface-2.node-31" {
		t.Errorf("sliver label iface 2 = %q", l)
	}
	if e, err := ParseDNSLabel("slice-5-iface-2.node-31"); err != nil || e != sl {
		t.Errorf("ParseDNSLabel sliver = %v, %v", e, err)
	}
}

func TestTincNameErrors(t *testing.T) {
	for _, name := range []string{"", "node", "node_", "node_0", "node_65521", "node_031", "node_-1", "../x",
		"host_0", "sliver_3", "server_281474976710656", "node_1x", "Node_1", "client_3", "node_99999999999999999999999"} {
		if k, id, err := ParseTincName(name); err == nil {
			t.Errorf("ParseTincName(%q) = %s %d, want error", name, k, id)
		}
	}
	if _, err := TincName(KindNode, 0); err == nil {
		t.Error("TincName(node 0): want error")
	}
	if _, err := TincName(KindSliver, 3); err == nil {
		t.Error("TincName(sliver): want error")
	}
}

func TestReverseExact(t *testing.T) {
	tests := []struct {
		addr string
		want Entity
	}{
		// The 2015 controller read P::2 as node 0 and gave every server id 1.
		{"fdf5:5351:1dfd::2", Entity{Kind: KindServer, ID: 2}},
		{"fdf5:5351:1dfd::9", Entity{Kind: KindServer, ID: 9}},
		{"fdf5:5351:1dfd::1:0:0", Entity{Kind: KindServer, ID: 1 << 32}},
		{"FDF5:5351:1DFD:1F::2", Entity{Kind: KindNode, ID: 31}},
		{"fdf5:5351:1dfd:1f:1001::5", Entity{Kind: KindSliver, ID: 5, Node: 31, Iface: 1}},
		{"fdf5:5351:1dfd:1f:10ff:ffff:ffff:ffff", Entity{Kind: KindSliver, ID: MaxID48, Node: 31, Iface: 255}},
		{"fd5f:eee5:e6ad:fff0:1004::1", Entity{Kind: KindSliver, ID: 1, Node: 0xfff0, Iface: 4, Space: SpaceDebug}},
		{"fdf5:5351:1dfd:0:2000::7", Entity{Kind: KindHost, ID: 7}},
		{"fdf5:5351:1dfd:0:1::1", Entity{Kind: KindGateway, ID: 1}},
		{"::ffff:100.64.0.31", Entity{Kind: KindNode, ID: 31}},
		{"100.64.255.240", Entity{Kind: KindNode, ID: 0xfff0}},
		{"100.64.1.0", Entity{Kind: KindNode, ID: 256}},
		{"192.168.157.125", Entity{Kind: KindSliver, Space: SpaceIPv4, Container: 125}},
		{"fdf5:5351:1dfd:1f::2%eth0", Entity{Kind: KindNode, ID: 31}},
	}
	for _, tt := range tests {
		got, err := clab.Reverse(netip.MustParseAddr(tt.addr))
		if err != nil {
			t.Errorf("Reverse(%s): %v", tt.addr, err)
			continue
		}
		if diff := cmp.Diff(tt.want, got); diff != "" {
			t.Errorf("Reverse(%s) (-want +got):\n%s", tt.addr, diff)
		}
	}
}

func TestReverseNotOurs(t *testing.T) {
	tests := []struct{ addr, why string }{
		{"fdf5:5351:1dfd::", "server id 0 is never assigned"},
		{"fdf5:5351:1dfd:0:2000::", "host id 0"},
		{"fdf5:5351:1dfd:0:3::1", "only 0000 (servers), 0001 (legacy gateways) and 2000 (hosts)"},
		{"fdf5:5351:1dfd:fff1::2", "above the last node id"},
		{"fdf5:5351:1dfd:ffff::2", "above the last node id"},
		{"fdf5:5351:1dfd:1f::1", "inside node 31's /64"},
		{"fdf5:5351:1dfd:1f::", "inside node 31's /64"},
		{"fdf5:5351:1dfd:1f:1001::", "inside node 31's /64"},
		{"fdf5:5351:1dfd:1f:2001::5", "inside node 31's /64"},
		{"fdf5:5351:1dfe::2", "outside the management"},
		{"2001:db8::1", "outside the management"},
		{"fd5f:eee5:e6ad::2", "not a sliver debug address"},
		{"fdbd:e804:6aa9:1:1000::1", "not a sliver private address"},
		{"100.64.0.0", "not a node id"},
		{"100.64.255.241", "not a node id"},
		{"192.168.157.126", "the node's own address"},
		{"192.168.157.0", "not a container"},
		{"192.168.157.200", "not a container"},
		{"198.51.100.1", "outside the egress"},
	}
	for _, tt := range tests {
		_, err := clab.Reverse(netip.MustParseAddr(tt.addr))
		var nip *NotInPlanError
		if !errors.As(err, &nip) {
			t.Errorf("Reverse(%s) error = %v, want *NotInPlanError", tt.addr, err)
			continue
		}
		if !strings.Contains(err.Error(), tt.why) || !strings.Contains(err.Error(), "not in this plan") {
			t.Errorf("Reverse(%s) error = %q, want it to contain %q", tt.addr, err, tt.why)
		}
	}
}

func TestEgressAndPrivate(t *testing.T) {
	for _, tt := range []struct {
		node uint16
		want string
	}{{1, "100.64.0.1"}, {31, "100.64.0.31"}, {256, "100.64.1.0"}, {0x1234, "100.64.18.52"}, {0xfff0, "100.64.255.240"}} {
		got, err := clab.EgressIPv4(tt.node)
		if err != nil || got.String() != tt.want {
			t.Errorf("EgressIPv4(%d) = %v, %v; want %s", tt.node, got, err, tt.want)
		}
	}
	p, err := NewFromConfig(Config{Egress: netip.MustParsePrefix("10.128.0.0/9")})
	if err != nil {
		t.Fatal(err)
	}
	if got, _ := p.EgressIPv4(0x101); got.String() != "10.128.1.1" {
		t.Errorf("egress in /9 = %s", got)
	}
	if got := clab.NodePrivateIPv4(); got.String() != "192.168.157.126/25" {
		t.Errorf("NodePrivateIPv4 = %s", got)
	}
	if got := clab.SliverIPv4Prefix(); got.String() != "192.168.157.0/25" {
		t.Errorf("SliverIPv4Prefix = %s", got)
	}
	if _, err := clab.SliverIPv4(126); err == nil || !strings.Contains(err.Error(), "1..125") {
		t.Errorf("SliverIPv4(126) error = %v", err)
	}
	mac, err := SliverMAC([2]byte{0x06, 0xab}, 0x1f, 1, 0)
	if err != nil || FormatMAC(mac) != "06:ab:00:1f:01:00" {
		t.Errorf("SliverMAC = %s, %v", FormatMAC(mac), err)
	}
	if pfx, err := ParseMACPrefix16("06:AB"); err != nil || pfx != [2]byte{6, 0xab} {
		t.Errorf("ParseMACPrefix16 = %v, %v", pfx, err)
	}
	if _, err := ParseMACPrefix16("06ab"); err == nil {
		t.Error("ParseMACPrefix16(06ab): want error")
	}
}

func TestPlanValidation(t *testing.T) {
	tests := []struct {
		name string
		c    Config
		want string
	}{
		{"mgmt /64", Config{Mgmt: netip.MustParsePrefix("fdf5:5351:1dfd::/64")}, "length /64; want a /48"},
		{"mgmt ipv4", Config{Mgmt: netip.MustParsePrefix("10.0.0.0/8")}, "not an IPv6 prefix"},
		{"mgmt host bits", Config{Mgmt: netip.MustParsePrefix("fdf5:5351:1dfd:1::/48")}, "did you mean fdf5:5351:1dfd::/48"},
		{"same as debug", Config{Mgmt: DefaultDebugPrefix()}, "three different /48s"},
		{"priv ipv4 /16", Config{PrivateIPv4: netip.MustParsePrefix("192.168.0.0/16")}, "want a masked IPv4 /24"},
		{"egress /17", Config{Egress: netip.MustParsePrefix("100.64.0.0/17")}, "to hold every node id up to 0xfff0"},
		{"egress ipv6", Config{Egress: netip.MustParsePrefix("2001:db8::/32")}, "egress IPv4 prefix 2001:db8::/32"},
	}
	for _, tt := range tests {
		_, err := NewFromConfig(tt.c)
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: error = %v, want it to contain %q", tt.name, err, tt.want)
		}
	}
	for _, s := range []string{"fdf5:5351:1dfd::/48", "fdf5:5351:1dfd::", "fdf5:5351:1dfd", "FDF5:5351:1DFD"} {
		p, err := ParsePrefix48(s)
		if err != nil || p != DefaultMgmtPrefix() {
			t.Errorf("ParsePrefix48(%q) = %v, %v", s, p, err)
		}
	}
	if _, err := ParsePrefix48("fdf5:5351"); err != nil {
		// "fdf5:5351::" parses as an address; the /48 check happens in New.
		t.Errorf("ParsePrefix48(fdf5:5351): %v", err)
	}
	if _, err := ParsePrefix48("nonsense"); err == nil {
		t.Error("ParsePrefix48(nonsense): want error")
	}
}

func TestParseIDs(t *testing.T) {
	nodes := []struct {
		in   string
		want uint16
		err  string
	}{
		{"31", 31, ""},
		{"0x1f", 31, ""},
		{"0X1F", 31, ""},
		{"001f", 31, ""},
		{"001F", 31, ""},
		{"0031", 0x31, ""},
		{"abcd", 0xabcd, ""},
		{"1234", 1234, ""},
		{"65520", 65520, ""},
		{"fff0", 0xfff0, ""},
		{" 7 ", 7, ""},
		{"0", 0, "node id 0 (0x0) out of range: allowed 1..65520 (0x1..0xfff0)"},
		{"0000", 0, "out of range: allowed 1..65520"},
		{"65521", 0, "out of range"},
		{"fff1", 0, "out of range"},
		{"0x10000", 0, "out of range"},
		{"1f", 0, "firmware's 4 hex digits"},
		{"-1", 0, "not a decimal"},
		{"", 0, "empty"},
		{"99999999999999999999", 0, "larger than 64 bits"},
	}
	for _, tt := range nodes {
		got, err := ParseNodeID(tt.in)
		if tt.err != "" {
			if err == nil || !strings.Contains(err.Error(), tt.err) {
				t.Errorf("ParseNodeID(%q) = %d, %v; want error containing %q", tt.in, got, err, tt.err)
			}
			continue
		}
		if err != nil || got != tt.want {
			t.Errorf("ParseNodeID(%q) = %d, %v; want %d", tt.in, got, err, tt.want)
		}
	}
	if v, err := ParseFirmwareNodeID("1234"); err != nil || v != 0x1234 {
		t.Errorf("ParseFirmwareNodeID(1234) = %d, %v; the firmware form is always hex", v, err)
	}
	if _, err := ParseFirmwareNodeID("31"); err == nil {
		t.Error("ParseFirmwareNodeID(31): want error")
	}
	if FormatFirmwareNodeID(31) != "001f" {
		t.Error("FormatFirmwareNodeID(31)")
	}
	ids := []struct {
		in   string
		want uint64
		err  string
	}{
		{"2", 2, ""},
		{"0x123456789ab", 0x123456789ab, ""},
		{"281474976710655", MaxID48, ""},
		{"0xffffffffffff", MaxID48, ""},
		{"281474976710656", 0, "allowed 1..281474976710655"},
		{"0", 0, "server id 0 (0x0) out of range"},
		{"1e3", 0, "not a decimal"},
	}
	for _, tt := range ids {
		got, err := ParseID48("server", tt.in)
		if tt.err != "" {
			if err == nil || !strings.Contains(err.Error(), tt.err) {
				t.Errorf("ParseID48(%q) = %d, %v; want error containing %q", tt.in, got, err, tt.err)
			}
			continue
		}
		if err != nil || got != tt.want {
			t.Errorf("ParseID48(%q) = %d, %v; want %d", tt.in, got, err, tt.want)
		}
	}
	if v, err := ParseIface("4"); err != nil || v != 4 {
		t.Errorf("ParseIface(4) = %d, %v", v, err)
	}
	if _, err := ParseIface("256"); err == nil || !strings.Contains(err.Error(), "0..255") {
		t.Errorf("ParseIface(256) = %v", err)
	}
	if _, err := ParseContainer("126"); err == nil || !strings.Contains(err.Error(), "1..125") {
		t.Errorf("ParseContainer(126) = %v", err)
	}
}

func TestPTR(t *testing.T) {
	a := netip.MustParseAddr("fdf5:5351:1dfd:1f::2")
	want := "2.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.f.1.0.0.d.f.d.1.1.5.3.5.5.f.d.f.ip6.arpa."
	if got := PTRName(a); got != want {
		t.Errorf("PTRName = %s", got)
	}
	if back, err := ParsePTRName(strings.ToUpper(want)); err != nil || back != a {
		t.Errorf("ParsePTRName = %v, %v", back, err)
	}
	if got := PTRName(netip.MustParseAddr("100.64.0.31")); got != "31.0.64.100.in-addr.arpa." {
		t.Errorf("PTRName v4 = %s", got)
	}
	if back, err := ParsePTRName("31.0.64.100.in-addr.arpa"); err != nil || back.String() != "100.64.0.31" {
		t.Errorf("ParsePTRName v4 = %v, %v", back, err)
	}
	z, err := ReverseZone(DefaultMgmtPrefix())
	if err != nil || z != "d.f.d.1.1.5.3.5.5.f.d.f.ip6.arpa." {
		t.Errorf("ReverseZone = %q, %v", z, err)
	}
	if _, err := ReverseZone(netip.MustParsePrefix("fdf5::/47")); err == nil {
		t.Error("ReverseZone(/47): want error")
	}
	for _, bad := range []string{"1.2.3.in-addr.arpa", "x.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.f.1.0.0.d.f.d.1.1.5.3.5.5.f.d.f.ip6.arpa.", "example.com", "256.1.1.1.in-addr.arpa"} {
		if _, err := ParsePTRName(bad); err == nil {
			t.Errorf("ParsePTRName(%q): want error", bad)
		}
	}
}

// Properties: node subnets are disjoint and inside the /48; the node-0
// block is disjoint from every node subnet; no two kinds share an address.
func TestProperties(t *testing.T) {
	seen := map[netip.Addr]Entity{}
	add := func(e Entity) {
		a, err := clab.Address(e)
		if err != nil {
			t.Fatalf("Address(%v): %v", e, err)
		}
		if prev, ok := seen[a]; ok {
			t.Fatalf("%v and %v share %s", prev, e, a)
		}
		seen[a] = e
	}
	var prev netip.Prefix
	for n := uint16(MinNode); n <= MaxNode; n++ {
		sub, err := clab.NodeSubnet(n)
		if err != nil {
			t.Fatal(err)
		}
		if !clab.Mgmt().Overlaps(sub) || sub.Bits() != 64 || !clab.Mgmt().Contains(sub.Addr()) {
			t.Fatalf("node %d subnet %s not inside %s", n, sub, clab.Mgmt())
		}
		if prev.IsValid() && prev.Overlaps(sub) {
			t.Fatalf("node subnets %s and %s overlap", prev, sub)
		}
		a, _ := clab.NodeAddr(n)
		if !sub.Contains(a) {
			t.Fatalf("node %d address %s outside its subnet %s", n, a, sub)
		}
		for _, id := range []uint64{1, 2, 0xffff, MaxID48} {
			s, _ := clab.SliverAddr(SpaceMgmt, n, id, 1)
			if !sub.Contains(s) {
				t.Fatalf("sliver %s outside node subnet %s", s, sub)
			}
		}
		prev = sub
		if n%97 == 1 || n == MaxNode {
			add(Entity{Kind: KindNode, ID: uint64(n)})
			add(Entity{Kind: KindSliver, ID: 2, Node: n, Iface: 1})
		}
	}
	block := netip.PrefixFrom(clab.Mgmt().Addr(), 64)
	for _, id := range []uint64{1, 2, 3, 0x10000, MaxID48} {
		for _, k := range []Kind{KindServer, KindHost, KindGateway} {
			add(Entity{Kind: k, ID: id})
			a, _ := clab.Address(Entity{Kind: k, ID: id})
			if !block.Contains(a) {
				t.Fatalf("%s %d at %s outside the node-0 block", k, id, a)
			}
		}
	}
}
