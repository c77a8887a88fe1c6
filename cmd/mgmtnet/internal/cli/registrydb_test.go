//go:build !nodb && !mips && !mipsle && !mips64 && !mips64le

package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/confine-project/mgmtnet/addressing"
	"github.com/confine-project/mgmtnet/mesh/registry"
	"github.com/confine-project/mgmtnet/registrydb"
	"github.com/confine-project/mgmtnet/test/pgtest"
	"github.com/confine-project/mgmtnet/test/vtb"
)

// syncBuffer is a bytes.Buffer safe for a server goroutine's writes.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// startServe runs "registry serve --db url" until the test ends and
// returns its base URI.
func startServe(t *testing.T, url string) string {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	var stderr syncBuffer
	done := make(chan int, 1)
	go func() {
		done <- Run(ctx, []string{"registry", "serve", "--db", url, "--listen", "127.0.0.1:0"}, Env{Stdout: io.Discard, Stderr: &stderr})
	}()
	t.Cleanup(func() {
		cancel()
		if code := <-done; code != 0 {
			t.Errorf("registry serve exited %d:\n%s", code, stderr.String())
		}
	})
	re := regexp.MustCompile(`at (http://127\.0\.0\.1:\d+/api/)`)
	var base string
	err := vtb.WaitFor(ctx, 10*time.Second, 20*time.Millisecond, func() error {
		if m := re.FindStringSubmatch(stderr.String()); m != nil {
			base = m[1]
			return nil
		}
		return fmt.Errorf("not serving yet: %s", stderr.String())
	})
	if err != nil {
		t.Fatal(err)
	}
	return base
}

// nodesServed returns the number of nodes a registry serves.
func nodesServed(t *testing.T, base string) int {
	t.Helper()
	c, err := registry.New(base, registry.Options{Retries: -1})
	if err != nil {
		t.Fatal(err)
	}
	snap, err := c.Fetch(context.Background(), nil)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, m := range snap.Candidates {
		if m.Kind == addressing.KindNode {
			n++
		}
	}
	return n
}

// The database registry: a testbed file and a live registry are imported
// and exported again; "serve --db" serves the database and follows its
// writes; two instances on one PostgreSQL database both serve a write.
func TestRegistryDatabase(t *testing.T) {
	const testdata = "../../../../mesh/registry/testdata/testbed.json"
	want, err := registry.LoadFile(testdata)
	if err != nil {
		t.Fatal(err)
	}
	want.Dialect = registry.DialectV1
	dir := t.TempDir()
	db := "sqlite:" + filepath.Join(dir, "registry.db")
	_, errOut, code := run(t, "registry", "import", "--from", testdata, "--db", db)
	if code != 0 || !strings.Contains(errOut, "imported 2 nodes, 1 servers, 1 hosts and 2 islands from "+testdata+" into "+db+" (version 1)") {
		t.Fatalf("import: exit %d\n%s", code, errOut)
	}
	out, errOut, code := run(t, "registry", "export", "--db", db)
	if code != 0 {
		t.Fatalf("export: exit %d\n%s", code, errOut)
	}
	got, err := registry.ParseFile([]byte(out))
	if err != nil {
		t.Fatalf("export is no testbed file: %v\n%s", err, out)
	}
	if diff := cmp.Diff(want, got, cmpopts.EquateEmpty(), cmp.Comparer(func(a, b netip.Prefix) bool { return a == b })); diff != "" {
		t.Errorf("export (-imported +exported):\n%s", diff)
	}

	// From a live registry, the migration path off the old controller.
	_, live := serve(t, want)
	db2 := "sqlite:" + filepath.Join(dir, "from-live.db")
	_, errOut, code = run(t, "registry", "import", "--from", live, "--db", db2)
	if code != 0 || !strings.Contains(errOut, "imported 2 nodes, 1 servers, 1 hosts and 2 islands from "+live) || !strings.Contains(errOut, "islands created as island-<id>") {
		t.Fatalf("import from a registry: exit %d\n%s", code, errOut)
	}

	// serve --db follows the database.
	base := startServe(t, db)
	if n := nodesServed(t, base); n != 2 {
		t.Fatalf("serving %d nodes, want 2", n)
	}
	more := *want
	more.Nodes = append(slices.Clone(want.Nodes), registry.FileMember{ID: 40, Name: "node-40", Island: 1, Tinc: &registry.FileTinc{Name: "node_40", PubKey: want.Nodes[0].Tinc.PubKey}})
	moreFile := filepath.Join(dir, "more.json")
	b, _ := json.Marshal(&more)
	if err := os.WriteFile(moreFile, b, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, errOut, code := run(t, "registry", "import", "--from", moreFile, "--db", db); code != 0 {
		t.Fatalf("second import: %s", errOut)
	}
	if err := vtb.WaitFor(context.Background(), 5*time.Second, 50*time.Millisecond, func() error {
		if n := nodesServed(t, base); n != 3 {
			return fmt.Errorf("serving %d nodes, want 3", n)
		}
		return nil
	}); err != nil {
		t.Error(err)
	}

	// The audit log: both imports, newest first.
	out, errOut, code = run(t, "registry", "log", "--db", db, "--limit", "1")
	if code != 0 || strings.Count(out, "import testbed") != 1 || !strings.Contains(out, "  cli:") ||
		!strings.Contains(out, `after  {"version":2,"source":"`+moreFile+`"`) || !strings.Contains(out, `before {"version":1,`) {
		t.Errorf("registry log: exit %d\n%s%s", code, out, errOut)
	}
	out, _, _ = run(t, "registry", "log", "--db", db, "--json")
	var entries []struct{ Seq int64 }
	if err := json.Unmarshal([]byte(out), &entries); err != nil || len(entries) != 2 || entries[0].Seq <= entries[1].Seq {
		t.Errorf("registry log --json: %v\n%s", err, out)
	}

	// Two instances, one PostgreSQL database.
	pg := pgtest.Start(t)
	if _, errOut, code := run(t, "registry", "import", "--from", testdata, "--db", pg); code != 0 {
		t.Fatalf("import into PostgreSQL: %s", errOut)
	}
	a, bb := startServe(t, pg), startServe(t, pg)
	if _, errOut, code := run(t, "registry", "import", "--from", moreFile, "--db", pg); code != 0 {
		t.Fatalf("second import into PostgreSQL: %s", errOut)
	}
	for _, inst := range []string{a, bb} {
		if err := vtb.WaitFor(context.Background(), 5*time.Second, 50*time.Millisecond, func() error {
			if n := nodesServed(t, inst); n != 3 {
				return fmt.Errorf("%s serves %d nodes, want 3", inst, n)
			}
			return nil
		}); err != nil {
			t.Error(err)
		}
	}
}

func TestRegistryDatabaseErrors(t *testing.T) {
	db := "sqlite:" + filepath.Join(t.TempDir(), "r.db")
	if _, errOut, code := run(t, "registry", "serve", "--db", db, "--listen", "127.0.0.1:0"); code != 1 || !strings.Contains(errOut, "holds no testbed yet (import one: mgmtnet registry import --from FILE|URL)") {
		t.Errorf("serve of an empty database: exit %d\n%s", code, errOut)
	}
	if _, errOut, code := run(t, "registry", "import", "--db", db); code != 2 || !strings.Contains(errOut, "want --from") {
		t.Errorf("import without --from: exit %d\n%s", code, errOut)
	}
	if _, errOut, code := run(t, "registry", "serve", "--db", "mysql://x"); code != 1 || !strings.Contains(errOut, "want sqlite:PATH or postgres://") {
		t.Errorf("bad URL: exit %d\n%s", code, errOut)
	}
}

func TestDefaultRegistryDB(t *testing.T) {
	if defaultRegistryDB != registrydb.DefaultURL {
		t.Errorf("the CLI's default database %q is not registrydb.DefaultURL %q", defaultRegistryDB, registrydb.DefaultURL)
	}
}
