package gateway

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// syncBuffer is a bytes.Buffer safe for a logger and a test to share.
type syncBuffer struct {
	mu chan struct{}
	b  bytes.Buffer
}

func newSyncBuffer() *syncBuffer { return &syncBuffer{mu: make(chan struct{}, 1)} }

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu <- struct{}{}
	defer func() { <-s.mu }()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu <- struct{}{}
	defer func() { <-s.mu }()
	return s.b.String()
}

// TestDaemonFIFOInHostsDir: a FIFO swapped in for a member's host file,
// and one with an owned name that is not a member, while the daemon runs:
// the daemon neither hangs nor opens them, replaces the first, removes
// the second, logs both, and keeps answering.
func TestDaemonFIFOInHostsDir(t *testing.T) {
	r := newRig(t, testFile(t, 3))
	logs := newSyncBuffer()
	r.log = slog.New(slog.NewTextHandler(logs, nil))
	r.start()
	r.wait(EventSynced)
	r.poll() // past the drain of the first sync's own file events
	want, err := os.ReadFile(r.hostFile("node_2"))
	if err != nil {
		t.Fatal(err)
	}
	r.tincd.take()

	// A FIFO made aside (an invalid tinc name: no event of interest) and
	// renamed over node_2, and a FIFO named node_99.
	tmp := filepath.Join(r.cfg.HostsDir(), ".fifo")
	if err := syscall.Mkfifo(tmp, 0o644); err != nil {
		t.Skipf("cannot make a FIFO: %v", err)
	}
	if err := os.Rename(tmp, r.hostFile("node_2")); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mkfifo(r.hostFile("node_99"), 0o644); err != nil {
		t.Fatal(err)
	}
	r.wait(EventRepaired)

	// The loop still answers, through the API and the status socket.
	s := r.poll()
	if s.LastError != "" {
		t.Errorf("last_error %q", s.LastError)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	raw, err := QueryStatus(ctx, r.cfg.StatusSocket)
	if err != nil {
		t.Fatal(err)
	}
	var st Status
	if err := json.Unmarshal(raw, &st); err != nil || st.Members.Nodes != 3 {
		t.Errorf("status socket: %v, %+v", err, st.Members)
	}

	fi, err := os.Lstat(r.hostFile("node_2"))
	if err != nil || !fi.Mode().IsRegular() {
		t.Fatalf("node_2 not repaired into a regular file: %v %v", fi, err)
	}
	if got, _ := os.ReadFile(r.hostFile("node_2")); !bytes.Equal(got, want) {
		t.Errorf("node_2 after repair:\n%s\nwant:\n%s", got, want)
	}
	if _, err := os.Lstat(r.hostFile("node_99")); !os.IsNotExist(err) {
		t.Errorf("FIFO node_99 not removed: %v", err)
	}
	if got := r.tincd.take(); got != "reload" {
		t.Errorf("repair: tincd calls %q, want one reload", got)
	}
	for _, name := range []string{"node_2", "node_99"} {
		if l := logs.String(); !strings.Contains(l, r.hostFile(name)) || !strings.Contains(l, "named pipe") {
			t.Errorf("no warning naming %s and its type in:\n%s", r.hostFile(name), l)
		}
	}
}
