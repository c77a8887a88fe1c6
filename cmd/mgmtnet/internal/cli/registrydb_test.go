//go:build !nodb && !mips && !mipsle && !mips64 && !mips64le

package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"net/url"
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
	"github.com/confine-project/mgmtnet/tincgen"
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
	// A write through one instance's API is served by the other, and
	// the other's change feed, linked from its base, wakes with it.
	key := strings.TrimSpace(mustRun(t, "registry", "token", "create", "--role", "operator", "--db", pg))
	feedClient, err := registry.New(bb, registry.Options{Feed: true, Retries: -1})
	if err != nil {
		t.Fatal(err)
	}
	snap, err := feedClient.Fetch(context.Background(), nil)
	if err != nil || snap.Feed != bb+"changes/" {
		t.Fatalf("the other instance's feed: %q, %v", snap.Feed, err)
	}
	woken := make(chan *registry.FeedResult, 1)
	go func() {
		r, err := feedClient.Changes(context.Background(), snap.Feed, snap.FeedVersion, 20*time.Second)
		if err != nil {
			t.Error(err)
		}
		woken <- r
	}()
	time.Sleep(300 * time.Millisecond) // the request waits
	req, _ := http.NewRequest("DELETE", a+"nodes/40/", nil)
	req.Header.Set("Authorization", "Token "+key)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNoContent {
		t.Fatalf("DELETE on one instance: %s", resp.Status)
	}
	deleted := time.Now()
	if r := <-woken; r == nil || r.Version != snap.FeedVersion+1 || len(r.Removed) != 1 || r.Removed[0].ID != 40 {
		t.Errorf("the other instance's feed after the DELETE: %+v", r)
	} else {
		t.Logf("the other instance's feed woke %v after the DELETE returned", time.Since(deleted).Round(time.Millisecond))
	}
	if err := vtb.WaitFor(context.Background(), 5*time.Second, 50*time.Millisecond, func() error {
		if n := nodesServed(t, bb); n != 2 {
			return fmt.Errorf("the other instance serves %d nodes, want 2", n)
		}
		return nil
	}); err != nil {
		t.Error(err)
	}
}

func TestRegistryDatabaseErrors(t *testing.T) {
	db := "sqlite:" + filepath.Join(t.TempDir(), "r.db")
	if _, errOut, code := run(t, "registry", "serve", "--db", db, "--listen", "127.0.0.1:0"); code != 1 || !strings.Contains(errOut, "holds no testbed yet (import one: mgmtnet registry import --from FILE|URL, or start one: mgmtnet registry init --prefix P/48)") {
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

// The admin commands: add, set, show, list and rm, checked as clients
// check, audited, served.
func TestRegistryMemberCommands(t *testing.T) {
	dir := t.TempDir()
	db := "sqlite:" + filepath.Join(dir, "registry.db")
	if _, errOut, code := run(t, "registry", "import", "--from", "../../../../mesh/registry/testdata/testbed.json", "--db", db); code != 0 {
		t.Fatalf("import: %s", errOut)
	}
	f, err := registry.LoadFile("../../../../mesh/registry/testdata/testbed.json")
	if err != nil {
		t.Fatal(err)
	}
	key := filepath.Join(dir, "node.pub")
	if err := os.WriteFile(key, []byte(f.Nodes[0].Tinc.PubKey), 0o644); err != nil {
		t.Fatal(err)
	}
	bad := filepath.Join(dir, "bad.pub")
	if err := os.WriteFile(bad, []byte("ssh-rsa AAAA\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		args   []string
		code   int
		stderr string
	}{
		{[]string{"registry", "node", "add", "0028", "--island", "1", "--pubkey", key, "--property", "arch=x86_64"}, 0, "added node 40 (version 2)"},
		{[]string{"registry", "node", "add", "40"}, 1, "node 40: exists already"},
		{[]string{"registry", "node", "set", "40", "--pubkey", bad}, 1, "rejected: node 40 (node_40): public key is not PEM"},
		{[]string{"registry", "node", "set", "40", "--island", "7"}, 1, "island 7 does not exist"},
		{[]string{"registry", "island", "add", "7", "--name", "seven"}, 0, "added island 7 (version 3)"},
		{[]string{"registry", "node", "set", "40", "--island", "7", "--property", "arch="}, 0, "changed node 40 (version 4)"},
		{[]string{"registry", "server", "add", "3", "--pubkey", key, "--address", "192.0.2.3@7", "--address", "gw.example.net:656"}, 0, "added server 3 (version 5)"},
		{[]string{"registry", "host", "rm", "99"}, 1, "host 99: not found"},
		{[]string{"registry", "node", "rm", "40", "--name", "x"}, 2, "--name is for add and set"},
		{[]string{"registry", "node", "frob", "40"}, 2, `unknown action "frob"`},
		{[]string{"registry", "island", "rm", "7"}, 1, "island 7 is in use"},
	} {
		_, errOut, code := run(t, append(tc.args, "--db", db)...)
		if code != tc.code || !strings.Contains(errOut, tc.stderr) {
			t.Errorf("%v: exit %d, want %d with %q:\n%s", tc.args, code, tc.code, tc.stderr, errOut)
		}
	}
	out, _, code := run(t, "registry", "node", "show", "40", "--db", db)
	if code != 0 || !strings.Contains(out, "tinc name  node_40\n") || !strings.Contains(out, "island     7\n") || strings.Contains(out, "arch") {
		t.Errorf("node show 40:\n%s", out)
	}
	out, _, _ = run(t, "registry", "server", "list", "--db", db)
	if !strings.Contains(out, "server-3") || !strings.Contains(out, "192.0.2.3 gw.example.net") {
		t.Errorf("server list:\n%s", out)
	}
	// What "registry serve" serves of it, as a client validates it.
	got, err := registry.ParseFile([]byte(mustRun(t, "registry", "export", "--db", db)))
	if err != nil {
		t.Fatal(err)
	}
	s3 := got.Servers[len(got.Servers)-1]
	if s3.ID != 3 || s3.Tinc.Name != "server_3" || len(s3.Tinc.Addresses) != 2 || s3.Tinc.Addresses[1].Port != 656 || s3.Tinc.Addresses[0].Island != 7 {
		t.Errorf("server 3 exported: %+v", s3)
	}
	out, _, _ = run(t, "registry", "log", "--db", db, "--limit", "3")
	for _, want := range []string{"server add server 3", "node set node 40", "island add island 7"} {
		if !strings.Contains(out, want) {
			t.Errorf("log lacks %q:\n%s", want, out)
		}
	}
	if _, errOut, code := run(t, "registry", "node", "rm", "40", "--db", db); code != 0 || !strings.Contains(errOut, "removed node 40") {
		t.Errorf("rm: %s", errOut)
	}
}

func mustRun(t *testing.T, args ...string) string {
	t.Helper()
	out, errOut, code := run(t, args...)
	if code != 0 {
		t.Fatalf("%v: exit %d\n%s", args, code, errOut)
	}
	return out
}

// A testbed that comes from no earlier registry: init, then islands and
// members one by one.
func TestRegistryInit(t *testing.T) {
	dir := t.TempDir()
	db := "sqlite:" + filepath.Join(dir, "registry.db")
	if _, errOut, code := run(t, "registry", "init", "--prefix", "fdf5:5351:1dfd::/48", "--db", db); code != 0 || !strings.Contains(errOut, "started an empty testbed on fdf5:5351:1dfd::/48") {
		t.Fatalf("init: exit %d\n%s", code, errOut)
	}
	if _, errOut, code := run(t, "registry", "init", "--prefix", "fdf5:5351:1dfd::/48", "--db", db); code != 1 || !strings.Contains(errOut, "holds a testbed already") {
		t.Errorf("init twice: exit %d\n%s", code, errOut)
	}
	if _, errOut, code := run(t, "registry", "init", "--prefix", "fdf5:5351::/32", "--db", "sqlite:"+filepath.Join(dir, "other.db")); code != 1 || !strings.Contains(errOut, "want a /48") {
		t.Errorf("init with a /32: exit %d\n%s", code, errOut)
	}
	_, pub, err := tincgen.GenerateKey(nil, 2048)
	if err != nil {
		t.Fatal(err)
	}
	key := filepath.Join(dir, "node.pub")
	if err := os.WriteFile(key, pub, 0o644); err != nil {
		t.Fatal(err)
	}
	mustRun(t, "registry", "island", "add", "1", "--name", "island-1", "--db", db)
	if _, errOut, code := run(t, "registry", "node", "add", "001f", "--island", "1", "--pubkey", key, "--db", db); code != 0 || !strings.Contains(errOut, "added node 31 (version 3)") {
		t.Fatalf("node add: exit %d\n%s", code, errOut)
	}
	f, err := registry.ParseFile([]byte(mustRun(t, "registry", "export", "--db", db)))
	if err != nil || len(f.Nodes) != 1 || f.Nodes[0].Tinc.Name != "node_31" || f.MgmtPrefix.String() != "fdf5:5351:1dfd::/48" {
		t.Fatalf("export: %+v, %v", f, err)
	}
	out := mustRun(t, "registry", "log", "--db", db)
	if !strings.Contains(out, "init testbed") || !strings.Contains(out, "node add node 31") {
		t.Errorf("log:\n%s", out)
	}
	backup := filepath.Join(dir, "backup.db")
	if _, errOut, code := run(t, "registry", "backup", backup, "--db", db); code != 0 || !strings.Contains(errOut, "backed up "+db+" to "+backup) {
		t.Fatalf("backup: exit %d\n%s", code, errOut)
	}
	if b := mustRun(t, "registry", "export", "--db", "sqlite:"+backup); b != mustRun(t, "registry", "export", "--db", db) {
		t.Errorf("the backup exports differently:\n%s", b)
	}
}

func TestRegistryTokenCommands(t *testing.T) {
	db := "sqlite:" + filepath.Join(t.TempDir(), "registry.db")
	out, errOut, code := run(t, "registry", "token", "create", "--role", "node-admin", "--node", "001f", "--node", "32", "--name", "alice", "--db", db)
	key := strings.TrimSpace(out)
	if code != 0 || len(key) != 40 || !strings.Contains(errOut, "created token 1 (node-admin); its key, above, is shown only now") {
		t.Fatalf("create: exit %d\n%s%s", code, out, errOut)
	}
	if _, errOut, code := run(t, "registry", "token", "create", "--role", "operator", "--node", "31", "--db", db); code != 1 || !strings.Contains(errOut, "an operator's token has no scope") {
		t.Errorf("operator with a scope: exit %d\n%s", code, errOut)
	}
	if _, errOut, code := run(t, "registry", "token", "create", "--db", db); code != 2 || !strings.Contains(errOut, "want --role") {
		t.Errorf("no role: exit %d\n%s", code, errOut)
	}
	out = mustRun(t, "registry", "token", "list", "--db", db)
	if !strings.Contains(out, "node-admin") || !strings.Contains(out, "active") || !strings.Contains(out, "[node 31 node 32]") || strings.Contains(out, key) {
		t.Errorf("list:\n%s", out)
	}
	if _, errOut, code := run(t, "registry", "token", "revoke", "1", "--db", db); code != 0 || !strings.Contains(errOut, "revoked token 1") {
		t.Errorf("revoke: exit %d\n%s", code, errOut)
	}
	if out := mustRun(t, "registry", "token", "list", "--db", db); !strings.Contains(out, "revoked") {
		t.Errorf("list after revoke:\n%s", out)
	}
	if out := mustRun(t, "registry", "log", "--db", db); strings.Contains(out, key) || !strings.Contains(out, "token revoke token 1") {
		t.Errorf("log:\n%s", out)
	}
}

// "registry serve --db" takes writes with a token, and serves them at once.
func TestRegistryServeWrites(t *testing.T) {
	db := "sqlite:" + filepath.Join(t.TempDir(), "registry.db")
	mustRun(t, "registry", "import", "--from", "../../../../mesh/registry/testdata/testbed.json", "--db", db)
	key := strings.TrimSpace(mustRun(t, "registry", "token", "create", "--role", "operator", "--db", db))
	base := startServe(t, db)
	req, _ := http.NewRequest("PATCH", base+"nodes/31/", strings.NewReader(`{"name": "renamed"}`))
	req.Header.Set("Authorization", "Token "+key)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("PATCH: %s", resp.Status)
	}
	get, err := http.Get(base + "nodes/31/")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(get.Body)
	get.Body.Close()
	if !strings.Contains(string(b), `"name":"renamed"`) {
		t.Errorf("the write is not served at once:\n%s", b)
	}
	req, _ = http.NewRequest("PATCH", base+"nodes/31/", strings.NewReader(`{"name": "x"}`))
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 401 {
		t.Errorf("PATCH without a token: %s", resp.Status)
	}
	if out := mustRun(t, "registry", "log", "--db", db, "--limit", "1"); !strings.Contains(out, "token:1  node set node 31") {
		t.Errorf("log:\n%s", out)
	}
}

// Enrolment without copying keys: the operator adds a node and invites
// it; node-boot registers the node's own key with the invite over the
// registry's API; the key the registry then serves is the node's; the
// invite is spent.
func TestEnrolAtBoot(t *testing.T) {
	dir := t.TempDir()
	db := "sqlite:" + filepath.Join(dir, "registry.db")
	mustRun(t, "registry", "import", "--from", "../../../../mesh/registry/testdata/testbed.json", "--db", db)
	mustRun(t, "registry", "node", "add", "40", "--island", "1", "--db", db)
	invite := strings.TrimSpace(mustRun(t, "registry", "invite", "--node", "0028", "--db", db))
	if len(invite) != 40 {
		t.Fatalf("invite %q", invite)
	}
	base := startServe(t, db)
	uci := filepath.Join(dir, "confine")
	if err := os.WriteFile(uci, []byte("config node node\n\toption id '0028'\nconfig registry registry\n\toption base_uri '"+base+"'\n"+
		"config testbed testbed\n\toption mgmt_ipv6_prefix48 'fd65:fc41:c50f'\nconfig mgmtnet mgmtnet\n\toption enrol_token '"+invite+"'\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	tincDir := filepath.Join(dir, "tinc")
	out, errOut, code := run(t, "node-boot", "--uci", uci, "--tinc-dir", tincDir, "--no-start")
	if code != 0 || !strings.Contains(out, "registered this node's public key with the registry (the invite is spent)") {
		t.Fatalf("node-boot: exit %d\n%s%s", code, out, errOut)
	}
	priv, err := os.ReadFile(filepath.Join(tincDir, "rsa_key.priv"))
	if err != nil {
		t.Fatal(err)
	}
	pub, err := tincgen.PublicKeyOf(priv)
	if err != nil {
		t.Fatal(err)
	}
	f, err := registry.ParseFile([]byte(mustRun(t, "registry", "export", "--db", db)))
	if err != nil {
		t.Fatal(err)
	}
	var served string
	for _, n := range f.Nodes {
		if n.ID == 40 && n.Tinc != nil {
			served = n.Tinc.PubKey
		}
	}
	if served != string(pub) {
		t.Errorf("the registry holds %q for node 40, not the node's own key", served)
	}
	// Again: the invite is spent, and the boot goes on all the same.
	out, errOut, code = run(t, "node-boot", "--uci", uci, "--tinc-dir", tincDir, "--no-start")
	if code != 0 || !strings.Contains(out, "the registry refused the invite: the invite token was used already (at ") {
		t.Errorf("second node-boot: exit %d\n%s%s", code, out, errOut)
	}
	if log := mustRun(t, "registry", "log", "--db", db, "--limit", "2"); !strings.Contains(log, "invite for node 40  node enrol node 40") {
		t.Errorf("log:\n%s", log)
	}
}

// The README's operator's guide shows what the admin commands say: run
// them (on a database of the test's own, a key of its own for --pubkey)
// and compare, line for line. Commands that need a network, print a
// secret or run on (serve, import, export, log, invite) are not run.
func TestOperatorGuide(t *testing.T) {
	b, err := os.ReadFile("../../../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	guide, ok := strings.CutPrefix(string(b)[strings.Index(string(b), "### Operator's guide"):], "### Operator's guide")
	if !ok {
		t.Fatal("README has no operator's guide")
	}
	guide = guide[:strings.Index(guide, "\n### ")]
	db := "sqlite:" + filepath.Join(t.TempDir(), "registry.db")
	_, pub, err := tincgen.GenerateKey(nil, 2048)
	if err != nil {
		t.Fatal(err)
	}
	keyFile := filepath.Join(t.TempDir(), "key.pub")
	if err := os.WriteFile(keyFile, pub, 0o644); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(guide, "\n")
	ran := 0
	for i := 0; i < len(lines); i++ {
		cmdLine, found := strings.CutPrefix(lines[i], "# mgmtnet ")
		if !found {
			continue
		}
		for strings.HasSuffix(cmdLine, `\`) && i+1 < len(lines) {
			i++
			cmdLine = strings.TrimSuffix(cmdLine, `\`) + " " + strings.TrimSpace(lines[i])
		}
		var want []string
		for j := i + 1; j < len(lines) && !strings.HasPrefix(lines[j], "# ") && !strings.HasPrefix(lines[j], "```"); j++ {
			want = append(want, strings.ReplaceAll(lines[j], registrydb.DefaultURL, db))
		}
		args := strings.Fields(cmdLine)
		if len(args) < 2 || args[0] != "registry" || slices.Contains([]string{"serve", "import", "export", "log", "invite"}, args[1]) {
			continue
		}
		for k, a := range args {
			if strings.HasSuffix(a, ".pub") {
				args[k] = keyFile
			}
		}
		out, errOut, code := run(t, append(args, "--db", db)...)
		if code != 0 {
			t.Fatalf("mgmtnet %s: exit %d\n%s", cmdLine, code, errOut)
		}
		got := strings.Split(strings.TrimSpace(out+errOut), "\n")
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("mgmtnet %s: the README shows (-) but it says (+):\n%s", cmdLine, diff)
		}
		ran++
	}
	if ran < 4 {
		t.Errorf("ran %d commands of the guide, want at least 4 (init, island add, server add, node add)", ran)
	}
}

// Users from the command line: the password from a file or standard
// input, never a flag; their login at /api-token-auth/ of "registry
// serve"; rm revokes what they got.
func TestRegistryUserCommands(t *testing.T) {
	dir := t.TempDir()
	db := "sqlite:" + filepath.Join(dir, "registry.db")
	mustRun(t, "registry", "import", "--from", "../../../../mesh/registry/testdata/testbed.json", "--db", db)
	pw := filepath.Join(dir, "alice.pw")
	os.WriteFile(pw, []byte("correct horse battery\n"), 0o600)
	if _, errOut, code := run(t, "registry", "user", "add", "alice", "--role", "node-admin", "--node", "001f", "--password-file", pw, "--db", db); code != 0 || !strings.Contains(errOut, "added user alice (node-admin)") {
		t.Fatalf("user add: exit %d\n%s", code, errOut)
	}
	var out, errb bytes.Buffer
	code := Run(context.Background(), []string{"registry", "user", "add", "ops", "--role", "operator", "--db", db}, Env{Stdin: strings.NewReader("another long password\n"), Stdout: &out, Stderr: &errb})
	if code != 0 {
		t.Fatalf("user add from stdin: exit %d\n%s", code, errb.String())
	}
	for _, tc := range []struct {
		args []string
		code int
		msg  string
	}{
		{[]string{"add", "bob", "--role", "operator", "--password-file", "/nonexistent"}, 1, "--password-file"},
		{[]string{"add", "bob", "--password-file", pw}, 2, "want --role"},
		{[]string{"add", "alice", "--role", "operator", "--password-file", pw}, 1, "exists already"},
		{[]string{"rm", "nobody"}, 1, "not found"},
		{[]string{"list", "--role", "operator"}, 2, "are for add"},
	} {
		if _, errOut, code := run(t, append(append([]string{"registry", "user"}, tc.args...), "--db", db)...); code != tc.code || !strings.Contains(errOut, tc.msg) {
			t.Errorf("user %v: exit %d, want %d with %q:\n%s", tc.args, code, tc.code, tc.msg, errOut)
		}
	}
	if out := mustRun(t, "registry", "user", "list", "--db", db); !strings.Contains(out, "alice") || !strings.Contains(out, "[node 31]") || !strings.Contains(out, "ops") {
		t.Errorf("user list:\n%s", out)
	}
	base := startServe(t, db)
	resp, err := http.PostForm(strings.TrimSuffix(base, "/api/")+"/api-token-auth/", url.Values{"username": {"alice"}, "password": {"correct horse battery"}})
	if err != nil {
		t.Fatal(err)
	}
	var got struct{ Token string }
	json.NewDecoder(resp.Body).Decode(&got)
	resp.Body.Close()
	if resp.StatusCode != 200 || len(got.Token) != 40 {
		t.Fatalf("login: %s %+v", resp.Status, got)
	}
	if _, errOut, code := run(t, "registry", "user", "rm", "alice", "--db", db); code != 0 || !strings.Contains(errOut, "revoked its tokens") {
		t.Errorf("user rm: exit %d\n%s", code, errOut)
	}
	req, _ := http.NewRequest("PATCH", base+"nodes/31/", strings.NewReader(`{}`))
	req.Header.Set("Authorization", "Token "+got.Token)
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 401 {
		t.Errorf("alice's token after user rm: %s, want 401", resp.Status)
	}
}
