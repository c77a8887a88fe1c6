// Command dns benchmarks "mgmtnet dns" against Knot DNS, NSD and dnsmasq
// serving the same names on the same machine, in one run, with dnsperf:
// at each offered load of -rates (dnsperf -Q; 0 for as fast as answered),
// queries per second and latency of each server, the server's CPU time
// per answered query (utime+stime from /proc, of the server process and
// its children, before and after the run) and its ratio to the others'
// (the design target: mgmtnet's CPU per query at most Knot's), lost
// queries, CPU use during the runs and resident memory at the end.
//
// For each testbed size (number of names) it makes a synthetic testbed
// (10 servers, then nodes up to 65 520, then hosts), serves it with
// "mgmtnet registry serve --synthetic" on loopback, starts "mgmtnet dns"
// for zone mgmt.bench.test. from that registry, transfers both zones from
// it into zone files that Knot and NSD load (one worker each, no journal,
// NSD's rate limiting off), and gives dnsmasq the same names and addresses
// in an addn-hosts file ("address fqdn" lines, which dnsmasq answers AAAA
// and PTR from), --local for the zone and the /48's ip6.arpa zone, no
// upstream, no other configuration read. It checks that every server
// gives the expected answers to a sample of the queries, then runs
// dnsperf against each with one query file for all. The query files
// (-mixes) are drawn with a fixed seed: "mix" is 80% AAAA of existing
// names, 10% PTR of their addresses and 10% AAAA of nonexistent names
// (NXDOMAIN); "aaaa" is AAAA of existing names only, which isolates the
// forward lookups (dnsmasq searches its hosts entries linearly for PTR,
// so with tens of thousands of names the mix mostly measures that).
//
// Runs are interleaved, the order rotated every round, and each waits
// for a quiet machine (-quiet), so that the noise of a shared machine
// falls on all servers alike; the "others" column shows what noise
// remained. With -pin (the default on 2 CPUs or more) every server runs on
// CPU 1 and dnsperf (one thread) on CPU 0, with taskset: each server gets
// one core (Go sets GOMAXPROCS from the affinity mask; mgmtnet dns then
// adds a P for its blocking reader) and dnsperf does not compete with it.
// Figures are medians over -runs runs. Everything listens on 127.0.0.1;
// the program stops only the processes it started, by pid. "make bench"
// runs it.
package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/miekg/dns"

	"github.com/confine-project/mgmtnet/addressing"
	"github.com/confine-project/mgmtnet/mesh/registry"
	"github.com/confine-project/mgmtnet/test/vtb"
)

// zone is the forward zone both servers answer for.
const zone = "mgmt.bench.test."

func main() {
	bin := flag.String("mgmtnet", "bin/mgmtnet", "mgmtnet binary to measure")
	sizes := flag.String("sizes", "1000,66000", "comma-separated testbed sizes (names: nodes up to 65520, then hosts, plus 10 servers)")
	duration := flag.Duration("duration", 10*time.Second, "length of one dnsperf run (whole seconds)")
	warmup := flag.Duration("warmup", 2*time.Second, "an unmeasured dnsperf run against each server before the first round (0: none)")
	runs := flag.Int("runs", 3, "measured dnsperf runs per server (the median is reported)")
	clients := flag.Int("clients", 8, "dnsperf -c: simulated clients (UDP sockets)")
	threads := flag.Int("threads", 1, "dnsperf -T: threads")
	outstanding := flag.Int("outstanding", 100, "dnsperf -q: queries outstanding at once")
	queries := flag.Int("queries", 100000, "lines of each query file (dnsperf loops over it)")
	seed := flag.Uint64("seed", 1, "seed of the query mix")
	pin := flag.Bool("pin", runtime.NumCPU() >= 2, "pin the servers to CPU 1 and dnsperf to CPU 0 (taskset)")
	mixList := flag.String("mixes", "mix,aaaa", "comma-separated query files to run: mix (80% AAAA, 10% PTR, 10% NXDOMAIN), aaaa (AAAA only), ptr (PTR only)")
	quiet := flag.Float64("quiet", 0.3, "before each run, wait until other processes use less than this many CPUs over a second (0: do not wait)")
	quietWait := flag.Duration("quiet-wait", 20*time.Second, "the longest wait for -quiet; the run then starts anyway")
	serverList := flag.String("servers", "mgmtnet,knot,nsd,dnsmasq", "comma-separated servers to run: mgmtnet, knot, nsd, dnsmasq")
	rateList := flag.String("rates", "0,40000,10000", "comma-separated offered loads, queries per second (dnsperf -Q); 0: as fast as answered (max QPS)")
	flag.Parse()
	c := config{
		bin: *bin, duration: *duration, warmup: *warmup, runs: *runs,
		clients: *clients, threads: *threads, outstanding: *outstanding,
		queries: *queries, seed: *seed, pin: *pin,
		quiet: *quiet, quietWait: *quietWait,
	}
	for _, m := range strings.Split(*mixList, ",") {
		if m = strings.TrimSpace(m); m != "" {
			c.mixes = append(c.mixes, m)
		}
	}
	for _, sv := range strings.Split(*serverList, ",") {
		if sv = strings.TrimSpace(sv); sv != "" {
			c.servers = append(c.servers, sv)
		}
	}
	for _, r := range strings.Split(*rateList, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(r))
		if err != nil || n < 0 {
			fmt.Fprintf(os.Stderr, "bench dns: -rates %q: want queries per second, or 0\n", r)
			os.Exit(2)
		}
		c.rates = append(c.rates, n)
	}
	if err := run(c, *sizes); err != nil {
		fmt.Fprintf(os.Stderr, "bench dns: %v\n", err)
		os.Exit(1)
	}
}

type config struct {
	bin                           string
	duration, warmup              time.Duration
	runs                          int
	clients, threads, outstanding int
	queries                       int
	seed                          uint64
	pin                           bool
	mixes                         []string
	quiet                         float64
	quietWait                     time.Duration
	servers                       []string
	rates                         []int
}

// testbed is one size's members: name (fully qualified) and address.
type testbed struct {
	spec    string // for "registry serve --synthetic"
	nodes   int
	hosts   int
	servers int
	names   []string
	addrs   []netip.Addr
	hostIDs int // hosts have ids 1..hostIDs
	reverse string
}

// split divides n names into servers (10), nodes (up to the plan's
// maximum) and hosts (the rest).
func split(n int) (nodes, hosts, servers int) {
	servers = min(n, 10)
	nodes = min(n-servers, int(addressing.MaxNode))
	return nodes, n - servers - nodes, servers
}

// makeTestbed builds the synthetic testbed of n names in process, from the
// same spec the registry serves (everything but the key bytes is a pure
// function of it), and lists its members' names and management addresses.
func makeTestbed(n int) (*testbed, error) {
	nodes, hosts, servers := split(n)
	// One small key: setup stays fast, and DNS does not look at keys.
	specStr := fmt.Sprintf("nodes=%d,hosts=%d,servers=%d,keys=1,keybits=2048", nodes, hosts, servers)
	spec, err := registry.ParseSyntheticSpec(specStr)
	if err != nil {
		return nil, err
	}
	f, err := registry.Synthetic(spec)
	if err != nil {
		return nil, err
	}
	plan, err := addressing.New(f.MgmtPrefix)
	if err != nil {
		return nil, err
	}
	rev, err := addressing.ReverseZone(f.MgmtPrefix)
	if err != nil {
		return nil, err
	}
	tb := &testbed{spec: specStr, nodes: nodes, hosts: hosts, servers: servers, hostIDs: hosts, reverse: rev}
	add := func(kind addressing.Kind, ms []registry.FileMember) error {
		for _, m := range ms {
			e := addressing.Entity{Kind: kind, ID: m.ID}
			label, err := addressing.DNSLabel(e)
			if err != nil {
				return err
			}
			a, err := plan.Address(e)
			if m.MgmtAddr != "" {
				a, err = netip.ParseAddr(m.MgmtAddr)
			}
			if err != nil {
				return fmt.Errorf("%s: %w", e, err)
			}
			tb.names = append(tb.names, label+"."+zone)
			tb.addrs = append(tb.addrs, a)
		}
		return nil
	}
	if err := add(addressing.KindServer, f.Servers); err != nil {
		return nil, err
	}
	if err := add(addressing.KindNode, f.Nodes); err != nil {
		return nil, err
	}
	if err := add(addressing.KindHost, f.Hosts); err != nil {
		return nil, err
	}
	return tb, nil
}

// query is one line of a query file.
type query struct {
	name  string // fully qualified
	qtype uint16
	want  string // the expected answer: an address, a name, or "" for NXDOMAIN
}

func (q query) line() string {
	return strings.TrimSuffix(q.name, ".") + " " + dns.TypeToString[q.qtype]
}

// mixes are the query files -mixes chooses from.
var mixes = map[string]string{
	"mix":  "80% AAAA of existing names, 10% PTR of their addresses, 10% AAAA of nonexistent names (NXDOMAIN)",
	"aaaa": "100% AAAA of existing names",
	"ptr":  "100% PTR of existing addresses",
}

// makeQueries draws n queries of a mix (see mixes). Nonexistent names are
// half member-like names beyond the testbed, half outside the naming plan.
func makeQueries(tb *testbed, mix string, n int, seed uint64) []query {
	r := rand.New(rand.NewPCG(seed, uint64(len(tb.names))))
	qs := make([]query, 0, n)
	for i := range n {
		k := r.IntN(len(tb.names))
		p := r.IntN(100)
		switch mix {
		case "aaaa":
			p = 0
		case "ptr":
			p = 80
		}
		switch {
		case p < 80:
			qs = append(qs, query{tb.names[k], dns.TypeAAAA, tb.addrs[k].String()})
		case p < 90:
			qs = append(qs, query{addressing.PTRName(tb.addrs[k]), dns.TypePTR, tb.names[k]})
		case i%2 == 0:
			qs = append(qs, query{fmt.Sprintf("host-%d.%s", tb.hostIDs+1+r.IntN(1<<20), zone), dns.TypeAAAA, ""})
		default:
			qs = append(qs, query{fmt.Sprintf("nx-%d.%s", r.IntN(1<<30), zone), dns.TypeAAAA, ""})
		}
	}
	return qs
}

func writeLines(path string, lines func(w *bufio.Writer)) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	w := bufio.NewWriter(f)
	lines(w)
	if err := w.Flush(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// freePort returns a port free for both TCP and UDP on 127.0.0.1 a moment
// ago (DNS servers listen on both).
func freePort() (int, error) {
	for range 20 {
		p, err := vtb.FreePort()
		if err != nil {
			return 0, err
		}
		c, err := net.ListenPacket("udp", fmt.Sprintf("127.0.0.1:%d", p))
		if err == nil {
			c.Close()
			return p, nil
		}
	}
	return 0, errors.New("no port free for both TCP and UDP")
}

// proc is a process this program started, with its output in a file.
type proc struct {
	name string
	cmd  *exec.Cmd
	log  string
	done chan struct{}
}

// start runs name args..., pinned to cpu unless cpu < 0, output to
// dir/<label>.log.
func start(dir, label string, cpu int, name string, args ...string) (*proc, error) {
	logPath := filepath.Join(dir, label+".log")
	lf, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	defer lf.Close()
	if cpu >= 0 {
		args = append([]string{"-c", strconv.Itoa(cpu), name}, args...)
		name = "taskset" // taskset execs the command: the pid stays the server's
	}
	cmd := exec.Command(name, args...)
	cmd.Stdout, cmd.Stderr = lf, lf
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	p := &proc{name: label, cmd: cmd, log: logPath, done: make(chan struct{})}
	go func() { cmd.Wait(); close(p.done) }()
	return p, nil
}

func (p *proc) pid() int { return p.cmd.Process.Pid }

func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// stop sends SIGTERM to the process (by its pid), then SIGKILL after 5 s.
func (p *proc) stop() {
	if p.exited() {
		return
	}
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(5 * time.Second):
		p.cmd.Process.Kill()
		<-p.done
	}
}

// tail returns the last lines of the process's output, for error messages.
func (p *proc) tail() string {
	b, _ := os.ReadFile(p.log)
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > 15 {
		lines = lines[len(lines)-15:]
	}
	return strings.Join(lines, "\n")
}

// exchange sends one query over UDP (TCP if the answer is truncated).
func exchange(addr, name string, qtype uint16) (*dns.Msg, error) {
	m := new(dns.Msg)
	m.SetQuestion(name, qtype)
	c := &dns.Client{Timeout: 2 * time.Second}
	r, _, err := c.Exchange(m, addr)
	if err == nil && r.Truncated {
		c.Net = "tcp"
		r, _, err = c.Exchange(m, addr)
	}
	return r, err
}

// waitFor calls cond every 100 ms until it returns nil, timeout passes
// or p exits.
func waitFor(p *proc, timeout time.Duration, cond func() error) error {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		select {
		case <-p.done:
			cancel()
		case <-ctx.Done():
		}
	}()
	err := vtb.WaitFor(ctx, timeout, 100*time.Millisecond, cond)
	if p.exited() {
		return fmt.Errorf("%s exited:\n%s", p.name, p.tail())
	}
	if err != nil {
		return fmt.Errorf("%s does not answer: %w\n%s", p.name, err, p.tail())
	}
	return nil
}

// answers returns a cond for waitFor: the server at addr answers name
// with a record of type qtype.
func answers(addr, name string, qtype uint16) func() error {
	return func() error {
		r, err := exchange(addr, name, qtype)
		if err != nil {
			return err
		}
		if r.Rcode != dns.RcodeSuccess || len(r.Answer) == 0 {
			return fmt.Errorf("%s %s: %s, %d answers", name, dns.TypeToString[qtype], dns.RcodeToString[r.Rcode], len(r.Answer))
		}
		return nil
	}
}

// answer reduces a response to what both servers must agree on: the rcode
// and the answer section's data (no TTLs), lower case, sorted.
func answer(r *dns.Msg) string {
	var rr []string
	for _, a := range r.Answer {
		switch a := a.(type) {
		case *dns.AAAA:
			rr = append(rr, "AAAA "+a.AAAA.String())
		case *dns.PTR:
			rr = append(rr, "PTR "+strings.ToLower(a.Ptr))
		default:
			rr = append(rr, dns.TypeToString[a.Header().Rrtype])
		}
	}
	slices.Sort(rr)
	return dns.RcodeToString[r.Rcode] + " [" + strings.Join(rr, " ") + "]"
}

func expected(q query) string {
	switch {
	case q.want == "":
		return "NXDOMAIN []"
	case q.qtype == dns.TypeAAAA:
		return "NOERROR [AAAA " + q.want + "]"
	default:
		return "NOERROR [PTR " + strings.ToLower(q.want) + "]"
	}
}

// verify checks that both servers give the expected answer to a sample of
// the queries: the first, the last, one of each kind of member, and 500
// drawn from the query file.
func verify(tb *testbed, qs []query, targets []target) error {
	sample := []query{
		{tb.names[0], dns.TypeAAAA, tb.addrs[0].String()},
		{tb.names[len(tb.names)-1], dns.TypeAAAA, tb.addrs[len(tb.addrs)-1].String()},
		{addressing.PTRName(tb.addrs[0]), dns.TypePTR, tb.names[0]},
		{addressing.PTRName(tb.addrs[len(tb.addrs)-1]), dns.TypePTR, tb.names[len(tb.names)-1]},
	}
	r := rand.New(rand.NewPCG(7, 7))
	for range 500 {
		sample = append(sample, qs[r.IntN(len(qs))])
	}
	for _, q := range sample {
		want := expected(q)
		for _, t := range targets {
			m, err := exchange(t.addr, q.name, q.qtype)
			if err != nil {
				return fmt.Errorf("check %s: %s: %w", t.name, q.line(), err)
			}
			if got := answer(m); got != want {
				return fmt.Errorf("check %s: %s: got %s, want %s", t.name, q.line(), got, want)
			}
		}
	}
	return nil
}

// result is one dnsperf run.
type result struct {
	sent, completed, lost int64
	qps                   float64
	avg, min, max, stddev float64 // latency, seconds
	rcodes                string
	cpu                   float64 // server CPU time / run time
	perQuery              float64 // server CPU seconds per answered query
	perfCPU               float64 // dnsperf's CPU time / run time
	others                float64 // everything else's (user+system) CPU time / run time
}

func parseDnsperf(out string) (result, error) {
	var r result
	found := 0
	for _, l := range strings.Split(out, "\n") {
		k, v, ok := strings.Cut(strings.TrimSpace(l), ":")
		if !ok {
			continue
		}
		v = strings.TrimSpace(v)
		first := strings.Fields(v + " ")
		num := func() float64 {
			if len(first) == 0 {
				return 0
			}
			x, _ := strconv.ParseFloat(first[0], 64)
			return x
		}
		switch k {
		case "Queries sent":
			r.sent = int64(num())
			found++
		case "Queries completed":
			r.completed = int64(num())
		case "Queries lost":
			r.lost = int64(num())
			found++
		case "Response codes":
			r.rcodes = v
		case "Queries per second":
			r.qps = num()
			found++
		case "Average Latency (s)":
			r.avg = num()
			// "0.000431 (min 0.000010, max 0.003300)"
			fmt.Sscanf(strings.NewReplacer("(", "", ")", "", ",", "").Replace(v), "%g min %g max %g", &r.avg, &r.min, &r.max)
			found++
		case "Latency StdDev (s)":
			r.stddev = num()
		}
	}
	if found < 4 {
		return r, fmt.Errorf("dnsperf output not understood:\n%s", out)
	}
	return r, nil
}

// dnsperfArgs is the dnsperf command line (after taskset, when pinned).
func (c config) dnsperfArgs(port int, file string, d time.Duration, rate int) []string {
	args := []string{"-s", "127.0.0.1", "-p", strconv.Itoa(port), "-d", file,
		"-l", strconv.Itoa(int(d.Round(time.Second) / time.Second)),
		"-c", strconv.Itoa(c.clients), "-T", strconv.Itoa(c.threads), "-q", strconv.Itoa(c.outstanding)}
	if rate > 0 {
		args = append(args, "-Q", strconv.Itoa(rate))
	}
	return args
}

func (c config) dnsperfCmd(port int, file string, d time.Duration, rate int) *exec.Cmd {
	args := c.dnsperfArgs(port, file, d, rate)
	if c.pin {
		return exec.Command("taskset", append([]string{"-c", "0", "dnsperf"}, args...)...)
	}
	return exec.Command("dnsperf", args...)
}

// perf runs dnsperf once against the server p listening on port, at
// rate queries a second (0: as fast as answered).
func (c config) perf(p *proc, port int, file string, d time.Duration, rate int) (result, error) {
	cmd := c.dnsperfCmd(port, file, d, rate)
	c0, b0, t0 := treeCPU(p.pid()), machineBusy(), time.Now()
	out, err := cmd.CombinedOutput()
	c1, b1, t1 := treeCPU(p.pid()), machineBusy(), time.Now()
	if err != nil {
		return result{}, fmt.Errorf("%s: %w\n%s", strings.Join(cmd.Args, " "), err, out)
	}
	if p.exited() {
		return result{}, fmt.Errorf("%s exited during dnsperf:\n%s", p.name, p.tail())
	}
	r, err := parseDnsperf(string(out))
	wall := float64(t1.Sub(t0))
	perfCPU := cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime()
	r.cpu = float64(c1-c0) / wall
	if r.completed > 0 {
		r.perQuery = float64(c1-c0) / float64(time.Second) / float64(r.completed)
	}
	r.perfCPU = float64(perfCPU) / wall
	r.others = max(0, float64(b1-b0-(c1-c0)-perfCPU)/wall)
	return r, err
}

// treeCPU returns the user and system CPU time of pid and of every
// process below it (NSD answers in a child process).
func treeCPU(pid int) time.Duration {
	parent := map[int]int{}
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		p, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue
		}
		st := string(b)
		if i := strings.LastIndexByte(st, ')'); i >= 0 {
			if f := strings.Fields(st[i+2:]); len(f) > 1 {
				parent[p], _ = strconv.Atoi(f[1])
			}
		}
	}
	var total time.Duration
	for p := range parent {
		for q := p; q > 1; q = parent[q] {
			if q == pid {
				total += vtb.CPUTime(p)
				break
			}
		}
	}
	return total
}

// treeKB sums a /proc/PID/status field over pid and its children.
func treeKB(pid int, field string) int64 {
	total := vtb.ProcKB(pid, field)
	b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", pid, pid))
	for _, c := range strings.Fields(string(b)) {
		if n, err := strconv.Atoi(c); err == nil {
			total += treeKB(n, field)
		}
	}
	return total
}

// machineBusy returns the CPU time all processes have spent in user and
// system mode ("cpu" of /proc/stat: user, nice, system).
func machineBusy() time.Duration {
	b, _ := os.ReadFile("/proc/stat")
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	if len(f) < 4 || f[0] != "cpu" {
		return 0
	}
	var t int64
	for _, v := range f[1:4] {
		n, _ := strconv.ParseInt(v, 10, 64)
		t += n
	}
	return time.Duration(t) * time.Second / 100 // USER_HZ
}

func firstLine(name string, args ...string) string {
	out, _ := exec.Command(name, args...).CombinedOutput()
	for _, l := range strings.Split(string(out), "\n") {
		if l = strings.TrimSpace(l); l != "" {
			return l
		}
	}
	return "?"
}

func run(c config, sizes string) error {
	if c.runs < 1 || c.clients < 1 || c.threads < 1 || c.outstanding < 1 || c.queries < 10 || c.duration < time.Second {
		return errors.New("want -runs, -clients, -threads, -outstanding >= 1, -queries >= 10, -duration >= 1s")
	}
	if len(c.mixes) == 0 {
		return errors.New("-mixes: want at least one of mix, aaaa, ptr")
	}
	for _, m := range c.mixes {
		if mixes[m] == "" {
			return fmt.Errorf("-mixes: unknown %q; want mix, aaaa or ptr", m)
		}
	}
	if len(c.rates) == 0 {
		return errors.New("-rates: want at least one rate")
	}
	if len(c.servers) == 0 || c.servers[0] != "mgmtnet" {
		return errors.New("-servers: want mgmtnet first (the others are its baselines)")
	}
	tools := map[string]string{"knot": "knotd", "nsd": "nsd", "dnsmasq": "dnsmasq"}
	need := []string{"dnsperf"}
	if c.pin {
		need = append(need, "taskset")
	}
	for _, sv := range c.servers[1:] {
		tool, ok := tools[sv]
		if !ok {
			return fmt.Errorf("-servers: unknown %q; want mgmtnet, knot, nsd, dnsmasq", sv)
		}
		need = append(need, tool)
	}
	for _, tool := range need {
		if _, err := exec.LookPath(tool); err != nil {
			return fmt.Errorf("%s not found (scripts/install-deps.sh installs it): %w", tool, err)
		}
	}
	var ns []int
	for _, s := range strings.Split(sizes, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil || n < 1 || n > int(addressing.MaxNode)+1<<24+10 {
			return fmt.Errorf("-sizes %q: want positive numbers of names", s)
		}
		ns = append(ns, n)
	}
	dir, err := os.MkdirTemp("", "mgmtnet-bench-dns-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)

	uname := firstLine("uname", "-srm")
	versions := []string{"mgmtnet " + firstLine("git", "describe", "--always", "--dirty")}
	for _, sv := range c.servers[1:] {
		switch sv {
		case "knot":
			versions = append(versions, firstLine("knotd", "--version"))
		case "nsd":
			versions = append(versions, "NSD "+firstLine("nsd", "-v"))
		case "dnsmasq":
			versions = append(versions, strings.Join(strings.Fields(firstLine("dnsmasq", "--version"))[:3], " "))
		}
	}
	dnsperfVersion := "?"
	if out, _ := exec.Command("dnsperf", "-h").CombinedOutput(); true {
		for _, l := range strings.Split(string(out), "\n") {
			if v, ok := strings.CutPrefix(l, "Version "); ok {
				dnsperfVersion = strings.TrimSpace(v)
			}
		}
	}
	fmt.Printf("# DNS benchmark, %s, %s, %d CPUs: %s serving the same names\n",
		time.Now().UTC().Format("2006-01-02 15:04 UTC"), uname, runtime.NumCPU(), strings.Join(c.servers, ", "))
	fmt.Printf("# versions: %s\n", strings.Join(versions, "; "))
	cmdLine := strings.Join(c.dnsperfCmd(0, "QUERIES", c.duration, 0).Args, " ")
	cmdLine = strings.Replace(cmdLine, "-p 0", "-p PORT", 1)
	fmt.Printf("# dnsperf %s, UDP: %s [-Q RATE]\n", dnsperfVersion, cmdLine)
	if c.pin {
		fmt.Printf("# servers pinned to CPU 1 (taskset -c 1: Go sees 1 CPU, mgmtnet dns runs one UDP reader and 2 Ps; Knot and NSD set to one worker), dnsperf to CPU 0\n")
	} else {
		fmt.Printf("# not pinned: servers and dnsperf share all CPUs\n")
	}
	fmt.Printf("# %d runs of %s per server, query file and rate, interleaved (the order rotates every round), %s warm-up\n", c.runs, c.duration, c.warmup)
	if c.quiet > 0 {
		fmt.Printf("# each run waits (at most %s) until other processes use less than %.2f CPUs\n", c.quietWait, c.quiet)
	}
	fmt.Printf("# query files (%d lines, seed %d, the same for every server):\n", c.queries, c.seed)
	for _, m := range c.mixes {
		fmt.Printf("#   %-5s %s\n", m, mixes[m])
	}
	fmt.Printf("# rate: offered QPS (dnsperf -Q; max: no limit). us/q: the server's CPU time (utime+stime of it and its children, /proc) per answered query, median over the runs\n")
	fmt.Printf("# latency in ms: avg and stddev are medians over the runs, min and max over all runs; lost/sent summed over the runs\n")
	fmt.Printf("# CPU: the server's CPU time per second of run (100%% = one core); perf: dnsperf's; others: all other processes' (noise on a shared machine); RSS: VmRSS after the runs (summed over NSD's processes)\n")
	fmt.Printf("%-6s %-5s %-6s %-8s %8s %7s %7s %7s %7s %8s %15s %5s %5s %6s %7s  %s\n", "names", "file", "rate", "server", "QPS", "us/q", "avg", "stddev", "min", "max", "lost/sent", "CPU", "perf", "others", "RSS", "QPS per run")
	for _, n := range ns {
		if err := benchSize(c, n, filepath.Join(dir, strconv.Itoa(n))); err != nil {
			return fmt.Errorf("%d names: %w", n, err)
		}
	}
	return nil
}

func benchSize(c config, n int, dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	tb, err := makeTestbed(n)
	if err != nil {
		return err
	}
	serverCPU := -1
	if c.pin {
		serverCPU = 1
	}

	// The registry.
	regPort, err := vtb.FreePort()
	if err != nil {
		return err
	}
	regListen := fmt.Sprintf("127.0.0.1:%d", regPort)
	reg, err := start(dir, "registry", -1, c.bin, "registry", "serve", "--synthetic", tb.spec, "--listen", regListen)
	if err != nil {
		return err
	}
	defer reg.stop()
	regURL := "http://" + regListen + "/api/"
	if err := vtb.WaitHTTP(context.Background(), regURL, 2*time.Minute); err != nil {
		return fmt.Errorf("registry: %w\n%s", err, reg.tail())
	}

	// mgmtnet dns.
	mPort, err := freePort()
	if err != nil {
		return err
	}
	mAddr := fmt.Sprintf("127.0.0.1:%d", mPort)
	t0 := time.Now()
	mg, err := start(dir, "mgmtnet-dns", serverCPU, c.bin, "dns",
		"--registry", regURL, "--zone", zone, "--listen", mAddr,
		"--allow", "127.0.0.0/8", "--poll", "1h", "--serial-file", filepath.Join(dir, "dns.serial"))
	if err != nil {
		return err
	}
	defer mg.stop()
	if err := waitFor(mg, 2*time.Minute, answers(mAddr, zone, dns.TypeSOA)); err != nil {
		return err
	}
	ready := []string{"mgmtnet " + time.Since(t0).Round(time.Millisecond).String() + " (registry fetch included)"}
	targets := []target{{"mgmtnet", mg, mAddr, mPort}}

	// The others serve the same zones: Knot and NSD from the zone files
	// that mgmtnet transfers, dnsmasq from a hosts file of the same names.
	files := map[string]string{}
	for _, z := range []string{zone, tb.reverse} {
		f := filepath.Join(dir, strings.TrimSuffix(z, ".")+".zone")
		if err := transferTo(mAddr, z, f); err != nil {
			return err
		}
		files[z] = f
	}
	for _, sv := range c.servers[1:] {
		port, err := freePort()
		if err != nil {
			return err
		}
		addr := fmt.Sprintf("127.0.0.1:%d", port)
		var p *proc
		t0 := time.Now()
		switch sv {
		case "knot":
			p, err = startKnot(dir, serverCPU, port, files)
		case "nsd":
			p, err = startNSD(dir, serverCPU, port, files)
		case "dnsmasq":
			p, err = startDnsmasq(dir, serverCPU, port, tb)
		}
		if err != nil {
			return fmt.Errorf("%s: %w", sv, err)
		}
		defer p.stop()
		// dnsmasq has no SOA of its own for --local zones: wait for a name.
		if err := waitFor(p, 2*time.Minute, answers(addr, tb.names[len(tb.names)-1], dns.TypeAAAA)); err != nil {
			return err
		}
		ready = append(ready, sv+" "+time.Since(t0).Round(time.Millisecond).String())
		targets = append(targets, target{sv, p, addr, port})
	}

	fmt.Printf("# %d names: %d nodes, %d hosts, %d servers; zones %s and %s; ready in: %s\n",
		n, tb.nodes, tb.hosts, tb.servers, zone, tb.reverse, strings.Join(ready, ", "))
	for i, mix := range c.mixes {
		if err := c.benchMix(tb, mix, targets, filepath.Join(dir, mix+".txt"), i == 0); err != nil {
			return fmt.Errorf("%s: %w", mix, err)
		}
	}
	return nil
}

// transferTo writes the AXFR of z from addr to a zone file.
func transferTo(addr, z, path string) error {
	m := new(dns.Msg)
	m.SetAxfr(z)
	ch, err := (&dns.Transfer{}).In(m, addr)
	if err != nil {
		return fmt.Errorf("transfer %s: %w", z, err)
	}
	return writeLines(path, func(w *bufio.Writer) {
		first := true
		for env := range ch {
			if env.Error != nil {
				err = env.Error
				return
			}
			for _, rr := range env.RR {
				if rr.Header().Rrtype == dns.TypeSOA && !first {
					continue // the closing SOA
				}
				first = false
				w.WriteString(rr.String() + "\n")
			}
		}
	})
}

func startKnot(dir string, cpu, port int, files map[string]string) (*proc, error) {
	kd := filepath.Join(dir, "knot")
	if err := os.MkdirAll(kd, 0o755); err != nil {
		return nil, err
	}
	var b strings.Builder
	fmt.Fprintf(&b, "server:\n    rundir: %q\n    listen: 127.0.0.1@%d\n    udp-workers: 1\n    tcp-workers: 1\n    background-workers: 1\n", kd, port)
	fmt.Fprintf(&b, "log:\n  - target: stderr\n    any: warning\ndatabase:\n    storage: %q\n", kd)
	fmt.Fprintf(&b, "template:\n  - id: default\n    storage: %q\n    journal-content: none\n    zonefile-sync: -1\n    semantic-checks: off\nzone:\n", kd)
	for z, f := range files {
		fmt.Fprintf(&b, "  - domain: %s\n    file: %q\n", z, f)
	}
	conf := filepath.Join(kd, "knot.conf")
	if err := os.WriteFile(conf, []byte(b.String()), 0o644); err != nil {
		return nil, err
	}
	return start(dir, "knot", cpu, "knotd", "-c", conf)
}

func startNSD(dir string, cpu, port int, files map[string]string) (*proc, error) {
	nd := filepath.Join(dir, "nsd")
	if err := os.MkdirAll(nd, 0o755); err != nil {
		return nil, err
	}
	var b strings.Builder
	fmt.Fprintf(&b, "server:\n  ip-address: 127.0.0.1@%d\n  server-count: 1\n  username: \"\"\n  chroot: \"\"\n  zonesdir: %q\n", port, nd)
	fmt.Fprintf(&b, "  database: \"\"\n  rrl-ratelimit: 0\n  zonelistfile: %q\n  xfrdfile: %q\n  xfrdir: %q\n  pidfile: %q\n  logfile: %q\n  verbosity: 0\n",
		filepath.Join(nd, "zone.list"), filepath.Join(nd, "xfrd.state"), nd, filepath.Join(nd, "nsd.pid"), filepath.Join(nd, "nsd.log"))
	fmt.Fprintf(&b, "remote-control:\n  control-enable: no\n")
	for z, f := range files {
		fmt.Fprintf(&b, "zone:\n  name: %s\n  zonefile: %q\n", z, f)
	}
	conf := filepath.Join(nd, "nsd.conf")
	if err := os.WriteFile(conf, []byte(b.String()), 0o644); err != nil {
		return nil, err
	}
	return start(dir, "nsd", cpu, "nsd", "-d", "-c", conf)
}

func startDnsmasq(dir string, cpu, port int, tb *testbed) (*proc, error) {
	hostsFile := filepath.Join(dir, "hosts")
	if err := writeLines(hostsFile, func(w *bufio.Writer) {
		for i, name := range tb.names {
			fmt.Fprintf(w, "%s %s\n", tb.addrs[i], strings.TrimSuffix(name, "."))
		}
	}); err != nil {
		return nil, err
	}
	args := []string{
		"--conf-file=/dev/null", "--keep-in-foreground", "--log-facility=-",
		"--no-resolv", "--no-poll", "--no-hosts", "--addn-hosts=" + hostsFile,
		"--port=" + strconv.Itoa(port), "--listen-address=127.0.0.1", "--bind-interfaces",
		"--local=/" + strings.TrimSuffix(zone, ".") + "/", "--local=/" + strings.TrimSuffix(tb.reverse, ".") + "/",
		"--local-ttl=300", "--pid-file=" + filepath.Join(dir, "dnsmasq.pid"),
	}
	if os.Geteuid() == 0 {
		args = append(args, "--user=root", "--group=root")
	}
	return start(dir, "dnsmasq", cpu, "dnsmasq", args...)
}

// target is a server under test.
type target struct {
	name string
	p    *proc
	addr string
	port int
}

// benchMix writes the query file of mix, checks every server's answers
// to a sample of it, and runs dnsperf with it against each server at each
// rate, -runs times, interleaved, after a warm-up run if warm.
func (c config) benchMix(tb *testbed, mix string, targets []target, qfile string, warm bool) error {
	qs := makeQueries(tb, mix, c.queries, c.seed)
	if err := writeLines(qfile, func(w *bufio.Writer) {
		for _, q := range qs {
			w.WriteString(q.line() + "\n")
		}
	}); err != nil {
		return err
	}
	if err := verify(tb, qs, targets); err != nil {
		return err
	}
	if warm && c.warmup >= time.Second {
		for _, t := range targets {
			if _, err := c.perf(t.p, t.port, qfile, c.warmup, 0); err != nil {
				return err
			}
		}
	}
	n := len(tb.names)
	for _, rate := range c.rates {
		results := map[string][]result{}
		noisy := 0
		for i := range c.runs {
			order := append(slices.Clone(targets[i%len(targets):]), targets[:i%len(targets)]...)
			for _, t := range order {
				if !c.waitQuiet() {
					noisy++
				}
				r, err := c.perf(t.p, t.port, qfile, c.duration, rate)
				if err != nil {
					return err
				}
				results[t.name] = append(results[t.name], r)
			}
		}
		rateName := "max"
		if rate > 0 {
			rateName = strconv.Itoa(rate)
		}
		med := map[string]result{}
		for _, t := range targets {
			rs := results[t.name]
			m := summarize(rs)
			med[t.name] = m
			var per []string
			for _, r := range rs {
				per = append(per, strconv.FormatFloat(r.qps, 'f', 0, 64))
			}
			fmt.Printf("%-6d %-5s %-6s %-8s %8.0f %7.1f %7.3f %7.3f %7.3f %8.3f %15s %4.0f%% %4.0f%% %5.0f%% %5.1fMB  %s\n", n, mix, rateName, t.name, m.qps,
				1e6*m.perQuery, 1000*m.avg, 1000*m.stddev, 1000*m.min, 1000*m.max, fmt.Sprintf("%d/%d", m.lost, m.sent),
				100*m.cpu, 100*m.perfCPU, 100*m.others, float64(treeKB(t.p.pid(), "VmRSS"))/1024, strings.Join(per, " "))
		}
		for _, t := range targets {
			rs := results[t.name]
			fmt.Printf("%-6d %-5s %-6s %-8s rcodes (last run): %s\n", n, mix, rateName, t.name, rs[len(rs)-1].rcodes)
		}
		note := ""
		if noisy > 0 {
			note = fmt.Sprintf("; %d of %d runs started on a busy machine (see others)", noisy, len(targets)*c.runs)
		}
		var ratios []string
		for _, t := range targets[1:] {
			if rate == 0 {
				ratios = append(ratios, fmt.Sprintf("QPS mgmtnet/%s %.2fx", t.name, med["mgmtnet"].qps/med[t.name].qps))
			} else {
				ratios = append(ratios, fmt.Sprintf("CPU/query mgmtnet/%s %.2fx", t.name, med["mgmtnet"].perQuery/med[t.name].perQuery))
			}
		}
		target := "(design target: CPU/query at most Knot's, 1x or less)"
		if rate == 0 {
			target = "(max QPS is bounded by dnsperf's own core)"
		}
		fmt.Printf("%-6d %-5s %-6s %s %s%s\n", n, mix, rateName, strings.Join(ratios, ", "), target, note)
	}
	return nil
}

// waitQuiet waits until the processes other than this benchmark's use
// less than c.quiet CPUs over a second (the servers are idle between
// runs), for at most c.quietWait. It reports whether the machine got quiet.
func (c config) waitQuiet() bool {
	if c.quiet <= 0 {
		return true
	}
	deadline := time.Now().Add(c.quietWait)
	for {
		b0, t0 := machineBusy(), time.Now()
		time.Sleep(time.Second)
		if float64(machineBusy()-b0)/float64(time.Since(t0)) < c.quiet {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
	}
}

// summarize gives the median of each figure over runs (min: the least,
// max: the most, lost and sent: summed).
func summarize(rs []result) result {
	pick := func(f func(result) float64) float64 {
		v := make([]float64, len(rs))
		for i, r := range rs {
			v[i] = f(r)
		}
		slices.Sort(v)
		return v[len(v)/2]
	}
	m := result{
		qps:      pick(func(r result) float64 { return r.qps }),
		avg:      pick(func(r result) float64 { return r.avg }),
		stddev:   pick(func(r result) float64 { return r.stddev }),
		cpu:      pick(func(r result) float64 { return r.cpu }),
		perQuery: pick(func(r result) float64 { return r.perQuery }),
		perfCPU:  pick(func(r result) float64 { return r.perfCPU }),
		others:   pick(func(r result) float64 { return r.others }),
		min:      rs[0].min,
		max:      rs[0].max,
	}
	for _, r := range rs {
		m.min, m.max = min(m.min, r.min), max(m.max, r.max)
		m.lost += r.lost
		m.sent += r.sent
	}
	return m
}
