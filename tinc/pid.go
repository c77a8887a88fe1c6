package tinc

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// DefaultPidFile returns tinc 1.0's default pid file of a net:
// /var/run/tinc.<net>.pid.
func DefaultPidFile(net string) string { return "/var/run/tinc." + net + ".pid" }

// ErrNotRunning reports that no tincd runs for the pid file.
var ErrNotRunning = errors.New("tincd is not running")

// ReadPid returns the pid of the tincd that wrote pidFile, checking that the
// process exists and is a tincd (by /proc/<pid>/comm), so a stale pid file
// whose pid was reused never gets us to signal an unrelated process.
// tinc 1.0 writes "<pid>\n"; tinc 1.1 writes "<pid> <cookie> <host> port
// <port>": the first field is the pid in both.
func ReadPid(pidFile string) (int, error) {
	b, err := os.ReadFile(pidFile)
	if errors.Is(err, os.ErrNotExist) {
		return 0, fmt.Errorf("read pid file %s: %w", pidFile, ErrNotRunning)
	}
	if err != nil {
		return 0, fmt.Errorf("read pid file %s: %w", pidFile, err)
	}
	fields := strings.Fields(string(b))
	if len(fields) == 0 {
		return 0, fmt.Errorf("pid file %s is empty", pidFile)
	}
	pid, err := strconv.Atoi(fields[0])
	if err != nil || pid <= 1 {
		return 0, fmt.Errorf("pid file %s: %q is not a pid", pidFile, fields[0])
	}
	comm, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "comm"))
	if errors.Is(err, os.ErrNotExist) {
		return 0, fmt.Errorf("pid file %s names pid %d, which has exited: %w", pidFile, pid, ErrNotRunning)
	}
	if err != nil {
		return 0, fmt.Errorf("check pid %d from %s: %w", pid, pidFile, err)
	}
	if name := strings.TrimSpace(string(comm)); name != "tincd" {
		return 0, fmt.Errorf("pid file %s names pid %d, which is %q, not tincd: %w", pidFile, pid, name, ErrNotRunning)
	}
	return pid, nil
}

// Signal sends sig to the tincd of pidFile. SIGHUP makes tinc 1.0 re-read
// tinc.conf and the host files; it exits if tinc.conf is unreadable, so
// callers check tinc.conf first.
func Signal(pidFile string, sig syscall.Signal) (int, error) {
	pid, err := ReadPid(pidFile)
	if err != nil {
		return 0, err
	}
	if err := syscall.Kill(pid, sig); err != nil {
		return pid, fmt.Errorf("signal tincd pid %d with %s: %w", pid, sig, err)
	}
	return pid, nil
}
