package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/confine-project/mgmtnet/test/vtb"
	"golang.org/x/sys/unix"
)

// options are the knobs of one run, from the flags.
type options struct {
	gateways, joins, probes, samples int
	window, settle                   time.Duration
	rate                             float64 // crowd nodes started per second
	keep                             bool    // keep the temporary directory
	// capacity, when above 0, sets every gateway's mgmtnet.capacity to
	// this share of the nodes in the tunnel-server topology, so that the
	// assignment gives each node fewer gateways than all (0.75 with 3
	// gateways: 2 each).
	capacity float64
	keys     []keyPair
}

// result is what one (topology, N) run measured. A zero or negative
// duration means the phase did not finish within its budget.
type result struct {
	topo string
	n    int

	connect, connectTook time.Duration // connect is 0 when it did not settle
	connected            int           // nodes up to all their gateways at the end of the connect phase
	measured             bool          // the CPU and restart phases ran

	nodeCPUJoin float64 // ms per join or leave, median of the samples
	nodeSpread  float64 // half the interquartile range of the samples' figures
	nodeIdle    float64 // ms of CPU per second, median
	nodeRSS     int64   // kB, median
	graphNodes  int     // the first sample's tinc graph (SIGUSR2), -1 unknown
	graphEdges  int
	joins       int // joiners that connected (each counts a join and a leave)
	joinTime    time.Duration

	gwConns   int     // max over gateways
	gwRSS     float64 // MB, max
	gwCPUJoin float64 // ms per join or leave, max
	gwIdle    float64 // ms/s, max
	throttled int     // seconds of tarpitting, all gateways, whole run

	reconnect, reconnectBudget time.Duration
	reconnectWant              int
	flapsSteady, flapsRestart  int

	reach []reach
	notes []string
}

type reach struct {
	from, to string
	ok       bool
	rtt      string
}

func (r *result) note(format string, args ...any) {
	r.notes = append(r.notes, fmt.Sprintf(format, args...))
}

// tincd is a running tincd of the layout.
type tincd struct {
	*daemon
	proc  *vtb.Proc
	watch *logWatch
}

// run is one (topology, N) measurement: it builds the namespaces, starts
// every tincd, measures, and removes it all again.
func run(ctx context.Context, o options, topo string, n int, logf func(string, ...any)) (res *result, err error) {
	res = &result{topo: topo, n: n, graphNodes: -1, graphEdges: -1}
	root, err := os.MkdirTemp("", "mgmtnet-scale-")
	if err != nil {
		return nil, err
	}
	if o.keep {
		logf("%s N=%d: keeping %s", topo, n, root)
	} else {
		defer os.RemoveAll(root)
	}

	logf("%s N=%d: rendering %d gateways and %d nodes", topo, n, o.gateways, n+o.joins)
	l, err := render(topo, n, o.gateways, o.joins, o.probes, o.capacity, o.keys, filepath.Join(root, "tinc"))
	if err != nil {
		return nil, err
	}
	if l.sameGateways {
		res.note("every node dials the same gateways (%s): the probes could not be put on different ones", strings.Join(l.probes[0].connectTo, " "))
	}

	lab, err := vtb.New(filepath.Join(root, "lab"), nil)
	if err != nil {
		return nil, err
	}
	var crowd []*tincd // stopped all at once at the end, before the lab stops the rest
	defer func() {
		stopAll(crowd)
		if cerr := lab.Close(); cerr != nil && err == nil {
			err = cerr
		}
	}()

	// The network: one bridge, every namespace on it.
	cn, err := lab.AddNetns("cn")
	if err != nil {
		return nil, err
	}
	if err := cn.Bridge("br0"); err != nil {
		return nil, err
	}
	attach := func(name, addr string) (*vtb.Netns, error) {
		ns, err := lab.AddNetns(name)
		if err != nil {
			return nil, err
		}
		return ns, vtb.Attach(ns, "eth0", cn, "br0", fmt.Sprintf("%s/%d", addr, cnBits))
	}
	var gws, probes []*tincd
	var probeNS []*vtb.Netns
	for i, d := range l.gateways {
		ns, err := attach(fmt.Sprintf("gw%d", i+1), gatewayAddr(i+1))
		if err != nil {
			return nil, err
		}
		t, err := start(lab, ns, d, "tinc.log", true)
		if err != nil {
			return nil, err
		}
		gws = append(gws, t)
	}
	crowdNS, err := attach("crowd", crowdAddr)
	if err != nil {
		return nil, err
	}
	for i := range l.probes {
		ns, err := attach(fmt.Sprintf("probe%d", i+1), probeAddr(i+1))
		if err != nil {
			return nil, err
		}
		probeNS = append(probeNS, ns)
	}

	// Connect: the probes, then the crowd at o.rate a second (a gateway's
	// tincd accepts 10 connections a second and tarpits the rest), and
	// no faster than the nodes come up and the machine keeps up: no more
	// than o.rate nodes (one second's worth) may be started and not yet
	// up, and the CPU must be startIdle idle. Without that, a legacy start
	// drives the crowd's shared CPU into ping timeouts that feed on
	// themselves, which no testbed of nodes with CPUs of their own sees.
	connectBudget := max(180*time.Second, time.Duration(n)*time.Second/10*2, time.Duration(1.5*float64(n)/o.rate*float64(time.Second)))
	t0 := time.Now()
	deadline := t0.Add(connectBudget)
	gate, err := newIdleGate()
	if err != nil {
		return nil, err
	}
	// A network whose count of nodes up has not grown for a minute will
	// not settle: give up early rather than at the budget.
	const stall = time.Minute
	best, bestAt := 0, t0
	stalled := func(up int) bool {
		if up > best {
			best, bestAt = up, time.Now()
		}
		return time.Since(bestAt) > stall
	}
	for i, d := range l.probes {
		t, err := start(lab, probeNS[i], d, "tinc.log", false)
		if err != nil {
			return nil, err
		}
		probes = append(probes, t)
	}
	nodes := slices.Clone(probes)
	interval := time.Duration(float64(time.Second) / o.rate)
	pending := max(int(o.rate), 2)
	lastLog, next := time.Now(), t0
	progress := func(up int) {
		if time.Since(lastLog) >= 10*time.Second {
			lastLog = time.Now()
			logf("%s N=%d: started %d/%d, %d up to all their gateways", topo, n, len(nodes), n, up)
		}
	}
start:
	for _, d := range l.crowd {
		if err := sleepUntil(ctx, next); err != nil {
			return nil, err
		}
		for {
			up := countUp(nodes)
			progress(up)
			if len(nodes)-up < pending {
				break
			}
			if time.Now().After(deadline) || stalled(up) {
				res.note("start stopped after %s: %d of %d nodes started", fmtDur(time.Since(t0)), len(nodes), n)
				break start
			}
			if err := sleep(ctx, 200*time.Millisecond); err != nil {
				return nil, err
			}
		}
		if err := gate.wait(ctx, startIdle, deadline); err != nil {
			return nil, err
		}
		next = time.Now().Add(interval)
		t, err := start(lab, crowdNS, d, "tinc.log", false)
		if err != nil {
			return nil, err
		}
		crowd = append(crowd, t)
		nodes = append(nodes, t)
	}
	err = waitFor(ctx, deadline, func() (bool, string) {
		up := countUp(nodes)
		return up == n || stalled(up), fmt.Sprintf("%d/%d nodes up to all their gateways", up, n)
	}, func(s string) { logf("%s N=%d: %s", topo, n, s) })
	if err != nil {
		return nil, err
	}
	res.connected, res.connectTook = countUp(nodes), time.Since(t0)
	if res.connected == n {
		res.connect = time.Since(t0)
	} else {
		res.note("connect did not settle: %d/%d nodes up to all their gateways after %s (budget %s, or %s without a new node up)",
			res.connected, n, fmtDur(res.connectTook), fmtDur(connectBudget), stall)
	}
	logf("%s N=%d: connect phase done in %s (%d/%d up); settling %s", topo, n, fmtDur(time.Since(t0)), res.connected, n, o.settle)
	if err := sleep(ctx, o.settle); err != nil {
		return nil, err
	}
	if err := gate.wait(ctx, 0.7, time.Now().Add(time.Minute)); err != nil {
		return nil, err
	}
	if err := alive(gws); err != nil {
		res.note("%v", err)
		return res, nil
	}
	samples := pickSamples(crowd, o.samples)
	if res.connect <= 0 {
		// Joins and a restart would only measure the churn.
		res.note("CPU and restart phases skipped: the network did not settle")
		memory(ctx, res, samples, gws)
		res.reach = reachability(ctx, probes, probeNS, gws)
		for _, t := range gws {
			res.throttled += t.watch.throttled
		}
		return res, nil
	}

	// CPU: an idle window, then a window with joins and leaves.
	res.measured = true
	all := append(slices.Clone(samples), gws...)
	flapBase := closings(gws, func(string) bool { return false })
	logf("%s N=%d: idle window %s on %d sample nodes", topo, n, o.window, len(samples))
	c0, err := cpuTimes(all)
	if err != nil {
		return nil, err
	}
	i0 := time.Now()
	if err := sleep(ctx, o.window); err != nil {
		return nil, err
	}
	c1, err := cpuTimes(all)
	if err != nil {
		return nil, err
	}
	idleDur := time.Since(i0)
	idle := rates(c0, c1, idleDur)

	logf("%s N=%d: %d joiners join and leave over about %s", topo, n, o.joins, o.window)
	j0 := time.Now()
	failed := 0
	joinerNames := map[string]bool{}
	// A joiner that does not connect is given up after 30 s, and no new
	// one starts after the phase's budget: a saturated network is a result.
	joinBudget := max(3*o.window, time.Minute)
	for i, d := range l.joiners {
		if time.Since(j0) > joinBudget {
			res.note("join phase over its budget of %s: %d of %d joiners not started", fmtDur(joinBudget), o.joins-i, o.joins)
			break
		}
		joinerNames[d.name] = true
		if err := sleepUntil(ctx, j0.Add(time.Duration(i)*o.window/time.Duration(max(o.joins, 1)))); err != nil {
			return nil, err
		}
		if err := gate.wait(ctx, startIdle, j0.Add(joinBudget)); err != nil {
			return nil, err
		}
		t, err := start(lab, crowdNS, d, "tinc.log", false)
		if err != nil {
			return nil, err
		}
		err = waitFor(ctx, time.Now().Add(min(30*time.Second, time.Until(j0.Add(joinBudget)))), func() (bool, string) {
			t.watch.poll()
			return t.watch.upTo(t.connectTo), ""
		}, nil)
		if err != nil {
			t.proc.Stop()
			return nil, err
		}
		if t.watch.upTo(t.connectTo) {
			res.joins++
		} else {
			failed++
		}
		t.proc.Stop()
	}
	if err := sleep(ctx, 2*time.Second); err != nil { // the last leave's DEL_EDGEs
		return nil, err
	}
	c2, err := cpuTimes(all)
	if err != nil {
		return nil, err
	}
	res.joinTime = time.Since(j0)
	if failed > 0 {
		res.note("%d joiners did not connect to all their gateways in time (30 s each, the phase's budget in all)", failed)
	}
	events := float64(2 * max(res.joins, 1))
	var perJoin, idleMS []float64
	for i := range samples {
		extra := float64(c2[i]-c1[i]) - idle[i]*float64(res.joinTime)
		perJoin = append(perJoin, extra/events/1e6)
		idleMS = append(idleMS, idle[i]*1e3) // ns/ns -> ms/s
	}
	res.nodeCPUJoin, res.nodeIdle = median(perJoin), median(idleMS)
	res.nodeSpread = (quantile(perJoin, 0.75) - quantile(perJoin, 0.25)) / 2
	for k := range gws {
		i := len(samples) + k
		extra := float64(c2[i]-c1[i]) - idle[i]*float64(res.joinTime)
		res.gwCPUJoin = max(res.gwCPUJoin, extra/events/1e6)
		res.gwIdle = max(res.gwIdle, idle[i]*1e3)
	}
	res.flapsSteady = closings(gws, func(p string) bool { return joinerNames[p] }) - flapBase

	memory(ctx, res, samples, gws)

	// Reachability, in the steady state.
	logf("%s N=%d: reachability", topo, n)
	res.reach = reachability(ctx, probes, probeNS, gws)

	// Restart the first gateway's tincd.
	g := gws[0]
	g.watch.poll()
	res.reconnectWant = g.watch.count()
	res.reconnectBudget = max(90*time.Second, time.Duration(n)*time.Second/10*6)
	others := gws[1:]
	notG := func(p string) bool { return p == g.name || joinerNames[p] }
	before := closings(others, notG)
	logf("%s N=%d: restarting %s (%d connections)", topo, n, g.name, res.reconnectWant)
	g.proc.Stop()
	r0 := time.Now()
	ng, err := start(lab, nsOf(lab, "gw1"), g.daemon, "tinc-restarted.log", true)
	if err != nil {
		return nil, err
	}
	gws[0] = ng
	err = waitFor(ctx, r0.Add(res.reconnectBudget), func() (bool, string) {
		ng.watch.poll()
		return ng.watch.count() >= res.reconnectWant, fmt.Sprintf("%s: %d/%d connections back", g.name, ng.watch.count(), res.reconnectWant)
	}, func(s string) { logf("%s N=%d: %s", topo, n, s) })
	if err != nil {
		return nil, err
	}
	if ng.watch.count() >= res.reconnectWant {
		res.reconnect = time.Since(r0)
	} else {
		res.note("%s's connections not back within %s: %d/%d", g.name, fmtDur(res.reconnectBudget), ng.watch.count(), res.reconnectWant)
	}
	res.flapsRestart = closings(others, notG) - before
	for _, t := range gws {
		t.watch.poll()
		res.throttled += t.watch.throttled
	}
	res.throttled += g.watch.throttled
	if err := alive(gws); err != nil {
		res.note("%v", err)
	}
	logf("%s N=%d: done", topo, n)
	return res, nil
}

// nodeNice is the nice value of the nodes' tincds.
const nodeNice = 19

// startIdle is how idle the machine must be for the next node to start
// or join.
const startIdle = 0.3

// memory records the sample nodes' memory and tinc graph (a SIGUSR2
// dump of the first), and the gateways' connections and memory.
func memory(ctx context.Context, res *result, samples, gws []*tincd) {
	var rss []float64
	for _, t := range samples {
		rss = append(rss, float64(vtb.ProcKB(t.proc.Pid(), "VmRSS")))
	}
	res.nodeRSS = int64(median(rss))
	if len(samples) > 0 {
		samples[0].proc.Signal(syscall.SIGUSR2)
		sleep(ctx, time.Second)
		b, _ := os.ReadFile(samples[0].watch.path)
		res.graphNodes, res.graphEdges = graphSize(string(b))
	}
	for _, g := range gws {
		g.watch.poll()
		res.gwConns = max(res.gwConns, g.watch.count())
		res.gwRSS = max(res.gwRSS, float64(vtb.ProcKB(g.proc.Pid(), "VmRSS"))/1024)
	}
}

// reachability pings, all at once, from every probe to the others and
// to every gateway.
func reachability(ctx context.Context, probes []*tincd, probeNS []*vtb.Netns, gws []*tincd) []reach {
	type target struct {
		from int
		to   *tincd
	}
	var targets []target
	for i := range probes {
		for j, q := range probes {
			if i != j {
				targets = append(targets, target{i, q})
			}
		}
		for _, g := range gws {
			targets = append(targets, target{i, g})
		}
	}
	out := make([]reach, len(targets))
	var wg sync.WaitGroup
	for k, t := range targets {
		wg.Go(func() { out[k] = ping(ctx, probeNS[t.from], probes[t.from].name, t.to.name, t.to.mgmt.String()) })
	}
	wg.Wait()
	return out
}

// start starts tincd for d in ns, in the foreground at debug level 1
// (connections only) with its log in d's directory. A gateway's tincd
// gets RLIMIT_NOFILE 1024 at once, as tinc.Foreground gives a managed one
// (tinc.MaxFiles); a node's runs at nodeNice.
func start(lab *vtb.Lab, ns *vtb.Netns, d *daemon, logName string, gateway bool) (*tincd, error) {
	logPath := filepath.Join(d.dir, logName)
	p, err := lab.Start(ns, d.name+"-"+strings.TrimSuffix(logName, ".log"), "tincd", "-c", d.dir, "-D", "-d1",
		"--logfile="+logPath, "--pidfile="+filepath.Join(d.dir, "tinc.pid"))
	if err != nil {
		return nil, err
	}
	if gateway {
		err = capFiles(p.Pid())
	} else if nodeNice != 0 {
		// On a testbed every node has a CPU of its own, and so has every
		// gateway; here they share two or so. The gateways get the CPU
		// first, so that a crowd busy with a broadcast does not starve the
		// machines it would not share a CPU with.
		if err = unix.Setpriority(unix.PRIO_PROCESS, p.Pid(), nodeNice); err != nil {
			err = fmt.Errorf("renice %d: %w", p.Pid(), err)
		}
	}
	if err != nil {
		p.Kill()
		return nil, fmt.Errorf("start %s: %w", d.name, err)
	}
	return &tincd{daemon: d, proc: p, watch: newLogWatch(logPath)}, nil
}

func nsOf(lab *vtb.Lab, name string) *vtb.Netns {
	for _, ns := range lab.Namespaces() {
		if ns.Name == name {
			return ns
		}
	}
	return nil
}

// stopAll stops the tincds at once rather than one after the other.
func stopAll(ts []*tincd) {
	var wg sync.WaitGroup
	for _, t := range ts {
		wg.Go(func() { t.proc.Stop() })
	}
	wg.Wait()
}

func alive(ts []*tincd) error {
	for _, t := range ts {
		if t.proc.Exited() {
			log, _ := os.ReadFile(t.watch.path)
			lines := strings.Split(strings.TrimSpace(string(log)), "\n")
			return fmt.Errorf("%s's tincd exited; its log ends: %s", t.name, lines[len(lines)-1])
		}
	}
	return nil
}

// countUp polls every node's log and counts those up to all their gateways.
func countUp(ts []*tincd) int {
	n := 0
	for _, t := range ts {
		t.watch.poll()
		if t.watch.upTo(t.connectTo) {
			n++
		}
	}
	return n
}

func closings(ts []*tincd, skip func(string) bool) int {
	n := 0
	for _, t := range ts {
		t.watch.poll()
		n += t.watch.closedTotal(skip)
	}
	return n
}

// pickSamples returns k crowd nodes spread evenly over the crowd.
func pickSamples(ts []*tincd, k int) []*tincd {
	k = min(k, len(ts))
	out := make([]*tincd, 0, k)
	for i := range k {
		out = append(out, ts[i*len(ts)/k])
	}
	return out
}

func cpuTimes(ts []*tincd) ([]time.Duration, error) {
	out := make([]time.Duration, len(ts))
	for i, t := range ts {
		c, err := cpuTime(t.proc.Pid())
		if err != nil {
			return nil, fmt.Errorf("%s: %w", t.name, err)
		}
		out[i] = c
	}
	return out, nil
}

// rates returns CPU time per wall-clock time for each process.
func rates(a, b []time.Duration, d time.Duration) []float64 {
	out := make([]float64, len(a))
	for i := range a {
		out[i] = float64(b[i]-a[i]) / float64(d)
	}
	return out
}

var rttRE = regexp.MustCompile(`= [\d.]+/([\d.]+)/[\d.]+/`)
var receivedRE = regexp.MustCompile(`(\d+) received`)

// ping sends three echo requests from ns to addr, allowing 15 s for the
// first answer (a tinc 1.0 packet key is made on the first packet).
func ping(ctx context.Context, ns *vtb.Netns, from, to, addr string) reach {
	out, _ := ns.Run(ctx, "ping", "-6", "-n", "-c", "3", "-i", "0.5", "-w", "15", addr)
	r := reach{from: from, to: to}
	if m := receivedRE.FindStringSubmatch(out); m != nil {
		got, _ := strconv.Atoi(m[1])
		r.ok = got > 0
	}
	if m := rttRE.FindStringSubmatch(out); m != nil {
		r.rtt = m[1] + " ms"
	}
	return r
}

// waitFor polls cond every half second until it holds or deadline
// passes; passing the deadline is not an error (the caller reports it),
// only the context's end is. progress, if not nil, gets cond's message
// every 10 s.
func waitFor(ctx context.Context, deadline time.Time, cond func() (bool, string), progress func(string)) error {
	last := time.Now()
	for {
		ok, msg := cond()
		if ok || time.Now().After(deadline) {
			return nil
		}
		if progress != nil && time.Since(last) >= 10*time.Second {
			last = time.Now()
			progress(msg)
		}
		if err := sleep(ctx, 500*time.Millisecond); err != nil {
			return err
		}
	}
}

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

func sleepUntil(ctx context.Context, t time.Time) error { return sleep(ctx, time.Until(t)) }

// quantile returns the q-quantile of v (0 to 1), interpolated.
func quantile(v []float64, q float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := slices.Clone(v)
	slices.Sort(s)
	x := q * float64(len(s)-1)
	i := int(x)
	if i+1 >= len(s) {
		return s[len(s)-1]
	}
	return s[i] + (x-float64(i))*(s[i+1]-s[i])
}

func median(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := slices.Clone(v)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func fmtDur(d time.Duration) string {
	if d <= 0 {
		return "-"
	}
	return d.Round(100 * time.Millisecond).String()
}

// idleGate paces starts and joins by how idle the machine has been
// since the last one: on a testbed every node has a CPU of its own, here
// a crowd shares a few, and a start that outruns them measures the
// harness, not tinc.
type idleGate struct{ idle, total uint64 }

func newIdleGate() (*idleGate, error) {
	g := &idleGate{}
	var err error
	g.idle, g.total, err = cpuIdle()
	return g, err
}

// wait returns once the machine was at least minIdle idle (0 to 1) since
// the last call, or over the last 200 ms, or at deadline.
func (g *idleGate) wait(ctx context.Context, minIdle float64, deadline time.Time) error {
	for {
		idle, total, err := cpuIdle()
		if err != nil {
			return err
		}
		ok := total > g.total && float64(idle-g.idle)/float64(total-g.total) >= minIdle
		g.idle, g.total = idle, total
		if ok || time.Now().After(deadline) {
			return nil
		}
		if err := sleep(ctx, 200*time.Millisecond); err != nil {
			return err
		}
	}
}
