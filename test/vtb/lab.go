// Package vtb builds virtual testbeds for end-to-end tests and the demo:
// network namespaces joined by veth pairs and bridges, processes (tincd,
// the registry, mgmtnet itself) started inside them, commands run in them,
// conditions waited for with a deadline, and everything torn down again,
// also when a test fails or is interrupted.
//
// Safety: every namespace and link a Lab creates is its own, named
// "mgmtnet-<pid>-<lab>-..."; nothing is created in the caller's namespace
// except the namespaces themselves; namespaces get no route to the real
// uplink; processes are stopped only by the pids the Lab started. Stale
// namespaces of an earlier test process that died are removed at New.
//
// The harness drives iproute2 (ip) and the programs under test through
// their command lines, as a person would; the product code uses netlink.
package vtb

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/vishvananda/netns"
)

// Lab is one virtual testbed: its namespaces, processes and work directory.
type Lab struct {
	ID  string // short random id, part of every name
	Dir string // work directory for configs and logs
	// Keep makes the lab outlive its creator (make demo KEEP=1): its
	// namespaces are named "mgmtnet-keep-<lab>-<name>", so that removeStale
	// leaves them alone, its processes are not killed when the creator
	// exits, and Close is not expected to be called. Set it before adding
	// namespaces. TeardownKept removes such a lab.
	Keep bool

	logf func(format string, args ...any)

	mu    sync.Mutex
	nss   []*Netns
	procs []*Proc
}

const nsPrefix = "mgmtnet-"

// New creates a lab whose files live under dir. logf receives progress
// lines (nil: discard).
func New(dir string, logf func(format string, args ...any)) (*Lab, error) {
	if logf == nil {
		logf = func(string, ...any) {}
	}
	if os.Geteuid() != 0 {
		return nil, errors.New("virtual testbed: needs root (network namespaces)")
	}
	for _, bin := range []string{"ip", "tincd"} {
		if _, err := exec.LookPath(bin); err != nil {
			return nil, fmt.Errorf("virtual testbed: %s not found on PATH (apt-get install iproute2 tinc)", bin)
		}
	}
	removeStale()
	l := &Lab{ID: fmt.Sprintf("%04x", rand.IntN(0x10000)), Dir: dir, logf: logf}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("virtual testbed: %w", err)
	}
	return l, nil
}

// removeStale deletes namespaces left by earlier test processes that have
// exited (their pid is in the name and no longer runs).
func removeStale() {
	entries, _ := os.ReadDir("/run/netns")
	for _, e := range entries {
		rest, ok := strings.CutPrefix(e.Name(), nsPrefix)
		if !ok {
			continue
		}
		pidStr, _, _ := strings.Cut(rest, "-")
		pid, err := strconv.Atoi(pidStr)
		if err != nil || pid == os.Getpid() {
			continue
		}
		if syscall.Kill(pid, 0) == nil {
			continue // its creator still runs
		}
		killNetnsProcs(e.Name())
		exec.Command("ip", "netns", "del", e.Name()).Run()
	}
}

// killNetnsProcs kills whatever still runs in a stale namespace of ours.
func killNetnsProcs(ns string) {
	out, _ := exec.Command("ip", "netns", "pids", ns).Output()
	for _, f := range strings.Fields(string(out)) {
		if pid, err := strconv.Atoi(f); err == nil && pid > 1 {
			syscall.Kill(pid, syscall.SIGKILL)
		}
	}
}

// Logf logs a progress line.
func (l *Lab) Logf(format string, args ...any) { l.logf(format, args...) }

// Netns is a network namespace of the lab.
type Netns struct {
	lab  *Lab
	Name string // short name, e.g. "server"
	Full string // the namespace's name in /run/netns
}

// AddNetns creates a namespace with its loopback up.
func (l *Lab) AddNetns(name string) (*Netns, error) {
	full := fmt.Sprintf("%s%d-%s-%s", nsPrefix, os.Getpid(), l.ID, name)
	if l.Keep {
		full = fmt.Sprintf("%skeep-%s-%s", nsPrefix, l.ID, name)
	}
	if out, err := exec.Command("ip", "netns", "add", full).CombinedOutput(); err != nil {
		return nil, fmt.Errorf("create netns %s: %w: %s", full, err, out)
	}
	n := &Netns{lab: l, Name: name, Full: full}
	l.mu.Lock()
	l.nss = append(l.nss, n)
	l.mu.Unlock()
	if _, err := n.Run(context.Background(), "ip", "link", "set", "lo", "up"); err != nil {
		return nil, err
	}
	// Keep IPv6 duplicate address detection from delaying tests.
	n.Run(context.Background(), "sysctl", "-qw", "net.ipv6.conf.all.accept_dad=0", "net.ipv6.conf.default.accept_dad=0")
	return n, nil
}

// Run runs a command in the namespace and returns its combined output.
// The error includes the output.
func (n *Netns) Run(ctx context.Context, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", n.Full}, args...)...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("%s: %s: %w: %s", n.Name, strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return string(out), nil
}

// MustRun is Run for setup steps: it returns only the error.
func (n *Netns) MustRun(args ...string) error {
	_, err := n.Run(context.Background(), args...)
	return err
}

// Bridge creates a bridge in the namespace and brings it up.
func (n *Netns) Bridge(name string) error {
	if err := n.MustRun("ip", "link", "add", name, "type", "bridge"); err != nil {
		return err
	}
	return n.MustRun("ip", "link", "set", name, "up")
}

// Connect creates a veth pair between two namespaces, named ifA in a and ifB
// in b, both up. Neither end ever exists in the caller's namespace.
func Connect(a *Netns, ifA string, b *Netns, ifB string) error {
	if err := a.MustRun("ip", "link", "add", ifA, "type", "veth", "peer", "name", ifB, "netns", b.Full); err != nil {
		return err
	}
	if err := a.MustRun("ip", "link", "set", ifA, "up"); err != nil {
		return err
	}
	return b.MustRun("ip", "link", "set", ifB, "up")
}

// Attach connects n to a bridge in the namespace of br: a veth whose end in n
// is ifName, and whose end in br's namespace (named after n) is enslaved to
// the bridge. addrs are added to ifName.
func Attach(n *Netns, ifName string, br *Netns, bridge string, addrs ...string) error {
	peer := "v-" + n.Name
	if len(peer) > 15 {
		peer = peer[:15]
	}
	return attachAs(n, ifName, peer, br, bridge, addrs...)
}

// Proc is a process the lab started.
type Proc struct {
	Name    string
	LogPath string
	cmd     *exec.Cmd
	done    chan struct{}
	err     error
}

// Start starts a long-running command in the namespace (nil: the caller's
// namespace), with stdout and stderr to <Dir>/<name>.log.
func (l *Lab) Start(n *Netns, name string, args ...string) (*Proc, error) {
	logPath := filepath.Join(l.Dir, name+".log")
	logFile, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	full := args
	if n != nil {
		full = append([]string{"ip", "netns", "exec", n.Full}, args...)
	}
	cmd := exec.Command(full[0], full[1:]...)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	// Own process group, so that a Ctrl-C on the demo reaches the harness,
	// which then stops its processes in order.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if !l.Keep {
		cmd.SysProcAttr.Pdeathsig = syscall.SIGKILL
	}
	if err := cmd.Start(); err != nil {
		logFile.Close()
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &Proc{Name: name, LogPath: logPath, cmd: cmd, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		logFile.Close()
		close(p.done)
	}()
	l.mu.Lock()
	l.procs = append(l.procs, p)
	l.mu.Unlock()
	return p, nil
}

// Pid returns the process id. "ip netns exec" execs the command, so this is
// the command's own pid.
func (p *Proc) Pid() int { return p.cmd.Process.Pid }

// Exited reports whether the process has exited.
func (p *Proc) Exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// Stop sends SIGTERM, waits up to 5 s, then SIGKILL.
func (p *Proc) Stop() error {
	if p.Exited() {
		return nil
	}
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(5 * time.Second):
		p.cmd.Process.Kill()
		<-p.done
	}
	return nil
}

// Kill sends SIGKILL and waits.
func (p *Proc) Kill() {
	if !p.Exited() {
		p.cmd.Process.Kill()
	}
	<-p.done
}

// Signal sends sig to the process.
func (p *Proc) Signal(sig syscall.Signal) error { return p.cmd.Process.Signal(sig) }

// Log returns the process's log so far.
func (p *Proc) Log() string {
	b, _ := os.ReadFile(p.LogPath)
	return string(b)
}

// Close stops every process (newest first) and deletes every namespace the
// lab created. It is safe to call more than once.
func (l *Lab) Close() error {
	l.mu.Lock()
	procs, nss := l.procs, l.nss
	l.procs, l.nss = nil, nil
	l.mu.Unlock()
	for i := len(procs) - 1; i >= 0; i-- {
		procs[i].Stop()
	}
	var errs []error
	for i := len(nss) - 1; i >= 0; i-- {
		killNetnsProcs(nss[i].Full) // anything a test started by other means
		if out, err := exec.Command("ip", "netns", "del", nss[i].Full).CombinedOutput(); err != nil {
			errs = append(errs, fmt.Errorf("delete netns %s: %w: %s", nss[i].Full, err, out))
		}
	}
	return errors.Join(errs...)
}

// TeardownKept removes every kept lab (see Keep): it kills the processes
// in their namespaces and deletes the namespaces. It returns the names of
// the namespaces it removed.
func TeardownKept() ([]string, error) {
	entries, err := os.ReadDir("/run/netns")
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, err
	}
	var removed []string
	var errs []error
	for _, e := range entries {
		if !strings.HasPrefix(e.Name(), nsPrefix+"keep-") {
			continue
		}
		killNetnsProcs(e.Name())
		if out, err := exec.Command("ip", "netns", "del", e.Name()).CombinedOutput(); err != nil {
			errs = append(errs, fmt.Errorf("delete netns %s: %w: %s", e.Name(), err, out))
			continue
		}
		removed = append(removed, e.Name())
	}
	return removed, errors.Join(errs...)
}

// Namespaces returns the lab's namespaces in creation order.
func (l *Lab) Namespaces() []*Netns {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]*Netns(nil), l.nss...)
}

// Logs returns the logs of every process, for a failing test's output.
func (l *Lab) Logs() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var b bytes.Buffer
	for _, p := range l.procs {
		fmt.Fprintf(&b, "==== %s (%s)\n%s\n", p.Name, p.LogPath, tail(p.Log(), 60))
	}
	return b.String()
}

func tail(s string, lines int) string {
	parts := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(parts) > lines {
		parts = append([]string{fmt.Sprintf("... (%d lines before)", len(parts)-lines)}, parts[len(parts)-lines:]...)
	}
	return strings.Join(parts, "\n")
}

// WaitFor calls cond every interval until it returns nil or timeout
// passes; then it returns cond's last error.
func WaitFor(ctx context.Context, timeout, interval time.Duration, cond func() error) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	for {
		err := cond()
		if err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("after %s: %w", timeout, err)
		case <-time.After(interval):
		}
	}
}

// Ping6 pings addr once from n with a one-second deadline.
func (n *Netns) Ping6(ctx context.Context, addr string) error {
	_, err := n.Run(ctx, "ping", "-6", "-n", "-c", "1", "-W", "1", addr)
	return err
}

// Do runs f on an OS thread inside the namespace, for a test's own
// sockets there (a socket keeps the namespace it was made in). The
// caller's thread never changes namespace.
//
// The thread goes back to its namespace afterwards and lives on: the
// lab's processes have Pdeathsig set, which fires when the thread that
// started them exits, and a thread locked by a goroutine that ends
// without unlocking exits, whichever thread that was. Only when going
// back fails does the thread stay locked, and so end.
func (n *Netns) Do(f func() error) error {
	c := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			runtime.UnlockOSThread()
			c <- fmt.Errorf("current netns: %w", err)
			return
		}
		defer orig.Close()
		h, err := netns.GetFromName(n.Full)
		if err != nil {
			runtime.UnlockOSThread()
			c <- fmt.Errorf("open netns %s: %w", n.Full, err)
			return
		}
		defer h.Close()
		if err := netns.Set(h); err != nil {
			runtime.UnlockOSThread()
			c <- fmt.Errorf("enter netns %s: %w", n.Full, err)
			return
		}
		err = f()
		if netns.Set(orig) == nil {
			runtime.UnlockOSThread()
		}
		c <- err
	}()
	return <-c
}
