// Command scale measures real tinc 1.0 daemons at scale (issue 17, "Hold
// the whole /48"): for each topology and each N it builds a synthetic
// testbed with mesh.Build, writes every tincd's directory with the
// repository's own renderers (tincgen for the gateways, nodeboot for the
// nodes), and runs G gateway tincds, each in its own namespace with a
// real tun and RLIMIT_NOFILE 1024, N node tincds (all but the probes in
// one "crowd" namespace, with distinct ports and DeviceType = dummy), and
// two probe nodes with real tun devices in namespaces of their own.
//
// It measures how long the nodes take to connect, the CPU a node spends
// per remote join (or leave), node and gateway memory, gateway
// connections and CPU, the time a restarted gateway takes to get its
// connections back (and the connections that drop elsewhere meanwhile),
// and reachability between the probes and from them to every gateway.
// Every phase has a time budget: a network that does not settle is a
// result, printed as such. The crowd shares the machine's few CPUs where a
// testbed's nodes have one each, so node tincds run at nice 19 and starts
// and joins wait for the machine to be 30 % idle; figures measured in CPU
// time (schedstat) do not depend on that, times to connect do.
//
// The topologies: "legacy" is the 2015 controller's full broadcast
// (nodes without TunnelServer dial every gateway, gateways hold every
// member's host file); "tunnel-server" is mgmtnet's (gateway and node
// files as the gateway daemon and node-boot write them).
//
// The output is a markdown table on stdout, with a power-law fit of node
// CPU per join against N and its extrapolation; progress goes to stderr.
// "make scale" runs it (as root; it is not part of "make test"). It
// touches nothing outside the namespaces and temporary directory it
// creates, and removes them on exit, on error and on SIGINT or SIGTERM.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"math"
	"os"
	"os/exec"
	"os/signal"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

func main() {
	ns := flag.String("n", "100,200,400", "node counts N to measure, comma-separated")
	topos := flag.String("topology", topoLegacy+","+topoTunnel, "topologies to measure: "+topoLegacy+", "+topoTunnel)
	gateways := flag.Int("gateways", 3, "gateways G")
	joins := flag.Int("joins", 20, "joiners that join and leave in the CPU window")
	window := flag.Duration("window", 20*time.Second, "the idle window, and about the join window")
	rate := flag.Float64("rate", 8, "crowd nodes started per second (a gateway accepts 10 connections a second)")
	samples := flag.Int("samples", 10, "crowd nodes whose CPU and memory are measured")
	settle := flag.Duration("settle", 10*time.Second, "quiet time after the connect phase")
	nkeys := flag.Int("keys", 8, "RSA keys to make and share among the members")
	capacity := flag.Float64("capacity", 0, "tunnel-server: every gateway's mgmtnet.capacity as a share of the nodes (0.75 with 3 gateways puts each node on 2); 0: the registry default")
	keep := flag.Bool("keep", false, "keep the temporary directories (tinc directories and logs) for inspection")
	flag.Parse()

	o := options{gateways: *gateways, joins: *joins, probes: 2, samples: *samples, window: *window, settle: *settle, rate: *rate, keep: *keep, capacity: *capacity}
	sizes, err := parseSizes(*ns)
	if err == nil {
		err = o.check()
	}
	topologies := strings.Split(*topos, ",")
	for _, t := range topologies {
		if t != topoLegacy && t != topoTunnel && err == nil {
			err = fmt.Errorf("topology %q: want %s or %s", t, topoLegacy, topoTunnel)
		}
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "scale: %v\n", err)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := bench(ctx, o, topologies, sizes, *nkeys); err != nil {
		fmt.Fprintf(os.Stderr, "scale: %v\n", err)
		stop()
		os.Exit(1)
	}
}

func (o options) check() error {
	switch {
	case o.gateways < 2:
		return errors.New("-gateways: want at least 2 (the probes should be able to sit on different ones)")
	case o.joins < 1:
		return errors.New("-joins: want at least 1")
	case o.window < time.Second:
		return errors.New("-window: want at least 1s")
	case o.rate <= 0:
		return errors.New("-rate: want more than 0")
	case o.samples < 1:
		return errors.New("-samples: want at least 1")
	}
	return nil
}

func parseSizes(s string) ([]int, error) {
	var out []int
	for _, f := range strings.Split(s, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 10 || n+100 > 0xfff0 {
			return nil, fmt.Errorf("-n %q: want node counts of 10 to 65 000", f)
		}
		out = append(out, n)
	}
	slices.Sort(out)
	return out, nil
}

func bench(ctx context.Context, o options, topologies []string, sizes []int, nkeys int) error {
	start := time.Now()
	logf := func(format string, args ...any) {
		fmt.Fprintf(os.Stderr, "[%6s] %s\n", time.Since(start).Round(time.Second), fmt.Sprintf(format, args...))
	}
	logf("making %d RSA keys", nkeys)
	var err error
	if o.keys, err = makeKeys(max(nkeys, 1)); err != nil {
		return err
	}
	var results []*result
	for _, topo := range topologies {
		for _, n := range sizes {
			r, err := run(ctx, o, topo, n, logf)
			if ctx.Err() != nil {
				if len(results) > 0 {
					fmt.Println("Interrupted: the runs that finished.")
					fmt.Println()
					report(o, results, time.Since(start))
				}
				return ctx.Err()
			}
			if err != nil {
				logf("%s N=%d: %v", topo, n, err)
				r = &result{topo: topo, n: n, graphNodes: -1, graphEdges: -1}
				r.note("error: %v", err)
			}
			results = append(results, r)
		}
	}
	report(o, results, time.Since(start))
	return nil
}

func report(o options, rs []*result, took time.Duration) {
	ver, _ := exec.Command("tincd", "--version").Output()
	v, _, _ := strings.Cut(string(ver), "\n")
	fmt.Printf("# tinc scale harness, %s\n\n", time.Now().UTC().Format("2006-01-02 15:04 MST"))
	capacity := "the registry default"
	if o.capacity > 0 {
		capacity = fmt.Sprintf("%g × the nodes", o.capacity)
	}
	fmt.Printf("%s; %s; %s. %d gateways (tunnel-server capacity: %s), %d joiners over a %s window, %d sample nodes, crowd started at %g nodes/s; took %s.\n\n",
		machine(), v, runtime.Version(), o.gateways, capacity, o.joins, o.window, o.samples, o.rate, took.Round(time.Second))
	fmt.Println("| topology | N | connect | node CPU/join ms | node idle ms/s | node RSS kB | node graph nodes/edges | gw conns max | gw RSS MB max | gw CPU/join ms max | gw idle ms/s max | gw restart: back in | flaps steady/restart | tarpit s | reach |")
	fmt.Println("|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|---|")
	for _, r := range rs {
		connect := fmtDur(r.connect)
		if r.connect <= 0 && r.connectTook > 0 {
			connect = fmt.Sprintf("not settled: %d/%d in %s", r.connected, r.n, fmtDur(r.connectTook))
		}
		okN := 0
		for _, x := range r.reach {
			if x.ok {
				okN++
			}
		}
		cpu, idle, gwCPU, gwIdle, back, flaps := "-", "-", "-", "-", "-", "-"
		if r.measured {
			cpu, idle = fmt.Sprintf("%.3f ±%.3f", r.nodeCPUJoin, r.nodeSpread), fmt.Sprintf("%.3f", r.nodeIdle)
			gwCPU, gwIdle = fmt.Sprintf("%.3f", r.gwCPUJoin), fmt.Sprintf("%.3f", r.gwIdle)
			back = fmtDur(r.reconnect)
			if r.reconnect <= 0 {
				back = "not in " + fmtDur(r.reconnectBudget)
			}
			flaps = fmt.Sprintf("%d/%d", r.flapsSteady, r.flapsRestart)
		}
		fmt.Printf("| %s | %d | %s | %s | %s | %s | %s | %d | %.1f | %s | %s | %s | %s | %d | %d/%d ok |\n",
			r.topo, r.n, connect, cpu, idle, kb(r.nodeRSS), graph(r), r.gwConns, r.gwRSS, gwCPU, gwIdle,
			back, flaps, r.throttled, okN, len(r.reach))
	}
	fmt.Println()
	fmt.Print(`CPU/join is the CPU time above the idle rate spent in the join window, divided by the joins plus
the leaves (each counted as one join), ± half the samples' interquartile range; a value within it is
noise around no cost. Node tincds run at nice 19, and starts and joins wait for 30 % idle CPU: on a
testbed every node has a CPU of its own. Flaps are meta connections the gateways lost other than the
joiners' (steady: over both CPU windows) and the restarted gateway's (restart). Tarpit s are the
seconds in which a gateway's tincd throttled (more than 10 new connections in a second; the rest
were tarpitted).
`)
	for _, r := range rs {
		if len(r.notes) == 0 && len(r.reach) == 0 {
			continue
		}
		fmt.Printf("\n%s N=%d:\n", r.topo, r.n)
		for _, s := range r.notes {
			fmt.Printf("- %s\n", s)
		}
		if len(r.reach) > 0 {
			var parts []string
			for _, x := range r.reach {
				st := "fail"
				if x.ok {
					st = "ok " + x.rtt
				}
				parts = append(parts, fmt.Sprintf("%s→%s %s", x.from, x.to, st))
			}
			fmt.Printf("- reach: %s\n", strings.Join(parts, "; "))
		}
	}

	fits(rs)
}

// fits prints a power-law fit, y = a·N^b, of the figures that grow with N,
// per topology, over the runs that settled, with its extrapolation.
func fits(rs []*result) {
	metrics := []struct {
		name, unit string
		of         func(*result) (float64, bool) // false: leave the point out
	}{
		// A node's CPU per join counts only where it stands out of the
		// samples' spread; below it, it is noise around no cost.
		{"node CPU per remote join", "ms", func(r *result) (float64, bool) {
			return r.nodeCPUJoin, r.nodeCPUJoin > 2*r.nodeSpread
		}},
		{"gateway CPU per join", "ms", func(r *result) (float64, bool) { return r.gwCPUJoin, true }},
		{"gateway idle CPU", "ms/s", func(r *result) (float64, bool) { return r.gwIdle, true }},
		{"gateway RSS", "MB", func(r *result) (float64, bool) { return r.gwRSS, true }},
		{"gateway restart, connections back", "s", func(r *result) (float64, bool) { return r.reconnect.Seconds(), r.reconnect > 0 }},
	}
	fmt.Println("\nPower-law fits, y = a × N^b (least squares on log-log, over the runs that settled), extrapolated.")
	fmt.Println("A gateway's figures are for one gateway that holds all N nodes; its tincd aborts at fd 1024 (select),")
	fmt.Println("so beyond about 1 000 connections they are what it would need, not what it can do:")
	fmt.Println()
	for _, m := range metrics {
		for _, topo := range []string{topoLegacy, topoTunnel} {
			var xs, ys []float64
			noise := 0
			for _, r := range rs {
				if r.topo != topo || !r.measured {
					continue
				}
				if y, ok := m.of(r); ok && y > 0 {
					xs, ys = append(xs, float64(r.n)), append(ys, y)
				} else {
					noise++
				}
			}
			if len(xs)+noise == 0 {
				continue
			}
			a, b, r2, ok := powerFit(xs, ys)
			if !ok {
				fmt.Printf("- %s, %s: no fit (%d points above noise, %d at or below it)\n", m.name, topo, len(xs), noise)
				continue
			}
			var ext []string
			for _, n := range []float64{2500, 10000, 66000} {
				ext = append(ext, fmt.Sprintf("N=%g: %.3g %s", n, a*math.Pow(n, b), m.unit))
			}
			fmt.Printf("- %s, %s: %.3g %s × N^%.2f (R² %.3f, %d points); %s\n", m.name, topo, a, m.unit, b, r2, len(xs), strings.Join(ext, ", "))
		}
	}
}

func kb(v int64) string {
	if v <= 0 {
		return "-"
	}
	return strconv.FormatInt(v, 10)
}

func graph(r *result) string {
	if r.graphNodes < 0 {
		return "-"
	}
	if r.graphEdges < 0 {
		return fmt.Sprintf("%d/?", r.graphNodes)
	}
	return fmt.Sprintf("%d/%d", r.graphNodes, r.graphEdges)
}

func numCPU() int { return runtime.NumCPU() }
