package e2e

import (
	"context"
	"fmt"
	"maps"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/confine-project/mgmtnet/mesh"
	"github.com/confine-project/mgmtnet/mesh/registry"
	"github.com/confine-project/mgmtnet/test/vtb"
	"github.com/confine-project/mgmtnet/tinc"
	"github.com/confine-project/mgmtnet/tincgen"
)

// hijackPort is where the attacking node serves HTTP on the addresses it
// claims. Nothing else in the testbed listens there, so an answer on it
// means the traffic reached the attacker.
const hijackPort = "8080"

// TestAttackSubnetHijack replays the attack of a node's owner on the mesh,
// once in the controller's topology (the control: gateways and nodes
// without TunnelServer; the attack works, so the checks can see it) and
// once in the tunnel-server topology mgmtnet runs (the attack fails):
//
//   - node_1's owner adds Subnet lines to node_1's own host file (the DNS
//     service address, node_31's address and 0.0.0.0/0, all at weight 0),
//     puts those addresses on node_1 with a server behind them, and
//     restarts node_1's tincd;
//   - then node_2's traffic to node_31, to the DNS service address and its
//     slivers' Internet traffic must still reach their real owners, and
//     both gateways refuse the announcements (status, metric, WARN log).
func TestAttackSubnetHijack(t *testing.T) {
	for _, tc := range []struct {
		name   string
		legacy bool
	}{
		{"control", true},
		{"tunnelserver", false},
	} {
		t.Run(strings.ReplaceAll(tc.name, " ", "_"), func(t *testing.T) {
			lab := vtb.ForTest(t)
			ctx := context.Background()
			spec := vtb.DefaultSpec(mgmtnetBin)
			// The control has one gateway: with two, nodes of the
			// controller's topology that start together hit tinc 1.0's
			// packet-key race (key messages on two paths), which would
			// make the control flaky for reasons of its own.
			spec.Egress, spec.DNS, spec.SecondGateway, spec.LegacyTopology = true, true, !tc.legacy, tc.legacy
			tb, err := vtb.Build(ctx, lab, spec)
			if err != nil {
				t.Fatal(err)
			}
			if err := tb.Boot(ctx); err != nil {
				t.Fatal(err)
			}
			n1, n2, n31 := tb.Nodes[0], tb.Nodes[1], tb.Nodes[2]
			svc := tb.DNSServiceAddr()
			if tc.legacy {
				// The nodes as the firmware ran them: without TunnelServer.
				// All stop before any starts again: in this topology a node
				// that restarts while the gateways still reach it through
				// another node keeps its old packet key there (the race
				// docs/topology.md avoids).
				for _, n := range tb.Nodes {
					if err := tb.StopNodeTincd(ctx, n); err != nil {
						t.Fatal(err)
					}
					path := filepath.Join(n.TincDir, "tinc.conf")
					b, err := os.ReadFile(path)
					if err != nil {
						t.Fatal(err)
					}
					if err := os.WriteFile(path, []byte(strings.ReplaceAll(string(b), "TunnelServer = yes\n", "")), 0o644); err != nil {
						t.Fatal(err)
					}
				}
				if err := vtb.WaitFor(ctx, 20*time.Second, 200*time.Millisecond, func() error {
					for _, g := range tb.Gateways {
						st, err := vtb.ReadGatewayStatus(ctx, mgmtnetBin, g.StatusSocket)
						if err != nil {
							return err
						}
						for _, n := range tb.Nodes {
							if st.Connected(n.TincName) {
								return fmt.Errorf("%s still has %s", g.TincName, n.TincName)
							}
						}
					}
					return nil
				}); err != nil {
					t.Fatal(err)
				}
				for _, n := range tb.Nodes {
					if err := tb.StartNodeTincd(ctx, n); err != nil {
						t.Fatal(err)
					}
				}
			}

			// What node_2 sees, and whether it is what it should be.
			hijacked := func() (string, bool) {
				out, err := n2.NS.Fetch(ctx, "http://["+n31.Addr.String()+"]:"+hijackPort+"/", 2*time.Second)
				return out, err == nil
			}
			dnsOK := func() error {
				got, err := dig(ctx, n2.NS, "+short", "AAAA", "node-31."+vtb.DNSZone, "@"+svc.String())
				if err != nil || got != n31.Addr.String() {
					return fmt.Errorf("dig node-31 @%s from node_2: %q, %v", svc, got, err)
				}
				return nil
			}
			egressOK := func() error {
				got, err := n2.Slivers[0].NS.Fetch(ctx, vtb.InetURL("/"), 3*time.Second)
				if err != nil || got != tb.Server.WAN.String() {
					return fmt.Errorf("a sliver of node_2 fetching %s: %q, %v; want it through the server (%s)", vtb.InetURL("/"), got, err, tb.Server.WAN)
				}
				return nil
			}
			// Before the attack: all is well.
			if err := vtb.WaitFor(ctx, 30*time.Second, 200*time.Millisecond, func() error {
				if err := dnsOK(); err != nil {
					return err
				}
				return egressOK()
			}); err != nil {
				t.Fatal(err)
			}
			if out, ok := hijacked(); ok {
				t.Fatalf("before the attack, something answers on node_31's port %s: %q", hijackPort, out)
			}

			// The attack.
			bin := filepath.Join(lab.Dir, "inethost")
			for _, a := range []netip.Addr{n31.Addr, svc} {
				if _, err := n1.NS.Run(ctx, "ip", "-6", "addr", "add", a.String()+"/128", "dev", "lo"); err != nil {
					t.Fatal(err)
				}
			}
			if _, err := lab.Start(n1.NS, "attacker", bin, "-listen", "["+n31.Addr.String()+"]:"+hijackPort); err != nil {
				t.Fatal(err)
			}
			forged := []tincgen.Subnet{
				{Prefix: netip.PrefixFrom(svc, 128), Weight: 0},
				{Prefix: netip.PrefixFrom(n31.Addr, 128), Weight: 0},
				{Prefix: tincgen.EgressDefault, Weight: 0},
			}
			own := filepath.Join(n1.TincDir, "hosts", n1.TincName)
			f, err := os.OpenFile(own, os.O_APPEND|os.O_WRONLY, 0)
			if err != nil {
				t.Fatal(err)
			}
			for _, s := range forged {
				fmt.Fprintf(f, "Subnet = %s\n", s)
			}
			f.Close()
			if err := tb.RestartNodeTincd(ctx, n1); err != nil {
				t.Fatal(err)
			}
			t.Logf("node_1 announces %v", forged)

			// Both gateways see and refuse every forged Subnet.
			for _, g := range tb.Gateways {
				err := vtb.WaitFor(ctx, 40*time.Second, 300*time.Millisecond, func() error {
					st, err := vtb.ReadGatewayStatus(ctx, mgmtnetBin, g.StatusSocket)
					if err != nil {
						return err
					}
					for _, s := range forged {
						if !st.Refused(n1.TincName, tincLogSubnet(s)) {
							return fmt.Errorf("%s has not refused %s from node_1 (refused: %+v)", g.TincName, s, st.RefusedSubnets)
						}
					}
					return nil
				})
				if err != nil {
					t.Fatal(err)
				}
			}
			gwLog, _ := os.ReadFile(filepath.Join(lab.Dir, "gateway.log"))
			if !strings.Contains(string(gwLog), `level=WARN msg="tincd refused a Subnet that the registry does not grant" member=node_1`) {
				t.Errorf("the server's log has no WARN line for node_1's refused Subnets")
			}
			metrics, err := tb.Server.NS.Run(ctx, "curl", "-sS", "--max-time", "3", "http://127.0.0.1:9101/metrics")
			if err != nil || !strings.Contains(metrics, `mgmtnet_tinc_unauthorized_subnets_total{member="node_1"}`) {
				t.Errorf("metrics lack mgmtnet_tinc_unauthorized_subnets_total for node_1: %v", err)
			}

			if tc.legacy {
				// The control: the forged routes spread, node_2's traffic
				// for node_31 reaches node_1.
				var out string
				err := vtb.WaitFor(ctx, 30*time.Second, 300*time.Millisecond, func() error {
					var ok bool
					if out, ok = hijacked(); !ok {
						return fmt.Errorf("not hijacked (yet)")
					}
					return nil
				})
				if err != nil {
					t.Fatalf("control: the controller's topology was expected to let node_1 take node_31's address: %v", err)
				}
				t.Logf("control: node_2 -> node_31 port %s answered by node_1: %q; DNS: %v; egress: %v", hijackPort, out, dnsOK(), egressOK())
				if g := nodeGraph(t, ctx, n2); !slices.Contains(g, n1.TincName) || !slices.Contains(g, n31.TincName) {
					t.Errorf("control: node_2's tinc graph %v lacks the other nodes", g)
				}
				return
			}

			// Give any forwarded announcement time to land, then check.
			time.Sleep(3 * time.Second)
			if out, ok := hijacked(); ok {
				t.Errorf("node_2 -> node_31 port %s answered by node_1: %q", hijackPort, out)
			}
			if err := n2.NS.Ping6(ctx, n31.Addr.String()); err != nil {
				t.Errorf("node_2 -> node_31: %v", err)
			}
			if err := dnsOK(); err != nil {
				t.Error(err)
			}
			if err := egressOK(); err != nil {
				t.Error(err)
			}
			// No node learns more of the graph than its gateways.
			for _, n := range tb.Nodes {
				g := nodeGraph(t, ctx, n)
				for _, name := range g {
					if name != n.TincName && name != "server" && name != "server_3" {
						t.Errorf("%s's tinc graph %v holds %s", n.TincName, g, name)
					}
				}
			}
			t.Logf("after the attack: node_2 -> node_31 port %s refused, ping, DNS and egress reach their owners", hijackPort)

			testRegistryGrants(t, ctx, tb)
			testRelay(t, ctx, tb)
		})
	}
}

// testRegistryGrants: registry fields that would make a node a gateway
// (tinc addresses) or an egress gateway (the egress property) are refused
// by name, and the rest of the snapshot still applies.
func testRegistryGrants(t *testing.T, ctx context.Context, tb *vtb.Testbed) {
	n1, n2, n31 := tb.Nodes[0], tb.Nodes[1], tb.Nodes[2]
	for i := range tb.File.Nodes {
		m := &tb.File.Nodes[i]
		switch m.ID {
		case uint64(n1.Spec.ID):
			m.Tinc.Addresses = []registry.FileAddress{{Addr: n1.CNAddr.String(), Port: 655, Island: 1}}
		case uint64(n2.Spec.ID):
			m.Properties = map[string]string{mesh.EgressProperty: "weight=0"}
		}
	}
	if err := tb.WriteRegistry(); err != nil {
		t.Fatal(err)
	}
	want := []string{
		"node 1 (node_1): tinc addresses ignored (1): only servers may be gateways",
		"node 2 (node_2): property mgmtnet.egress ignored: only servers may offer egress",
	}
	err := vtb.WaitFor(ctx, 30*time.Second, 300*time.Millisecond, func() error {
		st, err := tb.GatewayStatus(ctx)
		if err != nil {
			return err
		}
		for _, w := range want {
			if !slices.ContainsFunc(st.Warnings, func(s string) bool { return strings.HasPrefix(s, w) }) {
				return fmt.Errorf("status warnings %q lack %q", st.Warnings, w)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(tb.Server.TincDir, "hosts", n2.TincName))
	if err != nil || strings.Contains(string(b), "0.0.0.0/0") {
		t.Errorf("the server's host file of node_2 announces egress:\n%s%v", b, err)
	}
	out, err := tb.NodeBoot(ctx, n31)
	if err != nil {
		t.Fatal(err)
	}
	conf, _ := os.ReadFile(filepath.Join(n31.TincDir, "tinc.conf"))
	if strings.Contains(string(conf), "ConnectTo = node_1") {
		t.Errorf("node-boot made node_31 connect to node_1:\n%s\n%s", conf, out)
	}
	if err := vtb.WaitFor(ctx, 30*time.Second, 300*time.Millisecond, func() error {
		got, err := n31.Slivers[0].NS.Fetch(ctx, vtb.InetURL("/"), 3*time.Second)
		if err != nil || got != tb.Server.WAN.String() {
			return fmt.Errorf("a sliver of node_31: %q, %v", got, err)
		}
		return nil
	}); err != nil {
		t.Error(err)
	}
	t.Logf("registry grants refused by name; node_31's tinc.conf:\n%s", conf)
}

// testRelay: a node connected to one gateway only is still reached from a
// node whose preferred gateway is the other one, through the link between
// the gateways (the relay Subnets), and from both servers.
func testRelay(t *testing.T, ctx context.Context, tb *vtb.Testbed) {
	n2, n31 := tb.Nodes[1], tb.Nodes[2]
	confPath := filepath.Join(n31.TincDir, "tinc.conf")
	conf, err := os.ReadFile(confPath)
	if err != nil {
		t.Fatal(err)
	}
	only3 := strings.ReplaceAll(string(conf), "ConnectTo = server\n", "")
	if only3 == string(conf) {
		t.Fatalf("node_31's tinc.conf has no ConnectTo = server:\n%s", conf)
	}
	if err := os.WriteFile(confPath, []byte(only3), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := tb.RestartNodeTincd(ctx, n31); err != nil {
		t.Fatal(err)
	}
	err = vtb.WaitFor(ctx, 30*time.Second, 300*time.Millisecond, func() error {
		st, err := tb.GatewayStatus(ctx)
		if err != nil {
			return err
		}
		if st.Connected(n31.TincName) {
			return fmt.Errorf("the server still has a connection with node_31")
		}
		st3, err := vtb.ReadGatewayStatus(ctx, mgmtnetBin, tb.Gateways[1].StatusSocket)
		if err != nil {
			return err
		}
		if !st3.Connected(n31.TincName) {
			return fmt.Errorf("server_3 has no connection with node_31 yet")
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		from *vtb.Netns
		name string
		to   netip.Addr
	}{
		{n2.NS, "node_2 -> node_31", n31.Addr},
		{n2.NS, "node_2 -> a sliver of node_31", n31.Slivers[0].MgmtAddr},
		{tb.Server.NS, "server -> node_31", n31.Addr},
		{n31.NS, "node_31 -> server", tb.Server.Addr},
	} {
		if err := vtb.WaitFor(ctx, 15*time.Second, 300*time.Millisecond, func() error { return tc.from.Ping6(ctx, tc.to.String()) }); err != nil {
			t.Errorf("%s with node_31 on server_3 only: %v", tc.name, err)
		}
	}
	if t.Failed() {
		for _, g := range tb.Gateways {
			conf, _ := os.ReadFile(filepath.Join(g.TincDir, "tinc.conf"))
			peer, _ := os.ReadFile(filepath.Join(g.TincDir, "hosts", "server_3"))
			routes, _ := g.NS.Run(ctx, "ip", "-6", "route")
			t.Logf("%s: tinc.conf:\n%s\nhosts/server_3 (first 600 bytes):\n%.600s\nroutes:\n%s", g.TincName, conf, peer, routes)
		}
		for _, name := range []string{"gateway.log", "gateway-server_3.log"} {
			b, _ := os.ReadFile(filepath.Join(tb.Lab.Dir, name))
			var lines []string
			for _, l := range strings.Split(string(b), "\n") {
				if strings.Contains(l, "server") && strings.Contains(l, "tincd") && !strings.Contains(l, "refused") {
					lines = append(lines, l)
				}
			}
			if len(lines) > 40 {
				lines = lines[len(lines)-40:]
			}
			t.Logf("%s, tincd lines about servers:\n%s", name, strings.Join(lines, "\n"))
		}
	}
	t.Log("node_31 on server_3 only: reached from node_2 and the server through the gateways' link")
}

// tincLogSubnet is a Subnet as tinc 1.0 logs it: the controller's form,
// but always with the prefix length.
func tincLogSubnet(s tincgen.Subnet) string {
	addr, weight, _ := strings.Cut(s.String(), "#")
	if !strings.Contains(addr, "/") {
		addr += fmt.Sprintf("/%d", s.Prefix.Bits())
	}
	return addr + "#" + weight
}

// nodeGraph returns the names of the nodes a member's tincd knows: it asks
// tincd to dump its graph (SIGUSR2) and reads the dump from its log.
func nodeGraph(t *testing.T, ctx context.Context, n *vtb.Node) []string {
	t.Helper()
	return slices.Sorted(maps.Keys(nodeGraphStatus(t, ctx, n)))
}

// reachableGraph is nodeGraph's reachable nodes only: a host file on disk
// (a gateway the node does not connect to) makes a node known to tincd,
// but not reachable.
func reachableGraph(t *testing.T, ctx context.Context, n *vtb.Node) []string {
	t.Helper()
	var out []string
	for name, st := range nodeGraphStatus(t, ctx, n) {
		if st&0x10 != 0 { // node_status_t.reachable (node.h), little-endian bit 4
			out = append(out, name)
		}
	}
	slices.Sort(out)
	return out
}

// nodeGraphStatus returns the nodes of the graph dump with their status
// word.
func nodeGraphStatus(t *testing.T, ctx context.Context, n *vtb.Node) map[string]uint64 {
	t.Helper()
	logPath := filepath.Join(n.TincDir, "tinc.log")
	before, _ := os.ReadFile(logPath)
	if _, err := tinc.Signal(n.PidFile(), syscall.SIGUSR2); err != nil {
		t.Fatalf("dump %s's graph: %v", n.TincName, err)
	}
	var names map[string]uint64
	err := vtb.WaitFor(ctx, 10*time.Second, 100*time.Millisecond, func() error {
		b, _ := os.ReadFile(logPath)
		if len(b) < len(before) {
			before = nil
		}
		dump := string(b[len(before):])
		i := strings.Index(dump, "Nodes:")
		j := strings.Index(dump, "End of nodes.")
		if i < 0 || j < i {
			return fmt.Errorf("no graph dump in %s yet", logPath)
		}
		names = map[string]uint64{}
		for _, l := range strings.Split(dump[i:j], "\n")[1:] {
			if _, rest, ok := strings.Cut(l, "]: "); ok {
				l = rest
			}
			if f := strings.Fields(l); len(f) > 2 && f[1] == "at" {
				var st uint64
				if i := slices.Index(f, "status"); i > 0 && i+1 < len(f) {
					st, _ = strconv.ParseUint(f[i+1], 16, 32)
				}
				names[f[0]] = st
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return names
}
