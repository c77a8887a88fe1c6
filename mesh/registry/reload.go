package registry

import (
	"log/slog"
	"net/http"
	"os"
	"sync"
	"time"
)

// FileReloader serves a Server and re-reads its testbed file when the
// file's mtime or size changes, checking at most once a second, on
// requests (and on Check(true), which "registry serve" calls on SIGHUP). A
// file that does not load keeps the old testbed and is reported once per
// change.
//
// Loading a big file takes a while, so it happens outside the lock, by one
// goroutine at a time: the request (or SIGHUP) that found the change loads
// it, and others meanwhile go on with the testbed being served.
type FileReloader struct {
	srv  *Server
	path string
	log  *slog.Logger

	mu        sync.Mutex
	lastCheck time.Time
	loading   bool      // a goroutine is in load
	again     bool      // a SIGHUP came during a load: load once more
	stamp     fileStamp // of the file last loaded or last rejected; only the loading goroutine touches it
}

type fileStamp struct {
	mtime time.Time
	size  int64
}

// NewFileReloader returns a handler that serves srv and reloads it from
// the testbed file at path when that changes.
func NewFileReloader(srv *Server, path string, log *slog.Logger) *FileReloader {
	r := &FileReloader{srv: srv, path: path, log: log, lastCheck: time.Now()}
	if fi, err := os.Stat(path); err == nil {
		r.stamp = fileStamp{fi.ModTime(), fi.Size()}
	}
	return r
}

// ServeHTTP checks the file (at most once a second), then serves.
func (r *FileReloader) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	r.Check(false)
	r.srv.ServeHTTP(w, req)
}

// Check reloads the file if it changed; force (SIGHUP) skips the rate
// limit and the change test. When another goroutine is loading, check
// returns at once (after asking it, when forced, to load again: the file
// may have changed after it read it).
func (r *FileReloader) Check(force bool) {
	r.mu.Lock()
	if r.loading {
		r.again = r.again || force
		r.mu.Unlock()
		return
	}
	now := time.Now()
	if !force && now.Sub(r.lastCheck) < time.Second {
		r.mu.Unlock()
		return
	}
	r.lastCheck = now
	r.loading = true
	r.mu.Unlock()
	for {
		r.load(force)
		r.mu.Lock()
		if !r.again {
			r.loading = false
			r.mu.Unlock()
			return
		}
		r.again, force = false, true
		r.mu.Unlock()
	}
}

// load loads the file if it changed, or if force. Only the goroutine that
// set loading calls it.
func (r *FileReloader) load(force bool) {
	fi, err := os.Stat(r.path)
	if err != nil {
		if force {
			r.log.Warn("testbed file unreadable; still serving the last good testbed", "file", r.path, "err", err)
		}
		return
	}
	st := fileStamp{fi.ModTime(), fi.Size()}
	if !force && st == r.stamp {
		return
	}
	r.stamp = st
	f, err := LoadFile(r.path)
	if err != nil {
		r.log.Warn("testbed file does not load; still serving the last good testbed", "file", r.path, "err", err)
		return
	}
	r.srv.SetFile(f)
	servers, nodes, hosts := f.Count()
	r.log.Info("testbed file reloaded", "file", r.path, "nodes", nodes, "servers", servers, "hosts", hosts)
}
