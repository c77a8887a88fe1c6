package e2e

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/confine-project/mgmtnet/addressing"
	"github.com/confine-project/mgmtnet/test/vtb"
)

// dig runs dig in a namespace and returns its trimmed output.
func dig(ctx context.Context, n *vtb.Netns, args ...string) (string, error) {
	out, err := n.Run(ctx, append([]string{"dig", "+time=1", "+tries=1"}, args...)...)
	return strings.TrimSpace(out), err
}

// TestDNS checks the management network's DNS end to end: both gateways
// serve the zone from their snapshots and announce one service address
// into the mesh; a node resolves the server's and another node's names
// and a sliver's address backwards, over the overlay, by UDP and TCP; a
// client outside the allow-list (a node's community address) is refused;
// and when the preferred gateway stops, the service address still answers
// (from the other one), and the time that takes is logged.
func TestDNS(t *testing.T) {
	lab := vtb.ForTest(t)
	ctx := context.Background()
	spec := vtb.DefaultSpec(mgmtnetBin)
	spec.DNS, spec.SecondGateway = true, true
	tb, err := vtb.Build(ctx, lab, spec)
	if err != nil {
		t.Fatal(err)
	}
	if err := tb.Boot(ctx); err != nil {
		t.Fatal(err)
	}
	svc := tb.DNSServiceAddr().String()
	n1, n31 := tb.Nodes[0], tb.Nodes[2]
	name := func(label string) string { return label + "." + vtb.DNSZone }

	// The service address is announced once the gateways' tincd run with
	// it; wait for the first answer.
	var got string
	err = vtb.WaitFor(ctx, 30*time.Second, 200*time.Millisecond, func() error {
		got, err = dig(ctx, n1.NS, "+short", "AAAA", name("server-2"), "@"+svc)
		if err != nil || got != tb.Server.Addr.String() {
			return fmt.Errorf("server-2: %q %v", got, err)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"+short", "AAAA", name("node-31")}, n31.Addr.String()},
		{[]string{"+short", "+tcp", "AAAA", name("node-1")}, n1.Addr.String()},
		{[]string{"+short", "AAAA", name("server-3")}, tb.Gateways[1].Addr.String()},
		{[]string{"+short", "-x", n31.Slivers[0].MgmtAddr.String()}, ptrName(t, tb, n31.Slivers[0].MgmtAddr)},
		{[]string{"+short", "+tcp", "-x", tb.Server.Addr.String()}, name("server-2")},
	} {
		got, err := dig(ctx, n1.NS, append(tc.args, "@"+svc)...)
		if err != nil || got != tc.want {
			t.Errorf("dig %v @%s from node_1: %q, %v; want %q", tc.args, svc, got, err, tc.want)
		}
	}
	out, err := dig(ctx, n1.NS, "AAAA", name("node-999"), "@"+svc)
	if err != nil || !strings.Contains(out, "status: NXDOMAIN") || !strings.Contains(out, "flags: qr aa") {
		t.Errorf("a name not in the testbed: want an authoritative NXDOMAIN:\n%s\n%v", out, err)
	}

	// Outside the allow-list: node_1 asks the server by its community
	// address, so its source is 10.241.1.11, not in the /48.
	out, err = dig(ctx, n1.NS, "AAAA", name("server-2"), "@10.241.1.1")
	if err != nil || !strings.Contains(out, "status: REFUSED") {
		t.Errorf("a client outside the allow-list: want REFUSED:\n%s\n%v", out, err)
	}

	// The preferred gateway stops: the service address still answers.
	if err := tb.Server.Gateway.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	t0 := time.Now()
	var ds []time.Duration
	err = vtb.WaitFor(ctx, 30*time.Second, 50*time.Millisecond, func() error {
		got, err := dig(ctx, n31.NS, "+short", "AAAA", name("node-2"), "@"+svc)
		if err != nil || got != tb.Nodes[1].Addr.String() {
			return fmt.Errorf("node-2 after the server stopped: %q %v", got, err)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	ds = append(ds, time.Since(t0))
	waitExited(t, tb.Server.Gateway)
	got, err = dig(ctx, n31.NS, "+short", "AAAA", name("server-2"), "@"+svc)
	if err != nil || got != tb.Server.Addr.String() {
		t.Errorf("server_3 answers for the stopped server's name from its snapshot: %q %v", got, err)
	}
	slices.Sort(ds)
	t.Logf("service address answered by server_3 %s after the server's gateway got SIGTERM", ds[0].Round(time.Millisecond))
}

// ptrName is what the zone answers for a: the plan's DNS label of what a
// is, in the zone.
func ptrName(t *testing.T, tb *vtb.Testbed, a netip.Addr) string {
	t.Helper()
	e, err := tb.Plan.Reverse(a)
	if err != nil {
		t.Fatal(err)
	}
	l, err := addressing.DNSLabel(e)
	if err != nil {
		t.Fatal(err)
	}
	return l + "." + vtb.DNSZone
}
