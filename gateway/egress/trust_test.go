package egress

import (
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/confine-project/mgmtnet/internal/nft/nfttest"
)

// The attacks on a gateway that forwards too much, with real packets in
// namespaces (documentation addresses, but for the attack targets, which
// live in the namespaces too):
//
//	node  gw0 192.0.2.2/30, fd00:1::2/64 ── confine 192.0.2.1/30, fd00:1::1/64  gw
//	      lo 100.64.0.31 (egress)
//	gw    lan 10.0.0.1/24 ── eth0 10.0.0.2/24                                   community
//	gw    wan 203.0.113.1/24, 2001:db8::1/64 ── eth0 203.0.113.2/24, 2001:db8::2/64  inet
//	      inet: lo 198.51.100.1 (a pretend Internet host), 198.51.100.129 (one
//	      the operator denies), 169.254.169.254 (a metadata service),
//	      10.99.0.80, 192.168.99.80 (private hosts behind the WAN) and
//	      10.1.2.3 (an operator's proxy, allowed)
//
// Each attack first succeeds without the table (the control: the test can
// fail), then fails with it, and its counter counts it.
func TestTrafficTrust(t *testing.T) {
	node, gw, inet := trafficLab(t)
	community := nfttest.New(t)
	noDAD(t, community)
	gw.Connect(t, "lan", community, "eth0")
	a, p := netip.MustParseAddr, netip.MustParsePrefix
	gw.AddAddr(t, "lan", p("10.0.0.1/24"))
	// What the attacks need: forwarding on for every interface, IPv4
	// and IPv6, not only the two egress asks for.
	gw.Sysctl(t, "net/ipv4/conf/all/forwarding", "1")
	gw.Sysctl(t, "net/ipv6/conf/all/forwarding", "1")

	community.AddAddr(t, "eth0", p("10.0.0.2/24"))
	community.AddRoute(t, p("0.0.0.0/0"), a("10.0.0.1"))

	for _, host := range []string{"198.51.100.1", "198.51.100.129", "169.254.169.254", "10.99.0.80", "192.168.99.80", "10.1.2.3"} {
		inet.AddAddr(t, "lo", p(host+"/32"))
	}
	// A WAN neighbour that routes the gateway's other networks to it.
	inet.AddRoute(t, p("100.64.0.0/16"), a("203.0.113.1"))
	inet.AddRoute(t, p("10.0.0.0/24"), a("203.0.113.1"))

	internet, denied := listen(t, inet, "198.51.100.1"), listen(t, inet, "198.51.100.129")
	metadata, private10, private192 := listen(t, inet, "169.254.169.254"), listen(t, inet, "10.99.0.80"), listen(t, inet, "192.168.99.80")
	proxy := listen(t, inet, "10.1.2.3")
	mgmt := listen(t, node, "fd00:1::2")
	udp := listenUDP(t, community, "10.0.0.2")

	// Without our table every attack works.
	for _, l := range []listener{metadata, private10, private192, denied} {
		c, err := dial(t.Context(), node, "100.64.0.31", l.addr)
		if err != nil {
			t.Fatalf("control: without the table %s is unreachable (%v): the test proves nothing", l.addr, err)
		}
		c.Close()
		<-l.from
	}
	c, err := dial(t.Context(), inet, "2001:db8::2", mgmt.addr)
	if err != nil {
		t.Fatalf("control: without the table the WAN cannot reach %s (%v): the test proves nothing", mgmt.addr, err)
	}
	c.Close()
	<-mgmt.from
	if !udpArrives(t, inet, udp, 5*time.Second) {
		t.Fatalf("control: without the table UDP from the WAN does not reach %s: the test proves nothing", udp.addr)
	}
	t.Logf("control: without the table a node reached 169.254.169.254, 10.99.0.80, 192.168.99.80 and 198.51.100.129; the WAN reached %s (TCP) and %s (UDP)", mgmt.addr, udp.addr)

	ap := NewApplier(gw.NFT, nil)
	g := on
	g.Allow = []netip.Prefix{p("10.1.2.0/24")}
	g.Deny = []netip.Prefix{p("198.51.100.128/25")}
	if err := ap.Apply(t.Context(), g); err != nil {
		t.Fatal(err)
	}
	before := counters(t, ap)

	// 1. and 2. A metadata service and private hosts behind the WAN, and
	// a documentation range the operator denies: dropped, counted.
	for _, l := range []listener{metadata, private10, private192, denied} {
		dropped(t, ap, CounterBlockedDestination, node, "100.64.0.31", l.addr)
	}
	// The ordinary Internet and the allowed proxy still work, masqueraded.
	for _, l := range []listener{internet, proxy} {
		c, err := dial(t.Context(), node, "100.64.0.31", l.addr)
		if err != nil {
			t.Fatalf("egress to %s: %v", l.addr, err)
		}
		c.Close()
		if got := <-l.from; got != "203.0.113.1" {
			t.Errorf("%s saw %s, want the masqueraded 203.0.113.1", l.addr, got)
		}
	}

	// 3. With forwarding on everywhere, the WAN sends UDP to the
	// community network and TCP into the management network (IPv6):
	// dropped, counted.
	mid := counters(t, ap)
	if udpArrives(t, inet, udp, 0) {
		t.Errorf("UDP from the WAN reached %s through the gateway", udp.addr)
	}
	if got := counters(t, ap)[CounterWANInitiated]; got <= mid[CounterWANInitiated] {
		t.Errorf("wan_initiated did not count the UDP: %d -> %d", mid[CounterWANInitiated], got)
	}
	dropped(t, ap, CounterWANInitiated, inet, "2001:db8::2", mgmt.addr)

	after := counters(t, ap)
	t.Logf("counters before the attacks: %v", before)
	t.Logf("counters after the attacks:  %v", after)
	if got := after[CounterBlockedDestination] - before[CounterBlockedDestination]; got < 4 {
		t.Errorf("blocked_destination counted %d packets, want at least 4 (one SYN each)", got)
	}
	if after[CounterMasqueraded] != 2 || after[CounterReturned] == 0 {
		t.Errorf("the allowed connections are not in the counters: %v", after)
	}
}

func counters(t *testing.T, ap *Applier) map[string]uint64 {
	t.Helper()
	c, err := ap.Counters(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	return c
}

type udpSink struct {
	addr string
	got  chan string
}

// listenUDP receives datagrams on ip in ns and reports each payload.
func listenUDP(t *testing.T, ns *nfttest.NS, ip string) udpSink {
	t.Helper()
	var pc net.PacketConn
	if err := ns.Do(func() (err error) {
		pc, err = net.ListenPacket("udp", net.JoinHostPort(ip, "0"))
		return err
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close() })
	s := udpSink{addr: pc.LocalAddr().String(), got: make(chan string, 64)}
	go func() {
		buf := make([]byte, 1500)
		for {
			n, _, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			select {
			case s.got <- string(buf[:n]):
			default:
			}
		}
	}()
	return s
}

// udpArrives sends datagrams from ns to the sink every 20 ms and reports
// whether one arrives. With wait 0 it sends for 1 s and then waits 200 ms
// more for a late one: long enough for the kernel to forward, or count a
// drop, many times over.
func udpArrives(t *testing.T, ns *nfttest.NS, s udpSink, wait time.Duration) bool {
	t.Helper()
	for len(s.got) > 0 {
		<-s.got
	}
	var c net.Conn
	if err := ns.Do(func() (err error) {
		c, err = net.Dial("udp", s.addr)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	send := wait
	if send == 0 {
		send = time.Second
	}
	deadline := time.Now().Add(send)
	for time.Now().Before(deadline) {
		c.Write([]byte("from the WAN")) // an ICMP error may fail a later write
		select {
		case <-s.got:
			return true
		case <-time.After(20 * time.Millisecond):
		}
	}
	select {
	case <-s.got:
		return true
	case <-time.After(200 * time.Millisecond):
		return false
	}
}
