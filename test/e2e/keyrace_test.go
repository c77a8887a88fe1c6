package e2e

import (
	"context"
	"os"
	"testing"
	"time"

	"github.com/confine-project/mgmtnet/test/vtb"
)

// keyRaceTestbed boots the two-gateway egress testbed with node_2 on the
// 2015 firmware's tinc configuration (no TunnelServer).
func keyRaceTestbed(t *testing.T) *vtb.Testbed {
	t.Helper()
	lab := vtb.ForTest(t)
	ctx := context.Background()
	spec := vtb.DefaultSpec(mgmtnetBin)
	spec.Egress, spec.SecondGateway = true, true
	spec.Nodes[1].OldFirmware = true
	if os.Getenv("EXP_LEGACY") != "" {
		spec.LegacyTopology = true
		for i := range spec.Nodes {
			spec.Nodes[i].OldFirmware = true
		}
	}
	tb, err := vtb.Build(ctx, lab, spec)
	if err != nil {
		t.Fatal(err)
	}
	if err := tb.Boot(ctx); err != nil {
		t.Fatal(err)
	}
	return tb
}

func TestKeyRaceExperiment(t *testing.T) {
	tb := keyRaceTestbed(t)
	ctx := context.Background()
	n := tb.Nodes[1]
	if err := vtb.WaitFor(ctx, 20*time.Second, 200*time.Millisecond, func() error { return tb.Server.NS.Ping6(ctx, n.Addr.String()) }); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 3; i++ {
		if err := tb.RestartNodeTincd(ctx, n); err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		err := vtb.WaitFor(ctx, 40*time.Second, 200*time.Millisecond, func() error { return tb.Server.NS.Ping6(ctx, n.Addr.String()) })
		t.Logf("restart %d: server reaches %s after %s (err %v)", i, n.TincName, time.Since(start).Round(100*time.Millisecond), err)
	}
}
