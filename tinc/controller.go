package tinc

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"syscall"
	"time"

	"github.com/confine-project/mgmtnet/tincgen"
)

// Controller is one tincd as its owner drives it.
type Controller interface {
	// Start starts tincd; it is an error when one runs already. For a
	// PidFile controller it does nothing.
	Start(ctx context.Context) error
	// Reload sends tincd one SIGHUP. The caller checks tinc.conf first
	// (Reload the function does): tincd exits on SIGHUP when it cannot
	// read it.
	Reload() error
	// Restart stops tincd and starts it again: tinc 1.0 picks up a new
	// Name, TunnelServer, or (without TunnelServer) its own Subnets only
	// this way. For a PidFile controller it is ErrUnmanaged.
	Restart(ctx context.Context) error
	// Stop stops tincd by the stop policy (StopPid). No tincd running is
	// not an error. For a PidFile controller it does nothing.
	Stop(ctx context.Context) error
	// State reports whether tincd runs.
	State() State
}

// State is what status reports about a tincd.
type State struct {
	// Managed is set when this Controller starts and stops tincd.
	Managed bool `json:"managed"`
	Pid     int  `json:"pid"`
	Running bool `json:"running"`
}

// ErrUnmanaged is a PidFile controller's answer to Restart.
var ErrUnmanaged = errors.New("tincd is not managed by mgmtnet: restart it by hand")

// DefaultKillAfter is how long a stop waits after SIGTERM before it sends
// SIGKILL.
const DefaultKillAfter = 5 * time.Second

// PidFile is the Controller of a tincd that someone else runs (an init
// script, systemd): it only signals the tincd its pid file names, and
// never starts or stops it.
type PidFile string

var _ Controller = PidFile("")

// Start does nothing: this tincd is not ours to start.
func (PidFile) Start(context.Context) error { return nil }

// Stop does nothing: this tincd is not ours to stop.
func (PidFile) Stop(context.Context) error { return nil }

// Restart is ErrUnmanaged.
func (PidFile) Restart(context.Context) error { return fmt.Errorf("restart tincd: %w", ErrUnmanaged) }

// Reload sends the tincd one SIGHUP.
func (p PidFile) Reload() error {
	if _, err := Signal(string(p), syscall.SIGHUP); err != nil {
		return fmt.Errorf("reload tincd: %w", err)
	}
	return nil
}

// State reports the tincd of the pid file.
func (p PidFile) State() State {
	pid, err := ReadPid(string(p))
	return State{Pid: pid, Running: err == nil}
}

// StopPid is the stop policy: SIGTERM (tincd runs tinc-down and exits),
// wait up to killAfter (default DefaultKillAfter) for gone to report the
// process gone, then SIGKILL and wait again. It returns nil once the
// process is gone, also when it had to be killed (the kill is in the
// error only when even SIGKILL did not end it before ctx ended).
func StopPid(ctx context.Context, pid int, killAfter time.Duration, gone func() bool) error {
	if killAfter <= 0 {
		killAfter = DefaultKillAfter
	}
	if err := syscall.Kill(pid, syscall.SIGTERM); err != nil {
		if errors.Is(err, syscall.ESRCH) {
			return nil
		}
		return fmt.Errorf("stop tincd (pid %d): %w", pid, err)
	}
	if waitGone(ctx, time.Now().Add(killAfter), gone) {
		return nil
	}
	syscall.Kill(pid, syscall.SIGKILL)
	if waitGone(ctx, time.Time{}, gone) {
		return nil
	}
	return fmt.Errorf("stop tincd (pid %d): still there after SIGTERM and SIGKILL: %w", pid, context.Cause(ctx))
}

// waitGone polls gone until it reports true (true), the deadline passes or
// ctx ends (false). A zero deadline waits for ctx only.
func waitGone(ctx context.Context, deadline time.Time, gone func() bool) bool {
	for {
		if gone() {
			return true
		}
		if !deadline.IsZero() && time.Now().After(deadline) {
			return false
		}
		select {
		case <-ctx.Done():
			return gone()
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// StopByPidFile stops the tincd that pidFile names by the stop policy.
// No tincd running is not an error.
func StopByPidFile(ctx context.Context, pidFile string, killAfter time.Duration) error {
	pid, err := ReadPid(pidFile)
	if errors.Is(err, ErrNotRunning) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("stop tincd: %w", err)
	}
	return StopPid(ctx, pid, killAfter, func() bool { return !alive(pid) })
}

// CheckConf reads and parses dir/tinc.conf: tincd exits on SIGHUP when it
// cannot, so nothing signals it before this passes.
func CheckConf(dir string) error {
	conf := filepath.Join(dir, "tinc.conf")
	b, err := tincgen.ReadRegularFile(conf)
	if err == nil {
		_, err = tincgen.ParseConf(b)
		if err != nil {
			err = fmt.Errorf("%s: %w", conf, err)
		}
	}
	if err != nil {
		return fmt.Errorf("reload tincd: not signalling, tincd would exit: %w", err)
	}
	return nil
}

// Reload checks dir's tinc.conf (CheckConf), then sends c one SIGHUP.
func Reload(dir string, c Controller) error {
	if err := CheckConf(dir); err != nil {
		return err
	}
	return c.Reload()
}
