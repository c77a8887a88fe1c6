package egress

// The whole of a gateway's egress in the kernel: the table (Applier), the
// route that takes replies back into tinc, and IPv4 forwarding on the two
// interfaces egress uses.

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/confine-project/mgmtnet/internal/nft"
)

// RouteProtocol is the routing protocol number that marks the egress
// route as ours. It is the number node egress marks its routes and rules
// with (vpn.EgressProtocol): node egress routes only in tables of its own,
// the gateway only in main, so a machine that is both keeps them apart.
const RouteProtocol = 74

// Route is the route a Gateway asks for: its egress prefix straight into
// the tinc interface (scope link, protocol RouteProtocol, main table), so
// that the Internet's replies to the slivers go back through the mesh.
type Route struct {
	Dst netip.Prefix
	Dev string
}

// String prints r as "ip route" does.
func (r Route) String() string {
	return fmt.Sprintf("%s dev %s proto %d scope link", r.Dst, r.Dev, RouteProtocol)
}

// Route returns the route g asks for; ok is false when g is disabled. g
// must be valid.
func (g Gateway) Route() (r Route, ok bool) {
	if !g.Enabled {
		return Route{}, false
	}
	return Route{Dst: g.EgressPrefix.Masked(), Dev: g.TincIface}, true
}

// ForwardingIfaces returns the interfaces on which g needs IPv4
// forwarding: the tinc interface (the slivers' traffic out) and the WAN
// (the replies back). IPv4 forwards what arrives on an interface that
// forwards; the machine's other interfaces need nothing. It is empty when
// g is disabled.
func (g Gateway) ForwardingIfaces() []string {
	if !g.Enabled {
		return nil
	}
	return []string{g.TincIface, g.WANIface}
}

// Netlink is what the gateway's egress needs of rtnetlink. *netlink.Handle
// implements it (netlink.NewHandle, or netlink.NewHandleAt for a
// namespace).
type Netlink interface {
	LinkByName(name string) (netlink.Link, error)
	RouteListFiltered(family int, filter *netlink.Route, filterMask uint64) ([]netlink.Route, error)
	RouteAdd(route *netlink.Route) error
	RouteReplace(route *netlink.Route) error
	RouteDel(route *netlink.Route) error
}

var _ Netlink = (*netlink.Handle)(nil)

// Forwarding reads and sets the IPv4 forwarding switch of one interface
// (net.ipv4.conf.<iface>.forwarding). ProcForwarding is the real one.
type Forwarding interface {
	Forwarding(iface string) (bool, error)
	SetForwarding(iface string, on bool) error
}

// ProcForwarding is the real Forwarding: /proc/sys/net/ipv4/conf, in the
// network namespace of the calling thread.
type ProcForwarding struct{}

var _ Forwarding = ProcForwarding{}

// Forwarding reads /proc/sys/net/ipv4/conf/<iface>/forwarding.
func (ProcForwarding) Forwarding(iface string) (bool, error) {
	if err := nft.ValidIfname(iface); err != nil {
		return false, fmt.Errorf("read IPv4 forwarding: %w", err)
	}
	b, err := os.ReadFile(filepath.Join("/proc/sys/net/ipv4/conf", iface, "forwarding"))
	if err != nil {
		return false, fmt.Errorf("read IPv4 forwarding of %s: %w", iface, err)
	}
	return strings.TrimSpace(string(b)) != "0", nil
}

// SetForwarding is the package's SetForwarding.
func (ProcForwarding) SetForwarding(iface string, on bool) error { return SetForwarding(iface, on) }

// Kernel makes the kernel's gateway egress state match a Gateway: the
// nftables table TableName (through an Applier), the Route into the tinc
// interface, and IPv4 forwarding on ForwardingIfaces. It touches nothing
// else: of the routes, only IPv4 routes of protocol RouteProtocol in the
// main table are its own; a route of another protocol or table is never
// changed or deleted.
//
// Forwarding is switched on, never off: nothing says a switch was off
// before egress turned it on, and other routing on the machine may need
// it. (With the table gone, the machine's own firewall decides again what
// is forwarded.)
type Kernel struct {
	nl    Netlink
	fwd   Forwarding
	rules *Applier
	log   *slog.Logger
}

// NewKernel returns a Kernel that works through nl, fwd and conn (for the
// host: netlink.NewHandle(), ProcForwarding{} and nftables.New()). A nil
// log discards.
func NewKernel(nl Netlink, fwd Forwarding, conn nft.Conn, log *slog.Logger) *Kernel {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Kernel{nl: nl, fwd: fwd, rules: NewApplier(conn, log), log: log}
}

// Apply makes the kernel match want (calls must not overlap: one
// goroutine owns the gateway's egress). It observes the routes, the
// table and the forwarding switches first and changes only what differs,
// so applying the same value twice changes nothing. It adds before it
// deletes:
//
//  1. the route into tinc, added (or, when a route of ours holds its
//     place through another link, replaced in place): replies need it
//     before anything is masqueraded;
//  2. the table, in one transaction (deleted when want is disabled);
//  3. the other routes of ours, deleted (one gone already is no error:
//     the kernel drops routes through a link that went away);
//  4. forwarding switched on for the tinc interface and the WAN, last,
//     so the kernel forwards nothing the table does not judge.
//
// The tinc link must exist when want is enabled. When a route that is
// not ours holds the route's place, Apply leaves it: if it too routes the
// prefix into the tinc interface (as a tinc-up script may), egress works
// through it; otherwise Apply fails naming it. An invalid want changes
// nothing. Apply stops at the first error and returns it; what is in
// place stays, and the next Apply converges.
func (k *Kernel) Apply(ctx context.Context, want Gateway) error {
	if err := want.Validate(); err != nil {
		return err
	}
	route, enabled := want.Route()
	var wantNL *netlink.Route
	if enabled {
		link, err := k.nl.LinkByName(route.Dev)
		if err != nil {
			return fmt.Errorf("gateway egress: find tinc link %s: %w", route.Dev, err)
		}
		wantNL = route.netlink(link.Attrs().Index)
	}
	have, err := k.ourRoutes()
	if err != nil {
		return err
	}
	keep := -1 // the index in have of the route of ours that is wantNL after step 1
	if wantNL != nil {
		if keep, err = k.addRoute(route, wantNL, have); err != nil {
			return err
		}
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := k.rules.Apply(ctx, want); err != nil {
		return err
	}
	for i, h := range have {
		if i == keep {
			continue
		}
		if err := k.nl.RouteDel(&h); err != nil && !errors.Is(err, unix.ESRCH) {
			return fmt.Errorf("gateway egress: delete route %s: %w", routeText(h), err)
		}
		k.log.Info("gateway egress: route deleted", "route", routeText(h))
	}
	for _, iface := range want.ForwardingIfaces() {
		on, err := k.fwd.Forwarding(iface)
		if err != nil {
			return fmt.Errorf("gateway egress: %w", err)
		}
		if on {
			continue
		}
		if err := k.fwd.SetForwarding(iface, true); err != nil {
			return fmt.Errorf("gateway egress: %w", err)
		}
		k.log.Info("gateway egress: IPv4 forwarding switched on", "iface", iface)
	}
	return nil
}

// addRoute makes sure want routes the egress prefix, given our routes
// have, and returns the index in have of the route that now is want (-1
// when it was added, or when a route that is not ours serves).
func (k *Kernel) addRoute(r Route, want *netlink.Route, have []netlink.Route) (int, error) {
	if i := slices.IndexFunc(have, func(h netlink.Route) bool { return sameRoute(h, want) }); i >= 0 {
		return i, nil
	}
	if i := slices.IndexFunc(have, func(h netlink.Route) bool { return sameSlot(h, want) }); i >= 0 {
		// Ours, through another link (tinc's interface is another one):
		// replace it atomically, never leaving the prefix unrouted.
		if err := k.nl.RouteReplace(want); err != nil {
			return 0, fmt.Errorf("gateway egress: replace route %s: %w", r, err)
		}
		k.log.Info("gateway egress: route replaced", "route", r.String(), "was", routeText(have[i]))
		return i, nil
	}
	err := k.nl.RouteAdd(want)
	if err == nil {
		k.log.Info("gateway egress: route added", "route", r.String())
		return -1, nil
	}
	if !errors.Is(err, unix.EEXIST) {
		return 0, fmt.Errorf("gateway egress: add route %s: %w", r, err)
	}
	// Someone else's route holds the place: see whose, and whether it
	// does the job.
	others, lerr := k.list(&netlink.Route{Table: unix.RT_TABLE_MAIN, Dst: want.Dst}, netlink.RT_FILTER_TABLE|netlink.RT_FILTER_DST)
	if lerr != nil {
		return 0, fmt.Errorf("gateway egress: add route %s: %w (and %w)", r, err, lerr)
	}
	for _, o := range others {
		if sameSlot(o, want) && sameNextHop(o, want) {
			k.log.Debug("gateway egress: a route that is not ours routes the prefix into tinc; leaving it", "route", routeText(o))
			return -1, nil
		}
	}
	return 0, fmt.Errorf("gateway egress: add route %s: a route that is not ours (protocol other than %d) holds its place: %w", r, RouteProtocol, err)
}

// ourRoutes returns the IPv4 routes of protocol RouteProtocol in the main
// table.
func (k *Kernel) ourRoutes() ([]netlink.Route, error) {
	have, err := k.list(&netlink.Route{Table: unix.RT_TABLE_MAIN, Protocol: RouteProtocol}, netlink.RT_FILTER_TABLE|netlink.RT_FILTER_PROTOCOL)
	if err != nil {
		return nil, err
	}
	// The filter is applied by the library, after the dump; be sure.
	return slices.DeleteFunc(have, func(h netlink.Route) bool {
		return h.Table != unix.RT_TABLE_MAIN || h.Protocol != RouteProtocol
	}), nil
}

// dumpRetries bounds the retries of a dump that the kernel interrupted
// (a concurrent change); a few are plenty.
const dumpRetries = 5

func (k *Kernel) list(filter *netlink.Route, mask uint64) ([]netlink.Route, error) {
	var out []netlink.Route
	var err error
	for range dumpRetries {
		if out, err = k.nl.RouteListFiltered(netlink.FAMILY_V4, filter, mask); !errors.Is(err, netlink.ErrDumpInterrupted) {
			break
		}
	}
	if err != nil {
		return nil, fmt.Errorf("gateway egress: list routes: %w", err)
	}
	return out, nil
}

// netlink returns r as the route to add, through link oif.
func (r Route) netlink(oif int) *netlink.Route {
	return &netlink.Route{LinkIndex: oif, Dst: &net.IPNet{IP: r.Dst.Addr().AsSlice(), Mask: net.CIDRMask(r.Dst.Bits(), 32)},
		Protocol: RouteProtocol, Table: unix.RT_TABLE_MAIN, Scope: netlink.SCOPE_LINK, Type: unix.RTN_UNICAST, Family: netlink.FAMILY_V4}
}

// sameSlot reports whether have takes the place in the kernel's table
// that want would: two IPv4 routes with the same table, destination, TOS
// and metric cannot both exist.
func sameSlot(have netlink.Route, want *netlink.Route) bool {
	return have.Table == want.Table && ipNetEqual(have.Dst, want.Dst) && have.Tos == want.Tos && have.Priority == want.Priority
}

// sameNextHop reports whether have sends traffic where want would:
// straight into want's link, with no gateway.
func sameNextHop(have netlink.Route, want *netlink.Route) bool {
	typ := have.Type
	if typ == 0 {
		typ = unix.RTN_UNICAST
	}
	return typ == unix.RTN_UNICAST && have.LinkIndex == want.LinkIndex && have.Scope == want.Scope &&
		have.Gw == nil && len(have.MultiPath) == 0
}

// sameRoute reports whether the kernel's route have is the one we would
// add as want.
func sameRoute(have netlink.Route, want *netlink.Route) bool {
	return sameSlot(have, want) && sameNextHop(have, want) && have.Protocol == want.Protocol
}

func ipNetEqual(a, b *net.IPNet) bool {
	if a == nil || b == nil {
		return a == b
	}
	ao, _ := a.Mask.Size()
	bo, _ := b.Mask.Size()
	return ao == bo && a.IP.Equal(b.IP)
}

// routeText prints a route of ours (or in our way) for logs and errors.
func routeText(r netlink.Route) string {
	dst := "default"
	if r.Dst != nil {
		dst = r.Dst.String()
	}
	s := fmt.Sprintf("%s dev #%d proto %d table %d", dst, r.LinkIndex, r.Protocol, r.Table)
	if r.Gw != nil {
		s += " via " + r.Gw.String()
	}
	return s
}
