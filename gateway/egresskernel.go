package gateway

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"

	"github.com/google/nftables"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/confine-project/mgmtnet/gateway/egress"
	"github.com/confine-project/mgmtnet/vpn"
)

// EgressRules is the kernel state of a gateway's egress (design.md): the
// egress prefix routed into the tinc interface (replies to slivers go back
// through the mesh) and gateway/egress's nftables table: the egress prefix
// masqueraded to the WAN, forwarding only from the tinc interface with a
// source in the prefix to public Internet destinations (plus replies),
// spoofed sources, special-purpose destinations (unless allowed),
// anything started from the WAN and traffic between tinc and other
// interfaces dropped and counted. The zero value is nothing: it removes
// every rule, route and table of ours (--cleanup).
type EgressRules struct {
	TincIface string
	WAN       string
	Prefix    netip.Prefix
	// Allow and Deny change the destinations egress drops (egress.allow,
	// egress.deny; see egress.Gateway).
	Allow, Deny []netip.Prefix
}

// IsZero reports whether r asks for nothing.
func (r EgressRules) IsZero() bool { return r.Equal(EgressRules{}) }

// Equal reports whether r and o ask for the same rules (an empty list is
// a nil one).
func (r EgressRules) Equal(o EgressRules) bool {
	return r.TincIface == o.TincIface && r.WAN == o.WAN && r.Prefix == o.Prefix &&
		slices.Equal(r.Allow, o.Allow) && slices.Equal(r.Deny, o.Deny)
}

// gateway is the egress.Gateway that r asks for (r not zero).
func (r EgressRules) gateway() egress.Gateway {
	return egress.Gateway{TincIface: r.TincIface, WANIface: r.WAN, EgressPrefix: r.Prefix, Allow: r.Allow, Deny: r.Deny, Enabled: true}
}

// EgressKernel makes the kernel match EgressRules, idempotently and adding
// before deleting, and reads the rules' counters.
type EgressKernel interface {
	Apply(ctx context.Context, want EgressRules) error
	Counters(ctx context.Context) (map[string]uint64, error)
}

// FakeEgress is a strict fake EgressKernel: it records the state applied
// and every call that changed it.
type FakeEgress struct {
	mu      sync.Mutex
	state   EgressRules
	changes []string
	// Err, when set, fails every Apply.
	Err error
}

var _ EgressKernel = (*FakeEgress)(nil)

// Apply records want as the state.
func (f *FakeEgress) Apply(ctx context.Context, want EgressRules) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.Err != nil {
		return f.Err
	}
	if !want.Equal(f.state) {
		f.changes = append(f.changes, want.String())
		f.state = want
	}
	return nil
}

// Counters returns zero counters for the state.
func (f *FakeEgress) Counters(ctx context.Context) (map[string]uint64, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.state.IsZero() {
		return nil, nil
	}
	return map[string]uint64{egress.CounterMasqueraded: 0, egress.CounterForwarded: 0, egress.CounterSpoofed: 0,
		egress.CounterBlockedDestination: 0, egress.CounterWANInitiated: 0}, nil
}

// State prints the applied state and the changes that led to it.
func (f *FakeEgress) State() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return "state: " + f.state.String() + "\nchanges:\n" + strings.Join(slices.Clone(f.changes), "\n")
}

// String is a one-line form of the rules.
func (r EgressRules) String() string {
	if r.IsZero() {
		return "none"
	}
	s := fmt.Sprintf("prefix %s via %s, masquerade to %s", r.Prefix, r.TincIface, r.WAN)
	if len(r.Allow) > 0 {
		s += fmt.Sprintf(", allow %v", r.Allow)
	}
	if len(r.Deny) > 0 {
		s += fmt.Sprintf(", deny %v", r.Deny)
	}
	return s
}

// route is the route of the egress prefix into tinc (replies to the
// slivers), marked with vpn.EgressProtocol.
func (r EgressRules) route(oif int) *netlink.Route {
	return &netlink.Route{LinkIndex: oif, Dst: &net.IPNet{IP: r.Prefix.Addr().AsSlice(), Mask: net.CIDRMask(r.Prefix.Bits(), 32)},
		Protocol: vpn.EgressProtocol, Table: unix.RT_TABLE_MAIN, Scope: netlink.SCOPE_LINK}
}

// NftEgress is the real EgressKernel: gateway/egress's table for NAT and
// filtering (nftables table inet mgmtnet), and netlink for the route. It
// touches only that table and IPv4 routes of protocol vpn.EgressProtocol
// in the main table.
type NftEgress struct {
	nl    *netlink.Handle
	rules *egress.Applier
	// reader has a connection of its own: Status reads the counters
	// from other goroutines than the loop that applies.
	reader *egress.Applier
	err    error
}

var _ EgressKernel = (*NftEgress)(nil)

// NewNftEgress returns the real EgressKernel for this network namespace.
// An error to open netlink is reported by Apply and Counters.
func NewNftEgress() *NftEgress {
	e := &NftEgress{}
	conn, err := nftables.New()
	if err != nil {
		e.err = fmt.Errorf("nftables: %w", err)
		return e
	}
	e.rules = egress.NewApplier(conn, nil)
	rconn, err := nftables.New()
	if err != nil {
		e.err = fmt.Errorf("nftables: %w", err)
		return e
	}
	e.reader = egress.NewApplier(rconn, nil)
	if e.nl, e.err = netlink.NewHandle(); e.err != nil {
		e.err = fmt.Errorf("netlink: %w", e.err)
	}
	return e
}

// Apply makes the kernel match want: first the route (replies need it
// before anything is masqueraded), then the table in one transaction;
// for the zero value the table goes first, then our routes.
func (e *NftEgress) Apply(ctx context.Context, want EgressRules) error {
	if e.err != nil {
		return e.err
	}
	if want.IsZero() {
		if err := e.rules.Apply(ctx, egress.Gateway{}); err != nil {
			return err
		}
		return e.syncRoutes(nil)
	}
	link, err := e.nl.LinkByName(want.TincIface)
	if err != nil {
		return fmt.Errorf("egress: find tinc link %s: %w", want.TincIface, err)
	}
	if err := e.syncRoutes(want.route(link.Attrs().Index)); err != nil {
		return err
	}
	if err := e.rules.Apply(ctx, want.gateway()); err != nil {
		return err
	}
	// IPv4 forwards what arrives on an interface that forwards: tinc for
	// the slivers' traffic, the WAN for the replies. Only these two; the
	// machine's other interfaces stay as they are (and --cleanup leaves
	// the switches on: nothing says they were off before).
	for _, iface := range []string{want.TincIface, want.WAN} {
		if err := egress.SetForwarding(iface, true); err != nil {
			return err
		}
	}
	return nil
}

// syncRoutes makes our IPv4 routes in the main table exactly want (nil:
// none): add (or replace) first, then delete the others.
func (e *NftEgress) syncRoutes(want *netlink.Route) error {
	filter := &netlink.Route{Table: unix.RT_TABLE_MAIN, Protocol: vpn.EgressProtocol}
	have, err := e.nl.RouteListFiltered(netlink.FAMILY_V4, filter, netlink.RT_FILTER_TABLE|netlink.RT_FILTER_PROTOCOL)
	if err != nil {
		return fmt.Errorf("egress: list routes: %w", err)
	}
	found := false
	for _, h := range have {
		if want != nil && h.Dst != nil && h.Dst.String() == want.Dst.String() && h.LinkIndex == want.LinkIndex {
			found = true
		}
	}
	if want != nil && !found {
		if err := e.nl.RouteReplace(want); err != nil {
			return fmt.Errorf("egress: route %s: %w", want.Dst, err)
		}
	}
	for _, h := range have {
		if want != nil && h.Dst != nil && h.Dst.String() == want.Dst.String() {
			continue
		}
		if err := e.nl.RouteDel(&h); err != nil && !errors.Is(err, unix.ESRCH) {
			return fmt.Errorf("egress: delete route %s: %w", h.Dst, err)
		}
	}
	return nil
}

// Counters returns the packet counts of the table's named counters.
func (e *NftEgress) Counters(ctx context.Context) (map[string]uint64, error) {
	if e.err != nil {
		return nil, e.err
	}
	return e.reader.Counters(ctx)
}
