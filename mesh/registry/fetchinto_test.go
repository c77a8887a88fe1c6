package registry

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"sync/atomic"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/confine-project/mgmtnet/addressing"
	"github.com/confine-project/mgmtnet/mesh"
)

// recordingSink keeps what it is given, with Checkpoint and Rollback.
type recordingSink struct {
	cands []string
	mark  int
	log   []string
}

func (s *recordingSink) Add(c *mesh.Candidate) {
	s.cands = append(s.cands, fmt.Sprintf("%s %d %s", c.Kind, c.ID, c.Name))
}
func (s *recordingSink) Checkpoint() { s.mark = len(s.cands); s.log = append(s.log, "checkpoint") }
func (s *recordingSink) Rollback() {
	s.log = append(s.log, fmt.Sprintf("rollback %d", len(s.cands)-s.mark))
	s.cands = s.cands[:s.mark]
}

// TestFetchIntoRetryRollsBack: FetchInto hands a broken page's candidates
// to the sink as they come, and rolls them back before the retry.
func TestFetchIntoRetryRollsBack(t *testing.T) {
	node := func(id int, name string) string {
		return fmt.Sprintf(`{"id": %d, "name": %q, "mgmt_net": {"addr": "a", "backend": "tinc"}, "tinc": {"name": "node_%d", "pubkey": "k"}}`, id, name, id)
	}
	var n atomic.Int32
	base, _ := faultServer(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		if n.Add(1) == 1 {
			body := "[" + node(1, "old") + ","
			w.Header().Set("Content-Length", strconv.Itoa(len(body)+1000))
			io.WriteString(w, body)
			return
		}
		io.WriteString(w, "["+node(1, "new")+","+node(2, "b")+"]")
	})
	sink := &recordingSink{}
	snap, err := newClient(t, base, fastOptions()).FetchInto(context.Background(), nil, sink)
	if err != nil {
		t.Fatal(err)
	}
	if snap.Candidates != nil {
		t.Errorf("FetchInto's snapshot holds %d candidates, want none", len(snap.Candidates))
	}
	if diff := cmp.Diff([]string{"node 1 new", "node 2 b"}, sink.cands); diff != "" {
		t.Errorf("candidates (-want +got):\n%s", diff)
	}
	// servers, hosts, the broken nodes page, its retry.
	if diff := cmp.Diff([]string{"checkpoint", "checkpoint", "checkpoint", "rollback 1", "checkpoint"}, sink.log); diff != "" {
		t.Errorf("sink calls (-want +got):\n%s", diff)
	}
}

// TestFetchIntoBuilds: a mesh.Builder fed by FetchInto builds what Build
// builds from Fetch's candidates, and a second FetchInto with the
// validators adds nothing.
func TestFetchIntoBuilds(t *testing.T) {
	c := newClient(t, serve(t, NewServer(smallSynthetic(t, 50, 2, 5), nil)), fastOptions())
	snap, err := c.Fetch(context.Background(), nil)
	if err != nil {
		t.Fatal(err)
	}
	b := mesh.NewBuilder(mesh.BuildOptions{})
	snap2, err := c.FetchInto(context.Background(), nil, b)
	if err != nil {
		t.Fatal(err)
	}
	if b.Len() != len(snap.Candidates) || b.Len() == 0 {
		t.Fatalf("builder has %d candidates, Fetch %d", b.Len(), len(snap.Candidates))
	}
	p1, _ := mesh.ChoosePrefix(snap.Prefix, snap.Prefix, snap.Candidates)
	p2, _ := b.ChoosePrefix(snap2.Prefix, snap2.Prefix)
	if p1 != p2 {
		t.Fatalf("prefix %s, want %s", p2, p1)
	}
	plan, err := addressing.New(p1)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := b.Build(plan).Testbed, mesh.Build(plan, snap.Candidates, mesh.BuildOptions{}).Testbed; got.Version() != want.Version() || got.Len() != 57 {
		t.Errorf("built %d members, version %s; want 57, %s", got.Len(), got.Version(), want.Version())
	}
	if diff := cmp.Diff(snap.Validators, snap2.Validators); diff != "" {
		t.Errorf("validators (-Fetch +FetchInto):\n%s", diff)
	}
	again := &recordingSink{}
	snap3, err := c.FetchInto(context.Background(), snap2.Validators, again)
	if err != nil {
		t.Fatal(err)
	}
	if !snap3.NotModified || len(again.cands) != 0 {
		t.Errorf("NotModified %v with %d candidates; want NotModified and none", snap3.NotModified, len(again.cands))
	}
}
