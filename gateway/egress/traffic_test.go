package egress

import (
	"context"
	"io"
	"net"
	"net/netip"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/confine-project/mgmtnet/internal/nft/nfttest"
	"github.com/confine-project/mgmtnet/vpn"
)

// Real packets through a gateway in three namespaces, with documentation
// addresses only:
//
//	node  gw0 192.0.2.2/30, fd00:1::2/64 ── confine 192.0.2.1/30, fd00:1::1/64 (MTU 1400)  gw
//	      lo 100.64.0.31 (egress), 10.9.9.9 (spoofed)
//	gw    wan 203.0.113.1/24, 2001:db8::1/64 ── eth0 203.0.113.2/24, 2001:db8::2/64  inet
//	      inet: lo 198.51.100.1 (a pretend Internet host)
//
// The veth "confine" stands in for the tinc interface: the rules see only
// interface names, and a veth needs no tincd.
// trafficLab builds the namespaces and links both traffic tests share
// (the drawing above): node, gateway and pretend Internet, with their
// addresses and routes, and no forwarding yet.
func trafficLab(t *testing.T) (node, gw, inet *nfttest.NS) {
	t.Helper()
	node, gw, inet = nfttest.New(t), nfttest.New(t), nfttest.New(t)
	for _, ns := range []*nfttest.NS{node, gw, inet} {
		noDAD(t, ns)
	}
	node.Connect(t, "gw0", gw, "confine")
	gw.Connect(t, "wan", inet, "eth0")
	gw.SetMTU(t, "confine", 1400)

	a, p := netip.MustParseAddr, netip.MustParsePrefix
	node.AddAddr(t, "gw0", p("192.0.2.2/30"))
	node.AddAddr(t, "gw0", p("fd00:1::2/64"))
	node.AddAddr(t, "lo", p("100.64.0.31/32"))
	node.AddRoute(t, p("0.0.0.0/0"), a("192.0.2.1"))
	node.AddRoute(t, p("::/0"), a("fd00:1::1"))

	gw.AddAddr(t, "confine", p("192.0.2.1/30"))
	gw.AddAddr(t, "confine", p("fd00:1::1/64"))
	gw.AddAddr(t, "wan", p("203.0.113.1/24"))
	gw.AddAddr(t, "wan", p("2001:db8::1/64"))
	gw.AddRoute(t, p("100.64.0.0/16"), a("192.0.2.2")) // the egress prefix, into "tinc"
	gw.AddRoute(t, p("0.0.0.0/0"), a("203.0.113.2"))

	inet.AddAddr(t, "eth0", p("203.0.113.2/24"))
	inet.AddAddr(t, "eth0", p("2001:db8::2/64"))
	inet.AddRoute(t, p("fd00:1::/64"), a("2001:db8::1"))
	return node, gw, inet
}

// noDAD turns off duplicate address detection in ns: an address
// (link-local ones included, which neighbour discovery uses) works at once.
func noDAD(t *testing.T, ns *nfttest.NS) {
	ns.Sysctl(t, "net/ipv6/conf/default/accept_dad", "0")
	ns.Sysctl(t, "net/ipv6/conf/all/accept_dad", "0")
}

func TestTraffic(t *testing.T) {
	node, gw, inet := trafficLab(t)
	a, p := netip.MustParseAddr, netip.MustParsePrefix
	node.AddAddr(t, "lo", p("10.9.9.9/32"))
	gw.Sysctl(t, "net/ipv6/conf/all/forwarding", "1")
	for _, iface := range []string{"confine", "wan"} {
		if err := gw.Do(func() error { return SetForwarding(iface, true) }); err != nil {
			t.Fatal(err)
		}
	}

	inet.AddAddr(t, "lo", p("198.51.100.1/32"))
	inet.AddRoute(t, p("100.64.0.0/16"), a("203.0.113.1")) // a WAN neighbour that tries to reach in

	ap := NewApplier(gw.NFT, nil)
	if err := ap.Apply(t.Context(), on); err != nil {
		t.Fatal(err)
	}

	seen := listen(t, inet, "198.51.100.1")
	seen6 := listen(t, inet, "2001:db8::2")

	// 1. Egress: connects, masqueraded to the gateway's WAN address, MSS
	// clamped to tinc's MTU on the SYN-ACK coming back.
	c, err := dial(t.Context(), node, "100.64.0.31", seen.addr)
	if err != nil {
		t.Fatalf("egress connection: %v", err)
	}
	if got := <-seen.from; got != "203.0.113.1" {
		t.Errorf("the Internet host saw %s, want the masqueraded 203.0.113.1", got)
	}
	if mss := maxseg(t, c); mss > 1400-40 {
		t.Errorf("MSS %d: not clamped to the tinc MTU (1400 - 40)", mss)
	}
	c.Close()

	// 2. IPv6 from tinc is none of our business: it flows, unmasqueraded.
	c, err = dial(t.Context(), node, "fd00:1::2", seen6.addr)
	if err != nil {
		t.Fatalf("IPv6 through the gateway: %v", err)
	}
	if got := <-seen6.from; got != "fd00:1::2" {
		t.Errorf("IPv6 source seen as %s, want it untouched", got)
	}
	c.Close()

	// 3. A spoofed source, 4. a connection from the WAN, 5. a node to
	// another node's egress address through the gateway: dropped, and
	// counted.
	dropped(t, ap, CounterSpoofed, node, "10.9.9.9", seen.addr)
	dropped(t, ap, CounterWANInitiated, inet, "203.0.113.2", "100.64.0.31:22")
	dropped(t, ap, CounterMisrouted, node, "100.64.0.31", "100.64.0.99:22")

	got, err := ap.Counters(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("counters: %v", got)
	for _, name := range []string{CounterForwarded, CounterReturned} {
		if got[name] == 0 {
			t.Errorf("counter %s did not count", name)
		}
	}
	if got[CounterMasqueraded] != 1 {
		t.Errorf("masqueraded = %d, want 1 (one connection)", got[CounterMasqueraded])
	}
	for _, name := range []string{CounterSpoofed, CounterWANInitiated, CounterMisrouted} {
		if got[name] == 0 {
			t.Errorf("counter %s did not count", name)
		}
	}

	// Cleanup: the table goes, and the gateway no longer masquerades.
	if err := ap.Apply(t.Context(), Gateway{}); err != nil {
		t.Fatal(err)
	}
	c, err = dial(t.Context(), node, "100.64.0.31", seen.addr)
	if err != nil {
		t.Fatalf("after cleanup: %v", err)
	}
	if got := <-seen.from; got != "100.64.0.31" {
		t.Errorf("after cleanup the host saw %s, want the unmasqueraded 100.64.0.31", got)
	}
	c.Close()
}

// A sliver's connections through a node and a gateway, each set up by its
// own applier, with a tun link standing in for tinc between them:
//
//	sliver eth0 192.168.157.5/25 ── br 192.168.157.126/25     node
//	node   lan 10.0.0.1/24 ── eth0 10.0.0.2/24                community host
//	node   confine (tun, MTU 1400) ══ confine (tun, MTU 1400)  gw
//	gw     wan 203.0.113.1/24 ── eth0 203.0.113.2/24          inet (lo 198.51.100.1)
//
// The node has no default route of its own: the only way to the Internet
// is egress.
func TestTrafficFromSliver(t *testing.T) {
	sliver, node, gw, inet, community := nfttest.New(t), nfttest.New(t), nfttest.New(t), nfttest.New(t), nfttest.New(t)
	sliver.Connect(t, "eth0", node, "br")
	node.Connect(t, "lan", community, "eth0")
	node.TunLink(t, "confine", gw, "confine", 1400)
	gw.Connect(t, "wan", inet, "eth0")

	a, p := netip.MustParseAddr, netip.MustParsePrefix
	sliver.AddAddr(t, "eth0", p("192.168.157.5/25"))
	sliver.AddRoute(t, p("0.0.0.0/0"), a("192.168.157.126"))
	node.AddAddr(t, "br", p("192.168.157.126/25"))
	node.AddAddr(t, "lan", p("10.0.0.1/24"))
	community.AddAddr(t, "eth0", p("10.0.0.2/24"))
	community.AddRoute(t, p("0.0.0.0/0"), a("10.0.0.1"))
	gw.AddAddr(t, "wan", p("203.0.113.1/24"))
	gw.AddLinkRoute(t, p("100.64.0.0/16"), "confine")
	gw.AddRoute(t, p("0.0.0.0/0"), a("203.0.113.2"))
	inet.AddAddr(t, "eth0", p("203.0.113.2/24"))
	inet.AddAddr(t, "lo", p("198.51.100.1/32"))
	for ns, ifaces := range map[*nfttest.NS][]string{node: {"br", "lan", "confine"}, gw: {"confine", "wan"}} {
		for _, iface := range ifaces {
			if err := ns.Do(func() error { return SetForwarding(iface, true) }); err != nil {
				t.Fatal(err)
			}
		}
	}

	nodeEgress, err := vpn.NewNodeEgress("confine", a("100.64.0.31"), []netip.Prefix{p("192.168.157.0/25")}, nil)
	if err != nil {
		t.Fatal(err)
	}
	nodeAp := vpn.NewNodeEgressApplier(node.Netlink, node.NFT, nil)
	if err := nodeAp.Apply(t.Context(), nodeEgress); err != nil {
		t.Fatal(err)
	}
	gwAp := NewApplier(gw.NFT, nil)
	if err := gwAp.Apply(t.Context(), on); err != nil {
		t.Fatal(err)
	}

	internet := listen(t, inet, "198.51.100.1")
	local := listen(t, community, "10.0.0.2")

	// To the Internet: through tinc, SNATed by the node, masqueraded by
	// the gateway, MSS clamped to tinc's MTU.
	c, err := dial(t.Context(), sliver, "192.168.157.5", internet.addr)
	if err != nil {
		t.Fatalf("sliver to the Internet: %v", err)
	}
	if got := <-internet.from; got != "203.0.113.1" {
		t.Errorf("the Internet host saw %s, want the gateway's 203.0.113.1", got)
	}
	if mss := maxseg(t, c); mss > 1400-40 {
		t.Errorf("MSS %d: not clamped to the tinc MTU", mss)
	}
	c.Close()

	// To the community network: thrown out of the egress table, so it
	// keeps the node's own path and the sliver's address.
	c, err = dial(t.Context(), sliver, "192.168.157.5", local.addr)
	if err != nil {
		t.Fatalf("sliver to the community network: %v", err)
	}
	if got := <-local.from; got != "192.168.157.5" {
		t.Errorf("the community host saw %s, want the sliver's own 192.168.157.5", got)
	}
	c.Close()

	got, err := gwAp.Counters(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if got[CounterMasqueraded] != 1 || got[CounterForwarded] == 0 || got[CounterSpoofed] != 0 {
		t.Errorf("gateway counters %v: want one masqueraded connection, forwarded packets, nothing spoofed", got)
	}

	// Node cleanup: no more egress; the node has no other way out.
	if err := nodeAp.Apply(t.Context(), vpn.NodeEgress{}); err != nil {
		t.Fatal(err)
	}
	if c, err := dial(t.Context(), sliver, "192.168.157.5", internet.addr); err == nil {
		c.Close()
		t.Error("the sliver still reaches the Internet after the node's cleanup")
	}
}

type listener struct {
	addr string
	from chan string
}

// listen accepts TCP connections on ip in ns and reports each one's source
// address.
func listen(t *testing.T, ns *nfttest.NS, ip string) listener {
	t.Helper()
	var ln net.Listener
	if err := ns.Do(func() (err error) {
		ln, err = net.Listen("tcp", net.JoinHostPort(ip, "0"))
		return err
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	l := listener{addr: ln.Addr().String(), from: make(chan string, 8)}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			l.from <- c.RemoteAddr().(*net.TCPAddr).AddrPort().Addr().Unmap().String()
			io.Copy(io.Discard, c)
			c.Close()
		}
	}()
	return l
}

// dial connects from local (an address in ns) to addr. It gives up when
// ctx ends, or after a generous bound: neighbour discovery in a fresh
// namespace can take a while.
func dial(ctx context.Context, ns *nfttest.NS, local, addr string) (*net.TCPConn, error) {
	var c net.Conn
	err := ns.Do(func() (err error) {
		ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(local)}}
		c, err = d.DialContext(ctx, "tcp", addr)
		return err
	})
	if err != nil {
		return nil, err
	}
	return c.(*net.TCPConn), nil
}

// dropped tries a connection that the gateway must drop: it waits until
// counter has counted the attempt (rather than for a time-out), then
// checks that the connection did not get through.
func dropped(t *testing.T, ap *Applier, counter string, ns *nfttest.NS, local, addr string) {
	t.Helper()
	read := func() uint64 {
		c, err := ap.Counters(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		return c[counter]
	}
	before := read()
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() {
		c, err := dial(ctx, ns, local, addr)
		if err == nil {
			c.Close()
		}
		done <- err
	}()
	counted := false
	for !counted {
		if counted = read() > before; counted {
			break
		}
		select {
		case err := <-done:
			cancel()
			if err == nil {
				t.Errorf("%s -> %s got through; want it dropped (%s)", local, addr, counter)
			} else {
				t.Errorf("%s -> %s: %v, and counter %s did not count it", local, addr, err, counter)
			}
			return
		case <-time.After(10 * time.Millisecond):
		}
	}
	cancel()
	if err := <-done; err == nil {
		t.Errorf("%s -> %s got through; want it dropped (%s)", local, addr, counter)
	}
}

// maxseg returns the MSS the connection settled on.
func maxseg(t *testing.T, c *net.TCPConn) int {
	t.Helper()
	raw, err := c.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var mss int
	var serr error
	if err := raw.Control(func(fd uintptr) { mss, serr = unix.GetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_MAXSEG) }); err != nil {
		t.Fatal(err)
	}
	if serr != nil {
		t.Fatalf("getsockopt TCP_MAXSEG: %v", serr)
	}
	return mss
}
