package tinc

import (
	"context"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"syscall"
	"testing"
)

// TestForegroundCapsOpenFiles: whatever this process's limit, the tincd
// Foreground starts runs with RLIMIT_NOFILE at most 1024, soft and hard
// (tinc 1.0's select() aborts at fd 1024 under a higher one).
func TestForegroundCapsOpenFiles(t *testing.T) {
	var old syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &old); err != nil {
		t.Fatal(err)
	}
	raised := old
	raised.Cur = raised.Max // as a root shell or a container may have it
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &raised); err != nil {
		t.Fatal(err)
	}
	defer syscall.Setrlimit(syscall.RLIMIT_NOFILE, &old)
	if raised.Cur <= MaxFiles {
		t.Logf("this process's hard limit is %d: the cap is checked without a higher limit to lower", raised.Max)
	}
	// A stand-in tincd: it ignores tincd's arguments and waits.
	bin := filepath.Join(t.TempDir(), "tincd")
	if err := os.WriteFile(bin, []byte("#!/bin/sh\nexec sleep 60\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	f := Foreground{Binary: bin, ConfDir: t.TempDir()}
	p, err := f.Start()
	if err != nil {
		t.Fatal(err)
	}
	defer p.Stop(context.Background(), DefaultKillAfter)
	b, err := os.ReadFile("/proc/" + strconv.Itoa(p.Pid()) + "/limits")
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`Max open files\s+(\d+)\s+(\d+)`).FindSubmatch(b)
	if m == nil {
		t.Fatalf("no open-files line in /proc/%d/limits:\n%s", p.Pid(), b)
	}
	soft, _ := strconv.Atoi(string(m[1]))
	hard, _ := strconv.Atoi(string(m[2]))
	if soft > MaxFiles || hard > MaxFiles {
		t.Fatalf("tincd runs with RLIMIT_NOFILE %d/%d, want at most %d", soft, hard, MaxFiles)
	}
}
