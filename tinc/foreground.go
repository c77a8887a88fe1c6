package tinc

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// MaxFiles is the RLIMIT_NOFILE Foreground gives tincd. tinc 1.0 waits
// with select(), which holds fds below FD_SETSIZE (1024) only: Debian's
// fortified build aborts ("bit out of range 0 - FD_SETSIZE on fd_set")
// the moment a meta connection gets fd 1024 under a higher limit, taking
// the gateway down for every node. At 1024, accept() fails there instead
// and tincd lives on.
const MaxFiles = 1024

// Foreground runs tincd in the foreground ("tincd -c DIR -D") as a child of
// this process, for a daemon that supervises it. tincd then logs to its
// stderr, which Foreground hands over line by line.
type Foreground struct {
	// Binary is the tincd executable; default DefaultTincd.
	Binary string
	// ConfDir is the tinc net directory, given with "-c".
	ConfDir string
	// PidFile, when set, is passed as --pidfile.
	PidFile string
	// Line, when set, is called with each line tincd writes to stderr or
	// stdout, from a goroutine of the Process. It must not block for long.
	Line func(line string)
}

// Args returns tincd's arguments: "-c DIR -D -d 1" and "--pidfile=" when
// set. Debug level 1 (tinc's CONNECTIONS) is what makes tinc 1.0 log
// "Connection with X (...) activated" and "Closing connection with X",
// from which the gateway knows its peers.
func (f *Foreground) Args() []string {
	args := []string{"-c", f.ConfDir, "-D", "-d", "1"}
	if f.PidFile != "" {
		args = append(args, "--pidfile="+f.PidFile)
	}
	return args
}

// Process is one running tincd started by Foreground.Start.
type Process struct {
	cmd  *exec.Cmd
	done chan struct{}
	err  error
}

// Start starts tincd. It returns once the process runs; Done reports its
// exit.
func (f *Foreground) Start() (*Process, error) {
	bin := f.Binary
	if bin == "" {
		bin = DefaultTincd
	}
	cmd := exec.Command(bin, f.Args()...)
	r, w, err := os.Pipe()
	if err != nil {
		return nil, fmt.Errorf("start %s: %w", bin, err)
	}
	cmd.Stdout, cmd.Stderr = w, w
	// Our own SIGINT (a terminal's ^C) must not reach tincd before we stop
	// it in order.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		r.Close()
		w.Close()
		return nil, fmt.Errorf("start %s: %w", cmd, err)
	}
	w.Close()
	// Set at once, before tincd has accepted anything: the limit holds for
	// every fd it opens after its first few.
	if err := capFiles(cmd.Process.Pid); err != nil {
		cmd.Process.Kill()
		cmd.Wait()
		r.Close()
		return nil, fmt.Errorf("start %s: limit its open files to %d: %w", bin, MaxFiles, err)
	}
	p := &Process{cmd: cmd, done: make(chan struct{})}
	lines := make(chan struct{})
	go func() {
		defer close(lines)
		defer r.Close()
		sc := bufio.NewScanner(r)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			if f.Line != nil {
				f.Line(sc.Text())
			}
		}
		// A too long line ends the scan; keep draining so tincd never
		// blocks on a full pipe.
		io.Copy(io.Discard, r)
	}()
	go func() {
		err := cmd.Wait()
		// A descendant of a tinc-up or host-up script may keep the pipe
		// open: give the reader a moment, then close it so Stop never hangs.
		select {
		case <-lines:
		case <-time.After(2 * time.Second):
			r.Close()
			<-lines
		}
		if err != nil {
			p.err = fmt.Errorf("tincd (pid %d) exited: %w", cmd.Process.Pid, err)
		} else {
			p.err = fmt.Errorf("tincd (pid %d) exited", cmd.Process.Pid)
		}
		close(p.done)
	}()
	return p, nil
}

// Pid returns the process id.
func (p *Process) Pid() int { return p.cmd.Process.Pid }

// Done is closed when the process has exited and its output is read.
func (p *Process) Done() <-chan struct{} { return p.done }

// Err says how the process exited; valid once Done is closed.
func (p *Process) Err() error { return p.err }

// Running reports whether the process has not exited yet.
func (p *Process) Running() bool {
	select {
	case <-p.done:
		return false
	default:
		return true
	}
}

// Signal sends sig to the process if it still runs.
func (p *Process) Signal(sig syscall.Signal) error {
	if !p.Running() {
		return fmt.Errorf("signal tincd with %s: %w", sig, ErrNotRunning)
	}
	if err := p.cmd.Process.Signal(sig); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("signal tincd pid %d with %s: %w", p.Pid(), sig, err)
	}
	return nil
}

// Stop stops the process by the stop policy (StopPid): SIGTERM, then
// SIGKILL after killAfter (default DefaultKillAfter). It returns nil once
// the process is gone.
func (p *Process) Stop(ctx context.Context, killAfter time.Duration) error {
	if !p.Running() {
		return nil
	}
	return StopPid(ctx, p.Pid(), killAfter, func() bool { return !p.Running() })
}

// capFiles lowers pid's RLIMIT_NOFILE, soft and hard, to MaxFiles at most.
func capFiles(pid int) error {
	var l unix.Rlimit
	if err := unix.Prlimit(pid, unix.RLIMIT_NOFILE, nil, &l); err != nil {
		return err
	}
	l.Cur, l.Max = min(l.Cur, MaxFiles), min(l.Max, MaxFiles)
	return unix.Prlimit(pid, unix.RLIMIT_NOFILE, &l, nil)
}
