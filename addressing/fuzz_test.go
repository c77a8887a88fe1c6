package addressing

import (
	"errors"
	"net/netip"
	"testing"
)

// FuzzRoundTrip: id → address → reverse gives the same entity, and the
// tinc name and DNS label round-trip too.
func FuzzRoundTrip(f *testing.F) {
	f.Add(uint8(1), uint64(31), uint16(0), uint8(0), uint8(0))
	f.Add(uint8(2), uint64(2), uint16(0), uint8(0), uint8(0))
	f.Add(uint8(3), uint64(0x123456789ab), uint16(0), uint8(0), uint8(0))
	f.Add(uint8(5), uint64(5), uint16(31), uint8(1), uint8(0))
	f.Add(uint8(5), uint64(5), uint16(31), uint8(4), uint8(1))
	f.Fuzz(func(t *testing.T, kind uint8, id uint64, node uint16, iface, space uint8) {
		e := Entity{Kind: Kind(kind % 6), ID: id}
		if e.Kind == KindSliver {
			e.Node, e.Iface, e.Space = node, iface, Space(space%4)
			switch e.Space {
			case SpacePrivate:
				e.Node, e.Iface = 0, 0
			case SpaceIPv4:
				e.Container, e.ID, e.Node, e.Iface = uint8(id), 0, 0, 0
			}
		}
		a, err := clab.Address(e)
		if err != nil {
			return // out of range: rejected, fine
		}
		back, err := clab.Reverse(a)
		if err != nil {
			t.Fatalf("Address(%+v) = %s, but Reverse: %v", e, a, err)
		}
		if back != e {
			t.Fatalf("round trip %+v -> %s -> %+v", e, a, back)
		}
		if e.Kind == KindNode {
			eg, err := clab.EgressIPv4(uint16(e.ID))
			if err != nil {
				t.Fatal(err)
			}
			if b, err := clab.Reverse(eg); err != nil || b != e {
				t.Fatalf("egress round trip %+v -> %s -> %+v, %v", e, eg, b, err)
			}
		}
		if e.Kind != KindSliver {
			name, err := TincName(e.Kind, e.ID)
			if err != nil {
				t.Fatalf("TincName(%+v): %v", e, err)
			}
			k, id, err := ParseTincName(name)
			if err != nil || k != e.Kind || id != e.ID {
				t.Fatalf("tinc name round trip %+v -> %q -> %s %d %v", e, name, k, id, err)
			}
		}
		if label, err := DNSLabel(e); err == nil {
			if b, err := ParseDNSLabel(label); err != nil || b != e {
				t.Fatalf("dns round trip %+v -> %q -> %+v %v", e, label, b, err)
			}
		}
		if b, err := ParsePTRName(PTRName(a)); err != nil || b != a {
			t.Fatalf("ptr round trip %s -> %+v %v", a, b, err)
		}
	})
}

// FuzzReverse: every address either reverses to an entity that maps back to
// it, or is reported as not ours; never a panic.
func FuzzReverse(f *testing.F) {
	for _, s := range []string{"fdf5:5351:1dfd::2", "fdf5:5351:1dfd:1f::2", "fdf5:5351:1dfd:1f:1001::5",
		"fd5f:eee5:e6ad:1f:1004::5", "fdbd:e804:6aa9:0:1000::1", "100.64.0.31", "192.168.157.3", "::", "2001:db8::1"} {
		a := netip.MustParseAddr(s)
		b := a.As16()
		f.Add(b[:])
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		var a netip.Addr
		switch len(raw) {
		case 4:
			a = netip.AddrFrom4([4]byte(raw))
		case 16:
			a = netip.AddrFrom16([16]byte(raw))
		default:
			return
		}
		e, err := clab.Reverse(a)
		if err != nil {
			var nip *NotInPlanError
			if !errors.As(err, &nip) {
				t.Fatalf("Reverse(%s): error %v is not a *NotInPlanError", a, err)
			}
			return
		}
		back, err := clab.Address(e)
		if err != nil {
			t.Fatalf("Reverse(%s) = %+v, but Address: %v", a, e, err)
		}
		if e.Kind == KindNode && a.Unmap().Is4() {
			back, _ = clab.EgressIPv4(uint16(e.ID))
		}
		if back != a.Unmap() {
			t.Fatalf("Reverse(%s) = %+v -> %s", a, e, back)
		}
	})
}

// FuzzParse: the id and name parsers never panic, and what they accept is
// in range.
func FuzzParse(f *testing.F) {
	for _, s := range []string{"31", "0x1f", "001f", "node_31", "server", "slice-5.node-31", "fff0", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if n, err := ParseNodeID(s); err == nil && CheckNode(uint64(n)) != nil {
			t.Fatalf("ParseNodeID(%q) = %d out of range", s, n)
		}
		if id, err := ParseID48("host", s); err == nil && CheckID48("host", id) != nil {
			t.Fatalf("ParseID48(%q) = %d out of range", s, id)
		}
		if k, id, err := ParseTincName(s); err == nil {
			if name, err := TincName(k, id); err != nil || (name != s && s != "server_2") {
				t.Fatalf("ParseTincName(%q) = %s %d, renders %q %v", s, k, id, name, err)
			}
		}
		if e, err := ParseDNSLabel(s); err == nil {
			if _, err := DNSLabel(e); err != nil {
				t.Fatalf("ParseDNSLabel(%q) = %+v, DNSLabel: %v", s, e, err)
			}
		}
		_, _ = ParsePTRName(s)
		_, _ = ParsePrefix48(s)
	})
}
