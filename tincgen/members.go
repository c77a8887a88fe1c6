package tincgen

import (
	"fmt"
	"slices"

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
	return h
}

// HostFiles renders the host file of every member of tb, named by tinc
// name, with island-first address order for the given island (0: registry
// order). mesh validated every member, so an invalid host file here is a
// bug; it is still checked (Host.Validate) and reported rather than written.
func HostFiles(tb *mesh.Testbed, island uint64) (Files, error) {
	files := make(Files, tb.Len())
	for m := range tb.All() {
		h := HostFor(m, island)
		if err := h.Validate(); err != nil {
			return nil, fmt.Errorf("host file of %s: %w", m.Label(), err)
		}
		files[m.TincName] = RenderHost(h)
	}
	return files, nil
}
