package registryapi

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/confine-project/mgmtnet/addressing"
	"github.com/confine-project/mgmtnet/mesh/registry"
	"github.com/confine-project/mgmtnet/registrydb"
)

// feedServer serves the read API with the feed linked, as "registry serve
// --db" does, and a client of it.
func feedServer(t *testing.T) (*registrydb.DB, *Handler, *httptest.Server, *registry.Client) {
	t.Helper()
	db, f := testDB(t)
	srv := registry.NewServer(f, nil)
	srv.Links = []registry.Link{Link}
	h := New(db, srv, nil)
	ts := httptest.NewServer(h)
	t.Cleanup(ts.Close)
	c, err := registry.New(ts.URL+"/api/", registry.Options{Feed: true, Retries: -1})
	if err != nil {
		t.Fatal(err)
	}
	return db, h, ts, c
}

// The feed end to end, from the database through the HTTP API to the
// client's decoder: the base links it, a fetch learns its version, a
// waiting request returns as soon as a write lands, and what it gives is
// decoded and checked as the lists are.
func TestFeed(t *testing.T) {
	ctx := context.Background()
	db, h, ts, c := feedServer(t)
	snap, err := c.Fetch(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	if snap.Feed != ts.URL+"/api/changes/" || snap.FeedVersion != 1 {
		t.Fatalf("fetch: feed %q at %d", snap.Feed, snap.FeedVersion)
	}
	// Nothing changed: an immediate answer at the same version.
	r, err := c.Changes(ctx, snap.Feed, 1, 0)
	if err != nil || r.Version != 1 || len(r.Put)+len(r.Removed) != 0 {
		t.Fatalf("no change: %+v, %v", r, err)
	}
	// A waiting request wakes on a write.
	got := make(chan *registry.FeedResult, 1)
	errc := make(chan error, 1)
	go func() {
		r, err := c.Changes(ctx, snap.Feed, 1, 20*time.Second)
		if err != nil {
			errc <- err
			return
		}
		got <- r
	}()
	time.Sleep(200 * time.Millisecond) // let it wait
	start := time.Now()
	if _, err := db.DeleteMember(ctx, "test", registrydb.KindNode, 31); err != nil {
		t.Fatal(err)
	}
	h.Notify()
	select {
	case r := <-got:
		if r.Version != 2 || len(r.Removed) != 1 || r.Removed[0] != (registry.MemberRef{Kind: addressing.KindNode, ID: 31}) || len(r.Put) != 0 {
			t.Errorf("after the removal: %+v", r)
		}
		if d := time.Since(start); d > 10*time.Second {
			t.Errorf("the waiting request took %v to see the write", d)
		}
	case err := <-errc:
		t.Fatal(err)
	case <-time.After(15 * time.Second):
		t.Fatal("the waiting request did not return after a write")
	}
	// A put is a member as the list gives it, decoded as the list is.
	key := mustFile(t).Nodes[0].Tinc.PubKey
	if _, _, err := db.PutMember(ctx, "test", registrydb.KindNode, registry.FileMember{ID: 50, Name: "fifty", Tinc: &registry.FileTinc{PubKey: key}}, true); err != nil {
		t.Fatal(err)
	}
	r, err = c.Changes(ctx, snap.Feed, 2, 0)
	if err != nil || r.Version != 3 || len(r.Put) != 1 {
		t.Fatalf("after the add: %+v, %v", r, err)
	}
	if p := r.Put[0]; p.Kind != addressing.KindNode || p.ID != 50 || p.Name != "fifty" || p.Tinc == nil || p.Tinc.Name != "node_50" || p.Tinc.PubKey != key || p.MgmtAddr != "fd65:fc41:c50f:32::2" {
		t.Errorf("the put: %+v", p)
	}
	// An import: the feed cannot say what changed.
	if _, err := db.Replace(ctx, mustFile(t), "test", "again"); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Changes(ctx, snap.Feed, 3, 0); !errors.Is(err, registry.ErrFeedGone) {
		t.Errorf("from before an import: %v", err)
	}
	for _, q := range []string{"since=x", "since=1&wait=-1", "since=-3"} {
		resp, err := http.Get(ts.URL + "/api/changes/?" + q)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadRequest {
			t.Errorf("%s: status %d, want 400", q, resp.StatusCode)
		}
	}
}

// A registry without the feed (a testbed file, the 2015 controller) links
// none, and a client polls: the snapshot has no feed.
func TestNoFeedWithoutTheLink(t *testing.T) {
	db, f := testDB(t)
	ts := httptest.NewServer(New(db, registry.NewServer(f, nil), nil))
	defer ts.Close()
	c, err := registry.New(ts.URL+"/api/", registry.Options{Feed: true})
	if err != nil {
		t.Fatal(err)
	}
	snap, err := c.Fetch(context.Background(), nil)
	if err != nil || snap.Feed != "" {
		t.Errorf("feed %q, %v", snap.Feed, err)
	}
}

// Attacks on the client through the feed: a registry (or whoever answers
// for it) cannot slip members past the checks the lists get.
func TestFeedAnswersAreChecked(t *testing.T) {
	key := mustFile(t).Nodes[0].Tinc.PubKey
	good := `{"uri":"http://x/api/nodes/31/","id":31,"name":"n","mgmt_net":{"addr":"fd65:fc41:c50f:1f::2","backend":"tinc"},"tinc":{"name":"node_31","pubkey":` + jsonString(key) + `,"addresses":[]},"properties":{}}`
	for _, tc := range []struct {
		name, body string
		problem    string
	}{
		{"id mismatch", `{"version":5,"changes":[{"op":"put","collection":"nodes","id":32,"member":` + good + `}]}`, "not 32"},
		{"unknown op", `{"version":5,"changes":[{"op":"chmod","collection":"nodes","id":31}]}`, `op "chmod"`},
		{"unknown collection", `{"version":5,"changes":[{"op":"remove","collection":"slivers","id":31}]}`, `collection "slivers"`},
		{"member not JSON object", `{"version":5,"changes":[{"op":"put","collection":"nodes","id":31,"member":"x"}]}`, "31"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Type", "application/json")
				w.Write([]byte(tc.body))
			}))
			defer ts.Close()
			c, _ := registry.New(ts.URL+"/api/", registry.Options{Retries: -1})
			r, err := c.Changes(context.Background(), ts.URL+"/api/changes/", 4, 0)
			if err != nil {
				t.Fatal(err)
			}
			if len(r.Put) != 0 || len(r.Removed) != 0 || len(r.Problems) != 1 || !strings.Contains(r.Problems[0].String(), tc.problem) {
				t.Errorf("%+v; want one problem naming %q", r, tc.problem)
			}
		})
	}
	// Going back in versions is the feed of another registry: read again.
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Write([]byte(`{"version":2,"changes":[]}`))
	}))
	defer ts.Close()
	c, _ := registry.New(ts.URL+"/api/", registry.Options{Retries: -1})
	if _, err := c.Changes(context.Background(), ts.URL+"/api/changes/", 4, 0); !errors.Is(err, registry.ErrFeedGone) {
		t.Errorf("a version going back: %v", err)
	}
}

func mustFile(t *testing.T) *registry.File {
	f, err := registry.LoadFile("../mesh/registry/testdata/testbed.json")
	if err != nil {
		t.Fatal(err)
	}
	return f
}

func jsonString(s string) string {
	return `"` + strings.NewReplacer("\n", `\n`, `"`, `\"`).Replace(s) + `"`
}
