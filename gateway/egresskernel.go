package gateway

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"strings"
	"sync"

	"github.com/google/nftables"
	"github.com/vishvananda/netlink"

	"github.com/confine-project/mgmtnet/gateway/egress"
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

// NftEgress is the real EgressKernel: gateway/egress's Kernel (the
// nftables table inet mgmtnet, the route of the egress prefix into tinc,
// IPv4 forwarding) on this network namespace's netlink, nftables and
// /proc. Of the routes it touches only IPv4 routes of protocol
// egress.RouteProtocol in the main table.
type NftEgress struct {
	kernel *egress.Kernel
	// reader has a connection of its own: Status reads the counters
	// from other goroutines than the loop that applies.
	reader *egress.Applier
	err    error
}

var _ EgressKernel = (*NftEgress)(nil)

// NewNftEgress returns the real EgressKernel for this network namespace,
// logging its changes to log (nil: discard). An error to open netlink or
// nftables is reported by Apply and Counters.
func NewNftEgress(log *slog.Logger) *NftEgress {
	e := &NftEgress{}
	conn, err := nftables.New()
	if err != nil {
		e.err = fmt.Errorf("nftables: %w", err)
		return e
	}
	rconn, err := nftables.New()
	if err != nil {
		e.err = fmt.Errorf("nftables: %w", err)
		return e
	}
	e.reader = egress.NewApplier(rconn, nil)
	nl, err := netlink.NewHandle()
	if err != nil {
		e.err = fmt.Errorf("netlink: %w", err)
		return e
	}
	e.kernel = egress.NewKernel(nl, egress.ProcForwarding{}, conn, log)
	return e
}

// Apply makes the kernel match want (see egress.Kernel.Apply: the route
// before the table, forwarding last; for the zero value the table, then
// our routes).
func (e *NftEgress) Apply(ctx context.Context, want EgressRules) error {
	if e.err != nil {
		return e.err
	}
	if want.IsZero() {
		return e.kernel.Apply(ctx, egress.Gateway{})
	}
	return e.kernel.Apply(ctx, want.gateway())
}

// Counters returns the packet counts of the table's named counters.
func (e *NftEgress) Counters(ctx context.Context) (map[string]uint64, error) {
	if e.err != nil {
		return nil, e.err
	}
	return e.reader.Counters(ctx)
}
