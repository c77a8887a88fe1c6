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

	"github.com/confine-project/mgmtnet/internal/nft"
	"github.com/confine-project/mgmtnet/vpn"
)

// EgressRules is the kernel state of a gateway's egress (design.md): the
// egress prefix routed into the tinc interface (replies to slivers go back
// through the mesh) and, in our nftables table, the egress prefix
// masqueraded to the WAN, forwarding only from the tinc interface with a
// source in the prefix (plus replies), spoofed sources and connections
// started from the WAN dropped and counted. The zero value is nothing: it
// removes every rule, route and table of ours (--cleanup).
type EgressRules struct {
	TincIface string
	WAN       string
	Prefix    netip.Prefix
}

// IsZero reports whether r asks for nothing.
func (r EgressRules) IsZero() bool { return r == EgressRules{} }

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
	if want != f.state {
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
	return map[string]uint64{"masqueraded": 0, "forwarded": 0, "spoofed": 0, "wan_initiated": 0}, nil
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
	return fmt.Sprintf("prefix %s via %s, masquerade to %s", r.Prefix, r.TincIface, r.WAN)
}

// GatewayNFTable is the nftables table (family inet) the gateway owns
// entirely (style.md: "inet mgmtnet"); the node's is vpn.NodeEgressNFTable.
const GatewayNFTable = "mgmtnet"

// The named counters of GatewayNFTable, as status and metrics show them.
const (
	CounterMasqueraded  = "masqueraded"   // packets masqueraded to the WAN
	CounterForwarded    = "forwarded"     // new connections forwarded from tinc to the WAN
	CounterSpoofed      = "spoofed"       // from tinc with a source outside the egress prefix: dropped
	CounterWANInitiated = "wan_initiated" // from the WAN into tinc, not a reply: dropped
)

// Table returns the nftables table r asks for (absent for the zero
// value). It judges IPv4 only (the management network is IPv6 and flows
// through untouched), and only traffic that involves the tinc interface:
//
//	forward (filter, priority filter, policy accept):
//	  tcp syn in or out of tinc: mss clamped to the route's MTU
//	  ct state established,related: accept (replies)
//	  iif tinc, saddr not in the prefix: count "spoofed", drop
//	  iif tinc, oif WAN, saddr in the prefix: count "forwarded", accept
//	  iif tinc, any other oif: drop (no relay into other networks)
//	  iif WAN, oif tinc: count "wan_initiated", drop
//	postrouting (nat, srcnat):
//	  oif WAN, saddr in the prefix: count "masqueraded", masquerade
func (r EgressRules) Table() nft.Table {
	t := nft.Table{Name: GatewayNFTable}
	if r.IsZero() {
		return t
	}
	v4 := nft.NFProtoIPv4
	t.Counters = []string{CounterForwarded, CounterMasqueraded, CounterSpoofed, CounterWANInitiated}
	t.Chains = []nft.Chain{
		{
			Name: "gw_forward",
			Hook: &nft.Hook{Type: nftables.ChainTypeFilter, Num: *nftables.ChainHookForward, Priority: *nftables.ChainPriorityFilter},
			Rules: []nft.Rule{
				nft.NewRule(v4(), nft.IIFName(r.TincIface), nft.TCPSYN(), nft.ClampMSSToRouteMTU()),
				nft.NewRule(v4(), nft.OIFName(r.TincIface), nft.TCPSYN(), nft.ClampMSSToRouteMTU()),
				nft.NewRule(v4(), nft.CtEstablishedRelated(), nft.Accept()),
				nft.NewRule(v4(), nft.IIFName(r.TincIface), nft.SAddrNot(r.Prefix), nft.CounterName(CounterSpoofed), nft.Drop()),
				nft.NewRule(v4(), nft.IIFName(r.TincIface), nft.OIFName(r.WAN), nft.SAddr(r.Prefix), nft.CounterName(CounterForwarded), nft.Accept()),
				nft.NewRule(v4(), nft.IIFName(r.TincIface), nft.Drop()),
				nft.NewRule(v4(), nft.IIFName(r.WAN), nft.OIFName(r.TincIface), nft.CounterName(CounterWANInitiated), nft.Drop()),
			},
		},
		{
			Name: "gw_postrouting",
			Hook: &nft.Hook{Type: nftables.ChainTypeNAT, Num: *nftables.ChainHookPostrouting, Priority: *nftables.ChainPriorityNATSource},
			Rules: []nft.Rule{
				nft.NewRule(v4(), nft.OIFName(r.WAN), nft.SAddr(r.Prefix), nft.CounterName(CounterMasqueraded), nft.Masquerade()),
			},
		},
	}
	return t
}

// route is the route of the egress prefix into tinc (replies to the
// slivers), marked with vpn.EgressProtocol.
func (r EgressRules) route(oif int) *netlink.Route {
	return &netlink.Route{LinkIndex: oif, Dst: &net.IPNet{IP: r.Prefix.Addr().AsSlice(), Mask: net.CIDRMask(r.Prefix.Bits(), 32)},
		Protocol: vpn.EgressProtocol, Table: unix.RT_TABLE_MAIN, Scope: netlink.SCOPE_LINK}
}

// NftEgress is the real EgressKernel: nftables for the table, netlink for
// the route. It touches only GatewayNFTable and IPv4 routes of protocol
// vpn.EgressProtocol in the main table.
type NftEgress struct {
	nl   *netlink.Handle
	conn nft.Conn
	err  error
}

var _ EgressKernel = (*NftEgress)(nil)

// NewNftEgress returns the real EgressKernel for this network namespace.
// An error to open netlink is reported by Apply and Counters.
func NewNftEgress() *NftEgress {
	e := &NftEgress{}
	if e.conn, e.err = nftables.New(); e.err != nil {
		e.err = fmt.Errorf("nftables: %w", e.err)
		return e
	}
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
		if _, err := nft.Apply(ctx, e.conn, want.Table()); err != nil {
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
	if _, err := nft.Apply(ctx, e.conn, want.Table()); err != nil {
		return err
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
	cs, err := nft.ReadCounters(ctx, e.conn, GatewayNFTable)
	if err != nil {
		return nil, err
	}
	out := make(map[string]uint64, len(cs))
	for k, c := range cs {
		out[k] = c.Packets
	}
	return out, nil
}
