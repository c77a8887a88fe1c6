package vtb

import (
	"context"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"testing"
)

// RequireEnv is the environment variable that turns a missing prerequisite
// (root, tincd, ip) from a skip into a failure. CI sets it: there, a skipped
// end-to-end test would be a failed promise.
const RequireEnv = "MGMTNET_REQUIRE_E2E"

// ForTest returns a lab for t. It is closed when the test ends, even when
// the test fails or the test binary is interrupted, and a failing test's
// output gets every process log. Without the prerequisites the test is
// skipped with a message naming what is missing, or fails when RequireEnv
// is set.
func ForTest(t *testing.T) *Lab {
	t.Helper()
	if testing.Short() {
		t.Skip("end-to-end test: skipped with -short")
	}
	l, err := New(filepath.Join(t.TempDir(), "lab"), t.Logf)
	if err != nil {
		if os.Getenv(RequireEnv) != "" {
			t.Fatalf("end-to-end test cannot run: %v", err)
		}
		t.Skipf("end-to-end test skipped: %v (set %s=1 to make this a failure)", err, RequireEnv)
	}
	// An interrupted test binary does not run t.Cleanup: close on SIGINT and
	// SIGTERM too.
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		select {
		case s := <-sigs:
			l.Close()
			signal.Stop(sigs)
			p, _ := os.FindProcess(os.Getpid())
			p.Signal(s)
		case <-ctx.Done():
		}
	}()
	t.Cleanup(func() {
		cancel()
		signal.Stop(sigs)
		if t.Failed() {
			t.Logf("process logs:\n%s", l.Logs())
		}
		if err := l.Close(); err != nil {
			t.Errorf("tear down the virtual testbed: %v", err)
		}
	})
	return l
}
