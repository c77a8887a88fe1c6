package addressing

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"
)

// Entity is what an address belongs to.
//
// For a node, ID is the node id. For a server, host or legacy gateway, ID is
// its 48-bit id. For a sliver, ID is the slice id, Node the node it runs on
// (0 for a private address, which is node-local), Iface its interface
// number, Space which address space the address is in, and Container its
// container number (SpaceIPv4 only).
type Entity struct {
	Kind      Kind
	ID        uint64
	Node      uint16
	Iface     uint8
	Space     Space
	Container uint8
}

// String describes the entity for people: "node 31 (0x1f)", "server 2",
// "sliver of slice 5 on node 31, iface 1 (mgmt)".
func (e Entity) String() string {
	switch e.Kind {
	case KindNode:
		return fmt.Sprintf("node %d (%#04x)", e.ID, e.ID)
	case KindServer, KindHost, KindGateway:
		return fmt.Sprintf("%s %d", e.Kind, e.ID)
	case KindSliver:
		switch e.Space {
		case SpaceIPv4:
			return fmt.Sprintf("sliver container %d (private IPv4)", e.Container)
		case SpacePrivate:
			return fmt.Sprintf("sliver of slice %d (private IPv6)", e.ID)
		}
		return fmt.Sprintf("sliver of slice %d on node %d, iface %d (%s)", e.ID, e.Node, e.Iface, e.Space)
	}
	return "invalid entity"
}

// NotInPlanError reports an address that the plan does not assign.
type NotInPlanError struct {
	Addr   netip.Addr
	Reason string
}

// Error says which address is not in the plan, and why.
func (e *NotInPlanError) Error() string {
	return fmt.Sprintf("%s is not in this plan: %s", e.Addr, e.Reason)
}

func notOurs(a netip.Addr, format string, args ...any) error {
	return &NotInPlanError{Addr: a, Reason: fmt.Sprintf(format, args...)}
}

// Address returns the address of e: the inverse of Reverse.
func (p Plan) Address(e Entity) (netip.Addr, error) {
	switch e.Kind {
	case KindNode:
		if err := CheckNode(e.ID); err != nil {
			return netip.Addr{}, err
		}
		return p.NodeAddr(uint16(e.ID))
	case KindServer:
		return p.ServerAddr(e.ID)
	case KindHost:
		return p.HostAddr(e.ID)
	case KindGateway:
		return p.GatewayAddr(e.ID)
	case KindSliver:
		if e.Space == SpaceIPv4 {
			return p.SliverIPv4(e.Container)
		}
		return p.SliverAddr(e.Space, e.Node, e.ID, e.Iface)
	}
	return netip.Addr{}, fmt.Errorf("address of %s: no such kind", e.Kind)
}

// Reverse tells what an address is: a node, server, host, legacy gateway or
// sliver of this plan, with its ids. Anything else is a *NotInPlanError that
// says why. It accepts addresses of the management, debug and private /48s,
// the private IPv4 /24 (containers 1..125 and the node's .126) and the egress
// IPv4 prefix (nodes).
//
// It is exact where the 2015 controller was not: P::2 is server 2, and every
// server keeps its own id.
func (p Plan) Reverse(a netip.Addr) (Entity, error) {
	a = a.WithZone("")
	if a.Is4In6() {
		a = a.Unmap()
	}
	if a.Is4() {
		return p.reverse4(a)
	}
	b := a.As16()
	w4 := uint16(b[6])<<8 | uint16(b[7])
	w5 := uint16(b[8])<<8 | uint16(b[9])
	var low48 uint64
	for i := 10; i < 16; i++ {
		low48 = low48<<8 | uint64(b[i])
	}
	switch {
	case p.mgmt.Contains(a):
		if w4 == 0 {
			kind := KindInvalid
			switch w5 {
			case blockServer:
				kind = KindServer
			case blockHost:
				kind = KindHost
			case blockGateway:
				kind = KindGateway
			default:
				return Entity{}, notOurs(a, "word 5 of the node-0 block is %#04x; only 0000 (servers), 0001 (legacy gateways) and 2000 (hosts) are assigned", w5)
			}
			if low48 == 0 {
				return Entity{}, notOurs(a, "%s id 0 is never assigned", kind)
			}
			return Entity{Kind: kind, ID: low48}, nil
		}
		if w4 > MaxNode {
			return Entity{}, notOurs(a, "node word %#04x is above the last node id %#04x", w4, MaxNode)
		}
		if w5 == 0 && low48 == 2 {
			return Entity{Kind: KindNode, ID: uint64(w4)}, nil
		}
		if w5>>8 == sliverTag && low48 != 0 {
			return Entity{Kind: KindSliver, ID: low48, Node: w4, Iface: uint8(w5), Space: SpaceMgmt}, nil
		}
		return Entity{}, notOurs(a, "inside node %d's /64, but neither the node (::2) nor a sliver (:10ii:<slice>)", w4)
	case p.debug.Contains(a):
		if w4 >= MinNode && w4 <= MaxNode && w5>>8 == sliverTag && low48 != 0 {
			return Entity{Kind: KindSliver, ID: low48, Node: w4, Iface: uint8(w5), Space: SpaceDebug}, nil
		}
		return Entity{}, notOurs(a, "inside the debug /48 %s, but not a sliver debug address (<node>:10ii:<slice>)", p.debug)
	case p.private.Contains(a):
		if w4 == 0 && w5 == sliverTag<<8 && low48 != 0 {
			return Entity{Kind: KindSliver, ID: low48, Space: SpacePrivate}, nil
		}
		return Entity{}, notOurs(a, "inside the private /48 %s, but not a sliver private address (0:1000:<slice>)", p.private)
	}
	return Entity{}, notOurs(a, "outside the management (%s), debug (%s) and private (%s) prefixes", p.mgmt, p.debug, p.private)
}

func (p Plan) reverse4(a netip.Addr) (Entity, error) {
	if p.egress.Contains(a) {
		off := ipv4ToUint(a) - ipv4ToUint(p.egress.Addr())
		if off < MinNode || off > MaxNode {
			return Entity{}, notOurs(a, "inside the egress prefix %s, but offset %d is not a node id (1..%d)", p.egress, off, MaxNode)
		}
		return Entity{Kind: KindNode, ID: uint64(off)}, nil
	}
	if p.privIPv4.Contains(a) {
		c := a.As4()[3]
		switch {
		case c >= MinContainer && c <= MaxContainer:
			return Entity{Kind: KindSliver, Space: SpaceIPv4, Container: c}, nil
		case c == 126:
			return Entity{}, notOurs(a, "the node's own address on its slivers' private network (node-local, same on every node)")
		}
		return Entity{}, notOurs(a, "inside the private IPv4 %s, but .%d is not a container (1..125)", p.privIPv4, c)
	}
	return Entity{}, notOurs(a, "outside the egress (%s) and private (%s) IPv4 prefixes", p.egress, p.privIPv4)
}

// TincSubnet returns the Subnet a member announces in tinc: a node's /64, a
// server's, host's or legacy gateway's /128.
func (p Plan) TincSubnet(kind Kind, id uint64) (netip.Prefix, error) {
	if kind == KindNode {
		if err := CheckNode(id); err != nil {
			return netip.Prefix{}, err
		}
		return p.NodeSubnet(uint16(id))
	}
	if kind != KindServer && kind != KindHost && kind != KindGateway {
		return netip.Prefix{}, fmt.Errorf("tinc subnet: a %s is not a tinc member", kind)
	}
	a, err := p.Address(Entity{Kind: kind, ID: id})
	if err != nil {
		return netip.Prefix{}, err
	}
	return netip.PrefixFrom(a, 128), nil
}

// MainServerID is the main server's id: it is tinc name "server" and address
// P::2 (confine.md §1).
const MainServerID = 2

// TincName returns a member's tinc name: "server" for the main server (id
// 2), "server_<id>", "node_<id>", "host_<id>" or "gateway_<id>", with the id
// in decimal.
func TincName(kind Kind, id uint64) (string, error) {
	switch kind {
	case KindNode:
		if err := CheckNode(id); err != nil {
			return "", err
		}
	case KindServer:
		if err := CheckID48("server", id); err != nil {
			return "", err
		}
		if id == MainServerID {
			return "server", nil
		}
	case KindHost, KindGateway:
		if err := CheckID48(kind.String(), id); err != nil {
			return "", err
		}
	default:
		return "", fmt.Errorf("tinc name: a %s is not a tinc member", kind)
	}
	return kind.String() + "_" + strconv.FormatUint(id, 10), nil
}

// ParseTincName is the inverse of TincName: "server" is server 2, and
// "server_2" is accepted for it too. Ids are decimal, without leading zeros.
func ParseTincName(name string) (Kind, uint64, error) {
	if name == "server" {
		return KindServer, MainServerID, nil
	}
	prefix, num, ok := strings.Cut(name, "_")
	if !ok {
		return KindInvalid, 0, fmt.Errorf("tinc name %q: want server, server_<id>, node_<id>, host_<id> or gateway_<id>", name)
	}
	kind, err := ParseKind(prefix)
	if err != nil || kind == KindSliver {
		return KindInvalid, 0, fmt.Errorf("tinc name %q: unknown kind %q; want server, node, host or gateway", name, prefix)
	}
	id, err := parseDecimal(num)
	if err != nil {
		return KindInvalid, 0, fmt.Errorf("tinc name %q: %w", name, err)
	}
	if kind == KindNode {
		err = CheckNode(id)
	} else {
		err = CheckID48(kind.String(), id)
	}
	if err != nil {
		return KindInvalid, 0, fmt.Errorf("tinc name %q: %w", name, err)
	}
	return kind, id, nil
}

// DNSLabel returns the DNS name of e relative to the management zone:
// "node-31", "server-2", "host-7", "gateway-3", and for a sliver's management
// interface "slice-5.node-31" (iface 1, the usual one) or
// "slice-5-iface-2.node-31". Debug, private and IPv4 sliver addresses have no
// name.
func DNSLabel(e Entity) (string, error) {
	switch e.Kind {
	case KindNode, KindServer, KindHost, KindGateway:
		if _, err := TincName(e.Kind, e.ID); err != nil {
			return "", err
		}
		return e.Kind.String() + "-" + strconv.FormatUint(e.ID, 10), nil
	case KindSliver:
		if e.Space != SpaceMgmt {
			return "", fmt.Errorf("dns name of %s: only management addresses have names", e)
		}
		if err := CheckNode(uint64(e.Node)); err != nil {
			return "", err
		}
		if err := CheckID48("slice", e.ID); err != nil {
			return "", err
		}
		s := "slice-" + strconv.FormatUint(e.ID, 10)
		if e.Iface != 1 {
			s += "-iface-" + strconv.Itoa(int(e.Iface))
		}
		return s + ".node-" + strconv.Itoa(int(e.Node)), nil
	}
	return "", fmt.Errorf("dns name: no name for a %s", e.Kind)
}

// ParseDNSLabel is the inverse of DNSLabel: name is relative to the zone,
// without a trailing dot, compared case-insensitively.
func ParseDNSLabel(name string) (Entity, error) {
	name = strings.ToLower(name)
	bad := func(why string) (Entity, error) {
		return Entity{}, fmt.Errorf("dns name %q: %s", name, why)
	}
	sliverPart, memberPart, isSliver := strings.Cut(name, ".")
	if !isSliver {
		memberPart = name
	}
	kindStr, num, ok := strings.Cut(memberPart, "-")
	if !ok {
		return bad("want <kind>-<id> such as node-31")
	}
	kind, err := ParseKind(kindStr)
	if err != nil || kind == KindSliver {
		return bad("unknown kind " + strconv.Quote(kindStr))
	}
	id, err := parseDecimal(num)
	if err != nil {
		return bad(err.Error())
	}
	member := Entity{Kind: kind, ID: id}
	if _, err := TincName(kind, id); err != nil {
		return bad(err.Error())
	}
	if !isSliver {
		return member, nil
	}
	if kind != KindNode {
		return bad("slivers live under a node-<id> name")
	}
	rest, ok := strings.CutPrefix(sliverPart, "slice-")
	if !ok {
		return bad("want slice-<id>.node-<id>")
	}
	sliceStr, ifaceStr, hasIface := strings.Cut(rest, "-iface-")
	slice, err := parseDecimal(sliceStr)
	if err != nil {
		return bad(err.Error())
	}
	if err := CheckID48("slice", slice); err != nil {
		return bad(err.Error())
	}
	iface := uint64(1)
	if hasIface {
		if iface, err = parseDecimal(ifaceStr); err != nil || iface > 255 || iface == 1 {
			return bad("iface must be a decimal 0..255 other than 1 (iface 1 has the short name)")
		}
	}
	return Entity{Kind: KindSliver, ID: slice, Node: uint16(id), Iface: uint8(iface), Space: SpaceMgmt}, nil
}

// parseDecimal parses a canonical decimal: digits only, no leading zeros.
func parseDecimal(s string) (uint64, error) {
	if s == "" || (len(s) > 1 && s[0] == '0') || strings.TrimLeft(s, "0123456789") != "" {
		return 0, fmt.Errorf("id %q is not a decimal number without leading zeros", s)
	}
	v, err := strconv.ParseUint(s, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("id %q: too large", s)
	}
	return v, nil
}

const hexDigits = "0123456789abcdef"

// PTRName returns the reverse-DNS owner name of an address, fully qualified:
// nibbles under ip6.arpa. for IPv6, octets under in-addr.arpa. for IPv4.
func PTRName(a netip.Addr) string {
	a = a.Unmap()
	var sb strings.Builder
	if a.Is4() {
		b := a.As4()
		fmt.Fprintf(&sb, "%d.%d.%d.%d.in-addr.arpa.", b[3], b[2], b[1], b[0])
		return sb.String()
	}
	b := a.As16()
	sb.Grow(73)
	for i := 15; i >= 0; i-- {
		sb.WriteByte(hexDigits[b[i]&0xf])
		sb.WriteByte('.')
		sb.WriteByte(hexDigits[b[i]>>4])
		sb.WriteByte('.')
	}
	sb.WriteString("ip6.arpa.")
	return sb.String()
}

// ReverseZone returns the ip6.arpa. zone of an IPv6 prefix whose length is a
// multiple of 4 (the management /48 gives 12 nibbles).
func ReverseZone(p netip.Prefix) (string, error) {
	if !p.Addr().Is6() || p.Bits()%4 != 0 {
		return "", fmt.Errorf("reverse zone of %s: want an IPv6 prefix whose length is a multiple of 4", p)
	}
	full := PTRName(p.Masked().Addr())
	// Each nibble is two characters ("x."); drop the nibbles below the prefix.
	return full[(128-p.Bits())/4*2:], nil
}

// ParsePTRName is the inverse of PTRName for full-length names (32 nibbles
// or 4 octets), case-insensitive, with or without the trailing dot.
func ParsePTRName(name string) (netip.Addr, error) {
	n := strings.TrimSuffix(strings.ToLower(name), ".")
	if rest, ok := strings.CutSuffix(n, ".ip6.arpa"); ok {
		if len(rest) != 63 {
			return netip.Addr{}, fmt.Errorf("ptr name %q: want 32 nibbles under ip6.arpa", name)
		}
		var b [16]byte
		for i := 0; i < 32; i++ {
			c := rest[i*2]
			if i < 31 && rest[i*2+1] != '.' {
				return netip.Addr{}, fmt.Errorf("ptr name %q: nibbles must be separated by dots", name)
			}
			v := strings.IndexByte(hexDigits, c)
			if v < 0 {
				return netip.Addr{}, fmt.Errorf("ptr name %q: %q is not a hex nibble", name, c)
			}
			idx := 15 - i/2
			if i%2 == 0 {
				b[idx] |= byte(v)
			} else {
				b[idx] |= byte(v) << 4
			}
		}
		return netip.AddrFrom16(b), nil
	}
	if rest, ok := strings.CutSuffix(n, ".in-addr.arpa"); ok {
		parts := strings.Split(rest, ".")
		if len(parts) != 4 {
			return netip.Addr{}, fmt.Errorf("ptr name %q: want 4 octets under in-addr.arpa", name)
		}
		var b [4]byte
		for i, s := range parts {
			v, err := parseDecimal(s)
			if err != nil || v > 255 {
				return netip.Addr{}, fmt.Errorf("ptr name %q: octet %q is not 0..255", name, s)
			}
			b[3-i] = byte(v)
		}
		return netip.AddrFrom4(b), nil
	}
	return netip.Addr{}, fmt.Errorf("ptr name %q: not under ip6.arpa or in-addr.arpa", name)
}
