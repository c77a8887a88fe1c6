package mesh

import (
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/confine-project/mgmtnet/addressing"
)

// CapacityProperty is the registry property with which a gateway says how
// many members may be assigned to it, e.g. "800".
const CapacityProperty = "mgmtnet.capacity"

// DefaultCapacity is a gateway's capacity when the registry gives none.
// A gateway's tincd holds one file descriptor per meta connection and
// tinc 1.0 cannot use descriptors from 1024 on (select), so assigned
// members, the links to the other gateways and tincd's own descriptors
// must stay below that; 800 leaves room for about 200 gateways.
const DefaultCapacity = 800

// MaxCapacity bounds CapacityProperty: with the other gateways' links and
// tincd's own descriptors, more would reach descriptor 1024.
const MaxCapacity = 1000

// MinGatewaysPerMember is how many gateways each member is assigned to at
// least (fewer when the testbed has fewer gateways): a member keeps a
// working gateway when one goes away.
const MinGatewaysPerMember = 2

// capacityOf reads a member's capacity from its properties. A bad value
// is a warning: the member stays, with the default.
func capacityOf(props map[string]string) (int, string) {
	v, ok := props[CapacityProperty]
	if !ok {
		return 0, ""
	}
	n, err := strconv.Atoi(strings.TrimSpace(v))
	if err != nil || n < 1 || n > MaxCapacity {
		return 0, fmt.Sprintf("property %s ignored: %q is not an integer in 1..%d", CapacityProperty, v, MaxCapacity)
	}
	return n, ""
}

// Assignment says which gateways each member that is not a gateway
// connects to (its "clients": nodes, hosts, servers without tinc
// addresses), and so which members each gateway holds. It is a pure
// function of the testbed, so that every gateway and every node that
// reads the same registry answer computes the same one:
//
//   - Each client is assigned to PerMember gateways: as many as the
//     gateways' total capacity allows for every client, at least
//     MinGatewaysPerMember, at most all of them. A testbed that fits
//     (every client on every gateway) is what the controller's topology
//     had; a larger one gives each client fewer gateways.
//   - A client ranks the gateways with an address in its own island
//     first, then the others, each group by rendezvous hashing of the
//     client's and the gateway's tinc names: adding or removing a client
//     moves no other client, and adding or removing a gateway moves only
//     the clients that rank it high.
//   - Clients take their places in order (servers, nodes, hosts, each by
//     id), each the best-ranked gateways that still have room, so no
//     gateway holds more than its capacity. Only when gateways are full
//     does a new client push an existing one to its next gateway.
//
// A client for which no gateway has room is unplaced: it is in no
// gateway's hosts directory.
type Assignment struct {
	perMember int
	of        map[string][]string
	on        map[string][]string // sorted
	placed    map[string][]string // in placement order
	capacity  map[string]int
	unplaced  []string
}

// Assignment returns the testbed's assignment, computed once.
func (t *Testbed) Assignment() *Assignment {
	t.assignOnce.Do(func() { t.assignment = assign(t) })
	return t.assignment
}

// PerMember is how many gateways each client is assigned to.
func (a *Assignment) PerMember() int { return a.perMember }

// Of returns the gateways client is assigned to, best first. ok is false
// when client is not a client of the testbed (a gateway, or absent).
func (a *Assignment) Of(client string) (gateways []string, ok bool) {
	g, ok := a.of[client]
	return g, ok
}

// On returns the clients assigned to gateway, in tinc-name order.
func (a *Assignment) On(gateway string) []string { return a.on[gateway] }

// Placed returns the clients assigned to gateway in the order they took
// their places: a gateway that must hold fewer (its own limit) keeps the
// first ones.
func (a *Assignment) Placed(gateway string) []string { return a.placed[gateway] }

// Holds reports whether gateway holds client: client is assigned to it.
func (a *Assignment) Holds(gateway, client string) bool {
	_, found := slices.BinarySearch(a.on[gateway], client)
	return found
}

// Capacity returns gateway's capacity (0 for a member that is not a
// gateway).
func (a *Assignment) Capacity(gateway string) int { return a.capacity[gateway] }

// Unplaced returns the clients for which no gateway had room, in
// tinc-name order.
func (a *Assignment) Unplaced() []string { return a.unplaced }

// nameHash is FNV-1a, 64-bit: fixed, so that every machine ranks the same.
func nameHash(s string) uint64 {
	h := uint64(14695981039346656037)
	for i := 0; i < len(s); i++ {
		h ^= uint64(s[i])
		h *= 1099511628211
	}
	return h
}

// mix is splitmix64's finaliser: a rendezvous score from two name hashes.
func mix(x uint64) uint64 {
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	x ^= x >> 31
	return x
}

func assign(t *Testbed) *Assignment {
	type gw struct {
		name   string
		hash   uint64
		left   int
		island map[uint64]bool
	}
	var gws []*gw
	a := &Assignment{of: map[string][]string{}, on: map[string][]string{}, placed: map[string][]string{}, capacity: map[string]int{}}
	total := 0
	for _, m := range t.Gateways() {
		c := m.Capacity
		if c == 0 {
			c = DefaultCapacity
		}
		g := &gw{name: m.TincName, hash: mix(nameHash(m.TincName)), left: c, island: map[uint64]bool{}}
		for _, ad := range m.Addresses {
			if ad.Island != 0 {
				g.island[ad.Island] = true
			}
		}
		gws = append(gws, g)
		a.capacity[m.TincName] = c
		total += c
	}
	var clients []*Member
	for i := range t.members {
		if !t.members[i].IsGateway() {
			clients = append(clients, &t.members[i])
		}
	}
	// Servers first (they run the testbed), then nodes, then hosts; each
	// by id, so that older members keep their places.
	rank := func(m *Member) int {
		switch m.Kind {
		case addressing.KindServer:
			return 0
		case addressing.KindNode:
			return 1
		}
		return 2
	}
	slices.SortStableFunc(clients, func(x, y *Member) int {
		if d := rank(x) - rank(y); d != 0 {
			return d
		}
		switch {
		case x.ID < y.ID:
			return -1
		case x.ID > y.ID:
			return 1
		}
		return strings.Compare(x.TincName, y.TincName)
	})
	a.perMember = len(gws)
	if len(clients) > 0 && len(gws) > 0 {
		k := total / len(clients)
		a.perMember = min(max(k, MinGatewaysPerMember), len(gws))
	}
	if len(gws) == 0 {
		for _, c := range clients {
			a.unplaced = append(a.unplaced, c.TincName)
			a.of[c.TincName] = nil
		}
		slices.Sort(a.unplaced)
		return a
	}
	type scored struct {
		g     *gw
		local bool
		score uint64
	}
	ranked := make([]scored, len(gws))
	for _, c := range clients {
		h := nameHash(c.TincName)
		for i, g := range gws {
			ranked[i] = scored{g: g, local: c.Island != 0 && g.island[c.Island], score: mix(h ^ g.hash)}
		}
		better := func(x, y scored) bool {
			if x.local != y.local {
				return x.local
			}
			if x.score != y.score {
				return x.score > y.score
			}
			return x.g.name < y.g.name
		}
		// Pick the best-ranked gateways with room one at a time: O(k·G)
		// instead of sorting all G for every client.
		var got []string
		for len(got) < a.perMember {
			best := -1
			for i := range ranked {
				if ranked[i].g.left > 0 && (best < 0 || better(ranked[i], ranked[best])) {
					best = i
				}
			}
			if best < 0 {
				break
			}
			ranked[best].g.left--
			got = append(got, ranked[best].g.name)
			// Taken: out of the running for this client.
			ranked[best] = ranked[len(ranked)-1]
			ranked = ranked[:len(ranked)-1]
		}
		ranked = ranked[:len(gws)]
		a.of[c.TincName] = got
		if len(got) == 0 {
			a.unplaced = append(a.unplaced, c.TincName)
		}
		for _, g := range got {
			a.placed[g] = append(a.placed[g], c.TincName)
		}
	}
	for g, l := range a.placed {
		a.on[g] = slices.Sorted(slices.Values(l))
	}
	slices.Sort(a.unplaced)
	return a
}
