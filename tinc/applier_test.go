package tinc

import (
	"bufio"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/confine-project/mgmtnet/tincgen"
)

// fakeCtl is a strict fake Controller that records its calls.
type fakeCtl struct {
	running bool
	managed bool
	fail    error // returned by the next call that changes something
	calls   []string
}

func (f *fakeCtl) do(name string) error {
	f.calls = append(f.calls, name)
	err := f.fail
	f.fail = nil
	return err
}

func (f *fakeCtl) Start(context.Context) error {
	if f.running {
		return errors.New("already running")
	}
	if err := f.do("start"); err != nil {
		return err
	}
	f.running = true
	return nil
}

func (f *fakeCtl) Reload() error { return f.do("hup") }

func (f *fakeCtl) Restart(context.Context) error {
	if !f.managed {
		f.calls = append(f.calls, "restart")
		return ErrUnmanaged
	}
	return f.do("restart")
}

func (f *fakeCtl) Stop(context.Context) error { f.running = false; return f.do("stop") }
func (f *fakeCtl) State() State               { return State{Managed: f.managed, Running: f.running} }

func writeConf(t *testing.T, dir, conf string) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(dir, "tinc.conf"), []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestApplierDeliver(t *testing.T) {
	ctx := t.Context()
	dir := t.TempDir()
	writeConf(t, dir, "Name = gw\n")
	ctl := &fakeCtl{running: true, managed: true}
	a := &Applier{Dir: dir, Ctl: ctl}

	// Nothing pending: nothing sent.
	if done, _, err := a.Deliver(ctx); err != nil || done != ActionNone {
		t.Fatalf("idle Deliver = %v, %v", done, err)
	}
	// Reload and Restart merge into Restart.
	a.Need(ActionReload)
	a.Need(ActionRestart)
	a.Need(ActionReload)
	if done, _, err := a.Deliver(ctx); err != nil || done != ActionRestart {
		t.Fatalf("Deliver = %v, %v; want restart", done, err)
	}
	// A failed SIGHUP stays pending and is sent again.
	a.Need(ActionReload)
	ctl.fail = errors.New("signal failed")
	if _, _, err := a.Deliver(ctx); err == nil {
		t.Fatal("failed SIGHUP: no error")
	}
	if a.Pending() != ActionReload {
		t.Fatalf("pending after failure = %v", a.Pending())
	}
	if done, _, err := a.Deliver(ctx); err != nil || done != ActionReload {
		t.Fatalf("retry = %v, %v", done, err)
	}
	// A tinc.conf tincd cannot read: no signal, the reload stays pending.
	writeConf(t, dir, "Name = \n")
	a.Need(ActionReload)
	_, _, err := a.Deliver(ctx)
	if err == nil || !strings.Contains(err.Error(), "not signalling, tincd would exit") {
		t.Fatalf("bad tinc.conf: err = %v", err)
	}
	if a.Pending() != ActionReload {
		t.Fatalf("pending after a bad tinc.conf = %v", a.Pending())
	}
	want := "restart hup hup"
	if got := strings.Join(ctl.calls, " "); got != want {
		t.Fatalf("calls = %q, want %q", got, want)
	}
	// A stopped tincd needs nothing (it reads the files at start) ...
	writeConf(t, dir, "Name = gw\n")
	ctl.running = false
	if done, started, err := a.Deliver(ctx); err != nil || done != ActionNone || started {
		t.Fatalf("stopped = %v %v %v", done, started, err)
	}
	if a.Pending() != ActionNone {
		t.Fatalf("pending = %v", a.Pending())
	}
	// ... unless the applier starts it (a node's boot).
	a.StartStopped = true
	a.Need(ActionReload)
	if done, started, err := a.Deliver(ctx); err != nil || done != ActionNone || !started {
		t.Fatalf("StartStopped = %v %v %v", done, started, err)
	}
	// Someone else's tincd cannot be restarted: said, and not retried.
	u := &Applier{Dir: dir, Ctl: &fakeCtl{running: true}}
	u.Need(ActionRestart)
	if _, _, err := u.Deliver(ctx); !errors.Is(err, ErrUnmanaged) {
		t.Fatalf("unmanaged restart: %v", err)
	}
	if u.Pending() != ActionNone {
		t.Fatalf("unmanaged pending = %v", u.Pending())
	}
}

func TestApplierSync(t *testing.T) {
	dir := t.TempDir()
	a := &Applier{Dir: dir, Ctl: &fakeCtl{}}
	files := tincgen.Files{"node_1": []byte("Subnet = fd00::/64\n")}
	if err := os.Mkdir(a.HostsDir(), 0o755); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Sync(files, syncOpts(true)); err != nil || a.Pending() != ActionNone {
		t.Fatalf("dry run: pending %v, err %v", a.Pending(), err)
	}
	if _, err := a.Sync(files, syncOpts(false)); err != nil || a.Pending() != ActionReload {
		t.Fatalf("write: pending %v, err %v", a.Pending(), err)
	}
	a.pending = ActionNone
	if _, err := a.Sync(files, syncOpts(false)); err != nil || a.Pending() != ActionNone {
		t.Fatalf("unchanged: pending %v, err %v", a.Pending(), err)
	}
}

// TestStopPidKills: a process that ignores SIGTERM is killed after
// killAfter, and StopPid returns once it is gone.
func TestStopPidKills(t *testing.T) {
	cmd := exec.Command("/bin/sh", "-c", "trap '' TERM; echo ready; while :; do sleep 0.05; done")
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	t.Cleanup(func() { cmd.Process.Kill(); <-exited })
	// The shell has its trap once it says so.
	if _, err := bufio.NewReader(out).ReadString('\n'); err != nil {
		t.Fatal(err)
	}
	gone := func() bool {
		select {
		case <-exited:
			return true
		default:
			return false
		}
	}
	if err := StopPid(t.Context(), cmd.Process.Pid, 100*time.Millisecond, gone); err != nil {
		t.Fatal(err)
	}
	if !gone() {
		t.Fatal("still running")
	}
	if ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); !ok || ws.Signal() != syscall.SIGKILL {
		t.Fatalf("ended by %v, want SIGKILL", cmd.ProcessState)
	}
}

func syncOpts(dry bool) tincgen.SyncOptions { return tincgen.SyncOptions{DryRun: dry} }
