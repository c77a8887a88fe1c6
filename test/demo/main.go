// Command demo brings up a whole virtual CONFINE testbed on this machine
// and shows the management network working: the addressing plan, a
// registry database that the operator fills with the admin CLI, a server
// with tinc addresses in two islands, three nodes that enrol with one-time
// invites and join by running "mgmtnet node-boot" as their boot script,
// slivers behind them, pings over the overlay, names, egress, the tinc
// links, and a node removed from the registry cut off at once. "make demo"
// runs it.
//
// It tears everything down on exit or Ctrl-C; with -keep (make demo KEEP=1)
// it leaves the testbed up and says how to enter it and how to remove it
// ("make demo-down", which runs this command with -down).
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/confine-project/mgmtnet/test/vtb"
)

func main() {
	bin := flag.String("mgmtnet", "bin/mgmtnet", "the mgmtnet binary")
	keep := flag.Bool("keep", false, "leave the testbed up when done")
	down := flag.Bool("down", false, "remove a testbed left up by -keep, and exit")
	dir := flag.String("dir", "", "work directory (default: a new one under /tmp)")
	flag.Parse()
	if *down {
		removed, err := vtb.TeardownKept()
		for _, n := range removed {
			fmt.Println("removed namespace", n)
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, "demo-down:", err)
			os.Exit(1)
		}
		if len(removed) == 0 {
			fmt.Println("no demo testbed is up")
		}
		return
	}
	abs, err := filepath.Abs(*bin)
	if err != nil {
		fail(err)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, abs, *keep, *dir); err != nil {
		if ctx.Err() != nil {
			fmt.Println("\ninterrupted; the testbed has been torn down")
			os.Exit(130)
		}
		fail(err)
	}
}

func fail(err error) {
	fmt.Fprintf(os.Stderr, "\ndemo: %v\n", err)
	os.Exit(1)
}

var (
	bold, plain = "", ""
	showLog     bool // print the harness's log lines (during boot)
)

func step(format string, args ...any) {
	fmt.Printf("\n%s== %s%s\n", bold, fmt.Sprintf(format, args...), plain)
}

func say(format string, args ...any) { fmt.Printf(format+"\n", args...) }

func show(out string) {
	out = strings.TrimRight(out, "\n")
	if out != "" {
		fmt.Println("   " + strings.ReplaceAll(out, "\n", "\n   "))
	}
}

func run(ctx context.Context, bin string, keep bool, dir string) (err error) {
	if fi, err := os.Stdout.Stat(); err == nil && fi.Mode()&os.ModeCharDevice != 0 {
		bold, plain = "\033[1m", "\033[0m"
	}
	start := time.Now()
	if dir == "" {
		if dir, err = os.MkdirTemp("", "mgmtnet-demo-"); err != nil {
			return err
		}
	}
	lab, err := vtb.New(dir, func(format string, args ...any) {
		if showLog {
			say(format, args...)
		}
	})
	if err != nil {
		return err
	}
	lab.Keep = keep
	defer func() {
		if keep && err == nil {
			return
		}
		lab.Close()
		if err == nil {
			os.RemoveAll(dir)
		}
	}()

	spec := vtb.DefaultSpec(bin)
	spec.Egress = true // the server runs "mgmtnet gateway" and offers Internet egress
	spec.DNS = true    // ... and serves DNS for the management network
	// The registry is "mgmtnet registry serve --db" on SQLite, filled with
	// the admin CLI; the gateway follows its change feed. It polls only
	// every 10 minutes, so what happens at once below is the feed's doing.
	spec.RegistryDB = true
	spec.PollInterval = 10 * time.Minute
	step("A CONFINE management network is one IPv6 /48 carried by a tinc VPN")
	say("This demo uses the virtual testbed's prefix fd65:fc41:c50f::/48. Every member's address,")
	say("the tinc Subnet it announces and its tinc name follow from its id:")
	out, err := runCmd(ctx, bin, "plan", "testbed", "--prefix", "fd65:fc41:c50f::/48", "--servers", "2", "--nodes", "1-2,0x1f")
	if err != nil {
		return err
	}
	show(out)

	step("Building the testbed in network namespaces (nothing leaves this machine)")
	tb, err := vtb.Build(ctx, lab, spec)
	if err != nil {
		return err
	}
	say("- a community network with two islands: bridges for 10.241.1.0/24 and 10.241.2.0/24")
	say("- the server (id 2, tinc name \"server\"), a gateway with a tinc address in each island:")
	say("  10.241.1.1 and 10.241.2.1; its gateway daemon runs tinc with TunnelServer = yes")
	for _, n := range tb.Nodes {
		say("- %s in island %d at %s, management address %s; slivers:", n.TincName, n.Spec.Island, n.CNAddr, n.Addr)
		for _, s := range n.Slivers {
			say("    slice %d: management %s, private %s", s.Slice, s.MgmtAddr, s.PrivAddr)
		}
	}
	say("Every node's slivers use the same private range, 192.168.157.0/25, as in the field.")

	step("The registry: a database the operator fills, and nodes that enrol themselves")
	say("\"mgmtnet registry serve --db sqlite:...\" starts with the gateway alone; the server's")
	say("\"mgmtnet gateway\" daemon writes its hosts directory from it, starts tincd, and follows")
	say("the registry's change feed. The operator adds each node without a key and invites it:")
	say("   mgmtnet registry node add 31 --name node-31 --island 2")
	say("   mgmtnet registry invite --node 31 --ttl 1h      (prints a one-time key)")
	say("Each node then boots once with its key (\"mgmtnet node-boot --enrol KEY\", or the UCI")
	say("option mgmtnet.enrol_token): node-boot makes the node's tinc key, registers it with the")
	say("invite (nobody copies a key by hand), gets its gateways from the registry (its island's")
	say("address first), writes tinc.conf and tinc-up/down, and starts tincd. The gateway learns")
	say("the new key from the feed, well under a second after the enrolment.")
	showLog = true
	_, boots, err := tb.EnrolBoot(ctx)
	showLog = false
	if err != nil {
		return err
	}
	say("\nnode-boot --enrol on %s said:", tb.Nodes[2].TincName)
	show(without(boots[tb.Nodes[2].TincName], "time="))
	out, err = tb.Registry(ctx, "log", "--limit", "7")
	if err != nil {
		return err
	}
	say("\nThe registry's audit log, newest first (\"mgmtnet registry log\"; each entry also")
	say("holds the member before and after, here left out):")
	show(without(out, "    "))
	n1, n2, n3 := tb.Nodes[0], tb.Nodes[1], tb.Nodes[2]
	out, err = tb.NodeBoot(ctx, n3, "--dry-run")
	if err != nil {
		return err
	}
	say("\nWhat node-boot on %s does now (a --dry-run, nothing to change):", n3.TincName)
	show(out)
	b, _ := os.ReadFile(filepath.Join(n3.TincDir, "tinc.conf"))
	say("\n%s's tinc.conf:", n3.TincName)
	show(string(b))
	b, _ = os.ReadFile(filepath.Join(n3.TincDir, "hosts", "server"))
	say("\nThe server's host file on %s (island 2: its island's address first):", n3.TincName)
	show(strings.SplitN(string(b), "\n-----BEGIN", 2)[0])

	step("The overlay works: ping6 between members over tinc")
	pings := []struct {
		from *vtb.Netns
		name string
		to   string
		what string
	}{
		{n1.NS, n1.TincName, tb.Server.Addr.String(), "the server (P::2)"},
		{n1.NS, n1.TincName, n2.Addr.String(), n2.TincName + ", same island"},
		{n1.NS, n1.TincName, n3.Addr.String(), n3.TincName + ", the other island: only the server joins them"},
		{tb.Server.NS, "server", n3.Addr.String(), n3.TincName},
	}
	for _, p := range pings {
		if err := vtb.WaitFor(ctx, 20*time.Second, 200*time.Millisecond, func() error { return p.from.Ping6(ctx, p.to) }); err != nil {
			return fmt.Errorf("ping6 from %s to %s: %w", p.name, p.to, err)
		}
		out, _ := p.from.Run(ctx, "ping", "-6", "-n", "-c", "1", "-W", "2", p.to)
		say("%s -> %s (%s): %s", p.name, p.to, p.what, pingTime(out))
	}

	step("A sliver's management address, reached from the server")
	s := n3.Slivers[0]
	if err := vtb.WaitFor(ctx, 10*time.Second, 200*time.Millisecond, func() error { return tb.Server.NS.Ping6(ctx, s.MgmtAddr.String()) }); err != nil {
		return fmt.Errorf("server to sliver %s: %w", s.MgmtAddr, err)
	}
	out, _ = tb.Server.NS.Run(ctx, "ping", "-6", "-n", "-c", "1", "-W", "2", s.MgmtAddr.String())
	say("server -> slice %d on %s at %s: %s", s.Slice, n3.TincName, s.MgmtAddr, pingTime(out))
	out, _ = runCmd(ctx, bin, "plan", "reverse", s.MgmtAddr.String(), "--prefix", tb.Plan.Mgmt().String())
	say("and the plan says what that address is:")
	show(out)

	step("Names instead of addresses: the gateway serves DNS for %s", vtb.DNSZone)
	svc := tb.DNSServiceAddr().String()
	say("The gateway announces the service address %s into the mesh; %s asks it over the overlay:", svc, n1.TincName)
	for _, q := range [][]string{
		{"AAAA", "server-2." + vtb.DNSZone},
		{"AAAA", "node-31." + vtb.DNSZone},
		{"AAAA", fmt.Sprintf("slice-%d.node-31.%s", s.Slice, vtb.DNSZone)},
		{"-x", s.MgmtAddr.String()},
	} {
		var ans string
		err := vtb.WaitFor(ctx, 20*time.Second, 200*time.Millisecond, func() error {
			out, err := n1.NS.Run(ctx, "dig", "+short", "+time=1", "+tries=1", "@"+svc, q[0], q[1])
			ans = strings.TrimSpace(out)
			if err == nil && ans == "" {
				return fmt.Errorf("no answer")
			}
			return err
		})
		if err != nil {
			return fmt.Errorf("dig %s %s: %w", q[0], q[1], err)
		}
		say("   dig %s %-40s -> %s", q[0], q[1], ans)
	}

	step("Internet egress: a sliver on 192.168.157.x fetches a page from the pretend Internet")
	s0 := n3.Slivers[0]
	say("%s's sliver %s asks http://%s/ (a documentation address in the lab's pretend Internet)", n3.TincName, s0.PrivAddr, vtb.InetHostAddr)
	say("which address it sees; the node routes it into tinc as %s, the gateway masquerades it:", "its egress address")
	if err := vtb.WaitFor(ctx, 20*time.Second, 200*time.Millisecond, func() error {
		got, err := s0.NS.Fetch(ctx, vtb.InetURL("/"), 2*time.Second)
		if err == nil {
			say("   the Internet host saw %s (the gateway's WAN address is %s)", got, tb.Server.WAN)
		}
		return err
	}); err != nil {
		return err
	}

	step("The tinc links, from the server's own log")
	tincLog := tb.Server.Gateway.Log()
	act, _ := vtb.ConnectionEvents(tincLog)
	var peers []string
	for p := range act {
		peers = append(peers, p)
	}
	sort.Strings(peers)
	for _, l := range strings.Split(tincLog, "\n") {
		if strings.Contains(l, ") activated") {
			say("   %s", strings.Trim(strings.TrimSpace(l[strings.Index(l, "Connection with"):]), `"`))
		}
	}
	say("%d nodes are connected to the server: %s", len(peers), strings.Join(peers, ", "))

	step("node-boot is idempotent: a second run writes nothing and signals nothing")
	out, err = tb.NodeBoot(ctx, n1)
	if err != nil {
		return err
	}
	show(out)

	step("Removing a node: the operator deletes it, the feed cuts it off at once")
	say("   mgmtnet registry node rm %d", n2.Spec.ID)
	t0 := time.Now()
	if _, err := tb.Registry(ctx, "node", "rm", fmt.Sprint(n2.Spec.ID)); err != nil {
		return err
	}
	if err := vtb.WaitFor(ctx, 15*time.Second, 50*time.Millisecond, func() error {
		if n2.NS.Ping6(ctx, tb.Server.Addr.String()) == nil {
			return fmt.Errorf("%s still reaches the server", n2.TincName)
		}
		return nil
	}); err != nil {
		return err
	}
	say("%s no longer reaches the server, %s after the write: the gateway removed its host file", n2.TincName, time.Since(t0).Round(10*time.Millisecond))
	say("and tincd closed its connection. %s still does:", n1.TincName)
	if err := n1.NS.Ping6(ctx, tb.Server.Addr.String()); err != nil {
		return fmt.Errorf("%s after removing %s: %w", n1.TincName, n2.TincName, err)
	}
	out, _ = n1.NS.Run(ctx, "ping", "-6", "-n", "-c", "1", "-W", "2", tb.Server.Addr.String())
	say("%s -> %s: %s", n1.TincName, tb.Server.Addr, pingTime(out))

	step("Done in %s", time.Since(start).Round(100*time.Millisecond))
	if keep {
		say("The testbed stays up. Enter a namespace with:")
		for _, ns := range lab.Namespaces() {
			say("   ip netns exec %s bash", ns.Full)
		}
		say("Files and logs: %s", dir)
		say("Tear it down with: make demo-down")
		return nil
	}
	say("Tearing the testbed down (make demo KEEP=1 leaves it up).")
	return nil
}

// without drops the lines of out that start with prefix.
func without(out, prefix string) string {
	var keep []string
	for _, l := range strings.Split(out, "\n") {
		if !strings.HasPrefix(l, prefix) {
			keep = append(keep, l)
		}
	}
	return strings.Join(keep, "\n")
}

func runCmd(ctx context.Context, bin string, args ...string) (string, error) {
	tb := &vtb.Testbed{Spec: vtb.Spec{Mgmtnet: bin}}
	return tb.Mgmtnet(ctx, nil, args...)
}

// pingTime extracts "time=0.123 ms" from ping's output.
func pingTime(out string) string {
	for _, f := range strings.Fields(out) {
		if strings.HasPrefix(f, "time=") {
			return "reply in " + strings.TrimPrefix(f, "time=") + " ms"
		}
	}
	return "reply"
}
