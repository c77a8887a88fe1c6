// Package nfttest gives kernel tests a throwaway network namespace with a
// netlink handle and an nftables connection inside it, and links in it
// that stand in for the tinc interface and a WAN.
//
// The recipe is the one of docs/style.md: lock the OS thread, unshare a
// new namespace, switch the thread back at once, and from then on reach the
// namespace only through handles bound to it (netlink.NewHandleAt,
// nftables.WithNetNSFd) or on a throwaway thread (Do). The test's own
// thread, and the host's namespace, are never left switched. The namespace
// has no name and no link to anything outside: it vanishes when the test
// ends, even when it fails.
//
// Without root or nf_tables the test is skipped with a message saying so,
// or fails when MGMTNET_REQUIRE_E2E is set.
package nfttest

import (
	"errors"
	"flag"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/confine-project/mgmtnet/internal/nft"
)

// RequireEnv is the environment variable (as in test/vtb) that turns a
// missing prerequisite from a skip into a failure.
const RequireEnv = "MGMTNET_REQUIRE_E2E"

// NS is a network namespace that lives as long as the test.
type NS struct {
	// Handle is the namespace's file descriptor.
	Handle netns.NsHandle
	// Netlink is an rtnetlink handle inside the namespace.
	Netlink *netlink.Handle
	// NFT is an nftables connection inside the namespace.
	NFT *nftables.Conn
}

// unavailable skips t, or fails it when RequireEnv is set.
func unavailable(t testing.TB, format string, args ...any) {
	t.Helper()
	msg := fmt.Sprintf(format, args...)
	if os.Getenv(RequireEnv) != "" {
		t.Fatalf("kernel test cannot run: %s", msg)
	}
	t.Skipf("kernel test skipped: %s (set %s=1 to make this a failure)", msg, RequireEnv)
}

// New returns a new, empty network namespace for t, removed when t ends.
func New(t testing.TB) *NS {
	t.Helper()
	if os.Geteuid() != 0 {
		unavailable(t, "needs root to create a network namespace (running as uid %d)", os.Geteuid())
	}
	ns, err := newNS()
	if err != nil {
		if errors.Is(err, unix.EPERM) {
			unavailable(t, "%v", err)
		}
		t.Fatal(err)
	}
	n := &NS{Handle: ns}
	t.Cleanup(func() {
		if n.Netlink != nil {
			n.Netlink.Close()
		}
		// The last reference: the kernel removes the namespace, and the
		// links, routes, rules and tables in it.
		n.Handle.Close()
	})
	if n.Netlink, err = netlink.NewHandleAt(ns); err != nil {
		t.Fatalf("netlink handle in the test namespace: %v", err)
	}
	if n.NFT, err = nftables.New(nftables.WithNetNSFd(int(ns))); err != nil {
		t.Fatalf("nftables connection in the test namespace: %v", err)
	}
	if _, err := n.NFT.ListTablesOfFamily(nft.Family); err != nil {
		for _, e := range []error{unix.EPERM, unix.EOPNOTSUPP, unix.EPROTONOSUPPORT, unix.EAFNOSUPPORT} {
			if errors.Is(err, e) {
				unavailable(t, "nf_tables is not available: %v", err)
			}
		}
		t.Fatalf("list nftables tables in the test namespace: %v", err)
	}
	lo, err := n.Netlink.LinkByName("lo")
	if err == nil {
		err = n.Netlink.LinkSetUp(lo)
	}
	if err != nil {
		t.Fatalf("bring up lo in the test namespace: %v", err)
	}
	return n
}

// newNS creates a network namespace on a throwaway thread and returns its
// handle; the caller's thread never changes namespace.
func newNS() (netns.NsHandle, error) {
	type result struct {
		ns  netns.NsHandle
		err error
	}
	c := make(chan result, 1)
	go func() {
		// Never unlocked: the runtime ends the thread with the goroutine,
		// so a thread left in the new namespace can serve nobody else.
		runtime.LockOSThread()
		ns, err := netns.New()
		if err != nil {
			err = fmt.Errorf("create a network namespace: %w", err)
		}
		c <- result{ns, err}
	}()
	r := <-c
	return r.ns, r.err
}

// Do runs f on a throwaway OS thread inside the namespace, for what only
// works from inside: opening /dev/net/tun, writing /proc/sys/net, running
// a command. The thread ends with f.
func (n *NS) Do(f func() error) error {
	c := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread ends here
		if err := netns.Set(n.Handle); err != nil {
			c <- fmt.Errorf("enter the test namespace: %w", err)
			return
		}
		c <- f()
	}()
	return <-c
}

// AddTun creates a tun interface name with mtu in the namespace, as tincd
// does, and brings it up. The routes and rules that tinc needs take a tun
// as they take any link; a tun is closest to the real thing.
func (n *NS) AddTun(t testing.TB, name string, mtu int) netlink.Link {
	t.Helper()
	tun := &netlink.Tuntap{
		LinkAttrs: netlink.LinkAttrs{Name: name, MTU: mtu},
		Mode:      netlink.TUNTAP_MODE_TUN,
		Flags:     netlink.TUNTAP_NO_PI | netlink.TUNTAP_ONE_QUEUE,
	}
	// The tun device is made in the namespace of the thread that opens
	// /dev/net/tun.
	if err := n.Do(func() error { return netlink.LinkAdd(tun) }); err != nil {
		t.Fatalf("create tun %s in the test namespace: %v", name, err)
	}
	return n.up(t, name)
}

// AddVeth creates a veth pair, name and name+"p", in the namespace and
// brings both up.
func (n *NS) AddVeth(t testing.TB, name string) netlink.Link {
	t.Helper()
	v := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: name}, PeerName: name + "p"}
	if err := n.Netlink.LinkAdd(v); err != nil {
		t.Fatalf("create veth %s in the test namespace: %v", name, err)
	}
	n.up(t, name+"p")
	return n.up(t, name)
}

// TunLink joins two namespaces with a tun interface in each, name in n
// and peerName in peer, both with mtu and up, and copies every packet one
// of them sends out of the other: a point-to-point link that behaves as
// tinc in router mode between two members does (no link layer, no ARP).
// It lasts as long as the test.
func (n *NS) TunLink(t testing.TB, name string, peer *NS, peerName string, mtu int) {
	t.Helper()
	a := n.openTun(t, name, mtu)
	b := peer.openTun(t, peerName, mtu)
	pump := func(from, to *os.File) {
		buf := make([]byte, 1<<16)
		for {
			k, err := from.Read(buf)
			if err != nil {
				return // closed when the test ends
			}
			to.Write(buf[:k]) // a dropped packet is what a link does
		}
	}
	go pump(a, b)
	go pump(b, a)
}

// openTun creates a tun interface name in n, open on the returned file
// (and gone when the test closes it), with mtu, and up.
func (n *NS) openTun(t testing.TB, name string, mtu int) *os.File {
	t.Helper()
	var f *os.File
	err := n.Do(func() error {
		fd, err := unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_CLOEXEC|unix.O_NONBLOCK, 0)
		if err != nil {
			return err
		}
		ifr, err := unix.NewIfreq(name)
		if err == nil {
			ifr.SetUint16(unix.IFF_TUN | unix.IFF_NO_PI)
			err = unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr)
		}
		if err != nil {
			unix.Close(fd)
			return fmt.Errorf("TUNSETIFF %s: %w", name, err)
		}
		f = os.NewFile(uintptr(fd), "/dev/net/tun:"+name)
		return nil
	})
	if err != nil {
		t.Fatalf("create tun %s in the test namespace: %v", name, err)
	}
	t.Cleanup(func() { f.Close() })
	n.SetMTU(t, name, mtu)
	n.up(t, name)
	return f
}

// Connect creates a veth pair joining two namespaces, name in n and
// peerName in peer, and brings both ends up.
func (n *NS) Connect(t testing.TB, name string, peer *NS, peerName string) netlink.Link {
	t.Helper()
	v := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: name}, PeerName: peerName, PeerNamespace: netlink.NsFd(peer.Handle)}
	if err := n.Netlink.LinkAdd(v); err != nil {
		t.Fatalf("create veth %s-%s between test namespaces: %v", name, peerName, err)
	}
	peer.up(t, peerName)
	return n.up(t, name)
}

// AddAddr adds address p (with its prefix length) to link.
func (n *NS) AddAddr(t testing.TB, link string, p netip.Prefix) {
	t.Helper()
	l, err := n.Netlink.LinkByName(link)
	if err == nil {
		ipn := &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
		// IPv6 duplicate address detection would hold the address back
		// for a second.
		err = n.Netlink.AddrAdd(l, &netlink.Addr{IPNet: ipn, Flags: unix.IFA_F_NODAD})
	}
	if err != nil {
		t.Fatalf("add address %s to %s: %v", p, link, err)
	}
}

// AddRoute routes dst via the gateway via.
func (n *NS) AddRoute(t testing.TB, dst netip.Prefix, via netip.Addr) {
	t.Helper()
	r := &netlink.Route{Dst: &net.IPNet{IP: dst.Addr().AsSlice(), Mask: net.CIDRMask(dst.Bits(), dst.Addr().BitLen())}, Gw: via.AsSlice()}
	if err := n.Netlink.RouteAdd(r); err != nil {
		t.Fatalf("add route %s via %s: %v", dst, via, err)
	}
}

// AddLinkRoute routes dst straight into link, with no gateway (as a route
// into tinc is).
func (n *NS) AddLinkRoute(t testing.TB, dst netip.Prefix, link string) {
	t.Helper()
	l, err := n.Netlink.LinkByName(link)
	if err == nil {
		err = n.Netlink.RouteAdd(&netlink.Route{LinkIndex: l.Attrs().Index, Scope: netlink.SCOPE_LINK,
			Dst: &net.IPNet{IP: dst.Addr().AsSlice(), Mask: net.CIDRMask(dst.Bits(), dst.Addr().BitLen())}})
	}
	if err != nil {
		t.Fatalf("add route %s dev %s: %v", dst, link, err)
	}
}

// SetMTU sets the MTU of link.
func (n *NS) SetMTU(t testing.TB, link string, mtu int) {
	t.Helper()
	l, err := n.Netlink.LinkByName(link)
	if err == nil {
		err = n.Netlink.LinkSetMTU(l, mtu)
	}
	if err != nil {
		t.Fatalf("set mtu %d on %s: %v", mtu, link, err)
	}
}

// Sysctl writes value to /proc/sys/<key> (key with '/' separators) inside
// the namespace.
func (n *NS) Sysctl(t testing.TB, key, value string) {
	t.Helper()
	err := n.Do(func() error { return os.WriteFile("/proc/sys/"+key, []byte(value+"\n"), 0) })
	if err != nil {
		t.Fatalf("sysctl %s=%s: %v", key, value, err)
	}
}

func (n *NS) up(t testing.TB, name string) netlink.Link {
	t.Helper()
	l, err := n.Netlink.LinkByName(name)
	if err == nil {
		err = n.Netlink.LinkSetUp(l)
	}
	if err != nil {
		t.Fatalf("bring up %s in the test namespace: %v", name, err)
	}
	return l
}

// Run runs a command inside the namespace and returns its combined
// output; ok is false when the command is not installed.
func (n *NS) Run(t testing.TB, name string, args ...string) (out string, ok bool) {
	t.Helper()
	path, err := exec.LookPath(name)
	if err != nil {
		return "", false
	}
	var b []byte
	// A child forked from a thread inside the namespace starts in it.
	err = n.Do(func() error {
		var err error
		b, err = exec.Command(path, args...).CombinedOutput()
		return err
	})
	if err != nil {
		t.Fatalf("%s %v in the test namespace: %v\n%s", name, args, err, b)
	}
	return string(b), true
}

// CheckExprs checks that the kernel behind c runs the expressions of want,
// not only that it kept our rule keys. The library decodes neither rt nor
// byteorder (it skips them), so those are left out of the comparison; and
// the kernel reports a NAT address range of one register as min = max
// (nft_nat_dump), which we send, as nft does, as min alone.
func CheckExprs(t testing.TB, c nft.Conn, want nft.Table) {
	t.Helper()
	have, _, err := nft.Observe(t.Context(), c, want.Name)
	if err != nil {
		t.Fatalf("observe table %s: %v", want.Name, err)
	}
	decodable := func(es []expr.Any) []expr.Any {
		return slices.DeleteFunc(slices.Clone(es), func(e expr.Any) bool {
			switch e.(type) {
			case *expr.Rt, *expr.Byteorder:
				return true
			}
			return false
		})
	}
	for _, hc := range have.Chains {
		for _, r := range hc.Rules {
			for _, e := range r.Exprs {
				if n, ok := e.(*expr.NAT); ok && n.RegAddrMax == n.RegAddrMin {
					n.RegAddrMax = 0
				}
			}
		}
	}
	for _, wc := range want.Chains {
		i := slices.IndexFunc(have.Chains, func(c nft.Chain) bool { return c.Name == wc.Name })
		if i < 0 {
			t.Errorf("table %s: chain %s missing", want.Name, wc.Name)
			continue
		}
		hc := have.Chains[i]
		if len(hc.Rules) != len(wc.Rules) {
			t.Errorf("table %s chain %s: %d rules, want %d", want.Name, wc.Name, len(hc.Rules), len(wc.Rules))
			continue
		}
		for j, wr := range wc.Rules {
			if d := cmp.Diff(decodable(wr.Exprs), hc.Rules[j].Exprs); d != "" {
				t.Errorf("table %s chain %s rule %q: kernel expressions (-want +got):\n%s", want.Name, wc.Name, wr.Text, d)
			}
		}
	}
}

// update is the -update flag of every test binary that uses Golden.
var update = flag.Bool("update", false, "rewrite golden files")

// Golden compares got with testdata/<name>.golden, or writes it there
// with -update.
func Golden(t *testing.T, name, got string) {
	t.Helper()
	path := filepath.Join("testdata", name+".golden")
	if *update {
		if err := os.MkdirAll("testdata", 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test -update to create it)", err)
	}
	if d := cmp.Diff(string(want), got); d != "" {
		t.Errorf("%s differs (-want +got):\n%s", path, d)
	}
}
