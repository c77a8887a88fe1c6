package e2e

import (
	"context"
	"fmt"
	"net"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/confine-project/mgmtnet/test/vtb"
)

// TestAttackEgress attacks the gateway's egress from both sides, in the
// virtual testbed with one egress gateway:
//
//   - a sliver fetches a metadata-style service (169.254.169.254) and
//     hosts on RFC 1918 addresses that sit behind the gateway's WAN: each
//     fetch fails, and blocked_destination counts it, while the gateway
//     itself reaches them (they are there: the check can fail) and the
//     sliver still reaches the ordinary Internet host;
//   - with IPv4 forwarding switched on for every interface of the
//     gateway, the WAN sends UDP to a node's community address through
//     it: nothing arrives and wan_initiated counts it; once the gateway
//     is stopped and its table deleted, the same datagrams arrive (the
//     control: the check can fail).
func TestAttackEgress(t *testing.T) {
	lab := vtb.ForTest(t)
	ctx := context.Background()
	spec := vtb.DefaultSpec(mgmtnetBin)
	spec.Egress = true
	tb, err := vtb.Build(ctx, lab, spec)
	if err != nil {
		t.Fatal(err)
	}
	if err := tb.Boot(ctx); err != nil {
		t.Fatal(err)
	}
	gw := tb.Server
	waitEgress(t, tb, gw, "announced")
	s := tb.Nodes[0].Slivers[0]
	targets := append([]string{vtb.MetadataAddr}, vtb.PrivateHostAddrs...)

	// The targets are there, and reachable from the gateway's WAN side.
	for _, a := range targets {
		seen, err := gw.NS.Fetch(ctx, "http://"+a+"/", 5*time.Second)
		if err != nil {
			t.Fatalf("control: the gateway itself cannot fetch http://%s/ (%v): the check below proves nothing", a, err)
		}
		t.Logf("control: the gateway fetches http://%s/, which sees it as %s", a, seen)
	}
	if _, err := whoAmI(ctx, s, 5*time.Second); err != nil {
		t.Fatalf("a sliver cannot reach the Internet host: %v", err)
	}

	// A node keeps its community ranges (by default RFC 1918) off the
	// VPN; this one sends the private targets into tinc, as a node with
	// another community list, or a hostile one, does: the gateway must
	// not rely on the nodes' routing.
	node := tb.Nodes[0]
	for _, a := range vtb.PrivateHostAddrs {
		if err := node.NS.MustRun("ip", "route", "add", a+"/32", "dev", "confine", "table", "7465"); err != nil {
			t.Fatal(err)
		}
	}
	for _, a := range targets {
		route, err := node.NS.Run(ctx, "ip", "route", "get", a, "from", s.PrivAddr.String(), "iif", "br-internal")
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(route, "dev confine") {
			t.Fatalf("a sliver's traffic to %s does not go into tinc, so the gateway never sees it: %s", a, route)
		}
	}

	// 1. and 2. A sliver's fetches of them fail, and are counted.
	before := egressCounters(t, tb, gw)
	for _, a := range targets {
		if out, err := s.NS.Fetch(ctx, "http://"+a+"/", 3*time.Second); err == nil {
			t.Errorf("a sliver fetched http://%s/ through the gateway: %q", a, out)
		}
	}
	// Each fetch sends at least two SYNs (curl's time-out is past the
	// first retransmission).
	want := before["blocked_destination"] + 2*uint64(len(targets))
	var after map[string]uint64
	if err := vtb.WaitFor(ctx, 5*time.Second, 100*time.Millisecond, func() error {
		if after = egressCounters(t, tb, gw); after["blocked_destination"] < want {
			return fmt.Errorf("blocked_destination %d, want at least %d", after["blocked_destination"], want)
		}
		return nil
	}); err != nil {
		t.Error(err)
	}
	t.Logf("counters before the sliver's fetches: %v", before)
	t.Logf("counters after the sliver's fetches:  %v", after)
	// The ordinary Internet still works, masqueraded.
	if seen, err := whoAmI(ctx, s, 5*time.Second); err != nil || seen != gw.WAN.String() {
		t.Errorf("the Internet host after the attack: %q, %v; want it to see %s", seen, err, gw.WAN)
	}

	// 3. Forwarding on everywhere, the WAN routes the community network to
	// the gateway and sends UDP to a node's community address.
	for _, cmd := range [][]string{
		{"sysctl", "-qw", "net.ipv4.conf.all.forwarding=1", "net.ipv4.conf.wan0.forwarding=1"},
	} {
		if err := gw.NS.MustRun(cmd...); err != nil {
			t.Fatal(err)
		}
	}
	if err := tb.Inet.MustRun("ip", "route", "add", node.CNAddr.String()+"/32", "via", gw.WAN.String()); err != nil {
		t.Fatal(err)
	}
	sink := listenUDP(t, node.NS, node.CNAddr.String())
	before = egressCounters(t, tb, gw)
	if n := sendUDP(t, tb.Inet, sink, 2*time.Second); n > 0 {
		t.Errorf("%d datagrams from the WAN reached %s through the gateway", n, sink.addr)
	}
	if err := vtb.WaitFor(ctx, 5*time.Second, 100*time.Millisecond, func() error {
		if after = egressCounters(t, tb, gw); after["wan_initiated"] <= before["wan_initiated"] {
			return fmt.Errorf("wan_initiated %d", after["wan_initiated"])
		}
		return nil
	}); err != nil {
		t.Error(err)
	}
	t.Logf("counters before the WAN's UDP: %v", before)
	t.Logf("counters after the WAN's UDP:  %v", after)
	if after["wan_initiated"] <= before["wan_initiated"] {
		t.Errorf("wan_initiated did not count the UDP from the WAN: %d -> %d", before["wan_initiated"], after["wan_initiated"])
	}

	// The control: without the gateway's table the same UDP arrives.
	if err := gw.Gateway.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	waitExited(t, gw.Gateway)
	if out, err := gw.NS.Run(ctx, "nft", "list", "table", "inet", "mgmtnet"); err == nil && strings.TrimSpace(out) != "" {
		if err := gw.NS.MustRun("nft", "delete", "table", "inet", "mgmtnet"); err != nil {
			t.Fatal(err)
		}
	}
	n := sendUDP(t, tb.Inet, sink, 2*time.Second)
	if n == 0 {
		t.Errorf("control: without the gateway's table the WAN's UDP still does not reach %s: the check above proves nothing", sink.addr)
	}
	t.Logf("control: without the gateway's table %d datagrams from the WAN reached %s", n, sink.addr)
}

type udpSink struct {
	addr string
	got  chan struct{}
}

// listenUDP receives datagrams on ip in ns until the test ends.
func listenUDP(t *testing.T, ns *vtb.Netns, ip string) udpSink {
	t.Helper()
	var pc net.PacketConn
	if err := ns.Do(func() (err error) {
		pc, err = net.ListenPacket("udp4", net.JoinHostPort(ip, "0"))
		return err
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close() })
	s := udpSink{addr: pc.LocalAddr().String(), got: make(chan struct{}, 1024)}
	go func() {
		buf := make([]byte, 1500)
		for {
			if _, _, err := pc.ReadFrom(buf); err != nil {
				return
			}
			select {
			case s.got <- struct{}{}:
			default:
			}
		}
	}()
	return s
}

// sendUDP sends a datagram from ns to the sink every 50 ms for d, waits
// half a second more for late ones, and returns how many arrived.
func sendUDP(t *testing.T, ns *vtb.Netns, s udpSink, d time.Duration) int {
	t.Helper()
	for len(s.got) > 0 {
		<-s.got
	}
	var c net.Conn
	if err := ns.Do(func() (err error) {
		c, err = net.Dial("udp4", s.addr)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for end := time.Now().Add(d); time.Now().Before(end); time.Sleep(50 * time.Millisecond) {
		c.Write([]byte(fmt.Sprintf("from the WAN at %s", time.Now().Format(time.RFC3339Nano)))) // an ICMP error may fail a later write
	}
	time.Sleep(500 * time.Millisecond)
	return len(s.got)
}
