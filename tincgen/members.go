package tincgen

import (
	"fmt"
	"io/fs"
	"net/netip"
	"slices"

	"github.com/confine-project/mgmtnet/addressing"
	"github.com/confine-project/mgmtnet/mesh"
)

// HostFor returns the host file of a member. Its Address lines keep the
// registry's order, except that with island != 0 the addresses in that
// island come first, so that a node tries the gateway address it can reach
// directly before the others. Those come in reverse registry order: the
// controller's get_host inserts each one at the front of the file
// (host.insert(0, line)), and the files are byte-compatible with its.
func HostFor(m *mesh.Member, island uint64) Host {
	h := Host{PublicKey: m.PubKey}
	var first []Address
	for _, a := range m.Addresses {
		addr := Address{Host: a.Host, Port: a.Port}
		if island != 0 && a.Island == island {
			first = append(first, addr)
			continue
		}
		h.Addresses = append(h.Addresses, addr)
	}
	slices.Reverse(first)
	h.Addresses = append(first, h.Addresses...)
	for _, p := range m.Subnets {
		h.Subnets = append(h.Subnets, NewSubnet(p))
	}
	if m.Egress.Offered {
		h.Subnets = append(h.Subnets, Subnet{Prefix: EgressDefault, Weight: m.Egress.Weight})
	}
	if m.DNS.Addr.IsValid() {
		h.Subnets = append(h.Subnets, Subnet{Prefix: netip.PrefixFrom(m.DNS.Addr, 128), Weight: m.DNS.Weight})
	}
	return h
}

// NodeGatewayHost is the host file of gateway m as a node holds it in the
// tunnel-server topology (docs/topology.md): HostFor's, plus the covering
// /48 at CoverWeight. The node's tincd runs with TunnelServer, so it
// routes by these files alone: through the gateway to every other member,
// to its egress and DNS service as the registry declares them, and to
// nothing a gateway (or a member behind it) announces on top.
func NodeGatewayHost(plan addressing.Plan, m *mesh.Member, island uint64) Host {
	h := HostFor(m, island)
	h.Subnets = append(h.Subnets, Subnet{Prefix: plan.Mgmt(), Weight: CoverWeight})
	return h
}

// EgressDefault is the Subnet a gateway that offers Internet egress
// announces (with its weight): every IPv4 destination.
var EgressDefault = netip.PrefixFrom(netip.IPv4Unspecified(), 0)

// HostOptions adjust the host files HostFiles and a HostSource render.
type HostOptions struct {
	// Island puts the gateways' addresses in this island first (0:
	// registry order).
	Island uint64
	// Egress overrides members' egress offers by tinc name: a gateway's
	// local configuration, or its withdrawal while its upstream is down.
	Egress map[string]mesh.Egress
	// Extra are Subnets added to members' files by tinc name (a gateway's
	// DNS service address).
	Extra map[string][]Subnet
	// Gateway, when set, renders the hosts directory of the gateway of
	// this tinc name in the tunnel-server topology (docs/topology.md): every
	// gateway's file carries the covering Subnet of the management /48
	// (CoverWeight), and every other gateway's file also carries the
	// Subnets of the members assigned to that gateway, as relay routes
	// (RelayWeight plus the other gateway's distance after this one in
	// tinc-name order). Empty: the controller's files.
	Gateway string
	// Refused are clients assigned to Gateway that it does not hold
	// anyway: the ones beyond its own limit (see Holds).
	Refused map[string]bool
}

// CoverWeight is the weight of the covering /48 Subnet every gateway
// announces in the tunnel-server topology: nodes, which learn nothing but
// their gateways, reach every other member through it. It is above any
// weight the registry gives a member's own Subnets, so a more specific,
// reachable route always wins.
const CoverWeight = 1000

// PeerServiceWeight is added, in a gateway's hosts directory, to the
// weight of another gateway's egress and DNS service Subnets: a gateway
// always serves these itself when it offers them, and relays to the best
// other gateway only when it does not (a withdrawn egress offer), so that
// no two gateways hand such a packet back and forth. It is above
// MaxEgressWeight.
const PeerServiceWeight = 1 << 16

// RelayWeight is the base weight of the relay Subnets a gateway holds for
// another gateway (see HostOptions.Gateway): above a member's own Subnet
// (tinc's default 10), so the member itself is preferred whenever it is
// connected to this gateway.
const RelayWeight = 100

// HostFiles renders the host file of every member of tb, named by tinc
// name. A member that offers egress (its registry property, or o.Egress)
// carries Subnet = 0.0.0.0/0#weight, and while any member offers egress
// every node carries its egress /32 (addressing.EgressIPv4), so that
// gateways running StrictSubnets accept both (design.md). Without egress
// the files are the controller's, line for line. mesh validated every
// member, so an invalid host file here is a bug; it is still checked
// (Host.Validate) and reported rather than written. With o.Gateway set,
// only the members that gateway holds are rendered (see Holds).
//
// HostFiles holds every file at once; Sync of a HostSource renders them
// one at a time.
func HostFiles(tb *mesh.Testbed, o HostOptions) (Files, error) {
	src := NewHostSource(tb, o)
	files := make(Files, tb.Len())
	for m := range tb.All() {
		if !Holds(tb, o, m) {
			continue
		}
		b, err := src.render(m)
		if err != nil {
			return nil, err
		}
		files[m.TincName] = b
	}
	return files, nil
}

// HostSource is the hosts directory HostFilesWith renders, as a Source:
// each file is rendered when Sync asks for it, so that a sync of 66 000
// members holds a few files, not 40 MB of them. It is safe for concurrent
// use.
type HostSource struct {
	tb         *mesh.Testbed
	o          HostOptions
	nodeEgress bool
}

// NewHostSource returns the host files of tb rendered with o. tb and o
// must not change while it is used.
func NewHostSource(tb *mesh.Testbed, o HostOptions) *HostSource {
	return &HostSource{tb: tb, o: o, nodeEgress: OffersEgress(tb, o.Egress)}
}

// Names returns the tinc names of the members whose files the directory
// holds (Holds), in tinc-name order.
func (s *HostSource) Names() []string {
	var names []string
	for m := range s.tb.All() {
		if Holds(s.tb, s.o, m) {
			names = append(names, m.TincName)
		}
	}
	return names
}

// Has reports whether the directory holds the file name.
func (s *HostSource) Has(name string) bool {
	m, ok := s.tb.Lookup(name)
	return ok && Holds(s.tb, s.o, m)
}

// Render renders the file name as HostFilesWith does.
func (s *HostSource) Render(name string) ([]byte, error) {
	m, ok := s.tb.Lookup(name)
	if !ok || !Holds(s.tb, s.o, m) {
		return nil, fmt.Errorf("no host file %s: %w", name, fs.ErrNotExist)
	}
	return s.render(m)
}

func (s *HostSource) render(m *mesh.Member) ([]byte, error) {
	return MemberFile(s.tb, m, s.o, s.nodeEgress)
}

// Holds reports whether the hosts directory HostFilesWith renders with o
// holds m's file. Without o.Gateway it holds every member. A gateway of
// the tunnel-server topology holds every gateway, and of the other members
// (its clients) only those tb.Assignment() assigns to it and o.Refused
// does not name: tincd refuses a member whose host file it does not have,
// so a gateway never takes more members than it can. A gateway that is not
// a gateway of tb (not in the registry yet) holds every member, as the
// controller's gateways do.
func Holds(tb *mesh.Testbed, o HostOptions, m *mesh.Member) bool {
	if o.Gateway == "" || m.IsGateway() || m.TincName == o.Gateway {
		return true
	}
	if own, ok := tb.Lookup(o.Gateway); !ok || !own.IsGateway() {
		return true
	}
	return tb.Assignment().Holds(o.Gateway, m.TincName) && !o.Refused[m.TincName]
}

// relaySubnets returns the Subnets, without weight, of the clients of
// gateway g (the members tb.Assignment() assigns to it): what another
// gateway relays to g for them when they are not connected to it.
func relaySubnets(tb *mesh.Testbed, g string, nodeEgress bool) ([]Subnet, error) {
	var out []Subnet
	for _, name := range tb.Assignment().On(g) {
		m, ok := tb.Lookup(name)
		if !ok {
			continue
		}
		for _, p := range m.Subnets {
			out = append(out, NewSubnet(p))
		}
		if nodeEgress && m.Kind == addressing.KindNode {
			a, err := tb.Plan().EgressIPv4(uint16(m.ID))
			if err != nil {
				return nil, fmt.Errorf("relay routes of %s: %w", m.Label(), err)
			}
			out = append(out, NewSubnet(netip.PrefixFrom(a, 32)))
		}
	}
	return out, nil
}

// relayDistance is how far gateway other comes after own in the
// tinc-name order of tb's gateways, counted round the circle (1 for the
// next one). Every gateway prefers the next one after itself, so a packet
// for a member that is on none of them goes round the circle once and no
// two gateways send it back and forth; tincd's DecrementTTL (which
// GatewayConf sets) bounds even that.
func relayDistance(tb *mesh.Testbed, own, other string) int {
	var names []string
	for _, g := range tb.Gateways() {
		names = append(names, g.TincName)
	}
	if !slices.Contains(names, own) {
		names = append(names, own)
		slices.Sort(names)
	}
	i, j := slices.Index(names, own), slices.Index(names, other)
	return (j - i + len(names)) % len(names)
}

// MemberFile renders the host file of one member of tb exactly as
// HostFilesWith does, given what OffersEgress says of tb: to compare a
// file on disk without rendering them all.
func MemberFile(tb *mesh.Testbed, m *mesh.Member, o HostOptions, nodeEgress bool) ([]byte, error) {
	plan := tb.Plan()
	if e, ok := o.Egress[m.TincName]; ok && e != m.Egress {
		c := *m
		c.Egress = e
		m = &c
	}
	h := HostFor(m, o.Island)
	for _, x := range o.Extra[m.TincName] {
		// The gateway's own configuration wins over the registry's
		// declaration of the same address.
		h.Subnets = slices.DeleteFunc(h.Subnets, func(s Subnet) bool { return s.Prefix == x.Prefix })
		h.Subnets = append(h.Subnets, x)
	}
	if nodeEgress && m.Kind == addressing.KindNode {
		a, err := plan.EgressIPv4(uint16(m.ID))
		if err != nil {
			return nil, fmt.Errorf("host file of %s: %w", m.Label(), err)
		}
		h.Subnets = append(h.Subnets, NewSubnet(netip.PrefixFrom(a, 32)))
	}
	if o.Gateway != "" && m.IsGateway() {
		if m.TincName != o.Gateway {
			for i, s := range h.Subnets {
				if s.Prefix == EgressDefault || (m.DNS.Addr.IsValid() && s.Prefix == netip.PrefixFrom(m.DNS.Addr, 128)) {
					h.Subnets[i].Weight += PeerServiceWeight
				}
			}
		}
		h.Subnets = append(h.Subnets, Subnet{Prefix: plan.Mgmt(), Weight: CoverWeight})
		if m.TincName != o.Gateway {
			relays, err := relaySubnets(tb, m.TincName, nodeEgress)
			if err != nil {
				return nil, err
			}
			w := RelayWeight + relayDistance(tb, o.Gateway, m.TincName)
			for _, r := range relays {
				h.Subnets = append(h.Subnets, Subnet{Prefix: r.Prefix, Weight: w})
			}
		}
	}
	if err := h.Validate(); err != nil {
		return nil, fmt.Errorf("host file of %s: %w", m.Label(), err)
	}
	return RenderHost(h), nil
}

// OffersEgress reports whether the testbed has egress: a member of tb
// offers it, or an override is given at all. An override that withdraws
// an offer (a gateway whose upstream is down) still counts, so that a
// withdrawal changes the gateway's own file only and never rewrites every
// node's.
func OffersEgress(tb *mesh.Testbed, override map[string]mesh.Egress) bool {
	if len(override) > 0 {
		return true
	}
	for m := range tb.All() {
		if m.Egress.Offered {
			return true
		}
	}
	return false
}
