package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/confine-project/mgmtnet/test/vtb"
)

// connectTo returns the ConnectTo names of a node's tinc.conf, sorted.
func connectTo(t *testing.T, n *vtb.Node) []string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(n.TincDir, "tinc.conf"))
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, l := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(l, "="); ok && strings.TrimSpace(k) == "ConnectTo" {
			out = append(out, strings.TrimSpace(v))
		}
	}
	slices.Sort(out)
	return out
}

// TestAssignedGateways: three gateways of capacity 3 and four nodes, so
// that each node is assigned to two gateways and no gateway holds them
// all. Every node connects to exactly its two gateways and knows nothing
// else; nodes on different gateways reach each other and every server
// through the gateways' links; a gateway's loss leaves its nodes on their
// other gateway, still reachable from everywhere; and a node owner who
// points tincd at a gateway that is not theirs is refused.
func TestAssignedGateways(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	lab := vtb.ForTest(t)
	spec := vtb.DefaultSpec(mgmtnetBin)
	spec.GatewayDaemon, spec.ThirdGateway, spec.Capacity = true, true, 3
	spec.Nodes = append(spec.Nodes, vtb.NodeSpec{ID: 4, Island: 1})
	tb, err := vtb.Build(ctx, lab, spec)
	if err != nil {
		t.Fatal(err)
	}
	if err := tb.Boot(ctx); err != nil {
		t.Fatal(err)
	}
	status := func(g *vtb.Server) *vtb.GatewayStatus {
		t.Helper()
		st, err := vtb.ReadGatewayStatus(ctx, mgmtnetBin, g.StatusSocket)
		if err != nil {
			t.Fatalf("%s status: %v", g.TincName, err)
		}
		return st
	}

	// Each node: two gateways, the ones whose hosts directories hold it.
	gwsOf := map[string][]string{}
	held := map[string]int{}
	for _, n := range tb.Nodes {
		gws := connectTo(t, n)
		gwsOf[n.TincName] = gws
		if len(gws) != 2 {
			t.Errorf("%s connects to %v, want two gateways", n.TincName, gws)
		}
		for _, g := range tb.Gateways {
			_, err := os.Stat(filepath.Join(g.TincDir, "hosts", n.TincName))
			if has := err == nil; has != slices.Contains(gws, g.TincName) {
				t.Errorf("%s's hosts dir has %s: %v; %s connects to it: %v", g.TincName, n.TincName, has, n.TincName, !has)
			}
			if err == nil {
				held[g.TincName]++
			}
		}
	}
	for _, g := range tb.Gateways {
		a := status(g).Assignment
		if !a.Enabled || a.Gateways != 3 || a.PerMember != 2 || a.Capacity != 3 || a.Held != held[g.TincName] || a.Held > 3 || len(a.Refused) != 0 {
			t.Errorf("%s status assignment %+v; holds %d", g.TincName, a, held[g.TincName])
		}
	}
	t.Logf("assignment: %v", gwsOf)
	if t.Failed() {
		t.FailNow()
	}

	// No node's tinc graph holds more than itself and its gateways, once
	// they are connected. (The firmware's hosts/server stays on disk for
	// offline boots, so tincd knows "server" by name on a node that is not
	// assigned to it; it never becomes reachable.)
	for _, n := range tb.Nodes {
		want := append([]string{n.TincName}, gwsOf[n.TincName]...)
		slices.Sort(want)
		var got []string
		err := vtb.WaitFor(ctx, 20*time.Second, 500*time.Millisecond, func() error {
			got = reachableGraph(t, ctx, n)
			if !slices.Equal(got, want) {
				return fmt.Errorf("graph %v", got)
			}
			return nil
		})
		if err != nil {
			t.Errorf("%s's tinc graph is %v, want %v", n.TincName, got, want)
		}
	}

	// Everyone reaches everyone: nodes on different gateways through the
	// gateways' links, and every server.
	reachAll := func(what string, skip *vtb.Server) {
		t.Helper()
		for _, a := range tb.Nodes {
			for _, b := range tb.Nodes {
				if a == b {
					continue
				}
				if err := vtb.WaitFor(ctx, 20*time.Second, 300*time.Millisecond, func() error { return a.NS.Ping6(ctx, b.Addr.String()) }); err != nil {
					t.Errorf("%s: %s (on %v) -> %s (on %v): %v", what, a.TincName, gwsOf[a.TincName], b.TincName, gwsOf[b.TincName], err)
				}
			}
			for _, g := range tb.Gateways {
				if g == skip {
					continue
				}
				if err := vtb.WaitFor(ctx, 20*time.Second, 300*time.Millisecond, func() error { return g.NS.Ping6(ctx, a.Addr.String()) }); err != nil {
					t.Errorf("%s: %s -> %s: %v", what, g.TincName, a.TincName, err)
				}
			}
		}
	}
	reachAll("all gateways up", nil)
	if t.Failed() {
		t.FailNow()
	}

	// A node owner adds ConnectTo for a gateway that is not theirs (with
	// its host file, copied from another node): that gateway has no host
	// file for the node and refuses it; the node keeps its own two.
	var victim *vtb.Server
	var intruder *vtb.Node
	for _, n := range tb.Nodes {
		for _, g := range tb.Gateways {
			if !slices.Contains(gwsOf[n.TincName], g.TincName) {
				victim, intruder = g, n
			}
		}
	}
	var donor *vtb.Node
	for _, n := range tb.Nodes {
		if slices.Contains(gwsOf[n.TincName], victim.TincName) {
			donor = n
		}
	}
	hostB, err := os.ReadFile(filepath.Join(donor.TincDir, "hosts", victim.TincName))
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(intruder.TincDir, "hosts", victim.TincName), hostB, 0o644)
	confPath := filepath.Join(intruder.TincDir, "tinc.conf")
	conf, _ := os.ReadFile(confPath)
	os.WriteFile(confPath, append(conf, []byte("ConnectTo = "+victim.TincName+"\n")...), 0o644)
	if err := tb.RestartNodeTincd(ctx, intruder); err != nil {
		t.Fatal(err)
	}
	err = vtb.WaitFor(ctx, 20*time.Second, 500*time.Millisecond, func() error {
		if !strings.Contains(intruder.TincLog(), "Connected to "+victim.TincName) && !strings.Contains(intruder.TincLog(), "Trying to connect to "+victim.TincName) {
			return fmt.Errorf("%s has not tried %s yet", intruder.TincName, victim.TincName)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	logName := "gateway.log"
	if victim != tb.Server {
		logName = "gateway-" + victim.TincName + ".log"
	}
	err = vtb.WaitFor(ctx, 20*time.Second, 500*time.Millisecond, func() error {
		b, _ := os.ReadFile(filepath.Join(tb.Lab.Dir, logName))
		if !strings.Contains(string(b), "had unknown identity ("+intruder.TincName+")") {
			return fmt.Errorf("%s's tincd has not refused %s yet", victim.TincName, intruder.TincName)
		}
		return nil
	})
	if err != nil {
		t.Error(err)
	}
	if status(victim).Connected(intruder.TincName) {
		t.Errorf("%s accepted %s, which is not assigned to it", victim.TincName, intruder.TincName)
	}
	for _, g := range gwsOf[intruder.TincName] {
		gs := tb.Gateways[slices.IndexFunc(tb.Gateways, func(s *vtb.Server) bool { return s.TincName == g })]
		if err := vtb.WaitFor(ctx, 20*time.Second, 300*time.Millisecond, func() error { return gs.NS.Ping6(ctx, intruder.Addr.String()) }); err != nil {
			t.Errorf("%s -> %s after its owner's extra ConnectTo: %v", g, intruder.TincName, err)
		}
	}
	os.WriteFile(confPath, conf, 0o644)
	os.Remove(filepath.Join(intruder.TincDir, "hosts", victim.TincName))
	if err := tb.RestartNodeTincd(ctx, intruder); err != nil {
		t.Fatal(err)
	}
	t.Logf("%s refused %s (not assigned to it)", victim.TincName, intruder.TincName)

	// A gateway other than the main server goes away: its nodes keep
	// their other gateway, and everyone still reaches everyone.
	lost := tb.Gateways[2]
	if err := lost.Gateway.Stop(); err != nil {
		t.Logf("stop %s's gateway daemon: %v", lost.TincName, err)
	}
	err = vtb.WaitFor(ctx, 30*time.Second, 500*time.Millisecond, func() error {
		for _, g := range tb.Gateways[:2] {
			if status(g).Connected(lost.TincName) {
				return fmt.Errorf("%s still connected to %s", g.TincName, lost.TincName)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	moved := 0
	for _, n := range tb.Nodes {
		if !slices.Contains(gwsOf[n.TincName], lost.TincName) {
			continue
		}
		moved++
		var other string
		for _, g := range gwsOf[n.TincName] {
			if g != lost.TincName {
				other = g
			}
		}
		gs := tb.Gateways[slices.IndexFunc(tb.Gateways, func(s *vtb.Server) bool { return s.TincName == other })]
		if !status(gs).Connected(n.TincName) {
			t.Errorf("%s lost %s and is not connected to its other gateway %s", n.TincName, lost.TincName, other)
		}
	}
	if moved == 0 {
		t.Fatalf("no node was on %s", lost.TincName)
	}
	reachAll(lost.TincName+" gone", lost)
	t.Logf("%s gone: its %d nodes on their other gateways, all reachable", lost.TincName, moved)
}
