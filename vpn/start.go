package vpn

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Defaults of Tincd.
const (
	DefaultTincd        = "tincd"
	DefaultStartTimeout = 10 * time.Second
	DefaultStopTimeout  = 10 * time.Second
)

// Tincd starts, signals and stops the tincd of one net, identified by its
// pid file. tinc 1.0's tincd daemonizes itself: Start runs it, and waits
// until the pid file names a running tincd.
type Tincd struct {
	// Binary is the tincd executable; default DefaultTincd (from PATH).
	Binary string
	// Net, when set, starts tincd as "tincd -n <Net>", which uses
	// /etc/tinc/<Net> and, unless PidFile says otherwise,
	// DefaultPidFile(Net). Otherwise ConfDir is given with "-c".
	Net     string
	ConfDir string
	// PidFile is the pid file tincd writes and we read. Required unless
	// Net is set.
	PidFile string
	// LogFile, when set, is passed as --logfile (otherwise tincd logs to
	// syslog).
	LogFile string
	// StartTimeout and StopTimeout bound the waits for the pid file and
	// for the exit after SIGTERM. Defaults DefaultStartTimeout and
	// DefaultStopTimeout.
	StartTimeout, StopTimeout time.Duration
}

func (t *Tincd) pidFile() string {
	if t.PidFile == "" && t.Net != "" {
		return DefaultPidFile(t.Net)
	}
	return t.PidFile
}

// Args returns tincd's arguments: "-n <net>" or "-c <dir>", then
// "--pidfile=" (unless it is the net's default) and "--logfile=" when set.
func (t *Tincd) Args() []string {
	var args []string
	if t.Net != "" {
		args = append(args, "-n", t.Net)
	} else {
		args = append(args, "-c", t.ConfDir)
	}
	if pf := t.pidFile(); pf != "" && (t.Net == "" || pf != DefaultPidFile(t.Net)) {
		args = append(args, "--pidfile="+pf)
	}
	if t.LogFile != "" {
		args = append(args, "--logfile="+t.LogFile)
	}
	return args
}

// Running returns the pid of the running tincd. When none runs the error
// wraps ErrNotRunning; a pid file that holds no pid at all (left empty by
// a power cut) counts as none.
func (t *Tincd) Running() (int, error) {
	pf := t.pidFile()
	if pf == "" {
		return 0, errors.New("tincd: no pid file configured")
	}
	pid, err := ReadPid(pf)
	if err != nil && !errors.Is(err, ErrNotRunning) && garbagePidFile(pf) {
		return 0, fmt.Errorf("%w (%v)", ErrNotRunning, err)
	}
	return pid, err
}

// garbagePidFile reports whether path exists but does not start with a
// number.
func garbagePidFile(path string) bool {
	b, err := os.ReadFile(path)
	if err != nil {
		return false
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return true
	}
	_, err = strconv.Atoi(f[0])
	return err != nil
}

// Start runs tincd and waits (up to StartTimeout) until its pid file names
// a running tincd, then returns that pid. tincd's own messages before it
// detaches (a bad tinc.conf, a missing key) are part of the error.
func (t *Tincd) Start(ctx context.Context) (int, error) {
	if pid, err := t.Running(); err == nil {
		return pid, fmt.Errorf("start tincd: already running (pid %d)", pid)
	}
	bin := t.Binary
	if bin == "" {
		bin = DefaultTincd
	}
	cmd := exec.CommandContext(ctx, bin, t.Args()...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	// The daemon child reopens its stdio on /dev/null; should it keep
	// our pipe anyway, do not wait for it forever.
	cmd.WaitDelay = 2 * time.Second
	if err := cmd.Run(); err != nil {
		return 0, fmt.Errorf("run %s: %w%s", cmd, err, outputSuffix(out.Bytes()))
	}
	timeout := t.StartTimeout
	if timeout <= 0 {
		timeout = DefaultStartTimeout
	}
	deadline := time.Now().Add(timeout)
	for {
		pid, err := t.Running()
		if err == nil {
			return pid, nil
		}
		if time.Now().After(deadline) {
			return 0, fmt.Errorf("%s exited but no tincd runs after %s (see its log): %w%s", cmd, timeout, err, outputSuffix(out.Bytes()))
		}
		select {
		case <-ctx.Done():
			return 0, fmt.Errorf("wait for tincd to start: %w", ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func outputSuffix(b []byte) string {
	s := strings.TrimSpace(string(b))
	if s == "" {
		return ""
	}
	return ": " + strings.ReplaceAll(s, "\n", "; ")
}

// Reload sends the running tincd one SIGHUP: tinc 1.0 re-reads tinc.conf
// and the host files. It exits if tinc.conf is unreadable, so callers
// check tinc.conf first.
func (t *Tincd) Reload() error {
	_, err := Signal(t.pidFile(), syscall.SIGHUP)
	return err
}

// Stop sends the running tincd SIGTERM and waits (up to StopTimeout) for
// the process to exit; tincd runs tinc-down on the way. It does not fall
// back to SIGKILL: a tincd that does not exit is an error to look at.
func (t *Tincd) Stop(ctx context.Context) error {
	pid, err := Signal(t.pidFile(), syscall.SIGTERM)
	if err != nil {
		return err
	}
	timeout := t.StopTimeout
	if timeout <= 0 {
		timeout = DefaultStopTimeout
	}
	deadline := time.Now().Add(timeout)
	for alive(pid) {
		if time.Now().After(deadline) {
			return fmt.Errorf("tincd (pid %d) has not exited %s after SIGTERM", pid, timeout)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("wait for tincd (pid %d) to exit: %w", pid, ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
	return nil
}

// Restart stops the running tincd and starts it again, returning the new
// pid. tinc 1.0 needs this to announce changed own Subnets.
func (t *Tincd) Restart(ctx context.Context) (int, error) {
	if err := t.Stop(ctx); err != nil {
		return 0, err
	}
	return t.Start(ctx)
}

// alive reports whether pid still exists as a process that is not a
// zombie. tincd daemonized itself, so it is not our child and init reaps
// it; until then /proc shows it as a zombie ("Z").
func alive(pid int) bool {
	if err := syscall.Kill(pid, 0); errors.Is(err, syscall.ESRCH) {
		return false
	}
	b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "stat"))
	if err != nil {
		return false
	}
	// /proc/<pid>/stat: "pid (comm) S ...", comm may hold spaces or ")".
	s := string(b)
	if i := strings.LastIndexByte(s, ')'); i >= 0 && i+2 < len(s) {
		return s[i+2] != 'Z' && s[i+2] != 'X'
	}
	return true
}
