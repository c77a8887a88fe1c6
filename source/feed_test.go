package source

import (
	"context"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/confine-project/mgmtnet/mesh"
	"github.com/confine-project/mgmtnet/mesh/registry"
	"github.com/confine-project/mgmtnet/registryapi"
	"github.com/confine-project/mgmtnet/registrydb"
)

// dbRegistry serves a real SQLite registry database with the feed, as
// "registry serve --db" does, and logs the paths requested.
type dbRegistry struct {
	db  *registrydb.DB
	srv *registry.Server
	url string

	mu    sync.Mutex
	paths []string
}

func newDBRegistry(t *testing.T, f *registry.File) *dbRegistry {
	t.Helper()
	ctx := context.Background()
	db, err := registrydb.Open(ctx, "sqlite:"+filepath.Join(t.TempDir(), "registry.db"), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	if _, err := db.Replace(ctx, f, "test", "synthetic"); err != nil {
		t.Fatal(err)
	}
	r := &dbRegistry{db: db, srv: registry.NewServer(f, nil)}
	r.srv.Links = []registry.Link{registryapi.Link}
	api := registryapi.New(db, r.srv, nil)
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		r.mu.Lock()
		r.paths = append(r.paths, req.URL.Path)
		r.mu.Unlock()
		api.ServeHTTP(w, req)
	}))
	t.Cleanup(ts.Close)
	r.url = ts.URL + "/api/"
	return r
}

// sync serves the database's testbed on the read API, as serve does after
// a write.
func (r *dbRegistry) sync(t *testing.T) {
	t.Helper()
	f, _, err := r.db.Testbed(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	r.srv.SetFile(f)
}

func (r *dbRegistry) requests() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	p := r.paths
	r.paths = nil
	return p
}

// Following the feed gives, after every write, the snapshot that a whole
// read gives, reading nothing but the feed; against a registry without
// the feed, the same Source polls the lists.
func TestSourceFollowsTheFeed(t *testing.T) {
	ctx := context.Background()
	base := synthetic(t, 20)
	reg := newDBRegistry(t, base)
	s, err := New(Config{URL: reg.url, Feed: true, Client: registry.Options{Retries: -1}})
	if err != nil {
		t.Fatal(err)
	}
	snap, err := s.Fetch(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if snap.Feed == "" || snap.FeedVersion != 1 || snap.FromFeed {
		t.Fatalf("first fetch: feed %q at %d, from feed %v", snap.Feed, snap.FeedVersion, snap.FromFeed)
	}
	s.Commit(snap)
	reg.requests()

	key := base.Nodes[0].Tinc.PubKey
	writes := []struct {
		name  string
		write func() error
	}{
		{"nothing", func() error { return nil }},
		{"add a node", func() error {
			_, _, err := reg.db.PutMember(ctx, "t", registrydb.KindNode, registry.FileMember{ID: 100, Name: "hundred", Tinc: &registry.FileTinc{PubKey: key}}, true)
			return err
		}},
		{"add a node without a key", func() error {
			_, _, err := reg.db.PutMember(ctx, "t", registrydb.KindNode, registry.FileMember{ID: 101, Name: "keyless"}, true)
			return err
		}},
		{"remove a node", func() error {
			_, err := reg.db.DeleteMember(ctx, "t", registrydb.KindNode, base.Nodes[3].ID)
			return err
		}},
		{"a gateway's new address", func() error {
			m, err := reg.db.Member(ctx, registrydb.KindServer, base.Servers[0].ID)
			if err != nil {
				return err
			}
			m.Tinc.Addresses = append(m.Tinc.Addresses, registry.FileAddress{Addr: "198.51.100.7", Port: 656})
			_, _, err = reg.db.PutMember(ctx, "t", registrydb.KindServer, m, false)
			return err
		}},
		{"the keyless node gets its key", func() error {
			_, _, err := reg.db.PutMember(ctx, "t", registrydb.KindNode, registry.FileMember{ID: 101, Name: "keyed", Tinc: &registry.FileTinc{PubKey: key}}, false)
			return err
		}},
		{"an egress grant", func() error {
			m, err := reg.db.Member(ctx, registrydb.KindNode, 100)
			if err != nil {
				return err
			}
			m.Properties = map[string]string{"mgmtnet.egress": "yes"}
			_, _, err = reg.db.PutMember(ctx, "t", registrydb.KindNode, m, false)
			return err
		}},
	}
	for _, w := range writes {
		if err := w.write(); err != nil {
			t.Fatalf("%s: %v", w.name, err)
		}
		reg.sync(t)
		got, err := s.Fetch(ctx)
		if err != nil {
			t.Fatalf("%s: fetch: %v", w.name, err)
		}
		if paths := reg.requests(); !slices.Equal(paths, []string{"/api/changes/"}) {
			t.Errorf("%s: requests %v, want the feed alone", w.name, paths)
		}
		if w.name == "nothing" {
			if !got.NotModified {
				t.Errorf("nothing written: not NotModified")
			}
			continue
		}
		if !got.FromFeed {
			t.Errorf("%s: not from the feed", w.name)
		}
		// What a whole read says.
		whole, err := New(Config{URL: reg.url, Client: registry.Options{Retries: -1}})
		if err != nil {
			t.Fatal(err)
		}
		want, err := whole.Fetch(ctx)
		if err != nil {
			t.Fatal(err)
		}
		reg.requests()
		if ch := mesh.Diff(want.Testbed, got.Testbed); len(ch.Added)+len(ch.Changed)+len(ch.Removed) != 0 || want.Testbed.Len() != got.Testbed.Len() {
			t.Errorf("%s: the feed's snapshot differs from a whole read: %+v", w.name, ch)
		}
		if a, b := problems(want.Skipped), problems(got.Skipped); !slices.Equal(a, b) {
			t.Errorf("%s: skipped %v, a whole read %v", w.name, b, a)
		}
		if a, b := problems(want.Rejected), problems(got.Rejected); !slices.Equal(a, b) {
			t.Errorf("%s: rejected %v, a whole read %v", w.name, b, a)
		}
		if want.Testbed.Version() != got.Testbed.Version() {
			t.Errorf("%s: snapshot version %s, a whole read's %s", w.name, got.Testbed.Version(), want.Testbed.Version())
		}
		s.Commit(got)
	}
	// An import: the feed cannot answer, and the Source reads everything.
	if _, err := reg.db.Replace(ctx, base, "t", "again"); err != nil {
		t.Fatal(err)
	}
	reg.sync(t)
	got, err := s.Fetch(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if got.FromFeed || got.Testbed.Len() != 21 {
		t.Errorf("after an import: from feed %v, %d members", got.FromFeed, got.Testbed.Len())
	}
	if paths := reg.requests(); !slices.Contains(paths, "/api/nodes/") {
		t.Errorf("after an import: requests %v, want the lists", paths)
	}
}

func problems(ps []mesh.Problem) []string {
	var out []string
	for _, p := range ps {
		out = append(out, p.String())
	}
	slices.Sort(out)
	return out
}

// WaitChange returns when a write lands, and says so; with nothing
// written it returns after its wait with false.
func TestSourceWaitChange(t *testing.T) {
	ctx := context.Background()
	reg := newDBRegistry(t, synthetic(t, 2))
	s, err := New(Config{URL: reg.url, Feed: true, Client: registry.Options{Retries: -1, Timeout: 3 * 1e9}})
	if err != nil {
		t.Fatal(err)
	}
	snap, err := s.Fetch(ctx)
	if err != nil {
		t.Fatal(err)
	}
	s.Commit(snap)
	feed, v := s.FeedVersion()
	if changed, err := s.WaitChange(ctx, feed, v); err != nil || changed {
		t.Errorf("nothing written: %v, %v", changed, err)
	}
	done := make(chan bool, 1)
	go func() {
		changed, err := s.WaitChange(ctx, feed, v)
		if err != nil && !strings.Contains(err.Error(), "canceled") {
			t.Error(err)
		}
		done <- changed
	}()
	if _, err := reg.db.DeleteMember(ctx, "t", registrydb.KindNode, 1); err != nil {
		t.Fatal(err)
	}
	if !<-done {
		t.Error("a write: WaitChange says nothing changed")
	}
}
