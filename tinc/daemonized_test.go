package tinc

import (
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestTincdArgs(t *testing.T) {
	tests := []struct {
		name string
		t    Daemonized
		want []string
	}{
		{"net", Daemonized{Net: "confine"}, []string{"-n", "confine"}},
		{"net, default pid file", Daemonized{Net: "confine", PidFile: "/var/run/tinc.confine.pid"}, []string{"-n", "confine"}},
		{"net, own pid file", Daemonized{Net: "confine", PidFile: "/run/x.pid"}, []string{"-n", "confine", "--pidfile=/run/x.pid"}},
		{"firmware", Daemonized{Net: "confine", FirmwareCommand: true}, []string{"--logfile", "-n", "confine"}},
		{"firmware, default pid file", Daemonized{Net: "confine", PidFile: "/var/run/tinc.confine.pid", FirmwareCommand: true}, []string{"--logfile", "-n", "confine"}},
		{"firmware needs the defaults", Daemonized{Net: "confine", PidFile: "/run/x.pid", FirmwareCommand: true}, []string{"-n", "confine", "--pidfile=/run/x.pid"}},
		{"dir", Daemonized{ConfDir: "/tmp/t", PidFile: "/tmp/t/tinc.pid", LogFile: "/tmp/t/tinc.log"},
			[]string{"-c", "/tmp/t", "--pidfile=/tmp/t/tinc.pid", "--logfile=/tmp/t/tinc.log"}},
	}
	for _, tt := range tests {
		if d := cmp.Diff(tt.want, tt.t.Args()); d != "" {
			t.Errorf("%s (-want +got):\n%s", tt.name, d)
		}
	}
}

func TestTincdRunning(t *testing.T) {
	dir := t.TempDir()
	pf := filepath.Join(dir, "tinc.pid")
	td := &Daemonized{ConfDir: dir, PidFile: pf}
	for _, tt := range []struct {
		name    string
		content string // "" for no file
		notRun  bool
	}{
		{"no pid file", "", true},
		{"empty after a power cut", "\n", true},
		{"garbage", "xyz\n", true},
		{"our own pid is not tincd", strconv.Itoa(os.Getpid()) + "\n", true},
		{"pid 1 is refused: an error, not \"not running\"", "1\n", false},
	} {
		os.Remove(pf)
		if tt.content != "" {
			os.WriteFile(pf, []byte(tt.content), 0o644)
		}
		_, err := td.Running()
		if err == nil || errors.Is(err, ErrNotRunning) != tt.notRun {
			t.Errorf("%s: err = %v, want not-running %v", tt.name, err, tt.notRun)
		}
	}
}

func TestTincdStartFails(t *testing.T) {
	dir := t.TempDir()
	td := &Daemonized{Binary: "/bin/sh", ConfDir: dir, PidFile: filepath.Join(dir, "tinc.pid")}
	// "sh -c DIR ..." fails (no such command) and prints why.
	err := td.Start(t.Context())
	if err == nil || !strings.Contains(err.Error(), "exit status") {
		t.Errorf("err = %v", err)
	}
	if err := td.Reload(); !errors.Is(err, ErrNotRunning) {
		t.Errorf("Reload: %v", err)
	}
	// The one stop policy: stopping a tincd that does not run is not an
	// error, so Restart goes on to Start, which fails as above.
	if err := td.Restart(t.Context()); err == nil || !strings.Contains(err.Error(), "exit status") {
		t.Errorf("Restart: %v", err)
	}
	if err := td.Stop(t.Context()); err != nil {
		t.Errorf("Stop of no tincd: %v", err)
	}
}
