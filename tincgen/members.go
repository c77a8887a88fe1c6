package tincgen

import (
	"fmt"
	"net/netip"
	"slices"

	"github.com/confine-project/mgmtnet/addressing"
	"github.com/confine-project/mgmtnet/mesh"
)

// HostFor returns the host file of a member. Its Address lines keep the
// registry's order, except that with island != 0 the addresses in that
// island come first (the controller's island-first order, so that a node
// tries the gateway address it can reach directly before the others).
func HostFor(m *mesh.Member, island uint64) Host {
	h := Host{PublicKey: m.PubKey}
	for _, a := range m.Addresses {
		h.Addresses = append(h.Addresses, Address{Host: a.Host, Port: a.Port})
	}
	if island != 0 {
		idx := make([]int, len(m.Addresses))
		for i := range idx {
			idx[i] = i
		}
		slices.SortStableFunc(idx, func(a, b int) int {
			ia, ib := m.Addresses[a].Island == island, m.Addresses[b].Island == island
			switch {
			case ia && !ib:
				return -1
			case ib && !ia:
				return 1
			}
			return 0
		})
		for i, j := range idx {
			h.Addresses[i] = Address{Host: m.Addresses[j].Host, Port: m.Addresses[j].Port}
		}
	}
	for _, p := range m.Subnets {
		h.Subnets = append(h.Subnets, NewSubnet(p))
	}
	if m.Egress.Offered {
		h.Subnets = append(h.Subnets, Subnet{Prefix: EgressDefault, Weight: m.Egress.Weight})
	}
	return h
}

// HostFiles renders the host file of every member of tb, named by tinc
// name, with island-first address order for the given island (0: registry
// order) and the members' own egress offers (see HostFilesWith).
func HostFiles(tb *mesh.Testbed, island uint64) (Files, error) {
	return HostFilesWith(tb, HostOptions{Island: island})
}

// EgressDefault is the Subnet a gateway that offers Internet egress
// announces (with its weight): every IPv4 destination.
var EgressDefault = netip.PrefixFrom(netip.IPv4Unspecified(), 0)

// HostOptions adjust the host files HostFilesWith renders.
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
}

// HostFilesWith renders the host file of every member of tb, named by tinc
// name. A member that offers egress (its registry property, or o.Egress)
// carries Subnet = 0.0.0.0/0#weight, and while any member offers egress
// every node carries its egress /32 (addressing.EgressIPv4), so that
// gateways running StrictSubnets accept both (design.md). Without egress
// the files are the controller's, byte for byte. mesh validated every
// member, so an invalid host file here is a bug; it is still checked
// (Host.Validate) and reported rather than written.
func HostFilesWith(tb *mesh.Testbed, o HostOptions) (Files, error) {
	nodeEgress := OffersEgress(tb, o.Egress)
	files := make(Files, tb.Len())
	for m := range tb.All() {
		b, err := MemberFile(tb.Plan(), m, o, nodeEgress)
		if err != nil {
			return nil, err
		}
		files[m.TincName] = b
	}
	return files, nil
}

// MemberFile renders the host file of one member exactly as HostFilesWith
// does, given what OffersEgress says of its testbed: to compare a file on
// disk without rendering them all.
func MemberFile(plan addressing.Plan, m *mesh.Member, o HostOptions, nodeEgress bool) ([]byte, error) {
	if e, ok := o.Egress[m.TincName]; ok && e != m.Egress {
		c := *m
		c.Egress = e
		m = &c
	}
	h := HostFor(m, o.Island)
	h.Subnets = append(h.Subnets, o.Extra[m.TincName]...)
	if nodeEgress && m.Kind == addressing.KindNode {
		a, err := plan.EgressIPv4(uint16(m.ID))
		if err != nil {
			return nil, fmt.Errorf("host file of %s: %w", m.Label(), err)
		}
		h.Subnets = append(h.Subnets, NewSubnet(netip.PrefixFrom(a, 32)))
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
