package e2e

import (
	"context"
	"fmt"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/confine-project/mgmtnet/test/vtb"
	"github.com/confine-project/mgmtnet/tinc"
)

// TestStaleKeyRecovery forces tinc 1.0's stale-key state and shows the
// UDP watchdog bound it. A registered member's modified tincd (the lab's
// own tinc 1.0 meta-protocol client, authenticated as host_7) sends the
// server an ANS_KEY "from" node_2 with a key node_2 never had: tinc 1.0
// installs it (it checks no origin) and seals every UDP packet to node_2
// with it, so node_2 drops them ("Got unauthenticated packet") while its
// meta connection stays up. This is the state the packet-key race leaves,
// made on purpose.
//
//   - control, watchdog off: the server still does not reach node_2
//     15 s later (tinc itself recovers only after about 95 s);
//   - watchdog on: the server reaches node_2 again within 10 s, and the
//     daemon logged the repair at WARN, counted it in status and in
//     mgmtnet_tinc_udp_repairs_total.
func TestStaleKeyRecovery(t *testing.T) {
	for _, tc := range []struct {
		name     string
		watchdog bool
	}{{"control", false}, {"watchdog", true}} {
		t.Run(tc.name, func(t *testing.T) {
			lab := vtb.ForTest(t)
			ctx := context.Background()
			spec := vtb.DefaultSpec(mgmtnetBin)
			spec.Egress, spec.SecondGateway, spec.NoUDPWatchdog = true, true, !tc.watchdog
			tb, err := vtb.Build(ctx, lab, spec)
			if err != nil {
				t.Fatal(err)
			}
			key, name, err := tb.RegisterHostKey(7)
			if err != nil {
				t.Fatal(err)
			}
			if err := tb.Boot(ctx); err != nil {
				t.Fatal(err)
			}
			n, srv := tb.Nodes[1], tb.Server
			reach := func() error { return srv.NS.Ping6(ctx, n.Addr.String()) }
			if err := vtb.WaitFor(ctx, 20*time.Second, 200*time.Millisecond, reach); err != nil {
				t.Fatalf("before the attack: %v", err)
			}
			// The forged key matters only once the server sends to node_2
			// over UDP: before PMTU discovery has found a size, tinc 1.0
			// sends over TCP (and a forged key is harmless then).
			waitPMTU(t, srv, n.TincName)
			var p *vtb.TincPeer
			err = vtb.WaitFor(ctx, 20*time.Second, 500*time.Millisecond, func() error {
				var err error
				p, err = vtb.DialTincPeer(tb.Nodes[0].NS, "10.241.1.1:655", name, key, srv, 5*time.Second)
				return err
			})
			if err != nil {
				t.Fatalf("the forging member cannot connect: %v", err)
			}
			defer p.Close()
			if err := p.ForgeANSKey(n.TincName, srv.TincName); err != nil {
				t.Fatal(err)
			}
			forged := time.Now()
			// The forged key is in place: the server's pings are lost.
			if err := vtb.WaitFor(ctx, 5*time.Second, 100*time.Millisecond, func() error {
				if reach() == nil {
					return fmt.Errorf("server still reaches %s", n.TincName)
				}
				return nil
			}); err != nil {
				t.Fatalf("the forged ANS_KEY did not take: %v", err)
			}
			if !tc.watchdog {
				time.Sleep(time.Until(forged.Add(12 * time.Second)))
				for i := 0; i < 3; i++ {
					if err := reach(); err == nil {
						t.Fatalf("control: the server reaches %s again %s after the forged key without the watchdog; the test no longer forces the stale state", n.TincName, time.Since(forged).Round(100*time.Millisecond))
					}
				}
				t.Logf("control: %s still unreachable from the server %s after the forged key", n.TincName, time.Since(forged).Round(100*time.Millisecond))
				return
			}
			err = vtb.WaitFor(ctx, 10*time.Second-time.Since(forged), 100*time.Millisecond, reach)
			if err != nil {
				t.Fatalf("the server does not reach %s within 10 s of the forged key: %v%s", n.TincName, err, tb.Diagnose(ctx, n, srv))
			}
			t.Logf("the server reaches %s again %s after the forged key", n.TincName, time.Since(forged).Round(100*time.Millisecond))
			st, err := tb.GatewayStatus(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if st.UDPWatchdog.Repairs < 1 || len(st.UDPWatchdog.Last) == 0 || st.UDPWatchdog.Last[len(st.UDPWatchdog.Last)-1].Peer != n.TincName {
				t.Errorf("status udp_watchdog = %+v, want a repair of %s", st.UDPWatchdog, n.TincName)
			}
			if !strings.Contains(srv.Gateway.Log(), "level=WARN msg=\"udp watchdog") || !strings.Contains(srv.Gateway.Log(), "peer="+n.TincName) {
				t.Errorf("no WARN naming %s in the daemon's log", n.TincName)
			}
			if m, err := srv.NS.Fetch(ctx, "http://127.0.0.1:9101/metrics", 5*time.Second); err != nil || !strings.Contains(m, "mgmtnet_tinc_udp_repairs_total 1") {
				t.Errorf("metrics: want mgmtnet_tinc_udp_repairs_total 1 (err %v)", err)
			}
		})
	}
}

// waitPMTU waits until srv's tincd has found a UDP path MTU for peer (its
// SIGUSR2 node dump says "(min N" with N > 0), that is, until it sends to
// peer over UDP.
func waitPMTU(t *testing.T, srv *vtb.Server, peer string) {
	t.Helper()
	re := regexp.MustCompile(` ` + peer + ` at .* pmtu \d+ \(min (\d+) max`)
	err := vtb.WaitFor(context.Background(), 30*time.Second, 500*time.Millisecond, func() error {
		from := len(srv.Gateway.Log())
		if _, err := tinc.Signal(filepath.Join(srv.TincDir, "tinc.pid"), syscall.SIGUSR2); err != nil {
			return err
		}
		time.Sleep(300 * time.Millisecond)
		log := srv.Gateway.Log()
		if from > len(log) {
			from = 0
		}
		for _, m := range re.FindAllStringSubmatch(log[from:], -1) {
			if min, _ := strconv.Atoi(m[1]); min > 0 {
				return nil
			}
		}
		return fmt.Errorf("%s has no UDP path MTU for %s yet", srv.TincName, peer)
	})
	if err != nil {
		t.Fatal(err)
	}
}
