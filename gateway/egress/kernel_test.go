package egress

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/confine-project/mgmtnet/internal/nft"
	"github.com/confine-project/mgmtnet/internal/nft/nfttest"
)

// fakeNetlink is a strict in-memory Netlink. Like the kernel it refuses a
// route whose slot (table, destination, TOS, metric) is taken (EEXIST), a
// route through a link it does not have (ENODEV), and deleting a route
// that does not exist (ESRCH). fail makes a method fail with an error;
// stale routes are listed but no longer there (the kernel dropped them
// between the dump and the delete).
type fakeNetlink struct {
	links  map[string]int
	routes []netlink.Route
	stale  []netlink.Route
	fail   map[string]error
}

var _ Netlink = (*fakeNetlink)(nil)

func (f *fakeNetlink) LinkByName(name string) (netlink.Link, error) {
	if err := f.fail["LinkByName"]; err != nil {
		return nil, err
	}
	i, ok := f.links[name]
	if !ok {
		return nil, fmt.Errorf("fake netlink: link %s: %w", name, unix.ENODEV)
	}
	return &netlink.Dummy{LinkAttrs: netlink.LinkAttrs{Name: name, Index: i}}, nil
}

func (f *fakeNetlink) RouteListFiltered(family int, filter *netlink.Route, mask uint64) ([]netlink.Route, error) {
	if err := f.fail["RouteListFiltered"]; err != nil {
		return nil, err
	}
	if family != netlink.FAMILY_V4 || mask&^(netlink.RT_FILTER_TABLE|netlink.RT_FILTER_PROTOCOL|netlink.RT_FILTER_DST) != 0 {
		return nil, fmt.Errorf("fake netlink: RouteListFiltered(%d, %#x) not supported", family, mask)
	}
	var out []netlink.Route
	for _, r := range append(slices.Clone(f.routes), f.stale...) {
		switch {
		case mask&netlink.RT_FILTER_TABLE == 0 && r.Table != unix.RT_TABLE_MAIN,
			mask&netlink.RT_FILTER_TABLE != 0 && filter.Table != 0 && r.Table != filter.Table,
			mask&netlink.RT_FILTER_PROTOCOL != 0 && r.Protocol != filter.Protocol,
			mask&netlink.RT_FILTER_DST != 0 && !ipNetEqual(r.Dst, filter.Dst):
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
	if !slices.ContainsFunc(slices.Collect(mapValues(f.links)), func(i int) bool { return i == r.LinkIndex }) {
		return r, fmt.Errorf("fake netlink: route via link %d: %w", r.LinkIndex, unix.ENODEV)
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
	return slices.IndexFunc(f.routes, func(h netlink.Route) bool { return sameSlot(h, &r) })
}

func (f *fakeNetlink) RouteAdd(r *netlink.Route) error {
	if err := f.fail["RouteAdd"]; err != nil {
		return err
	}
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
	if err := f.fail["RouteReplace"]; err != nil {
		return err
	}
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
	if err := f.fail["RouteDel"]; err != nil {
		return err
	}
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

// fakeForwarding is a strict in-memory Forwarding: an interface it does
// not know is an error, as a missing /proc file is.
type fakeForwarding struct {
	on   map[string]bool
	fail map[string]error
}

var _ Forwarding = (*fakeForwarding)(nil)

func (f *fakeForwarding) Forwarding(iface string) (bool, error) {
	if err := f.fail["Forwarding"]; err != nil {
		return false, err
	}
	on, ok := f.on[iface]
	if !ok {
		return false, fmt.Errorf("read IPv4 forwarding of %s: %w", iface, os.ErrNotExist)
	}
	return on, nil
}

func (f *fakeForwarding) SetForwarding(iface string, on bool) error {
	if err := f.fail["SetForwarding"]; err != nil {
		return err
	}
	if _, ok := f.on[iface]; !ok {
		return fmt.Errorf("set IPv4 forwarding on %s: %w", iface, os.ErrNotExist)
	}
	f.on[iface] = on
	return nil
}

// nsForwarding is ProcForwarding inside a test namespace.
type nsForwarding struct{ ns *nfttest.NS }

func (n nsForwarding) Forwarding(iface string) (on bool, err error) {
	err = n.ns.Do(func() (err error) { on, err = ProcForwarding{}.Forwarding(iface); return err })
	return on, err
}

func (n nsForwarding) SetForwarding(iface string, on bool) error {
	return n.ns.Do(func() error { return ProcForwarding{}.SetForwarding(iface, on) })
}

// recKernel records the writes made through the seams, into one log:
// routes, forwarding switches, and the nftables transactions (not their
// content, which TestApply pins).
type recKernel struct {
	Netlink
	log *[]string
	dev map[int]string
}

// recForwarding records the writes made through a Forwarding.
type recForwarding struct {
	fwd Forwarding
	log *[]string
}

func (r *recForwarding) Forwarding(iface string) (bool, error) { return r.fwd.Forwarding(iface) }

func (r *recKernel) routeText(nr *netlink.Route) string {
	table := nr.Table
	if table == 0 {
		table = unix.RT_TABLE_MAIN
	}
	return fmt.Sprintf("table %d %s dev %s proto %d", table, nr.Dst, r.dev[nr.LinkIndex], nr.Protocol)
}

func (r *recKernel) RouteAdd(nr *netlink.Route) error {
	*r.log = append(*r.log, "RouteAdd "+r.routeText(nr))
	return r.Netlink.RouteAdd(nr)
}

func (r *recKernel) RouteReplace(nr *netlink.Route) error {
	*r.log = append(*r.log, "RouteReplace "+r.routeText(nr))
	return r.Netlink.RouteReplace(nr)
}

func (r *recKernel) RouteDel(nr *netlink.Route) error {
	*r.log = append(*r.log, "RouteDel "+r.routeText(nr))
	return r.Netlink.RouteDel(nr)
}

func (r *recForwarding) SetForwarding(iface string, on bool) error {
	*r.log = append(*r.log, fmt.Sprintf("SetForwarding %s %v", iface, on))
	return r.fwd.SetForwarding(iface, on)
}

// kenv is a backend for Kernel: the fakes, or a throwaway network
// namespace with tuns "confine" and "tinc1" and veths "wan" and "wan2".
type kenv struct {
	nl     Netlink
	fwd    Forwarding
	nft    nft.Conn
	dev    map[int]string
	log    []string
	kernel *nfttest.NS
}

var kernelIfaces = []string{"confine", "tinc1", "wan", "wan2"}

func kenvs() []struct {
	name string
	make func(t *testing.T) *kenv
} {
	return []struct {
		name string
		make func(t *testing.T) *kenv
	}{
		{"fake", func(t *testing.T) *kenv {
			links := map[string]int{"lo": 1, "confine": 2, "tinc1": 3, "wan": 4, "wan2": 5}
			e := &kenv{nl: &fakeNetlink{links: links}, nft: nft.NewFake(), dev: map[int]string{},
				fwd: &fakeForwarding{on: map[string]bool{"lo": false, "confine": false, "tinc1": false, "wan": false, "wan2": false}}}
			for n, i := range links {
				e.dev[i] = n
			}
			return e
		}},
		{"kernel", func(t *testing.T) *kenv {
			ns := nfttest.New(t)
			e := &kenv{nl: ns.Netlink, fwd: nsForwarding{ns}, nft: ns.NFT, dev: map[int]string{}, kernel: ns}
			for _, l := range []netlink.Link{ns.AddTun(t, "confine", 1400), ns.AddTun(t, "tinc1", 1400), ns.AddVeth(t, "wan"), ns.AddVeth(t, "wan2")} {
				e.dev[l.Attrs().Index] = l.Attrs().Name
			}
			return e
		}},
	}
}

func (e *kenv) index(name string) int {
	for i, n := range e.dev {
		if n == name {
			return i
		}
	}
	return 0
}

func (e *kenv) kernelApplier() *Kernel {
	e.log = nil
	rec := &recKernel{Netlink: e.nl, log: &e.log, dev: e.dev}
	conn := &nft.Recorder{Conn: e.nft, Tee: func(w string) {
		if w == "Flush" {
			e.log = append(e.log, "nft Flush")
		}
	}}
	return NewKernel(rec, &recForwarding{fwd: e.fwd, log: &e.log}, conn, nil)
}

func pfx(s string) *net.IPNet {
	p := netip.MustParsePrefix(s)
	return &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), 32)}
}

// addForeign adds routes that are someone else's and must survive every
// Apply: a static route in main, node egress's default route (our
// protocol, its own table), and the egress prefix in another table.
func (e *kenv) addForeign(t *testing.T) {
	t.Helper()
	for _, r := range []*netlink.Route{
		{Table: unix.RT_TABLE_MAIN, Dst: pfx("198.51.100.0/24"), LinkIndex: e.index("wan"), Scope: netlink.SCOPE_LINK, Protocol: unix.RTPROT_STATIC},
		{Table: 7465, Dst: pfx("0.0.0.0/0"), LinkIndex: e.index("confine"), Scope: netlink.SCOPE_LINK, Protocol: RouteProtocol},
		{Table: 100, Dst: pfx("100.64.0.0/16"), LinkIndex: e.index("wan"), Scope: netlink.SCOPE_LINK, Protocol: unix.RTPROT_BOOT},
	} {
		if err := e.nl.RouteAdd(r); err != nil {
			t.Fatalf("add foreign route %s: %v", r.Dst, err)
		}
	}
}

// state prints the IPv4 routes of every table but local, the forwarding
// switches of the test's interfaces and the inet nftables tables, read
// back through the seams, sorted.
func (e *kenv) state(t *testing.T) string {
	t.Helper()
	routes, err := e.nl.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{}, netlink.RT_FILTER_TABLE)
	if err != nil {
		t.Fatal(err)
	}
	var lines []string
	rec := &recKernel{dev: e.dev}
	for _, r := range routes {
		if r.Table == unix.RT_TABLE_LOCAL {
			continue
		}
		s := "route " + rec.routeText(&r)
		if r.Scope == netlink.SCOPE_LINK {
			s += " scope link"
		}
		lines = append(lines, s)
	}
	slices.Sort(lines)
	for _, iface := range kernelIfaces {
		on, err := e.fwd.Forwarding(iface)
		if err != nil {
			t.Fatal(err)
		}
		lines = append(lines, fmt.Sprintf("forwarding %s %v", iface, on))
	}
	tables, err := e.nft.ListTablesOfFamily(nft.Family)
	if err != nil {
		t.Fatal(err)
	}
	for _, tb := range tables {
		lines = append(lines, "nft table inet "+tb.Name)
	}
	return strings.Join(lines, "\n") + "\n"
}

// The same steps, writes and states against the fakes and a kernel
// namespace. Each step's golden file holds the writes Apply made, in
// order, and the state after it.
func TestKernelApply(t *testing.T) {
	steps := []struct {
		name string
		want Gateway
	}{
		// The route before the table, forwarding last.
		{"1-enable", on},
		{"2-again", on},
		// tincd's interface is another one: the route is replaced in
		// place, never missing.
		{"3-relink", Gateway{TincIface: "tinc1", WANIface: "wan", EgressPrefix: egressPrefix, Enabled: true}},
		// Another prefix: the new route, the table, then the old route
		// goes.
		{"4-prefix", Gateway{TincIface: "tinc1", WANIface: "wan2", EgressPrefix: netip.MustParsePrefix("100.64.0.0/15"), Enabled: true}},
		// The table, then our routes; forwarding stays on.
		{"5-cleanup", Gateway{}},
		{"6-cleanup-again", Gateway{}},
	}
	for _, mk := range kenvs() {
		t.Run(mk.name, func(t *testing.T) {
			e := mk.make(t)
			e.addForeign(t)
			for _, s := range steps {
				if err := e.kernelApplier().Apply(t.Context(), s.want); err != nil {
					t.Fatalf("%s: Apply: %v", s.name, err)
				}
				writes := "(none)\n"
				if len(e.log) > 0 {
					writes = strings.Join(e.log, "\n") + "\n"
				}
				nfttest.Golden(t, "gateway_kernel_apply_"+s.name, "# writes\n"+writes+"# state\n"+e.state(t))
				if e.kernel != nil {
					nfttest.CheckExprs(t, e.nft, s.want.table())
				}
			}
		})
	}
}

// The kernel drops the route through tinc when tincd stops; the next
// Apply adds that route back, and nothing else.
func TestKernelRestoresDroppedRoute(t *testing.T) {
	for _, mk := range kenvs() {
		t.Run(mk.name, func(t *testing.T) {
			e := mk.make(t)
			if err := e.kernelApplier().Apply(t.Context(), on); err != nil {
				t.Fatal(err)
			}
			before := e.state(t)
			r, _ := on.Route()
			if err := e.nl.RouteDel(r.netlink(e.index("confine"))); err != nil {
				t.Fatal(err)
			}
			if err := e.kernelApplier().Apply(t.Context(), on); err != nil {
				t.Fatal(err)
			}
			if d := cmp.Diff([]string{"RouteAdd table 254 100.64.0.0/16 dev confine proto 74"}, e.log); d != "" {
				t.Errorf("writes (-want +got):\n%s", d)
			}
			if after := e.state(t); after != before {
				t.Errorf("state after repair:\n%s\nwant:\n%s", after, before)
			}
		})
	}
}

// Without the tinc link Apply fails before it changes anything.
func TestKernelNoLink(t *testing.T) {
	for _, mk := range kenvs() {
		t.Run(mk.name, func(t *testing.T) {
			e := mk.make(t)
			before := e.state(t)
			g := on
			g.TincIface = "tinc9"
			err := e.kernelApplier().Apply(t.Context(), g)
			if err == nil || !strings.Contains(err.Error(), "gateway egress: find tinc link tinc9") {
				t.Fatalf("Apply = %v", err)
			}
			if len(e.log) != 0 || e.state(t) != before {
				t.Errorf("Apply without a link wrote %v", e.log)
			}
		})
	}
}

// A route that is not ours in the place of ours is left alone: one that
// routes the prefix into tinc serves (and stays after cleanup), one that
// goes elsewhere is reported.
func TestKernelForeignInTheWay(t *testing.T) {
	for _, mk := range kenvs() {
		t.Run(mk.name, func(t *testing.T) {
			e := mk.make(t)
			tincUp := &netlink.Route{Dst: pfx("100.64.0.0/16"), LinkIndex: e.index("confine"), Scope: netlink.SCOPE_LINK, Protocol: unix.RTPROT_BOOT}
			if err := e.nl.RouteAdd(tincUp); err != nil {
				t.Fatal(err)
			}
			if err := e.kernelApplier().Apply(t.Context(), on); err != nil {
				t.Fatalf("Apply with tinc-up's route in place: %v", err)
			}
			// Tried, refused (EEXIST), and left alone.
			if slices.ContainsFunc(e.log, func(w string) bool { return strings.HasPrefix(w, "RouteReplace") || strings.HasPrefix(w, "RouteDel") }) ||
				strings.Contains(e.state(t), "proto 74") {
				t.Errorf("Apply changed routes although tinc-up's serves: %v\n%s", e.log, e.state(t))
			}
			if err := e.kernelApplier().Apply(t.Context(), Gateway{}); err != nil {
				t.Fatal(err)
			}
			if !strings.Contains(e.state(t), "route table 254 100.64.0.0/16 dev confine proto 3 scope link") {
				t.Errorf("cleanup removed a route that is not ours:\n%s", e.state(t))
			}

			g := on
			g.TincIface = "tinc1"
			err := e.kernelApplier().Apply(t.Context(), g)
			if !errors.Is(err, unix.EEXIST) || !strings.Contains(err.Error(), "add route 100.64.0.0/16 dev tinc1 proto 74 scope link: a route that is not ours") {
				t.Fatalf("Apply with a foreign route elsewhere = %v, want EEXIST naming it", err)
			}
			if strings.Contains(e.state(t), "nft table") || slices.Contains(e.log, "nft Flush") {
				t.Errorf("the table was added without its route:\n%s", e.state(t))
			}
		})
	}
}

// A route of ours that is gone by the time Apply deletes it (ESRCH) is no
// error.
func TestKernelRouteGoneMeanwhile(t *testing.T) {
	e := kenvs()[0].make(t)
	if err := e.kernelApplier().Apply(t.Context(), on); err != nil {
		t.Fatal(err)
	}
	f := e.nl.(*fakeNetlink)
	f.stale = []netlink.Route{{Table: unix.RT_TABLE_MAIN, Dst: pfx("100.99.0.0/16"), LinkIndex: 3, Scope: netlink.SCOPE_LINK,
		Protocol: RouteProtocol, Type: unix.RTN_UNICAST}}
	if err := e.kernelApplier().Apply(t.Context(), Gateway{}); err != nil {
		t.Fatalf("Apply(zero) with a route gone meanwhile: %v", err)
	}
	want := []string{"nft Flush", "RouteDel table 254 100.64.0.0/16 dev confine proto 74", "RouteDel table 254 100.99.0.0/16 dev tinc1 proto 74"}
	if d := cmp.Diff(want, e.log); d != "" {
		t.Errorf("writes (-want +got):\n%s", d)
	}
}

// Every failure is returned wrapped, naming what failed; the kernel's
// errno shows through.
func TestKernelErrors(t *testing.T) {
	eperm := fmt.Errorf("fake: %w", unix.EPERM)
	for _, tt := range []struct {
		seam, method string
		before       Gateway // applied first, without faults
		want         Gateway
		err          string
	}{
		{"netlink", "LinkByName", Gateway{}, on, "gateway egress: find tinc link confine: fake: operation not permitted"},
		{"netlink", "RouteListFiltered", Gateway{}, on, "gateway egress: list routes: fake: operation not permitted"},
		{"netlink", "RouteListFiltered", on, Gateway{}, "gateway egress: list routes: fake: operation not permitted"},
		{"netlink", "RouteAdd", Gateway{}, on, "gateway egress: add route 100.64.0.0/16 dev confine proto 74 scope link: fake: operation not permitted"},
		{"netlink", "RouteReplace", on, Gateway{TincIface: "tinc1", WANIface: "wan", EgressPrefix: egressPrefix, Enabled: true},
			"gateway egress: replace route 100.64.0.0/16 dev tinc1 proto 74 scope link: fake: operation not permitted"},
		{"netlink", "RouteDel", on, Gateway{}, "gateway egress: delete route 100.64.0.0/16 dev #2 proto 74 table 254: fake: operation not permitted"},
		{"forwarding", "Forwarding", Gateway{}, on, "gateway egress: fake: operation not permitted"},
		{"forwarding", "SetForwarding", Gateway{}, on, "gateway egress: fake: operation not permitted"},
		{"nft", "Flush", Gateway{}, on, "gateway egress: "},
	} {
		t.Run(tt.method, func(t *testing.T) {
			e := kenvs()[0].make(t)
			if err := e.kernelApplier().Apply(t.Context(), tt.before); err != nil {
				t.Fatal(err)
			}
			switch tt.seam {
			case "netlink":
				e.nl.(*fakeNetlink).fail = map[string]error{tt.method: eperm}
			case "forwarding":
				e.fwd.(*fakeForwarding).fail = map[string]error{tt.method: eperm}
			case "nft":
				e.nft.(*nft.Fake).FailNextFlush(eperm)
			}
			err := e.kernelApplier().Apply(t.Context(), tt.want)
			if !errors.Is(err, unix.EPERM) || !strings.HasPrefix(err.Error(), tt.err) {
				t.Errorf("Apply = %v, want %q wrapping EPERM", err, tt.err)
			}
		})
	}
}

// An invalid Gateway changes nothing.
func TestKernelInvalid(t *testing.T) {
	e := kenvs()[0].make(t)
	if err := e.kernelApplier().Apply(t.Context(), on); err != nil {
		t.Fatal(err)
	}
	before := e.state(t)
	if err := e.kernelApplier().Apply(t.Context(), Gateway{TincIface: "confine", Enabled: true}); err == nil {
		t.Fatal("Apply of an invalid Gateway succeeded")
	}
	if len(e.log) != 0 || e.state(t) != before {
		t.Errorf("an invalid Apply wrote %v", e.log)
	}
}

func TestProcForwarding(t *testing.T) {
	ns := nfttest.New(t)
	ns.AddVeth(t, "wan")
	f := nsForwarding{ns}
	for _, v := range []bool{false, true, false} {
		if v {
			if err := f.SetForwarding("wan", true); err != nil {
				t.Fatal(err)
			}
		} else {
			ns.Sysctl(t, "net/ipv4/conf/wan/forwarding", "0")
		}
		if got, err := f.Forwarding("wan"); err != nil || got != v {
			t.Errorf("Forwarding(wan) = %v, %v; want %v", got, err, v)
		}
	}
	if _, err := f.Forwarding("nosuch0"); !errors.Is(err, os.ErrNotExist) || !strings.Contains(err.Error(), "nosuch0") {
		t.Errorf("Forwarding on a missing interface = %v", err)
	}
	if _, err := (ProcForwarding{}).Forwarding("../x"); err == nil {
		t.Error("Forwarding(../x) succeeded")
	}
}

// tincd came back with a new link of the same name, and our route still
// names the old one's index: it is replaced in place.
func TestKernelNewLinkIndex(t *testing.T) {
	e := kenvs()[0].make(t)
	if err := e.kernelApplier().Apply(t.Context(), on); err != nil {
		t.Fatal(err)
	}
	f := e.nl.(*fakeNetlink)
	f.links["confine"], f.links["old"] = 9, 2
	e.dev[9] = "confine"
	e.dev[2] = "old"
	if err := e.kernelApplier().Apply(t.Context(), on); err != nil {
		t.Fatal(err)
	}
	if d := cmp.Diff([]string{"RouteReplace table 254 100.64.0.0/16 dev confine proto 74"}, e.log); d != "" {
		t.Errorf("writes (-want +got):\n%s", d)
	}
	if len(f.routes) != 1 || f.routes[0].LinkIndex != 9 {
		t.Errorf("routes %v", f.routes)
	}
}
