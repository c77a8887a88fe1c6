package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/confine-project/mgmtnet/test/vtb"
)

// closes counts, in the gateway daemon's log (it copies tincd's lines),
// how often the connection with each peer was closed.
func closes(p *vtb.Proc) map[string]int {
	_, c := vtb.ConnectionEvents(p.Log())
	return c
}

// TestGatewayDaemon runs "mgmtnet gateway" on the virtual testbed's server
// (managed tincd, a 2 s poll) and checks the three promises of the daemon:
// a node added to the registry is in the gateway's hosts within one poll
// interval and connects; an unrelated change drops no tinc connection; a
// node removed from the registry is disconnected within one poll interval
// plus one second (the revocation bound). The times are measured and
// logged; the assertions leave generous room, since machines are shared.
func TestGatewayDaemon(t *testing.T) {
	lab := vtb.ForTest(t)
	ctx := context.Background()
	const poll = 2 * time.Second
	spec := vtb.DefaultSpec(mgmtnetBin)
	spec.GatewayDaemon, spec.PollInterval = true, poll
	spec.Nodes = append(spec.Nodes, vtb.NodeSpec{ID: 4, Island: 1, Slivers: 0})
	tb, err := vtb.Build(ctx, lab, spec)
	if err != nil {
		t.Fatal(err)
	}
	late := tb.Nodes[3]
	tb.Nodes = tb.Nodes[:3]
	if err := tb.Boot(ctx); err != nil {
		t.Fatal(err)
	}
	gw := tb.Server.Gateway
	st, err := tb.GatewayStatus(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !st.Tincd.Managed || !st.Tincd.Running || st.LastError != "" {
		t.Fatalf("gateway status after boot: %+v", st)
	}
	for _, n := range tb.Nodes {
		err := vtb.WaitFor(ctx, 20*time.Second, 100*time.Millisecond, func() error {
			st, err := tb.GatewayStatus(ctx)
			if err != nil {
				return err
			}
			if !st.Connected(n.TincName) {
				return fmt.Errorf("status shows %s not connected: %+v", n.TincName, st.Peers)
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}

	// 1. A node is added to the registry.
	if _, err := tb.NodeBoot(ctx, late, "--no-start", "--timeout", "1s"); err != nil {
		t.Fatal(err)
	}
	closedBefore := closes(gw)
	t0 := time.Now()
	if err := tb.RegisterNode(late); err != nil {
		t.Fatal(err)
	}
	hostFile := filepath.Join(tb.Server.TincDir, "hosts", late.TincName)
	err = vtb.WaitFor(ctx, 3*poll+5*time.Second, 20*time.Millisecond, func() error {
		_, err := os.Stat(hostFile)
		return err
	})
	if err != nil {
		t.Fatalf("added node not in the gateway's hosts: %v", err)
	}
	added := time.Since(t0)
	t.Logf("node added: its host file is on the gateway %s after the registry change (poll interval %s)", added.Round(time.Millisecond), poll)
	if _, err := tb.NodeBoot(ctx, late); err != nil {
		t.Fatal(err)
	}
	if err := vtb.WaitFor(ctx, 30*time.Second, 200*time.Millisecond, func() error { return late.NS.Ping6(ctx, tb.Server.Addr.String()) }); err != nil {
		t.Fatalf("added node does not connect: %v", err)
	}

	// 2. An unrelated change (a host that is not running is registered):
	// one host file, one HUP, no connection closed.
	st, _ = tb.GatewayStatus(ctx)
	hups := st.Hups
	if err := tb.RegisterHost(7); err != nil {
		t.Fatal(err)
	}
	err = vtb.WaitFor(ctx, 3*poll+5*time.Second, 50*time.Millisecond, func() error {
		st, err := tb.GatewayStatus(ctx)
		if err != nil {
			return err
		}
		if st.Hups <= hups {
			return fmt.Errorf("no HUP yet (%d)", st.Hups)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("unrelated change: %v", err)
	}
	time.Sleep(time.Second) // give tincd time to close anything it would close
	closedAfter := closes(gw)
	drops := 0
	for _, n := range append(tb.Nodes, late) {
		drops += closedAfter[n.TincName] - closedBefore[n.TincName]
	}
	t.Logf("unrelated change: %d tinc connections closed (of %d)", drops, len(tb.Nodes)+1)
	if drops != 0 {
		t.Errorf("an unrelated change closed %d tinc connections: %v -> %v", drops, closedBefore, closedAfter)
	}

	// 3. Revocation: node_2 is removed from the registry.
	victim := tb.Nodes[1]
	before := closes(gw)
	t0 = time.Now()
	if err := tb.UnregisterNode(victim.Spec.ID); err != nil {
		t.Fatal(err)
	}
	err = vtb.WaitFor(ctx, 3*poll+5*time.Second, 20*time.Millisecond, func() error {
		if closes(gw)[victim.TincName] <= before[victim.TincName] {
			return fmt.Errorf("%s still connected", victim.TincName)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("revocation: %v", err)
	}
	revoked := time.Since(t0)
	t.Logf("revocation: %s disconnected %s after the registry change (bound: poll interval + 1 s = %s)", victim.TincName, revoked.Round(time.Millisecond), poll+time.Second)
	if _, err := os.Stat(filepath.Join(tb.Server.TincDir, "hosts", victim.TincName)); err == nil {
		t.Error("the revoked node's host file is still on the gateway")
	}
	// It stays out: it cannot reach the server again.
	time.Sleep(2 * time.Second)
	if err := victim.NS.Ping6(ctx, tb.Server.Addr.String()); err == nil {
		t.Errorf("revoked %s still reaches the server", victim.TincName)
	}
	if err := tb.Nodes[0].NS.Ping6(ctx, tb.Server.Addr.String()); err != nil {
		t.Errorf("%s lost the server after another node's revocation: %v", tb.Nodes[0].TincName, err)
	}
	if c := closes(gw); c[tb.Nodes[0].TincName] != before[tb.Nodes[0].TincName] {
		t.Errorf("revoking %s also closed %s's connection", victim.TincName, tb.Nodes[0].TincName)
	}
	if !strings.Contains(gw.Log(), "level=") {
		t.Error("gateway log is empty")
	}

	// 4. tincd is killed: the daemon restarts it, and the nodes come back.
	st, err = tb.GatewayStatus(ctx)
	if err != nil {
		t.Fatal(err)
	}
	oldPid, restarts := st.Tincd.Pid, st.Restarts
	if err := syscall.Kill(oldPid, syscall.SIGKILL); err != nil {
		t.Fatalf("kill tincd %d: %v", oldPid, err)
	}
	err = vtb.WaitFor(ctx, 30*time.Second, 100*time.Millisecond, func() error {
		st, err := tb.GatewayStatus(ctx)
		if err != nil {
			return err
		}
		if st.Restarts <= restarts || !st.Tincd.Running || st.Tincd.Pid == oldPid {
			return fmt.Errorf("tincd not restarted: %+v", st.Tincd)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := vtb.WaitFor(ctx, 30*time.Second, 200*time.Millisecond, func() error { return tb.Nodes[0].NS.Ping6(ctx, tb.Server.Addr.String()) }); err != nil {
		t.Errorf("%s does not reach the server after tincd was restarted: %v", tb.Nodes[0].TincName, err)
	}
}
