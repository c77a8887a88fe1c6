package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"net/http/httptest"
	"os"
	"path/filepath"
	"runtime"
	"syscall"
	"testing"
	"time"

	"github.com/confine-project/mgmtnet/mesh/registry"
)

// TestRegistrySynthOut: --out writes a whole file, world-readable like any
// file a server reads, whatever CreateTemp's mode.
func TestRegistrySynthOut(t *testing.T) {
	out := filepath.Join(t.TempDir(), "tb.json")
	var stdout, stderr bytes.Buffer
	if code := Run(context.Background(), []string{"registry", "synth", "nodes=3,servers=1,keys=1,keybits=2048", "--out", out}, Env{Stdout: &stdout, Stderr: &stderr}); code != 0 {
		t.Fatalf("exit %d: %s", code, stderr.String())
	}
	fi, err := os.Stat(out)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o644 {
		t.Errorf("mode %v, want 0644", fi.Mode().Perm())
	}
	if _, err := registry.LoadFile(out); err != nil {
		t.Error(err)
	}
	ents, _ := os.ReadDir(filepath.Dir(out))
	if len(ents) != 1 {
		t.Errorf("%d files in the directory, want 1 (no temporary left)", len(ents))
	}
}

// TestReloaderServesDuringLoad: while one goroutine loads a new testbed
// file, requests go on with the current one instead of waiting.
func TestReloaderServesDuringLoad(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "tb.json")
	f, err := registry.Synthetic(registry.SyntheticSpec{Nodes: 2, Keys: 1, KeyBits: 2048})
	if err != nil {
		t.Fatal(err)
	}
	// A FIFO: loading it blocks until the test writes it.
	if err := syscall.Mkfifo(path, 0o644); err != nil {
		t.Skipf("cannot make a FIFO: %v", err)
	}
	srv := registry.NewServer(f, nil)
	rl := newReloader(srv, path, slog.New(slog.DiscardHandler))
	loaded := make(chan struct{})
	go func() {
		rl.check(true) // as SIGHUP does
		close(loaded)
	}()
	// Wait until the loader holds the load.
	for {
		rl.mu.Lock()
		loading := rl.loading
		rl.mu.Unlock()
		if loading {
			break
		}
		runtime.Gosched()
	}
	done := make(chan int, 1)
	go func() {
		rec := httptest.NewRecorder()
		rl.ServeHTTP(rec, httptest.NewRequest("GET", "/api/nodes/", nil))
		var nodes []json.RawMessage
		json.Unmarshal(rec.Body.Bytes(), &nodes)
		done <- len(nodes)
	}()
	select {
	case n := <-done:
		if n != 2 {
			t.Errorf("%d nodes served during the load, want the current 2", n)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("a request waited for the reload")
	}
	// Now let the load finish with a testbed of 3 nodes.
	f3, err := registry.Synthetic(registry.SyntheticSpec{Nodes: 3, Keys: 1, KeyBits: 2048})
	if err != nil {
		t.Fatal(err)
	}
	b, _ := json.Marshal(f3)
	w, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	w.Write(b)
	w.Close()
	<-loaded
	if _, nodes, _ := srv.File().Count(); nodes != 3 {
		t.Errorf("%d nodes after the reload, want 3", nodes)
	}
}
