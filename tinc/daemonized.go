package tinc

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

// Defaults of Daemonized and Foreground.
const (
	DefaultTincd        = "tincd"
	DefaultStartTimeout = 10 * time.Second
)

// Daemonized is the Controller of a tincd that daemonizes itself, as
// tinc 1.0 does unless told -D (a node's, started by node-boot): it is
// identified by its pid file. Start runs it and waits until the pid file
// names a running tincd.
type Daemonized struct {
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
	// FirmwareCommand starts tincd with the node firmware's command line,
	// "tincd --logfile -n <Net>": argv[0] is "tincd" whatever Binary's
	// path, and tincd logs to its default log file
	// (/var/log/tinc.<Net>.log). The firmware finds its tincd by that
	// line alone (its cron watchdog runs ps | grep " tincd --logfile -n
	// confine$" every 5 minutes, meant to start a tincd when none
	// matches; its stop greps for it too), so a node's tincd started any
	// other way is invisible to it. It needs Net, and neither PidFile
	// (other than the net's default) nor LogFile.
	FirmwareCommand bool
	// StartTimeout bounds the wait for the pid file; default
	// DefaultStartTimeout.
	StartTimeout time.Duration
	// KillAfter is how long Stop waits after SIGTERM before SIGKILL;
	// default DefaultKillAfter.
	KillAfter time.Duration
}

func (t *Daemonized) pidFile() string {
	if t.PidFile == "" && t.Net != "" {
		return DefaultPidFile(t.Net)
	}
	return t.PidFile
}

// Args returns tincd's arguments: "-n <net>" or "-c <dir>", then
// "--pidfile=" (unless it is the net's default) and "--logfile=" when set.
func (t *Daemonized) Args() []string {
	if t.firmwareCommand() {
		return []string{"--logfile", "-n", t.Net}
	}
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

// firmwareCommand reports whether FirmwareCommand applies: it does only
// with the settings the firmware's command line implies.
func (t *Daemonized) firmwareCommand() bool {
	return t.FirmwareCommand && t.Net != "" && t.LogFile == "" && (t.PidFile == "" || t.PidFile == DefaultPidFile(t.Net))
}

// Running returns the pid of the running tincd. When none runs the error
// wraps ErrNotRunning; a pid file that holds no pid at all (left empty by
// a power cut) counts as none.
func (t *Daemonized) Running() (int, error) {
	pf := t.pidFile()
	if pf == "" {
		return 0, errors.New("tincd: no pid file configured")
	}
	pid, err := ReadPid(pf)
	if err != nil && !errors.Is(err, ErrNotRunning) && garbagePidFile(pf) {
		return 0, fmt.Errorf("%w (%w)", ErrNotRunning, err)
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

var _ Controller = (*Daemonized)(nil)

// Start runs tincd and waits (up to StartTimeout) until its pid file names
// a running tincd (State then has its pid). tincd's own messages before it
// detaches (a bad tinc.conf, a missing key) are part of the error.
func (t *Daemonized) Start(ctx context.Context) error {
	_, err := t.start(ctx)
	return err
}

func (t *Daemonized) start(ctx context.Context) (int, error) {
	if pid, err := t.Running(); err == nil {
		return pid, fmt.Errorf("start tincd: already running (pid %d)", pid)
	}
	bin := t.Binary
	if bin == "" {
		bin = DefaultTincd
	}
	cmd := exec.CommandContext(ctx, bin, t.Args()...)
	if t.firmwareCommand() {
		cmd.Args[0] = "tincd" // what ps shows, and the firmware greps for
	}
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
// check tinc.conf first (CheckConf, or Reload the function, does).
func (t *Daemonized) Reload() error {
	if _, err := Signal(t.pidFile(), syscall.SIGHUP); err != nil {
		return fmt.Errorf("reload tincd: %w", err)
	}
	return nil
}

// Stop stops the running tincd by the stop policy (StopPid): SIGTERM,
// tinc-down runs on the way out, then SIGKILL after KillAfter (default,
// and in every caller, DefaultKillAfter: 5 s). No tincd running is not an
// error.
func (t *Daemonized) Stop(ctx context.Context) error {
	return StopByPidFile(ctx, t.pidFile(), t.KillAfter)
}

// Restart stops the running tincd and starts it again. tinc 1.0 needs
// this for a changed Name, Interface or TunnelServer, or to announce its
// own Subnets without TunnelServer.
func (t *Daemonized) Restart(ctx context.Context) error {
	if err := t.Stop(ctx); err != nil {
		return err
	}
	return t.Start(ctx)
}

// State reports the tincd of the pid file: Managed, since Start and Stop
// work, and its pid when it runs.
func (t *Daemonized) State() State {
	pid, err := t.Running()
	return State{Managed: true, Pid: pid, Running: err == nil}
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
