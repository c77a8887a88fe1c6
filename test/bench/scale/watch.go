package main

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"regexp"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/confine-project/mgmtnet/tinc"
)

// tinc 1.0 logs these at -d1 (protocol_auth.c, net.c), with the peer's
// name and the connection's address, "(10.242.1.1 port 41955)". A
// connection is up from its activation to its closing; the address tells
// two connections with the same peer apart (two gateways that dial each
// other each close one of the two, in either order).
var (
	activatedRE = regexp.MustCompile(`Connection with (\w+) \(([^)]*)\) activated`)
	closingRE   = regexp.MustCompile(`Closing connection with (\S+) \(([^)]*)\)`)
	// net_socket.c logs this once per second in which more than 10
	// connections arrived; the rest of that second's are tarpitted.
	throttleRE = regexp.MustCompile(`Throttling incoming connections`)
)

// logWatch follows a tincd log file and keeps, per peer name, its meta
// connections that are up (by address), and how many of those closed.
type logWatch struct {
	path    string
	off     int64
	partial []byte
	up      map[string]map[string]bool
	closed  map[string]int
	// throttled counts the seconds in which tincd tarpitted connections.
	throttled int
}

func newLogWatch(path string) *logWatch {
	return &logWatch{path: path, up: map[string]map[string]bool{}, closed: map[string]int{}}
}

// poll reads what was appended since the last poll.
func (w *logWatch) poll() {
	f, err := os.Open(w.path)
	if err != nil {
		return // not created yet
	}
	defer f.Close()
	if _, err := f.Seek(w.off, io.SeekStart); err != nil {
		return
	}
	b, err := io.ReadAll(f)
	if err != nil || len(b) == 0 {
		return
	}
	w.off += int64(len(b))
	b = append(w.partial, b...)
	end := bytes.LastIndexByte(b, '\n')
	if end < 0 {
		w.partial = b
		return
	}
	w.partial = append([]byte(nil), b[end+1:]...)
	for _, line := range strings.Split(string(b[:end]), "\n") {
		if m := activatedRE.FindStringSubmatch(line); m != nil {
			if w.up[m[1]] == nil {
				w.up[m[1]] = map[string]bool{}
			}
			w.up[m[1]][m[2]] = true
		} else if m := closingRE.FindStringSubmatch(line); m != nil {
			if w.up[m[1]][m[2]] { // a drop, not a failed attempt
				delete(w.up[m[1]], m[2])
				w.closed[m[1]]++
			}
		} else if throttleRE.MatchString(line) {
			w.throttled++
		}
	}
}

// upTo reports whether the connections to every name are up.
func (w *logWatch) upTo(names []string) bool {
	for _, n := range names {
		if len(w.up[n]) == 0 {
			return false
		}
	}
	return true
}

// count returns the number of peers whose connection is up.
func (w *logWatch) count() int {
	n := 0
	for _, conns := range w.up {
		if len(conns) > 0 {
			n++
		}
	}
	return n
}

// closedTotal returns the number of dropped connections, except those
// with the peers skip reports.
func (w *logWatch) closedTotal(skip func(peer string) bool) int {
	n := 0
	for peer, c := range w.closed {
		if !skip(peer) {
			n += c
		}
	}
	return n
}

// graphSize returns the node and edge counts of the last SIGUSR2 dump in
// a tinc 1.0 log (dump_nodes, dump_edges: one line per entry between
// "Nodes:" and "End of nodes.", "Edges:" and "End of edges."); -1 when
// there is none.
func graphSize(log string) (nodes, edges int) {
	count := func(begin, end string) int {
		i := strings.LastIndex(log, begin)
		if i < 0 {
			return -1
		}
		j := strings.Index(log[i:], end)
		if j < 0 {
			return -1
		}
		return strings.Count(log[i:i+j], "\n") - 1
	}
	return count(": Nodes:\n", ": End of nodes."), count(": Edges:\n", ": End of edges.")
}

// cpuTime returns the time pid has run on a CPU, from the first field of
// /proc/<pid>/schedstat (ns; tinc 1.0 is single-threaded).
func cpuTime(pid int) (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/schedstat", pid))
	if err != nil {
		return 0, fmt.Errorf("cpu time of %d: %w", pid, err)
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return 0, fmt.Errorf("cpu time of %d: empty schedstat", pid)
	}
	ns, err := strconv.ParseInt(f[0], 10, 64)
	if err != nil {
		return 0, fmt.Errorf("cpu time of %d: %w", pid, err)
	}
	return time.Duration(ns), nil
}

// capFiles lowers pid's RLIMIT_NOFILE, soft and hard, to tinc.MaxFiles
// at most, as tinc.Foreground does for a managed tincd: tinc 1.0 uses
// select(), and FD_SET on a descriptor of 1024 or more aborts it.
func capFiles(pid int) error {
	var l unix.Rlimit
	if err := unix.Prlimit(pid, unix.RLIMIT_NOFILE, nil, &l); err != nil {
		return fmt.Errorf("read open files limit of %d: %w", pid, err)
	}
	l.Cur, l.Max = min(l.Cur, tinc.MaxFiles), min(l.Max, tinc.MaxFiles)
	if err := unix.Prlimit(pid, unix.RLIMIT_NOFILE, &l, nil); err != nil {
		return fmt.Errorf("limit open files of %d: %w", pid, err)
	}
	return nil
}

// machine describes the host for the report.
func machine() string {
	var u unix.Utsname
	unix.Uname(&u)
	model := "?"
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if k, v, ok := strings.Cut(l, ":"); ok && strings.TrimSpace(k) == "model name" {
				model = strings.TrimSpace(v)
				break
			}
		}
	}
	var si unix.Sysinfo_t
	unix.Sysinfo(&si)
	return fmt.Sprintf("Linux %s, %s, %d CPUs, %.1f GiB RAM", unix.ByteSliceToString(u.Release[:]), model,
		numCPU(), float64(si.Totalram)*float64(si.Unit)/(1<<30))
}

// cpuIdle returns the machine's idle and total CPU time so far, in
// clock ticks, from the first line of /proc/stat.
func cpuIdle() (idle, total uint64, err error) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, 0, fmt.Errorf("read cpu times: %w", err)
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	if len(f) < 5 || f[0] != "cpu" {
		return 0, 0, fmt.Errorf("read cpu times: unexpected /proc/stat line %q", line)
	}
	for i, s := range f[1:] {
		v, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			return 0, 0, fmt.Errorf("read cpu times: %w", err)
		}
		total += v
		if i == 3 || i == 4 { // idle, iowait
			idle += v
		}
	}
	return idle, total, nil
}
