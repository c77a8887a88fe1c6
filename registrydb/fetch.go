package registrydb

import (
	"context"
	"fmt"
	"slices"

	"github.com/confine-project/mgmtnet/addressing"
	"github.com/confine-project/mgmtnet/mesh/registry"
)

// FetchFile reads a live registry (the 2015 controller at any release the
// client reads, or another mgmtnet) at baseURI into a testbed file, to
// import. notes say what did not come across: elements that do not
// decode, the separate gateways of controllers v0.10 to v0.11.1 (the
// database holds servers, nodes and hosts), and island names (the client
// reads members, not islands: each island a member names is created as
// "island-<id>").
func FetchFile(ctx context.Context, baseURI string, opts registry.Options) (*registry.File, []string, error) {
	c, err := registry.New(baseURI, opts)
	if err != nil {
		return nil, nil, err
	}
	snap, err := c.Fetch(ctx, nil)
	if err != nil {
		return nil, nil, err
	}
	if !snap.Prefix.IsValid() {
		return nil, nil, fmt.Errorf("import from %s: the registry declares no management prefix (testbed_params.mgmt_ipv6_prefix)", baseURI)
	}
	f := &registry.File{MgmtPrefix: snap.Prefix, Dialect: snap.Dialect}
	var notes []string
	for _, p := range snap.Problems {
		notes = append(notes, "not imported: "+p.String())
	}
	islands := map[uint64]bool{}
	gateways := 0
	for _, cand := range snap.Candidates {
		m := registry.FileMember{ID: cand.ID, Name: cand.Name, Island: cand.Island, MgmtAddr: cand.MgmtAddr, Backend: cand.Backend, Properties: cand.Properties}
		if cand.Island != 0 {
			islands[cand.Island] = true
		}
		if cand.Tinc != nil {
			m.Tinc = &registry.FileTinc{Name: cand.Tinc.Name, PubKey: cand.Tinc.PubKey}
			for _, a := range cand.Tinc.Addresses {
				m.Tinc.Addresses = append(m.Tinc.Addresses, registry.FileAddress{Addr: a.Addr, Port: a.Port, Island: a.Island})
				if a.Island != 0 {
					islands[a.Island] = true
				}
			}
		}
		switch cand.Kind {
		case addressing.KindServer:
			f.Servers = append(f.Servers, m)
		case addressing.KindNode:
			f.Nodes = append(f.Nodes, m)
		case addressing.KindHost:
			f.Hosts = append(f.Hosts, m)
		default:
			gateways++
		}
	}
	if gateways > 0 {
		notes = append(notes, fmt.Sprintf("not imported: %d gateways of the registry's separate gateways collection (controllers v0.10 to v0.11.1); add them as servers", gateways))
	}
	ids := make([]uint64, 0, len(islands))
	for id := range islands {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	for _, id := range ids {
		f.Islands = append(f.Islands, registry.FileIsland{ID: id, Name: fmt.Sprintf("island-%d", id)})
	}
	if len(ids) > 0 {
		notes = append(notes, fmt.Sprintf("%d islands created as island-<id>: their names are not read from the registry", len(ids)))
	}
	if err := f.Validate(); err != nil {
		return nil, notes, fmt.Errorf("import from %s: %w", baseURI, err)
	}
	return f, notes, nil
}
