package vpn

// Node egress (design.md, "Internet egress for slivers"): slivers' private
// IPv4 traffic to destinations outside the community network is
// policy-routed into the tinc interface and SNATed to the node's egress
// address; a gateway masquerades it to the Internet.
//
//	ip rule:   from <sliver prefix> lookup 7465 priority 7465 proto 74
//	table 7465: default dev confine proto 74 scope link
//	            throw 10.0.0.0/8 proto 74 (and each community prefix)
//	nftables:  table inet mgmtnet_node (SNAT to the egress address, MSS clamp)
//
// A throw route ends the lookup in our table as if it had no match, so the
// kernel goes on to the next rule (main): traffic to the community network
// keeps its usual path. While the tinc link is down the kernel removes the
// default route through it, our table then throws everything, and slivers
// get the node's ordinary routing, exactly as without egress.

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net"
	"net/netip"
	"slices"
	"strings"

	"github.com/google/nftables"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/confine-project/mgmtnet/internal/nft"
)

// The numbers that mark node egress's kernel objects.
const (
	// EgressTable is the default routing table of node egress. Any number
	// but 0 and 253..255 works; 7465 is taken by nothing we know of on our
	// targets (Tailscale uses 52, wg-quick 51820, OpenWrt's netifd and
	// mwan3 low numbers and interface-derived ones).
	EgressTable = 7465
	// EgressRulePriority is the default priority of our ip rules: after
	// the local table (0) and the rules that Tailscale (5210-5270) and
	// OpenWrt's mwan3 (1000-3000) add, before netifd's source rules
	// (10000 and up) and main (32766).
	EgressRulePriority = 7465
	// EgressProtocol is the routing protocol number on every route and ip
	// rule we add; it, not the table, is what marks them ours. 74 is
	// assigned neither by the kernel (rtnetlink.h RTPROT_*) nor by
	// iproute2's rt_protos, and no routing daemon we know uses it (zebra
	// and FRR use 11 and 186-198, BIRD 12, babeld 42, Open/R 99).
	EgressProtocol = 74
	// NodeEgressNFTable is the nftables table (family inet) that node
	// egress owns entirely. The gateway's is "mgmtnet" (style.md): one
	// table per role, so that node-boot and a gateway daemon on one
	// machine never share, or race on, a table each of them replaces and
	// deletes whole.
	NodeEgressNFTable = "mgmtnet_node"
)

// The chains of NodeEgressNFTable.
const (
	nodeForward     = "node_forward"
	nodePostrouting = "node_postrouting"
)

// DefaultCommunity returns the destinations that stay off the VPN by
// default: the RFC 1918 private ranges, which community networks use.
func DefaultCommunity() []netip.Prefix {
	return []netip.Prefix{
		netip.MustParsePrefix("10.0.0.0/8"),
		netip.MustParsePrefix("172.16.0.0/12"),
		netip.MustParsePrefix("192.168.0.0/16"),
	}
}

// NodeEgress is the desired egress state of a node. Build it with
// NewNodeEgress, which fills in the defaults and sorts it. The zero value
// asks for nothing: applying it removes every rule, route and table of
// node egress (--cleanup).
//
// TCP MSS clamping is always on while egress is: a SYN leaving by the
// tinc interface gets an MSS that fits its MTU (1400), so an Internet host
// never sends what tinc cannot carry. SYN-ACKs coming back are clamped by
// the gateway, on their way into tinc; the node's rule for SYNs arriving
// from tinc only lowers them to the MTU of the route on to the sliver.
type NodeEgress struct {
	// TincIface is the tinc (tun) interface, e.g. "confine".
	TincIface string
	// Sources are the slivers' private IPv4 prefixes, e.g.
	// 192.168.157.0/25. They must not hold the addresses the node itself
	// reaches its tinc peers from: those packets would be routed into
	// tinc.
	Sources []netip.Prefix
	// EgressAddr is the node's egress IPv4 address (addressing.Plan
	// EgressIPv4), e.g. 100.64.0.31: the SNAT target.
	EgressAddr netip.Addr
	// Community are the IPv4 destinations that stay off the VPN (throw
	// routes in Table). NewNodeEgress makes nil DefaultCommunity.
	Community []netip.Prefix
	// Table is the routing table; default EgressTable.
	Table int
	// Priority is the ip rules' priority; default EgressRulePriority.
	Priority int
}

// NewNodeEgress returns the egress state of a node whose tinc interface is
// tincIface, whose egress address is egressAddr and whose slivers use
// sources. A nil community means DefaultCommunity(). Prefixes are masked,
// sorted and deduplicated; Table and Priority get their defaults.
func NewNodeEgress(tincIface string, egressAddr netip.Addr, sources, community []netip.Prefix) (NodeEgress, error) {
	if community == nil {
		community = DefaultCommunity()
	}
	e := NodeEgress{TincIface: tincIface, Sources: sources, EgressAddr: egressAddr, Community: community}.normalize()
	if err := e.Validate(); err != nil {
		return NodeEgress{}, err
	}
	return e, nil
}

// IsZero reports whether e asks for nothing.
func (e NodeEgress) IsZero() bool {
	return e.TincIface == "" && len(e.Sources) == 0 && !e.EgressAddr.IsValid() && len(e.Community) == 0 && e.Table == 0 && e.Priority == 0
}

// Equal reports whether e and o ask for the same kernel state.
func (e NodeEgress) Equal(o NodeEgress) bool {
	e, o = e.normalize(), o.normalize()
	return e.TincIface == o.TincIface && e.EgressAddr == o.EgressAddr && e.Table == o.Table && e.Priority == o.Priority &&
		slices.Equal(e.Sources, o.Sources) && slices.Equal(e.Community, o.Community)
}

// normalize returns e with defaults, prefixes masked, sorted and
// deduplicated. The zero value stays zero.
func (e NodeEgress) normalize() NodeEgress {
	if e.IsZero() {
		return e
	}
	e.EgressAddr = e.EgressAddr.Unmap()
	e.Sources = sortPrefixes(e.Sources)
	e.Community = sortPrefixes(e.Community)
	if e.Table == 0 {
		e.Table = EgressTable
	}
	if e.Priority == 0 {
		e.Priority = EgressRulePriority
	}
	return e
}

func sortPrefixes(in []netip.Prefix) []netip.Prefix {
	out := make([]netip.Prefix, 0, len(in))
	for _, p := range in {
		if p.IsValid() {
			p = netip.PrefixFrom(p.Addr().Unmap(), p.Bits()-(p.Addr().BitLen()-p.Addr().Unmap().BitLen())).Masked()
		}
		out = append(out, p)
	}
	slices.SortFunc(out, comparePrefix)
	return slices.Compact(out)
}

func comparePrefix(a, b netip.Prefix) int {
	return cmp.Or(a.Addr().Compare(b.Addr()), cmp.Compare(a.Bits(), b.Bits()))
}

// Validate reports what is wrong with e (after defaults), if anything.
func (e NodeEgress) Validate() error {
	if e.IsZero() {
		return nil
	}
	e = e.normalize()
	var errs []error
	if err := nft.ValidIfname(e.TincIface); err != nil {
		errs = append(errs, fmt.Errorf("tinc interface: %w", err))
	}
	if a := e.EgressAddr; !a.Is4() || a.IsUnspecified() || a.IsLoopback() || a.IsMulticast() || a == netip.AddrFrom4([4]byte{255, 255, 255, 255}) {
		errs = append(errs, fmt.Errorf("egress address %v: want a unicast IPv4 address (e.g. 100.64.0.31)", a))
	}
	if len(e.Sources) == 0 {
		errs = append(errs, errors.New("no sliver source prefixes"))
	}
	for _, p := range e.Sources {
		if !p.IsValid() || !p.Addr().Is4() || p.Bits() == 0 {
			// A /0 would route the node's own traffic, tinc's included,
			// into tinc.
			errs = append(errs, fmt.Errorf("sliver source prefix %v: want an IPv4 prefix longer than /0", p))
		}
	}
	for _, p := range e.Community {
		if !p.IsValid() || !p.Addr().Is4() || p.Bits() == 0 {
			errs = append(errs, fmt.Errorf("community prefix %v: want an IPv4 prefix longer than /0 (a /0 throws everything)", p))
		}
	}
	switch t := e.Table; {
	case t < 1 || int64(t) > math.MaxUint32:
		errs = append(errs, fmt.Errorf("route table %d: out of range", t))
	case reservedTable(t):
		errs = append(errs, fmt.Errorf("route table %d: reserved (compat, default, main, local); pick another, e.g. %d", t, EgressTable))
	}
	if p := e.Priority; p < 1 || p >= 32766 {
		errs = append(errs, fmt.Errorf("rule priority %d: want 1..32765, between the local (0) and main (32766) rules", p))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("node egress: %w", err)
	}
	return nil
}

// reservedTable reports whether t is one of the kernel's tables (compat,
// default, main, local), which node egress never routes in.
func reservedTable(t int) bool { return t >= unix.RT_TABLE_COMPAT && t <= unix.RT_TABLE_LOCAL }

// egressRoute is one route of ours, as desired.
type egressRoute struct {
	table int
	dst   netip.Prefix
	typ   int    // unix.RTN_UNICAST or unix.RTN_THROW
	dev   string // for RTN_UNICAST
}

// String prints r as "ip route show table N" does.
func (r egressRoute) String() string {
	dst := r.dst.String()
	if r.dst.Bits() == 0 {
		dst = "default"
	}
	if r.typ == unix.RTN_THROW {
		return fmt.Sprintf("throw %s proto %d", dst, EgressProtocol)
	}
	return fmt.Sprintf("%s dev %s proto %d scope link", dst, r.dev, EgressProtocol)
}

// egressRule is one ip rule of ours, as desired.
type egressRule struct {
	src             netip.Prefix
	table, priority int
}

// String prints r as "ip rule" does.
func (r egressRule) String() string {
	return fmt.Sprintf("%d:\tfrom %s lookup %d proto %d", r.priority, r.src, r.table, EgressProtocol)
}

// routes returns the routes e asks for: the throws, then the default (the
// order they are added in, so the table is never briefly without its
// exceptions).
func (e NodeEgress) routes() []egressRoute {
	if e.IsZero() {
		return nil
	}
	var out []egressRoute
	for _, p := range e.Community {
		out = append(out, egressRoute{table: e.Table, dst: p, typ: unix.RTN_THROW})
	}
	return append(out, egressRoute{table: e.Table, dst: netip.PrefixFrom(netip.IPv4Unspecified(), 0), typ: unix.RTN_UNICAST, dev: e.TincIface})
}

func (e NodeEgress) rules() []egressRule {
	var out []egressRule
	for _, p := range e.Sources {
		out = append(out, egressRule{src: p, table: e.Table, priority: e.Priority})
	}
	return out
}

// nftTable returns the nftables table e asks for (absent for the zero
// value).
func (e NodeEgress) nftTable() nft.Table {
	t := nft.Table{Name: NodeEgressNFTable}
	if e.IsZero() {
		return t
	}
	clamp := func(dir nft.Term) nft.Rule {
		return nft.NewRule(nft.NFProtoIPv4(), dir, nft.TCPSYN(), nft.ClampMSSToRouteMTU())
	}
	var snat []nft.Rule
	for _, p := range e.Sources {
		snat = append(snat, nft.NewRule(nft.NFProtoIPv4(), nft.OIFName(e.TincIface), nft.SAddr(p), nft.SNAT(e.EgressAddr)))
	}
	t.Chains = []nft.Chain{
		{
			// Filter type at mangle priority, as iptables' TCPMSS in
			// mangle FORWARD: before any filter chain, and accepting
			// everything. The node never drops anything here.
			Name: nodeForward,
			Hook: &nft.Hook{Type: nftables.ChainTypeFilter, Num: *nftables.ChainHookForward, Priority: *nftables.ChainPriorityMangle},
			Rules: []nft.Rule{
				clamp(nft.OIFName(e.TincIface)),
				clamp(nft.IIFName(e.TincIface)),
			},
		},
		{
			Name:  nodePostrouting,
			Hook:  &nft.Hook{Type: nftables.ChainTypeNAT, Num: *nftables.ChainHookPostrouting, Priority: *nftables.ChainPriorityNATSource},
			Rules: snat,
		},
	}
	return t
}

// Render returns the kernel state e asks for, as "ip rule", "ip route
// show table" and "nft list table" print it (the zero value renders as
// nothing). The golden tests pin it.
func (e NodeEgress) Render() (string, error) {
	if err := e.Validate(); err != nil {
		return "", err
	}
	e = e.normalize()
	if e.IsZero() {
		return "# node egress: none\n", nil
	}
	var b strings.Builder
	b.WriteString("# ip -4 rule\n")
	for _, r := range e.rules() {
		fmt.Fprintln(&b, r)
	}
	fmt.Fprintf(&b, "# ip -4 route show table %d\n", e.Table)
	routes := e.routes()
	slices.SortFunc(routes, func(a, b egressRoute) int { return comparePrefix(a.dst, b.dst) })
	for _, r := range routes {
		fmt.Fprintln(&b, r)
	}
	fmt.Fprintf(&b, "# nft list table inet %s\n", NodeEgressNFTable)
	b.WriteString(e.nftTable().String())
	return b.String(), nil
}

// EgressNetlink is what node egress needs of rtnetlink. *netlink.Handle
// implements it (netlink.NewHandle, or netlink.NewHandleAt for a
// namespace).
type EgressNetlink interface {
	LinkByName(name string) (netlink.Link, error)
	RouteListFiltered(family int, filter *netlink.Route, filterMask uint64) ([]netlink.Route, error)
	RouteAdd(route *netlink.Route) error
	RouteReplace(route *netlink.Route) error
	RouteDel(route *netlink.Route) error
	RuleListFiltered(family int, filter *netlink.Rule, filterMask uint64) ([]netlink.Rule, error)
	RuleAdd(rule *netlink.Rule) error
	RuleDel(rule *netlink.Rule) error
}

var _ EgressNetlink = (*netlink.Handle)(nil)

// NodeEgressApplier makes the kernel's node egress state match a
// NodeEgress. It touches only ip rules and routes with protocol
// EgressProtocol (routes in any table but the kernel's own: compat,
// default, main, local), and the nftables table NodeEgressNFTable.
type NodeEgressApplier struct {
	nl  EgressNetlink
	nft nft.Conn
	log *slog.Logger
}

// NewNodeEgressApplier returns an applier that works through nl and conn
// (for the host: netlink.NewHandle() and nftables.New()). A nil log
// discards.
func NewNodeEgressApplier(nl EgressNetlink, conn nft.Conn, log *slog.Logger) *NodeEgressApplier {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &NodeEgressApplier{nl: nl, nft: conn, log: log}
}

// Apply makes the kernel match want (calls must not overlap: one
// goroutine owns the node's egress). It observes the rules, routes and
// table of ours, and changes only what differs, so applying the same value
// twice changes nothing. It adds before it deletes, in an order that keeps
// one promise at every instant: every source our rules route into tinc is
// SNATed to an egress address (a gateway drops what is not).
//
//  1. nftables: SNAT for the wanted sources and for those our rules still
//     route (one atomic batch);
//  2. routes (throws first, then the default), then rules, added; a route
//     of ours that differs only in its next hop is replaced in place;
//  3. rules, then routes, that are not wanted, deleted;
//  4. nftables: exactly what want asks (the table goes for the zero value).
//
// The tinc link must exist when want is not zero: the kernel takes no
// route through a missing link. It also drops our default route when the
// link goes away, so Apply again once tincd is back (from tinc-up): only
// the missing route is added. Apply stops at the first error and returns
// it; what is in place stays, and the next Apply converges.
func (a *NodeEgressApplier) Apply(ctx context.Context, want NodeEgress) error {
	if err := want.Validate(); err != nil {
		return err
	}
	want = want.normalize()
	oif := 0
	if !want.IsZero() {
		link, err := a.nl.LinkByName(want.TincIface)
		if err != nil {
			return fmt.Errorf("node egress: find tinc link %s: %w", want.TincIface, err)
		}
		oif = link.Attrs().Index
	}
	haveRules, err := a.ourRules()
	if err != nil {
		return err
	}
	haveRoutes, err := a.ourRoutes()
	if err != nil {
		return err
	}

	// 1. SNAT what is, and what will be, routed into tinc.
	bridged := false
	if !want.IsZero() {
		bridge := want
		bridge.Sources = slices.Clone(want.Sources)
		for _, r := range haveRules {
			if p, ok := prefixOf(r.Src); ok && p.Addr().Is4() && p.Bits() > 0 {
				bridge.Sources = append(bridge.Sources, p)
			}
		}
		bridge = bridge.normalize()
		if err := a.applyNFT(ctx, bridge); err != nil {
			return err
		}
		bridged = bridge.Equal(want)
	}

	// 2. Add.
	replaced := map[routeID]bool{}
	for _, r := range want.routes() {
		if err := ctx.Err(); err != nil {
			return err
		}
		nr := r.netlink(oif)
		if slices.ContainsFunc(haveRoutes, func(h netlink.Route) bool { return sameRoute(h, nr) }) {
			continue
		}
		if slices.ContainsFunc(haveRoutes, func(h netlink.Route) bool { return idOf(h) == idOf(*nr) }) {
			// Same slot in the kernel's table (destination, TOS, metric),
			// other next hop: replace it atomically; adding would clash.
			if err := a.nl.RouteReplace(nr); err != nil {
				return fmt.Errorf("node egress: replace route %s table %d: %w", r, r.table, err)
			}
			replaced[idOf(*nr)] = true
			a.log.Info("node egress: route replaced", "route", r.String(), "table", r.table)
			continue
		}
		if err := a.nl.RouteAdd(nr); err != nil {
			if !errors.Is(err, unix.EEXIST) {
				return fmt.Errorf("node egress: add route %s table %d: %w", r, r.table, err)
			}
			// The slot was free when read. tinc-up puts the default route
			// back whenever tincd starts, and may have done so since: a
			// route of ours there now is no conflict.
			again, lerr := a.ourRoutes()
			if lerr != nil {
				return lerr
			}
			switch {
			case slices.ContainsFunc(again, func(h netlink.Route) bool { return sameRoute(h, nr) }):
				continue
			case slices.ContainsFunc(again, func(h netlink.Route) bool { return idOf(h) == idOf(*nr) }):
				if err := a.nl.RouteReplace(nr); err != nil {
					return fmt.Errorf("node egress: replace route %s table %d: %w", r, r.table, err)
				}
				replaced[idOf(*nr)] = true
				a.log.Info("node egress: route replaced", "route", r.String(), "table", r.table)
				continue
			}
			return fmt.Errorf("node egress: add route %s table %d: a route that is not ours (protocol other than %d) holds its place: %w", r, r.table, EgressProtocol, err)
		}
		a.log.Info("node egress: route added", "route", r.String(), "table", r.table)
	}
	wantRules := want.rules()
	for _, r := range wantRules {
		if slices.ContainsFunc(haveRules, func(h netlink.Rule) bool { return isRule(h, r) }) {
			continue
		}
		if err := a.nl.RuleAdd(r.netlink()); err != nil {
			return fmt.Errorf("node egress: add rule %s: %w", r, err)
		}
		a.log.Info("node egress: rule added", "rule", r.String())
	}

	// 3. Delete.
	for _, h := range haveRules {
		if slices.ContainsFunc(wantRules, func(r egressRule) bool { return isRule(h, r) }) {
			continue
		}
		if err := a.nl.RuleDel(&h); err != nil {
			return fmt.Errorf("node egress: delete rule %v: %w", h, err)
		}
		a.log.Info("node egress: rule deleted", "rule", h.String())
	}
	for _, h := range haveRoutes {
		if replaced[idOf(h)] || slices.ContainsFunc(want.routes(), func(r egressRoute) bool { return sameRoute(h, r.netlink(oif)) }) {
			continue
		}
		if err := a.nl.RouteDel(&h); err != nil && !errors.Is(err, unix.ESRCH) {
			// ESRCH: gone already (the kernel drops routes through a link
			// that went away).
			return fmt.Errorf("node egress: delete route %v: %w", h, err)
		}
		a.log.Info("node egress: route deleted", "route", h.String())
	}

	// 4. Exactly what is wanted (done in 1 when no other source was
	// routed).
	if bridged {
		return nil
	}
	return a.applyNFT(ctx, want)
}

func (a *NodeEgressApplier) applyNFT(ctx context.Context, e NodeEgress) error {
	changed, err := nft.Apply(ctx, a.nft, e.nftTable())
	if err != nil {
		return fmt.Errorf("node egress: %w", err)
	}
	if changed {
		a.log.Info("node egress: nftables table updated", "table", "inet "+NodeEgressNFTable, "sources", e.Sources)
	}
	return nil
}

// dumpRetries bounds the retries of a dump that the kernel interrupted
// (a concurrent change); a few are plenty.
const dumpRetries = 5

// ourRules returns the IPv4 ip rules with our protocol, sorted.
func (a *NodeEgressApplier) ourRules() ([]netlink.Rule, error) {
	var all []netlink.Rule
	err := retryDump(func() (err error) {
		all, err = a.nl.RuleListFiltered(netlink.FAMILY_V4, nil, 0)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("node egress: list ip rules: %w", err)
	}
	ours := slices.DeleteFunc(all, func(r netlink.Rule) bool { return r.Protocol != EgressProtocol })
	slices.SortFunc(ours, func(a, b netlink.Rule) int { return strings.Compare(a.String(), b.String()) })
	return ours, nil
}

// ourRoutes returns the IPv4 routes with our protocol in every table but
// the reserved ones, sorted. Node egress never routes in those (Validate
// refuses them), and a gateway's egress route, of the same protocol, lives
// in main: on a machine that is both, neither takes the other's.
func (a *NodeEgressApplier) ourRoutes() ([]netlink.Route, error) {
	var ours []netlink.Route
	err := retryDump(func() (err error) {
		// Table 0 with RT_FILTER_TABLE: every table.
		ours, err = a.nl.RouteListFiltered(netlink.FAMILY_V4,
			&netlink.Route{Table: unix.RT_TABLE_UNSPEC, Protocol: EgressProtocol},
			netlink.RT_FILTER_TABLE|netlink.RT_FILTER_PROTOCOL)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("node egress: list routes: %w", err)
	}
	ours = slices.DeleteFunc(ours, func(r netlink.Route) bool { return reservedTable(r.Table) })
	slices.SortFunc(ours, func(a, b netlink.Route) int {
		ia, ib := idOf(a), idOf(b)
		return cmp.Or(cmp.Compare(ia.table, ib.table), comparePrefix(ia.dst, ib.dst), cmp.Compare(ia.tos, ib.tos), cmp.Compare(ia.metric, ib.metric))
	})
	return ours, nil
}

func retryDump(f func() error) error {
	var err error
	for range dumpRetries {
		if err = f(); !errors.Is(err, netlink.ErrDumpInterrupted) {
			return err
		}
	}
	return err
}

// routeID is what identifies an IPv4 route in the kernel: two routes with
// the same table, destination, TOS and metric cannot both exist.
type routeID struct {
	table       int
	dst         netip.Prefix
	tos, metric int
}

func idOf(r netlink.Route) routeID {
	dst, ok := prefixOf(r.Dst)
	if !ok {
		dst = netip.PrefixFrom(netip.IPv4Unspecified(), 0) // the default route
	}
	return routeID{table: r.Table, dst: dst, tos: r.Tos, metric: r.Priority}
}

// sameRoute reports whether the kernel's route have is the one we would
// add as want.
func sameRoute(have netlink.Route, want *netlink.Route) bool {
	return idOf(have) == idOf(*want) && have.Type == want.Type && have.LinkIndex == want.LinkIndex &&
		have.Scope == want.Scope && have.Gw == nil && len(have.MultiPath) == 0
}

func prefixOf(n *net.IPNet) (netip.Prefix, bool) {
	if n == nil {
		return netip.Prefix{}, false
	}
	a, ok := netip.AddrFromSlice(n.IP)
	if !ok {
		return netip.Prefix{}, false
	}
	ones, _ := n.Mask.Size()
	a = a.Unmap()
	return netip.PrefixFrom(a, ones).Masked(), true
}

func ipNet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}

func (r egressRoute) netlink(oif int) *netlink.Route {
	nr := &netlink.Route{Table: r.table, Dst: ipNet(r.dst), Type: r.typ, Protocol: EgressProtocol, Family: netlink.FAMILY_V4}
	if r.typ == unix.RTN_UNICAST {
		nr.LinkIndex = oif
		nr.Scope = netlink.SCOPE_LINK
	}
	return nr
}

func (r egressRule) netlink() *netlink.Rule {
	nr := netlink.NewRule() // unset selectors are -1, not 0 (0 would mean e.g. "suppress_prefixlength 0")
	nr.Family = netlink.FAMILY_V4
	nr.Src = ipNet(r.src)
	nr.Table = r.table
	nr.Priority = r.priority
	nr.Protocol = EgressProtocol
	return nr
}

// isRule reports whether the kernel's rule have is exactly r: same source,
// table and priority, and no other selector.
func isRule(have netlink.Rule, r egressRule) bool {
	src, ok := prefixOf(have.Src)
	return ok && src == r.src && have.Table == r.table && have.Priority == r.priority &&
		have.Dst == nil && have.IifName == "" && have.OifName == "" && have.Mark == 0 && have.Mask == nil &&
		have.Tos == 0 && !have.Invert && have.IPProto == 0 && have.Dport == nil && have.Sport == nil &&
		have.UIDRange == nil && have.TunID == 0 && have.Flow <= 0 &&
		// netlink.NewRule's "unset" is -1: the kernel reports these only
		// when they are set, and 0 is a value.
		have.Goto < 0 && have.SuppressPrefixlen < 0 && have.SuppressIfgroup < 0
}
