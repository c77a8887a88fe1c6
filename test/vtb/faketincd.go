package vtb

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
)

// FakeTincd is a stand-in for tincd where only its pid file matters (an
// unmanaged tincd that mgmtnet merely signals): a copy of sleep named
// "tincd", so that the pid-file check by /proc/<pid>/comm accepts it.
type FakeTincd struct {
	Cmd     *exec.Cmd
	PidFile string // <dir>/tinc.pid
}

// StartFakeTincd starts a FakeTincd in dir. With ignoreHUP the process
// ignores SIGHUP (ignored signals stay ignored across exec), so it
// survives reloads; without, a SIGHUP ends it, which shows it was sent.
// The caller kills it (Stop) when done.
func StartFakeTincd(dir string, ignoreHUP bool) (*FakeTincd, error) {
	sleep, err := exec.LookPath("sleep")
	if err != nil {
		return nil, fmt.Errorf("fake tincd: %w", err)
	}
	b, err := os.ReadFile(sleep)
	if err != nil {
		return nil, fmt.Errorf("fake tincd: %w", err)
	}
	bin := filepath.Join(dir, "tincd")
	if err := os.WriteFile(bin, b, 0o755); err != nil {
		return nil, fmt.Errorf("fake tincd: %w", err)
	}
	cmd := exec.Command(bin, "3600")
	if ignoreHUP {
		cmd = exec.Command("sh", "-c", `trap "" HUP; exec "$0" 3600`, bin)
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("fake tincd: %w", err)
	}
	f := &FakeTincd{Cmd: cmd, PidFile: filepath.Join(dir, "tinc.pid")}
	if err := os.WriteFile(f.PidFile, []byte(strconv.Itoa(cmd.Process.Pid)+"\n"), 0o644); err != nil {
		f.Stop()
		return nil, fmt.Errorf("fake tincd: %w", err)
	}
	return f, nil
}

// Stop kills the process (by the pid we started) and reaps it.
func (f *FakeTincd) Stop() {
	f.Cmd.Process.Kill()
	f.Cmd.Wait()
}
