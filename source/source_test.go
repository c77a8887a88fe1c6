package source

import (
	"errors"
	"net/http/httptest"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/confine-project/mgmtnet/mesh"
	"github.com/confine-project/mgmtnet/mesh/registry"
)

func serve(t *testing.T, f *registry.File) (*registry.Server, string) {
	t.Helper()
	s := registry.NewServer(f, nil)
	ts := httptest.NewServer(s)
	t.Cleanup(ts.Close)
	return s, ts.URL + "/api/"
}

var base struct {
	once sync.Once
	f    *registry.File
	err  error
}

// synthetic is a testbed of one server and the first nodes of 20 (the RSA
// keys are made once).
func synthetic(t *testing.T, nodes int) *registry.File {
	t.Helper()
	base.once.Do(func() {
		base.f, base.err = registry.Synthetic(registry.SyntheticSpec{Nodes: 20, Servers: 1, Keys: 2})
	})
	if base.err != nil {
		t.Fatal(base.err)
	}
	f := *base.f
	f.Nodes = f.Nodes[:nodes]
	return &f
}

// TestSourceFetchCommit: a fetch changes nothing until it is committed;
// then the registry's ETags make the next fetch a 304.
func TestSourceFetchCommit(t *testing.T) {
	_, url := serve(t, synthetic(t, 10))
	s, err := New(Config{URL: url, Client: registry.Options{Retries: -1}})
	if err != nil {
		t.Fatal(err)
	}
	snap, err := s.Fetch(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if snap.NotModified || snap.Testbed.Len() != 11 || len(snap.Validators) == 0 {
		t.Fatalf("first fetch: not modified %v, %d members, validators %v", snap.NotModified, snap.Testbed.Len(), snap.Validators)
	}
	// Not committed: the next fetch is full again.
	if again, err := s.Fetch(t.Context()); err != nil || again.NotModified {
		t.Fatalf("uncommitted: not modified %v, err %v", again.NotModified, err)
	}
	s.Commit(snap)
	if s.Current() != snap.Testbed {
		t.Fatal("Commit did not make the snapshot current")
	}
	if again, err := s.Fetch(t.Context()); err != nil || !again.NotModified {
		t.Fatalf("committed: not modified %v, err %v", again.NotModified, err)
	}
	s.Forget()
	if again, err := s.Fetch(t.Context()); err != nil || again.NotModified {
		t.Fatalf("after Forget: not modified %v, err %v", again.NotModified, err)
	}
}

// TestSourceGuard: a registry that suddenly lists far fewer members is
// refused against the snapshot in use, the guard's limit is the
// configured one, and Force accepts it.
func TestSourceGuard(t *testing.T) {
	srv, url := serve(t, synthetic(t, 20))
	for _, tt := range []struct {
		name    string
		guard   mesh.Guard
		keep    int // nodes the registry then lists
		refused bool
	}{
		{"default half: 9 of 21 removed", mesh.Guard{}, 11, false},
		{"default half: 15 of 21 removed", mesh.Guard{}, 5, true},
		{"a quarter: 9 of 21 removed", mesh.Guard{MaxRemoveFraction: 0.25}, 11, true},
		{"forced", mesh.Guard{Force: true}, 0, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			srv.SetFile(synthetic(t, 20))
			s, err := New(Config{URL: url, Guard: tt.guard, Client: registry.Options{Retries: -1}})
			if err != nil {
				t.Fatal(err)
			}
			snap, err := s.Fetch(t.Context())
			if err != nil {
				t.Fatal(err)
			}
			s.Commit(snap)
			srv.SetFile(synthetic(t, tt.keep))
			next, err := s.Fetch(t.Context())
			if got := errors.Is(err, mesh.ErrMassDeletion); got != tt.refused {
				t.Fatalf("refused = %v (err %v), want %v", got, err, tt.refused)
			}
			if err == nil && next.Testbed.Len() != tt.keep+1 {
				t.Fatalf("%d members, want %d", next.Testbed.Len(), tt.keep+1)
			}
			if s.Current() != snap.Testbed {
				t.Fatal("a fetch changed the snapshot in use")
			}
		})
	}
}

// TestSourceCache: the committed snapshot is saved; a Source that cannot
// reach the registry loads it, and committing it makes the registry's
// unchanged answer a 304.
func TestSourceCache(t *testing.T) {
	_, url := serve(t, synthetic(t, 5))
	cache := filepath.Join(t.TempDir(), "snapshot.json")
	s, err := New(Config{URL: url, Cache: cache, Client: registry.Options{Retries: -1}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Load(); err == nil {
		t.Fatal("Load before any Commit: no error")
	}
	snap, err := s.Fetch(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	s.Commit(snap)

	s2, err := New(Config{URL: url, Cache: cache, Client: registry.Options{Retries: -1}})
	if err != nil {
		t.Fatal(err)
	}
	old, err := s2.Load()
	if err != nil {
		t.Fatal(err)
	}
	if !old.FromCache || old.Testbed.Version() != snap.Testbed.Version() || old.Saved.IsZero() {
		t.Fatalf("loaded: from cache %v, version %s want %s", old.FromCache, old.Testbed.Version(), snap.Testbed.Version())
	}
	s2.Commit(old)
	if again, err := s2.Fetch(t.Context()); err != nil || !again.NotModified {
		t.Fatalf("after loading the cache: not modified %v, err %v", again.NotModified, err)
	}
	if _, err := (&Source{}).Load(); !errors.Is(err, ErrNoCache) {
		t.Fatalf("no cache configured: %v", err)
	}
}

func TestBackoff(t *testing.T) {
	b := Backoff{Min: time.Second, Max: 8 * time.Second}
	iv := time.Minute
	for i, want := range []time.Duration{time.Second, 2 * time.Second, 4 * time.Second, 8 * time.Second, 8 * time.Second} {
		got := b.Next(true, iv)
		if got < want/2 || got > want {
			t.Errorf("failure %d: wait %v, want in [%v, %v]", i+1, got, want/2, want)
		}
	}
	if got := b.Next(false, iv); got < 54*time.Second || got > 66*time.Second {
		t.Errorf("after a success: %v, want the interval ±10%%", got)
	}
	if got := b.Next(true, iv); got > time.Second {
		t.Errorf("a success resets: %v", got)
	}
	// Never more than the poll interval.
	short := Backoff{Min: time.Second, Max: time.Hour}
	for range 10 {
		if got := short.Next(true, 3*time.Second); got > 3*time.Second {
			t.Fatalf("wait %v beyond the 3s interval", got)
		}
	}
}
