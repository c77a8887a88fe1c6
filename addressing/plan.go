// Package addressing is the CONFINE management network's addressing plan:
// node, server, host, legacy gateway and sliver ids to IPv6 and IPv4
// addresses, tinc Subnets, tinc names and DNS labels, and every one of those
// back to the entity it belongs to.
//
// The plan is exact and invertible: any address inside the plan's prefixes
// maps to one entity, and that entity maps back to the same address. Where
// the 2015 controller's reverse function was wrong (it read P::2 as node 0 and
// gave every server id 1) this package is right, and its tests say so.
//
// The package is pure: it imports only the standard library, never logs,
// never touches the OS, and every Plan is an immutable value safe for
// concurrent use. It does not know about the
// registry, tinc files or DNS servers; those build on it.
package addressing

import (
	"errors"
	"fmt"
	"net/netip"
)

// The defaults of the plan (confine.md §2, design.md "Internet egress"),
// unexported so that nobody can change them: read them with the functions
// below.
var (
	defaultMgmt     = netip.MustParsePrefix("fdf5:5351:1dfd::/48")
	defaultDebug    = netip.MustParsePrefix("fd5f:eee5:e6ad::/48")
	defaultPrivate  = netip.MustParsePrefix("fdbd:e804:6aa9::/48")
	defaultPrivIPv4 = netip.MustParsePrefix("192.168.157.0/24")
	defaultEgress   = netip.MustParsePrefix("100.64.0.0/16")
)

// DefaultMgmtPrefix returns Community-Lab's management /48.
func DefaultMgmtPrefix() netip.Prefix { return defaultMgmt }

// DefaultDebugPrefix returns the /48 of slivers' debug interfaces.
func DefaultDebugPrefix() netip.Prefix { return defaultDebug }

// DefaultPrivatePrefix returns the /48 of slivers' node-local private IPv6
// addresses.
func DefaultPrivatePrefix() netip.Prefix { return defaultPrivate }

// DefaultPrivateIPv4 returns the node-local /24 of slivers' private IPv4
// addresses; the same on every node.
func DefaultPrivateIPv4() netip.Prefix { return defaultPrivIPv4 }

// DefaultEgressPrefix returns where node egress addresses live: node N is
// 100.64.(N>>8).(N&255), inside RFC 6598 shared address space.
func DefaultEgressPrefix() netip.Prefix { return defaultEgress }

// Kind is what an address or a tinc member is.
type Kind uint8

// The kinds of entity in the plan.
const (
	KindInvalid Kind = iota
	KindNode
	KindServer
	KindHost
	KindGateway // legacy gateways, removed from the controller in 2014: parsed, never emitted for new members
	KindSliver
)

var kindNames = [...]string{"invalid", "node", "server", "host", "gateway", "sliver"}

// String returns the kind's name: "node", "server", "host", "gateway",
// "sliver".
func (k Kind) String() string {
	if int(k) < len(kindNames) {
		return kindNames[k]
	}
	return fmt.Sprintf("kind(%d)", uint8(k))
}

// ParseKind parses a kind name as String writes it.
func ParseKind(s string) (Kind, error) {
	for i, n := range kindNames {
		if i > 0 && n == s {
			return Kind(i), nil
		}
	}
	return KindInvalid, fmt.Errorf("kind %q: want node, server, host, gateway or sliver", s)
}

// word5 values of the node-0 block (the first word after the /48 and the
// node word).
const (
	blockServer  = 0x0000
	blockGateway = 0x0001
	blockHost    = 0x2000
	// sliverTag is the high byte of word 5 in a sliver address: 0x10ii.
	sliverTag = 0x10
)

// Space says which /48 (or IPv4 range) a sliver address lives in.
type Space uint8

// The address spaces of a sliver.
const (
	SpaceMgmt    Space = iota // the management /48, routed over tinc
	SpaceDebug                // the debug /48
	SpacePrivate              // the node-local private /48
	SpaceIPv4                 // the node-local private IPv4 /24
)

var spaceNames = [...]string{"mgmt", "debug", "private", "ipv4"}

// String returns the space's name: "mgmt", "debug", "private", "ipv4".
func (s Space) String() string {
	if int(s) < len(spaceNames) {
		return spaceNames[s]
	}
	return fmt.Sprintf("space(%d)", uint8(s))
}

// Config holds the prefixes a Plan is built from. A zero field takes its
// documented default.
type Config struct {
	Mgmt        netip.Prefix // a /48; default DefaultMgmtPrefix
	Debug       netip.Prefix // a /48; default DefaultDebugPrefix
	Private     netip.Prefix // a /48; default DefaultPrivatePrefix
	PrivateIPv4 netip.Prefix // an IPv4 /24; default DefaultPrivateIPv4
	Egress      netip.Prefix // an IPv4 prefix of /16 or shorter; default DefaultEgressPrefix
}

// Plan is a validated addressing plan. The zero Plan is not valid; build one
// with New, NewFromConfig or Default.
type Plan struct {
	mgmt, debug, private netip.Prefix
	privIPv4, egress     netip.Prefix
}

// Default returns the plan with every default: Community-Lab's prefixes.
func Default() Plan {
	p, err := NewFromConfig(Config{})
	if err != nil {
		panic(err) // the defaults are constants; a failure is a bug here
	}
	return p
}

// New returns the plan for a management /48 with every other prefix at its
// default.
func New(mgmt netip.Prefix) (Plan, error) { return NewFromConfig(Config{Mgmt: mgmt}) }

// ParsePrefix48 parses a management, debug or private /48 as users and the
// firmware write it: "fdf5:5351:1dfd::/48", "fdf5:5351:1dfd::" or the UCI
// form "fdf5:5351:1dfd" (three words, no length).
func ParsePrefix48(s string) (netip.Prefix, error) {
	if p, err := netip.ParsePrefix(s); err == nil {
		return p, nil
	}
	if a, err := netip.ParseAddr(s); err == nil {
		return netip.PrefixFrom(a, 48), nil
	}
	if a, err := netip.ParseAddr(s + "::"); err == nil {
		return netip.PrefixFrom(a, 48), nil
	}
	return netip.Prefix{}, fmt.Errorf("prefix %q: not an IPv6 /48 (e.g. fdf5:5351:1dfd::/48 or fdf5:5351:1dfd)", s)
}

func check48(what string, p netip.Prefix) error {
	if !p.IsValid() || !p.Addr().Is6() || p.Addr().Is4In6() {
		return fmt.Errorf("%s prefix %s: not an IPv6 prefix; want a /48", what, p)
	}
	if p.Bits() != 48 {
		return fmt.Errorf("%s prefix %s: length /%d; want a /48", what, p, p.Bits())
	}
	if p.Addr().Zone() != "" {
		return fmt.Errorf("%s prefix %s: has a zone; want a plain /48", what, p)
	}
	if p.Masked() != p {
		return fmt.Errorf("%s prefix %s: host bits set; did you mean %s?", what, p, p.Masked())
	}
	return nil
}

// NewFromConfig validates c and returns the plan. Errors name the bad value
// and what is allowed.
func NewFromConfig(c Config) (Plan, error) {
	if !c.Mgmt.IsValid() {
		c.Mgmt = defaultMgmt
	}
	if !c.Debug.IsValid() {
		c.Debug = defaultDebug
	}
	if !c.Private.IsValid() {
		c.Private = defaultPrivate
	}
	if !c.PrivateIPv4.IsValid() {
		c.PrivateIPv4 = defaultPrivIPv4
	}
	if !c.Egress.IsValid() {
		c.Egress = defaultEgress
	}
	var errs []error
	for _, x := range []struct {
		what string
		p    netip.Prefix
	}{{"management", c.Mgmt}, {"debug", c.Debug}, {"private", c.Private}} {
		if err := check48(x.what, x.p); err != nil {
			errs = append(errs, err)
		}
	}
	if errs == nil && (c.Mgmt == c.Debug || c.Mgmt == c.Private || c.Debug == c.Private) {
		errs = append(errs, fmt.Errorf("prefixes management %s, debug %s, private %s: must be three different /48s", c.Mgmt, c.Debug, c.Private))
	}
	if p := c.PrivateIPv4; !p.Addr().Is4() || p.Bits() != 24 || p.Masked() != p {
		errs = append(errs, fmt.Errorf("private IPv4 prefix %s: want a masked IPv4 /24 (e.g. 192.168.157.0/24)", p))
	}
	if p := c.Egress; !p.Addr().Is4() || p.Bits() > 16 || p.Masked() != p {
		errs = append(errs, fmt.Errorf("egress IPv4 prefix %s: want a masked IPv4 prefix of /16 or shorter, to hold every node id up to %#x (e.g. 100.64.0.0/16)", p, MaxNode))
	}
	if len(errs) > 0 {
		return Plan{}, errors.Join(errs...)
	}
	return Plan{mgmt: c.Mgmt, debug: c.Debug, private: c.Private, privIPv4: c.PrivateIPv4, egress: c.Egress}, nil
}

// Config returns the prefixes the plan was built from.
func (p Plan) Config() Config {
	return Config{Mgmt: p.mgmt, Debug: p.debug, Private: p.private, PrivateIPv4: p.privIPv4, Egress: p.egress}
}

// Mgmt returns the management /48.
func (p Plan) Mgmt() netip.Prefix { return p.mgmt }

// Debug returns the debug /48.
func (p Plan) Debug() netip.Prefix { return p.debug }

// Private returns the private /48.
func (p Plan) Private() netip.Prefix { return p.private }

// PrivateIPv4 returns the node-local private IPv4 /24.
func (p Plan) PrivateIPv4() netip.Prefix { return p.privIPv4 }

// Egress returns the egress IPv4 prefix.
func (p Plan) Egress() netip.Prefix { return p.egress }

// addr6 assembles prefix(48) | word4 | word5 | low 48 bits.
func addr6(prefix netip.Prefix, w4, w5 uint16, low48 uint64) netip.Addr {
	b := prefix.Addr().As16()
	b[6], b[7] = byte(w4>>8), byte(w4)
	b[8], b[9] = byte(w5>>8), byte(w5)
	for i := 0; i < 6; i++ {
		b[15-i] = byte(low48 >> (8 * i))
	}
	return netip.AddrFrom16(b)
}

// NodeAddr returns node n's management address, P:n::2.
func (p Plan) NodeAddr(n uint16) (netip.Addr, error) {
	if err := CheckNode(uint64(n)); err != nil {
		return netip.Addr{}, err
	}
	return addr6(p.mgmt, n, 0, 2), nil
}

// NodeSubnet returns node n's /64, P:n::/64: the tinc Subnet it announces,
// holding its own address and its slivers' management addresses.
func (p Plan) NodeSubnet(n uint16) (netip.Prefix, error) {
	if err := CheckNode(uint64(n)); err != nil {
		return netip.Prefix{}, err
	}
	return netip.PrefixFrom(addr6(p.mgmt, n, 0, 0), 64), nil
}

// ServerAddr returns server id's address, P:0:0:rrrr:rrrr:rrrr.
// The main server, id 2, is P::2.
func (p Plan) ServerAddr(id uint64) (netip.Addr, error) {
	if err := CheckID48("server", id); err != nil {
		return netip.Addr{}, err
	}
	return addr6(p.mgmt, 0, blockServer, id), nil
}

// HostAddr returns host id's address, P:0:2000:hhhh:hhhh:hhhh.
func (p Plan) HostAddr(id uint64) (netip.Addr, error) {
	if err := CheckID48("host", id); err != nil {
		return netip.Addr{}, err
	}
	return addr6(p.mgmt, 0, blockHost, id), nil
}

// GatewayAddr returns legacy gateway id's address, P:0:1:gggg:gggg:gggg.
// Legacy gateways were removed from the controller in 2014; the address is
// given so that old host files and registries can be checked.
func (p Plan) GatewayAddr(id uint64) (netip.Addr, error) {
	if err := CheckID48("gateway", id); err != nil {
		return netip.Addr{}, err
	}
	return addr6(p.mgmt, 0, blockGateway, id), nil
}

// SliverAddr returns the IPv6 address of a sliver interface in space
// SpaceMgmt (P:node:10ii:slice), SpaceDebug (same layout under the debug
// /48) or SpacePrivate (private /48, 0:1000:slice: node-local, so node and
// iface are not part of it and must be 0 there; node is ignored).
func (p Plan) SliverAddr(space Space, node uint16, slice uint64, iface uint8) (netip.Addr, error) {
	if err := CheckID48("slice", slice); err != nil {
		return netip.Addr{}, err
	}
	switch space {
	case SpaceMgmt, SpaceDebug:
		if err := CheckNode(uint64(node)); err != nil {
			return netip.Addr{}, err
		}
		pfx := p.mgmt
		if space == SpaceDebug {
			pfx = p.debug
		}
		return addr6(pfx, node, sliverTag<<8|uint16(iface), slice), nil
	case SpacePrivate:
		if iface != 0 {
			return netip.Addr{}, fmt.Errorf("sliver private IPv6 address: iface %d: the private address is iface 0", iface)
		}
		return addr6(p.private, 0, sliverTag<<8, slice), nil
	}
	return netip.Addr{}, fmt.Errorf("sliver address: space %s has no IPv6 address", space)
}

// SliverIPv4 returns the private IPv4 address of container c (1..125) inside
// the node-local /24: X.Y.Z.c. It is the same on every node.
func (p Plan) SliverIPv4(c uint8) (netip.Addr, error) {
	if err := CheckContainer(uint64(c)); err != nil {
		return netip.Addr{}, err
	}
	b := p.privIPv4.Addr().As4()
	b[3] = c
	return netip.AddrFrom4(b), nil
}

// NodePrivateIPv4 returns the node's own address on its slivers' private
// network, X.Y.Z.126/25.
func (p Plan) NodePrivateIPv4() netip.Prefix {
	b := p.privIPv4.Addr().As4()
	b[3] = 126
	return netip.PrefixFrom(netip.AddrFrom4(b), 25)
}

// SliverIPv4Prefix returns the slivers' private IPv4 network, X.Y.Z.0/25.
func (p Plan) SliverIPv4Prefix() netip.Prefix {
	return netip.PrefixFrom(p.privIPv4.Addr(), 25)
}

// EgressIPv4 returns node n's unique egress IPv4 address: the egress
// prefix's base plus n (100.64.(n>>8).(n&255) by default).
func (p Plan) EgressIPv4(n uint16) (netip.Addr, error) {
	if err := CheckNode(uint64(n)); err != nil {
		return netip.Addr{}, err
	}
	v := ipv4ToUint(p.egress.Addr()) + uint32(n)
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)}), nil
}

// ipv4ToUint returns an IPv4 address as a number.
func ipv4ToUint(a netip.Addr) uint32 {
	b := a.As4()
	return uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
}

// SliverMAC returns the MAC address of a sliver interface on a node:
// prefix16:NN:NN:CT:II (confine.md §2), e.g. 06:ab:00:1f:01:00 for node
// 0x1f, container 1, iface 0.
func SliverMAC(prefix16 [2]byte, node uint16, container, iface uint8) ([6]byte, error) {
	if err := CheckNode(uint64(node)); err != nil {
		return [6]byte{}, err
	}
	if err := CheckContainer(uint64(container)); err != nil {
		return [6]byte{}, err
	}
	return [6]byte{prefix16[0], prefix16[1], byte(node >> 8), byte(node), container, iface}, nil
}

// FormatMAC writes a MAC address as lower-case colon-separated hex.
func FormatMAC(m [6]byte) string {
	return fmt.Sprintf("%02x:%02x:%02x:%02x:%02x:%02x", m[0], m[1], m[2], m[3], m[4], m[5])
}

// ParseMACPrefix16 parses the firmware's `mac_prefix16` ("06:ab").
func ParseMACPrefix16(s string) ([2]byte, error) {
	var a, b uint8
	if len(s) != 5 || s[2] != ':' || !isHex(s[:2]) || !isHex(s[3:]) {
		return [2]byte{}, fmt.Errorf("mac prefix %q: want two hex bytes like 06:ab", s)
	}
	fmt.Sscanf(s, "%02x:%02x", &a, &b)
	return [2]byte{a, b}, nil
}
