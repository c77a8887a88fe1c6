package vpn

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/confine-project/mgmtnet/internal/nft"
	"github.com/confine-project/mgmtnet/internal/nft/nfttest"
)

func pfx(s ...string) []netip.Prefix {
	var out []netip.Prefix
	for _, x := range s {
		out = append(out, netip.MustParsePrefix(x))
	}
	return out
}

var egressAddr = netip.MustParseAddr("100.64.0.31")

func TestNewNodeEgress(t *testing.T) {
	e, err := NewNodeEgress("confine", egressAddr, pfx("192.168.157.5/25", "192.168.157.0/25"), nil)
	if err != nil {
		t.Fatal(err)
	}
	want := NodeEgress{TincIface: "confine", Sources: pfx("192.168.157.0/25"), EgressAddr: egressAddr,
		Community: pfx("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"), Table: EgressTable, Priority: EgressRulePriority}
	if d := cmp.Diff(want, e, cmp.Comparer(func(a, b netip.Addr) bool { return a == b }), cmp.Comparer(func(a, b netip.Prefix) bool { return a == b })); d != "" {
		t.Errorf("NewNodeEgress (-want +got):\n%s", d)
	}
	// Equal sees through order, duplicates and defaults.
	raw := NodeEgress{TincIface: "confine", Sources: pfx("192.168.157.0/25", "192.168.157.0/25"), EgressAddr: egressAddr,
		Community: pfx("192.168.0.0/16", "10.1.0.0/8", "172.16.0.0/12")}
	if !e.Equal(raw) || e.Equal(NodeEgress{}) || !(NodeEgress{}).Equal(NodeEgress{}) {
		t.Error("Equal")
	}

	for _, tt := range []struct {
		name string
		e    NodeEgress
		err  string // "" for valid
	}{
		{"zero is valid: nothing", NodeEgress{}, ""},
		{"no iface", NodeEgress{Sources: pfx("192.168.157.0/25"), EgressAddr: egressAddr}, "tinc interface: interface name is empty"},
		{"iface too long", NodeEgress{TincIface: "confine-is-too-long", Sources: pfx("192.168.157.0/25"), EgressAddr: egressAddr}, "longer than 15"},
		{"no sources", NodeEgress{TincIface: "confine", EgressAddr: egressAddr}, "no sliver source prefixes"},
		{"source /0", NodeEgress{TincIface: "confine", Sources: pfx("0.0.0.0/0"), EgressAddr: egressAddr}, "longer than /0"},
		{"ipv6 source", NodeEgress{TincIface: "confine", Sources: pfx("fd00::/64"), EgressAddr: egressAddr}, "want an IPv4 prefix"},
		{"ipv6 egress", NodeEgress{TincIface: "confine", Sources: pfx("192.168.157.0/25"), EgressAddr: netip.MustParseAddr("fd00::1")}, "egress address fd00::1"},
		{"no egress", NodeEgress{TincIface: "confine", Sources: pfx("192.168.157.0/25")}, "egress address invalid IP"},
		{"community /0", NodeEgress{TincIface: "confine", Sources: pfx("192.168.157.0/25"), EgressAddr: egressAddr, Community: pfx("0.0.0.0/0")}, "a /0 throws everything"},
		{"main table", NodeEgress{TincIface: "confine", Sources: pfx("192.168.157.0/25"), EgressAddr: egressAddr, Table: 254}, "route table 254: reserved"},
		{"priority after main", NodeEgress{TincIface: "confine", Sources: pfx("192.168.157.0/25"), EgressAddr: egressAddr, Priority: 32766}, "rule priority 32766"},
		{"mapped addresses are IPv4", NodeEgress{TincIface: "confine", Sources: pfx("::ffff:192.168.157.0/121"), EgressAddr: netip.MustParseAddr("::ffff:100.64.0.31")}, ""},
	} {
		err := tt.e.Validate()
		if (err == nil) != (tt.err == "") || (err != nil && !strings.Contains(err.Error(), tt.err)) {
			t.Errorf("%s: Validate = %v, want %q", tt.name, err, tt.err)
		}
	}
}

func TestNodeEgressRender(t *testing.T) {
	for _, tt := range []struct {
		name string
		e    NodeEgress
	}{
		{"default", mustEgress(t, "confine", egressAddr, pfx("192.168.157.0/25"), nil)},
		{"custom", NodeEgress{TincIface: "tinc0", EgressAddr: netip.MustParseAddr("100.64.1.2"),
			Sources: pfx("192.168.157.0/25", "10.157.0.0/24"), Community: pfx("10.0.0.0/8", "100.64.0.0/10"), Table: 100, Priority: 900}},
		{"zero", NodeEgress{}},
	} {
		got, err := tt.e.Render()
		if err != nil {
			t.Fatalf("%s: %v", tt.name, err)
		}
		nfttest.Golden(t, "node_egress_render_"+tt.name, got)
	}
}

func mustEgress(t *testing.T, iface string, addr netip.Addr, sources, community []netip.Prefix) NodeEgress {
	t.Helper()
	e, err := NewNodeEgress(iface, addr, sources, community)
	if err != nil {
		t.Fatal(err)
	}
	return e
}

// fakeNetlink is a strict in-memory EgressNetlink. Like the kernel it
// refuses a route whose slot (table, destination, TOS, metric) is taken
// (EEXIST), a route through a link it does not have (ENODEV), deleting a
// route or rule that does not exist (ESRCH, ENOENT), and an identical rule
// twice (EEXIST). It prints its state as sorted text.
type fakeNetlink struct {
	links  map[string]int
	routes []netlink.Route
	rules  []netlink.Rule
}

var _ EgressNetlink = (*fakeNetlink)(nil)

func (f *fakeNetlink) LinkByName(name string) (netlink.Link, error) {
	i, ok := f.links[name]
	if !ok {
		return nil, fmt.Errorf("fake netlink: link %s: %w", name, unix.ENODEV)
	}
	return &netlink.Dummy{LinkAttrs: netlink.LinkAttrs{Name: name, Index: i}}, nil
}

func (f *fakeNetlink) RouteListFiltered(family int, filter *netlink.Route, mask uint64) ([]netlink.Route, error) {
	if family != netlink.FAMILY_V4 || mask&^(netlink.RT_FILTER_TABLE|netlink.RT_FILTER_PROTOCOL) != 0 {
		return nil, fmt.Errorf("fake netlink: RouteListFiltered(%d, %#x) not supported", family, mask)
	}
	var out []netlink.Route
	for _, r := range f.routes {
		switch {
		case mask&netlink.RT_FILTER_TABLE == 0 && r.Table != unix.RT_TABLE_MAIN,
			mask&netlink.RT_FILTER_TABLE != 0 && filter.Table != 0 && r.Table != filter.Table,
			mask&netlink.RT_FILTER_PROTOCOL != 0 && r.Protocol != filter.Protocol:
			continue
		}
		out = append(out, r)
	}
	return out, nil
}

func (f *fakeNetlink) normalize(r netlink.Route) (netlink.Route, error) {
	if r.Table == 0 {
		r.Table = unix.RT_TABLE_MAIN
	}
	if r.Dst == nil {
		return r, fmt.Errorf("fake netlink: route without destination: %w", unix.EINVAL)
	}
	if r.Type == 0 {
		r.Type = unix.RTN_UNICAST
	}
	r.Family = netlink.FAMILY_V4
	switch r.Type {
	case unix.RTN_UNICAST:
		if !slices.Contains(slices.Collect(mapValues(f.links)), r.LinkIndex) {
			return r, fmt.Errorf("fake netlink: route via link %d: %w", r.LinkIndex, unix.ENODEV)
		}
	case unix.RTN_THROW:
		if r.LinkIndex != 0 || r.Gw != nil {
			return r, fmt.Errorf("fake netlink: throw route with a next hop: %w", unix.EINVAL)
		}
	}
	return r, nil
}

func mapValues(m map[string]int) func(func(int) bool) {
	return func(yield func(int) bool) {
		for _, v := range m {
			if !yield(v) {
				return
			}
		}
	}
}

func (f *fakeNetlink) slot(r netlink.Route) int {
	return slices.IndexFunc(f.routes, func(h netlink.Route) bool { return idOf(h) == idOf(r) })
}

func (f *fakeNetlink) RouteAdd(r *netlink.Route) error {
	nr, err := f.normalize(*r)
	if err != nil {
		return err
	}
	if f.slot(nr) >= 0 {
		return fmt.Errorf("fake netlink: add route %s: %w", r.Dst, unix.EEXIST)
	}
	f.routes = append(f.routes, nr)
	return nil
}

func (f *fakeNetlink) RouteReplace(r *netlink.Route) error {
	nr, err := f.normalize(*r)
	if err != nil {
		return err
	}
	if i := f.slot(nr); i >= 0 {
		f.routes[i] = nr
		return nil
	}
	f.routes = append(f.routes, nr)
	return nil
}

func (f *fakeNetlink) RouteDel(r *netlink.Route) error {
	nr := *r
	if nr.Table == 0 {
		nr.Table = unix.RT_TABLE_MAIN
	}
	i := f.slot(nr)
	// Like the kernel, what the request names must match: protocol, type
	// and link when given.
	if i < 0 || (nr.Protocol != 0 && f.routes[i].Protocol != nr.Protocol) ||
		(nr.Type != 0 && f.routes[i].Type != nr.Type) || (nr.LinkIndex != 0 && f.routes[i].LinkIndex != nr.LinkIndex) {
		return fmt.Errorf("fake netlink: delete route %s table %d: %w", nr.Dst, nr.Table, unix.ESRCH)
	}
	f.routes = slices.Delete(f.routes, i, i+1)
	return nil
}

func (f *fakeNetlink) RuleListFiltered(family int, filter *netlink.Rule, mask uint64) ([]netlink.Rule, error) {
	if family != netlink.FAMILY_V4 || filter != nil || mask != 0 {
		return nil, fmt.Errorf("fake netlink: RuleListFiltered(%d, %v, %#x) not supported", family, filter, mask)
	}
	return slices.Clone(f.rules), nil
}

func ruleText(r netlink.Rule) string {
	from := "all"
	if r.Src != nil {
		from = r.Src.String()
	}
	return fmt.Sprintf("%d: from %s lookup %d proto %d", r.Priority, from, r.Table, r.Protocol)
}

func (f *fakeNetlink) RuleAdd(r *netlink.Rule) error {
	if r.Priority < 0 || r.Table <= 0 || r.Family != netlink.FAMILY_V4 {
		return fmt.Errorf("fake netlink: rule %s: %w", ruleText(*r), unix.EINVAL)
	}
	if slices.ContainsFunc(f.rules, func(h netlink.Rule) bool { return ruleText(h) == ruleText(*r) }) {
		return fmt.Errorf("fake netlink: rule %s: %w", ruleText(*r), unix.EEXIST)
	}
	f.rules = append(f.rules, *r)
	return nil
}

func (f *fakeNetlink) RuleDel(r *netlink.Rule) error {
	i := slices.IndexFunc(f.rules, func(h netlink.Rule) bool { return ruleText(h) == ruleText(*r) })
	if i < 0 {
		return fmt.Errorf("fake netlink: delete rule %s: %w", ruleText(*r), unix.ENOENT)
	}
	f.rules = slices.Delete(f.rules, i, i+1)
	return nil
}

// recNetlink records the writes made through an EgressNetlink, into the
// same log as the nftables writes.
type recNetlink struct {
	EgressNetlink
	log *[]string
	dev map[int]string
}

func (r *recNetlink) routeText(nr *netlink.Route) string {
	typ := "unicast"
	if nr.Type == unix.RTN_THROW {
		typ = "throw"
	}
	dev := ""
	if nr.LinkIndex != 0 {
		dev = " dev " + r.dev[nr.LinkIndex]
	}
	return fmt.Sprintf("table %d %s %s%s proto %d", nr.Table, typ, nr.Dst, dev, nr.Protocol)
}

func (r *recNetlink) RouteAdd(nr *netlink.Route) error {
	*r.log = append(*r.log, "RouteAdd "+r.routeText(nr))
	return r.EgressNetlink.RouteAdd(nr)
}

func (r *recNetlink) RouteReplace(nr *netlink.Route) error {
	*r.log = append(*r.log, "RouteReplace "+r.routeText(nr))
	return r.EgressNetlink.RouteReplace(nr)
}

func (r *recNetlink) RouteDel(nr *netlink.Route) error {
	*r.log = append(*r.log, "RouteDel "+r.routeText(nr))
	return r.EgressNetlink.RouteDel(nr)
}

func (r *recNetlink) RuleAdd(nr *netlink.Rule) error {
	*r.log = append(*r.log, "RuleAdd "+ruleText(*nr))
	return r.EgressNetlink.RuleAdd(nr)
}

func (r *recNetlink) RuleDel(nr *netlink.Rule) error {
	*r.log = append(*r.log, "RuleDel "+ruleText(*nr))
	return r.EgressNetlink.RuleDel(nr)
}

// env is a backend to apply node egress to: the fakes, or a throwaway
// network namespace with a tun "confine" and a veth "wan".
type env struct {
	nl     EgressNetlink
	nft    nft.Conn
	kernel bool
	dev    map[int]string // link index -> name
	log    []string       // writes, when recording
}

func (e *env) applier() *NodeEgressApplier {
	e.log = nil
	rec := &nft.Recorder{Conn: e.nft, Tee: func(w string) { e.log = append(e.log, w) }}
	return NewNodeEgressApplier(&recNetlink{EgressNetlink: e.nl, log: &e.log, dev: e.dev}, rec, nil)
}

func envs() []struct {
	name string
	make func(t *testing.T) *env
} {
	return []struct {
		name string
		make func(t *testing.T) *env
	}{
		{"fake", func(t *testing.T) *env {
			return &env{nl: &fakeNetlink{links: map[string]int{"lo": 1, "confine": 2, "wan": 3}}, nft: nft.NewFake(),
				dev: map[int]string{1: "lo", 2: "confine", 3: "wan"}}
		}},
		{"kernel", func(t *testing.T) *env {
			ns := nfttest.New(t)
			e := &env{nl: ns.Netlink, nft: ns.NFT, kernel: true, dev: map[int]string{}}
			for _, l := range []netlink.Link{ns.AddTun(t, "confine", 1400), ns.AddVeth(t, "wan")} {
				e.dev[l.Attrs().Index] = l.Attrs().Name
			}
			return e
		}},
	}
}

// addForeign adds what someone else owns, which must survive every Apply:
// an ip rule, a route in our own table, one in another table, one with
// our protocol in main, and an nftables table.
func (e *env) addForeign(t *testing.T) {
	t.Helper()
	wan := 0
	for i, n := range e.dev {
		if n == "wan" {
			wan = i
		}
	}
	r := netlink.NewRule()
	r.Family, r.Src, r.Table, r.Priority, r.Protocol = netlink.FAMILY_V4, ipNet(netip.MustParsePrefix("203.0.113.0/24")), 100, 100, unix.RTPROT_STATIC
	for _, err := range []error{
		e.nl.RuleAdd(r),
		e.nl.RouteAdd(&netlink.Route{Table: EgressTable, Dst: ipNet(netip.MustParsePrefix("198.51.100.0/24")), LinkIndex: wan, Scope: netlink.SCOPE_LINK, Protocol: unix.RTPROT_STATIC}),
		e.nl.RouteAdd(&netlink.Route{Table: 100, Dst: ipNet(netip.MustParsePrefix("10.0.0.0/8")), LinkIndex: wan, Scope: netlink.SCOPE_LINK, Protocol: unix.RTPROT_BOOT}),
		// A gateway's egress route: our protocol, but in main, where node
		// egress never routes.
		e.nl.RouteAdd(&netlink.Route{Table: unix.RT_TABLE_MAIN, Dst: ipNet(netip.MustParsePrefix("100.64.0.0/16")), LinkIndex: linkIndex(e, "confine"), Scope: netlink.SCOPE_LINK, Protocol: EgressProtocol}),
	} {
		if err != nil {
			t.Fatalf("add foreign state: %v", err)
		}
	}
	ft := e.nft.AddTable(&nftables.Table{Name: "filter", Family: nftables.TableFamilyINet})
	e.nft.AddChain(&nftables.Chain{Name: "forward", Table: ft, Type: nftables.ChainTypeFilter, Hooknum: nftables.ChainHookForward, Priority: nftables.ChainPriorityFilter})
	e.nft.AddRule(&nftables.Rule{Table: ft, Chain: &nftables.Chain{Name: "forward"}, Exprs: []expr.Any{&expr.Verdict{Kind: expr.VerdictAccept}}})
	if err := e.nft.Flush(); err != nil {
		t.Fatalf("add foreign nftables table: %v", err)
	}
}

// state prints what the kernel (or the fakes) hold, read back through the
// same seams, sorted: every IPv4 rule but the kernel's three defaults, every
// IPv4 route but the local table's, and every inet nftables table.
func (e *env) state(t *testing.T) string {
	t.Helper()
	var lines []string
	rules, err := e.nl.RuleListFiltered(netlink.FAMILY_V4, nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range rules {
		if r.Protocol != unix.RTPROT_KERNEL {
			lines = append(lines, "rule "+ruleText(r))
		}
	}
	routes, err := e.nl.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{}, netlink.RT_FILTER_TABLE)
	if err != nil {
		t.Fatal(err)
	}
	rec := &recNetlink{dev: e.dev}
	for _, r := range routes {
		if r.Table != unix.RT_TABLE_LOCAL {
			s := "route " + rec.routeText(&r)
			if r.Scope == netlink.SCOPE_LINK {
				s += " scope link"
			}
			lines = append(lines, s)
		}
	}
	slices.Sort(lines)
	tables, err := e.nft.ListTablesOfFamily(nft.Family)
	if err != nil {
		t.Fatal(err)
	}
	for _, tb := range tables {
		ot, _, err := nft.Observe(t.Context(), e.nft, tb.Name)
		if err != nil {
			t.Fatal(err)
		}
		lines = append(lines, strings.TrimSuffix(ot.String(), "\n"))
	}
	return strings.Join(lines, "\n") + "\n"
}

// The same steps, writes and states against the fakes and a kernel
// namespace. Each step's golden file holds the writes Apply made, in
// order, and the state after it.
func TestNodeEgressApply(t *testing.T) {
	steps := []struct {
		name string
		want NodeEgress
	}{
		{"1-enable", mustEgress(t, "confine", egressAddr, pfx("192.168.157.0/25"), nil)},
		{"2-again", mustEgress(t, "confine", egressAddr, pfx("192.168.157.0/25"), nil)},
		// Other sources, egress address and community: SNAT covers old
		// and new sources until the old rule is gone.
		{"3-change", mustEgress(t, "confine", netip.MustParseAddr("100.64.1.2"), pfx("172.30.157.0/25"), pfx("10.0.0.0/8", "100.64.0.0/10"))},
		// The tinc link is another one: the default route is replaced in
		// place, never missing.
		{"4-relink", mustEgress(t, "wan", netip.MustParseAddr("100.64.1.2"), pfx("172.30.157.0/25"), pfx("10.0.0.0/8", "100.64.0.0/10"))},
		// Another table and priority: everything moves, added first.
		{"5-table", func() NodeEgress {
			e := mustEgress(t, "confine", netip.MustParseAddr("100.64.1.2"), pfx("172.30.157.0/25"), pfx("10.0.0.0/8"))
			e.Table, e.Priority = 7466, 7000
			return e
		}()},
		{"6-cleanup", NodeEgress{}},
		{"7-cleanup-again", NodeEgress{}},
	}
	for _, mk := range envs() {
		t.Run(mk.name, func(t *testing.T) {
			e := mk.make(t)
			e.addForeign(t)
			for _, s := range steps {
				a := e.applier()
				if err := a.Apply(t.Context(), s.want); err != nil {
					t.Fatalf("%s: Apply: %v", s.name, err)
				}
				writes := "(none)\n"
				if len(e.log) > 0 {
					writes = strings.Join(e.log, "\n") + "\n"
				}
				nfttest.Golden(t, "node_egress_apply_"+s.name, "# writes\n"+writes+"# state\n"+e.state(t))
				if e.kernel {
					nfttest.CheckExprs(t, e.nft, s.want.normalize().nftTable())
				}
			}
		})
	}
}

// The kernel drops the default route through tinc when tincd stops; the
// next Apply adds that route back, and nothing else.
func TestNodeEgressRestoresDroppedRoute(t *testing.T) {
	want := mustEgress(t, "confine", egressAddr, pfx("192.168.157.0/25"), nil)
	for _, mk := range envs() {
		t.Run(mk.name, func(t *testing.T) {
			e := mk.make(t)
			if err := e.applier().Apply(t.Context(), want); err != nil {
				t.Fatal(err)
			}
			before := e.state(t)
			def := want.routes()[len(want.routes())-1].netlink(linkIndex(e, "confine"))
			if err := e.nl.RouteDel(def); err != nil {
				t.Fatal(err)
			}
			if err := e.applier().Apply(t.Context(), want); err != nil {
				t.Fatal(err)
			}
			if d := cmp.Diff([]string{"RouteAdd table 7465 unicast 0.0.0.0/0 dev confine proto 74"}, e.log); d != "" {
				t.Errorf("writes (-want +got):\n%s", d)
			}
			if after := e.state(t); after != before {
				t.Errorf("state after repair:\n%s\nwant:\n%s", after, before)
			}
		})
	}
}

func linkIndex(e *env, name string) int {
	for i, n := range e.dev {
		if n == name {
			return i
		}
	}
	return 0
}

// Without the tinc link Apply fails before it changes anything.
func TestNodeEgressNoLink(t *testing.T) {
	want := mustEgress(t, "tinc9", egressAddr, pfx("192.168.157.0/25"), nil)
	for _, mk := range envs() {
		t.Run(mk.name, func(t *testing.T) {
			e := mk.make(t)
			before := e.state(t)
			err := e.applier().Apply(t.Context(), want)
			if err == nil || !strings.Contains(err.Error(), "find tinc link tinc9") {
				t.Fatalf("Apply = %v", err)
			}
			if len(e.log) != 0 || e.state(t) != before {
				t.Errorf("Apply without a link wrote %v", e.log)
			}
		})
	}
}

// racingNetlink adds the default route through tinc itself just before
// Apply's first add of it, as tinc-up does when tincd starts while
// node-boot applies.
type racingNetlink struct {
	EgressNetlink
	raced bool
}

func (r *racingNetlink) RouteAdd(nr *netlink.Route) error {
	if !r.raced && nr.Table == EgressTable && nr.Dst != nil && nr.Dst.IP.To4() != nil && nr.Dst.IP.IsUnspecified() {
		r.raced = true
		c := *nr
		if err := r.EgressNetlink.RouteAdd(&c); err != nil {
			return err
		}
	}
	return r.EgressNetlink.RouteAdd(nr)
}

// TestNodeEgressRaceWithTincUp: tinc-up adds the default route between
// Apply's read and its add; Apply takes the route (ours) as done instead
// of reporting a foreign one, and the state is the same as without the race.
func TestNodeEgressRaceWithTincUp(t *testing.T) {
	want := mustEgress(t, "confine", egressAddr, pfx("192.168.157.0/25"), nil)
	for _, mk := range envs() {
		t.Run(mk.name, func(t *testing.T) {
			plain := mk.make(t)
			if err := plain.applier().Apply(t.Context(), want); err != nil {
				t.Fatal(err)
			}
			wantState := plain.state(t)
			e := mk.make(t)
			race := &racingNetlink{EgressNetlink: e.nl}
			a := NewNodeEgressApplier(race, e.nft, nil)
			if err := a.Apply(t.Context(), want); err != nil {
				t.Fatalf("Apply racing tinc-up = %v", err)
			}
			if !race.raced {
				t.Fatal("the race was not staged: no default route added")
			}
			if got := e.state(t); got != wantState {
				t.Errorf("state after the race:\n%s\nwant:\n%s", got, wantState)
			}
		})
	}
}

// A route that is not ours in the place of ours is reported, not
// replaced.
func TestNodeEgressForeignInTheWay(t *testing.T) {
	want := mustEgress(t, "confine", egressAddr, pfx("192.168.157.0/25"), nil)
	for _, mk := range envs() {
		t.Run(mk.name, func(t *testing.T) {
			e := mk.make(t)
			if err := e.nl.RouteAdd(&netlink.Route{Table: EgressTable, Dst: ipNet(netip.MustParsePrefix("10.0.0.0/8")),
				LinkIndex: linkIndex(e, "wan"), Scope: netlink.SCOPE_LINK, Protocol: unix.RTPROT_STATIC}); err != nil {
				t.Fatal(err)
			}
			err := e.applier().Apply(t.Context(), want)
			if !errors.Is(err, unix.EEXIST) || !strings.Contains(err.Error(), "not ours") {
				t.Fatalf("Apply = %v, want EEXIST naming the foreign route", err)
			}
			// Nothing routes into tinc yet: no rule was added.
			if strings.Contains(e.state(t), "rule 7465") {
				t.Errorf("a rule was added although its table is incomplete:\n%s", e.state(t))
			}
		})
	}
}

// prefixOf and ipNet are inverses at the netlink boundary.
func TestPrefixBoundary(t *testing.T) {
	for _, s := range []string{"0.0.0.0/0", "10.0.0.0/8", "192.168.157.0/25", "100.64.0.31/32"} {
		p := netip.MustParsePrefix(s)
		if got, ok := prefixOf(ipNet(p)); !ok || got != p {
			t.Errorf("round trip %s = %s, %v", p, got, ok)
		}
	}
	if _, ok := prefixOf(nil); ok {
		t.Error("prefixOf(nil) ok")
	}
	mapped := &net.IPNet{IP: net.ParseIP("192.168.157.0"), Mask: net.CIDRMask(25, 32)} // 16-byte IP
	if got, _ := prefixOf(mapped); got != netip.MustParsePrefix("192.168.157.0/25") {
		t.Errorf("16-byte IPv4 = %s", got)
	}
}

// iproute2 and nft(8) read back what Apply installed as Render says: the
// state we print is the state the kernel holds.
func TestNodeEgressReadBack(t *testing.T) {
	ns := nfttest.New(t)
	ns.AddTun(t, "confine", 1400)
	want := mustEgress(t, "confine", egressAddr, pfx("192.168.157.0/25"), nil)
	if err := NewNodeEgressApplier(ns.Netlink, ns.NFT, nil).Apply(t.Context(), want); err != nil {
		t.Fatal(err)
	}
	plan, err := want.Render()
	if err != nil {
		t.Fatal(err)
	}
	rules, ok := ns.Run(t, "ip", "-4", "rule")
	if !ok {
		t.Skip("ip(8) is not installed")
	}
	routes, _ := ns.Run(t, "ip", "-4", "route", "show", "table", fmt.Sprint(EgressTable))
	t.Logf("ip -4 rule:\n%sip -4 route show table %d:\n%s", rules, EgressTable, routes)
	section := func(head string) []string {
		_, rest, _ := strings.Cut(plan, head+"\n")
		body, _, _ := strings.Cut(rest, "# ")
		return strings.Split(strings.TrimSpace(body), "\n")
	}
	for _, l := range section("# ip -4 rule") {
		if !strings.Contains(rules, l) {
			t.Errorf("ip rule does not show %q", l)
		}
	}
	var got []string
	for _, l := range strings.Split(strings.TrimSpace(routes), "\n") {
		// Nothing holds the test's tun open: it has no carrier.
		got = append(got, strings.TrimSuffix(strings.TrimSpace(l), " linkdown"))
	}
	if want := section(fmt.Sprintf("# ip -4 route show table %d", EgressTable)); !slices.Equal(got, want) {
		t.Errorf("ip route show table %d = %q, want %q", EgressTable, got, want)
	}
	if out, ok := ns.Run(t, "nft", "list", "table", "inet", NodeEgressNFTable); ok {
		t.Logf("nft list table inet %s:\n%s", NodeEgressNFTable, out)
		for _, l := range []string{
			`type filter hook forward priority mangle; policy accept;`,
			`oifname "confine" tcp flags syn / syn,rst tcp option maxseg size set rt mtu`,
			`iifname "confine" tcp flags syn / syn,rst tcp option maxseg size set rt mtu`,
			`type nat hook postrouting priority srcnat; policy accept;`,
			`oifname "confine" ip saddr 192.168.157.0/25 snat ip to 100.64.0.31`,
		} {
			if !strings.Contains(out, l) {
				t.Errorf("nft list does not show %q", l)
			}
		}
	}
}
