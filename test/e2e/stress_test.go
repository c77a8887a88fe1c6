package e2e

import (
	"context"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/confine-project/mgmtnet/test/vtb"
)

// TestStressBoot is "make stress": it boots the two-gateway egress testbed
// MGMTNET_STRESS_BOOTS times (skipped when unset) and counts the boots in
// which a node did not reach both gateways over the overlay within 30 s
// of the gateways announcing egress (tinc 1.0's packet-key race showed as
// exactly that). MGMTNET_STRESS_TOPOLOGY=legacy boots the 2015 topology
// instead (gateways without TunnelServer, tincd restarted on every
// announce, nodes on the old firmware's tinc.conf): the before figure.
// make stress runs it under stress-ng --cpu 2; the CPU load is what makes
// the race show.
func TestStressBoot(t *testing.T) {
	boots, _ := strconv.Atoi(os.Getenv("MGMTNET_STRESS_BOOTS"))
	if boots <= 0 {
		t.Skip("stress harness: set MGMTNET_STRESS_BOOTS (make stress)")
	}
	legacy := os.Getenv("MGMTNET_STRESS_TOPOLOGY") == "legacy"
	topology := "tunnel-server"
	if legacy {
		topology = "legacy"
	}
	var failures []string
	var times []time.Duration
	for i := 1; i <= boots; i++ {
		d, err := stressBoot(t, i, legacy)
		if err != nil {
			failures = append(failures, fmt.Sprintf("boot %d: %v", i, err))
			fmt.Fprintf(os.Stderr, "stress: boot %d/%d FAILED after %s: %v\n", i, boots, d.Round(100*time.Millisecond), firstLine(err.Error()))
			continue
		}
		times = append(times, d)
		fmt.Fprintf(os.Stderr, "stress: boot %d/%d ok in %s\n", i, boots, d.Round(100*time.Millisecond))
	}
	slices.Sort(times)
	med := time.Duration(0)
	if len(times) > 0 {
		med = times[len(times)/2]
	}
	summary := fmt.Sprintf("stress: topology %s: %d boots, %d failed; median boot to all-reachable %s", topology, boots, len(failures), med.Round(100*time.Millisecond))
	fmt.Fprintln(os.Stderr, summary)
	t.Log(summary)
	for _, f := range failures {
		t.Error(f)
	}
}

func firstLine(s string) string {
	l, _, _ := strings.Cut(s, "\n")
	return l
}

// stressBoot is one boot of the stress harness, in its own lab: the time
// from the start of Boot until every node reaches both gateways.
func stressBoot(t *testing.T, i int, legacy bool) (d time.Duration, err error) {
	t.Run(fmt.Sprintf("boot%d", i), func(t *testing.T) {
		lab := vtb.ForTest(t)
		ctx := context.Background()
		spec := vtb.DefaultSpec(mgmtnetBin)
		spec.Egress, spec.SecondGateway, spec.LegacyTopology = true, true, legacy
		if legacy {
			for j := range spec.Nodes {
				spec.Nodes[j].OldFirmware = true
			}
		}
		tb, e := vtb.Build(ctx, lab, spec)
		if e != nil {
			err = e
			t.Fatal(e)
		}
		start := time.Now()
		defer func() { d = time.Since(start) }()
		if e := tb.Boot(ctx); e != nil {
			err = e
			t.Fatal(e)
		}
		for _, g := range tb.Gateways {
			e := vtb.WaitFor(ctx, 30*time.Second, 100*time.Millisecond, func() error {
				st, err := vtb.ReadGatewayStatus(ctx, tb.Spec.Mgmtnet, g.StatusSocket)
				if err != nil {
					return err
				}
				if st.Egress.State != "announced" {
					return fmt.Errorf("%s: egress %q", g.TincName, st.Egress.State)
				}
				return nil
			})
			if e != nil {
				err = e
				t.Fatal(e)
			}
		}
		// The announce was a restart (legacy) or a SIGHUP: every node must
		// still, or again, reach both gateways.
		for _, n := range tb.Nodes {
			for _, g := range tb.Gateways {
				e := vtb.WaitFor(ctx, 30*time.Second, 200*time.Millisecond, func() error { return n.NS.Ping6(ctx, g.Addr.String()) })
				if e != nil {
					err = fmt.Errorf("%s does not reach %s over the overlay: %w\n%s", n.TincName, g.TincName, e, tb.Diagnose(ctx, n, g))
					t.Fatal(err)
				}
			}
		}
	})
	return d, err
}
