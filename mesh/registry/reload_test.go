package registry

import (
	"encoding/json"
	"log/slog"
	"net/http/httptest"
	"os"
	"path/filepath"
	"runtime"
	"syscall"
	"testing"
	"time"
)

// TestReloaderServesDuringLoad: while one goroutine loads a new testbed
// file, requests go on with the current one instead of waiting.
func TestReloaderServesDuringLoad(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "tb.json")
	f, err := Synthetic(SyntheticSpec{Nodes: 2, Keys: 1, KeyBits: 2048})
	if err != nil {
		t.Fatal(err)
	}
	// A FIFO: loading it blocks until the test writes it.
	if err := syscall.Mkfifo(path, 0o644); err != nil {
		t.Skipf("cannot make a FIFO: %v", err)
	}
	srv := NewServer(f, nil)
	rl := NewFileReloader(srv, path, slog.New(slog.DiscardHandler))
	loaded := make(chan struct{})
	go func() {
		rl.Check(true) // as SIGHUP does
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
	f3, err := Synthetic(SyntheticSpec{Nodes: 3, Keys: 1, KeyBits: 2048})
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
