package gateway

import (
	"log/slog"
	"maps"
	"slices"

	"github.com/confine-project/mgmtnet/mesh"
	"github.com/confine-project/mgmtnet/tinc"
)

// fdReserve is the descriptors a gateway's tincd needs besides its meta
// connections: listening sockets (TCP and UDP per address family), the tun
// device, the log, and the connections tinc's accept throttle holds
// (tarpit) while it refuses a burst.
const fdReserve = 24

// AssignmentStatus is this gateway's share of the testbed's assignment of
// members to gateways (mesh.Assignment), in status.
type AssignmentStatus struct {
	// Enabled: the tunnel-server topology, in which each gateway holds
	// only its assigned members.
	Enabled bool `json:"enabled"`
	// Gateways in the snapshot, and how many of them each other member
	// is assigned to.
	Gateways  int `json:"gateways"`
	PerMember int `json:"per_member"`
	// Capacity is this gateway's capacity as the registry says
	// (mesh.CapacityProperty, default mesh.DefaultCapacity): what the
	// assignment gives it at most.
	Capacity int `json:"capacity"`
	// Limit is what this gateway holds at most whatever the registry
	// says: tinc.max_members, and what tincd's descriptors leave after
	// the links to the other gateways.
	Limit int `json:"limit"`
	// Assigned and Held count the members assigned to this gateway and
	// the ones whose host files it holds.
	Assigned int `json:"assigned"`
	Held     int `json:"held"`
	// Refused are the assigned members beyond Limit, by tinc name: their
	// files are not written, so tincd refuses them, and they use their
	// other gateways.
	Refused []string `json:"refused"`
	// Unplaced counts the testbed's members for which no gateway had
	// room: they are on no gateway.
	Unplaced int `json:"unplaced"`
}

// limit is the most members this gateway holds with gateways in the
// snapshot: tinc.max_members, and tincd's descriptors (tinc.MaxFiles) less
// the reserve and one per other gateway.
func (c *Config) limit(gateways int) int {
	n := c.Tinc.MaxMembers
	if n == 0 {
		n = mesh.MaxCapacity
	}
	return max(0, min(n, tinc.MaxFiles-fdReserve-max(gateways-1, 0)))
}

// assignment computes this gateway's share of tb's assignment and the
// members it refuses, once per snapshot, and logs at WARN what changed
// about refusals and unplaced members.
func (d *Daemon) assignment(tb *mesh.Testbed) (AssignmentStatus, map[string]bool) {
	if tb == nil || !d.cfg.Tinc.TunnelServer {
		return AssignmentStatus{}, nil
	}
	if d.hosts.assignTB == tb {
		return d.hosts.assignSt, d.hosts.assignRefused
	}
	st, refused := d.cfg.share(tb)
	a, own, gws := tb.Assignment(), d.cfg.Identity.TincName, st.Gateways
	if !slices.Equal(st.Refused, d.hosts.assignSt.Refused) && len(st.Refused) > 0 {
		d.log.Warn("the registry assigns more members to this gateway than it can hold; refusing the last ones (they use their other gateways)",
			"assigned", st.Assigned, "limit", st.Limit, "refused", len(st.Refused), "first_refused", st.Refused[0])
	}
	if st.Unplaced > 0 && st.Unplaced != d.hosts.assignSt.Unplaced {
		u := a.Unplaced()
		d.log.Warn("no gateway has room for some members: add gateways or raise their "+mesh.CapacityProperty,
			"unplaced", st.Unplaced, "first", u[0], "gateways", gws)
	}
	if c := a.Capacity(own); c > st.Limit && gws > 0 && d.hosts.assignSt.Capacity != c {
		d.log.Warn("this gateway's registry capacity is above what it can hold",
			slog.Int("capacity", c), slog.Int("limit", st.Limit), slog.Int("gateways", gws))
	}
	d.hosts.assignTB, d.hosts.assignSt, d.hosts.assignRefused = tb, st, refused
	d.m.assigned.Set(float64(st.Assigned))
	d.m.refusedMembers.Set(float64(len(st.Refused)))
	return st, refused
}

// share is this gateway's share of tb's assignment, and the members it
// refuses (beyond its limit, the last placed first).
func (c *Config) share(tb *mesh.Testbed) (AssignmentStatus, map[string]bool) {
	a := tb.Assignment()
	own := c.Identity.TincName
	gws := len(tb.Gateways())
	st := AssignmentStatus{Enabled: true, Gateways: gws, PerMember: a.PerMember(), Capacity: a.Capacity(own),
		Limit: c.limit(gws), Unplaced: len(a.Unplaced())}
	placed := a.Placed(own)
	st.Assigned = len(placed)
	var refused map[string]bool
	if len(placed) > st.Limit {
		refused = map[string]bool{}
		for _, n := range placed[st.Limit:] {
			refused[n] = true
		}
		st.Refused = slices.Sorted(maps.Keys(refused))
	}
	st.Held = st.Assigned - len(st.Refused)
	return st, refused
}

// heldChanges returns the members whose being held by this gateway
// differs between two snapshots' assignments: their files appear or go
// even when they did not change themselves.
func (d *Daemon) heldChanges(old, new *mesh.Testbed) []string {
	own := d.cfg.Identity.TincName
	held := func(tb *mesh.Testbed) map[string]bool {
		_, refused := d.cfg.share(tb)
		m := map[string]bool{}
		for _, n := range tb.Assignment().On(own) {
			if !refused[n] {
				m[n] = true
			}
		}
		return m
	}
	a, b := held(old), held(new)
	var out []string
	for n := range a {
		if !b[n] {
			out = append(out, n)
		}
	}
	for n := range b {
		if !a[n] {
			out = append(out, n)
		}
	}
	return out
}
