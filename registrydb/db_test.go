package registrydb

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/confine-project/mgmtnet/mesh/registry"
	"github.com/confine-project/mgmtnet/test/pgtest"
)

// backends returns a fresh database URL of each kind: an SQLite file and
// a real PostgreSQL server (started for the test, as nobody).
func backends(t *testing.T) map[string]string {
	t.Helper()
	return map[string]string{
		SQLite:   "sqlite:" + filepath.Join(t.TempDir(), "registry.db"),
		Postgres: pgtest.Start(t),
	}
}

func testdataFile(t *testing.T) *registry.File {
	t.Helper()
	f, err := registry.LoadFile("../mesh/registry/testdata/testbed.json")
	if err != nil {
		t.Fatal(err)
	}
	return f
}

// openTestbed opens the database at url with the testdata testbed
// imported, closed when the test ends.
func openTestbed(t *testing.T, url string) (*DB, *registry.File) {
	t.Helper()
	db, err := Open(context.Background(), url, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	f := testdataFile(t)
	if _, err := db.Replace(context.Background(), f, "test", "testdata"); err != nil {
		t.Fatal(err)
	}
	return db, f
}

// The testbed goes in and comes back the same, with a version that grows
// by one per write; an empty database says how to fill it.
func TestReplaceAndRead(t *testing.T) {
	ctx := context.Background()
	for name, url := range backends(t) {
		t.Run(name, func(t *testing.T) {
			db, err := Open(ctx, url, nil)
			if err != nil {
				t.Fatal(err)
			}
			defer db.Close()
			if _, _, err := db.Testbed(ctx); !errors.Is(err, ErrNoTestbed) {
				t.Errorf("empty database: %v", err)
			}
			if _, err := db.Version(ctx); !errors.Is(err, ErrNoTestbed) {
				t.Errorf("empty database version: %v", err)
			}
			want := testdataFile(t)
			for i := uint64(1); i <= 2; i++ {
				v, err := db.Replace(ctx, want, "test", "testdata")
				if err != nil || v != i {
					t.Fatalf("Replace %d: version %d, %v", i, v, err)
				}
			}
			got, v, err := db.Testbed(ctx)
			if err != nil || v != 2 {
				t.Fatalf("Testbed: version %d, %v", v, err)
			}
			if want.Dialect == "" {
				want.Dialect = registry.DialectV1
			}
			if diff := cmp.Diff(want, got, cmpopts.EquateEmpty(), cmp.Comparer(func(a, b interface{ String() string }) bool { return a.String() == b.String() })); diff != "" {
				t.Errorf("read back (-want +got):\n%s", diff)
			}
			// An invalid testbed is refused whole: the old one stays.
			bad := *want
			bad.Nodes = append(bad.Nodes, bad.Nodes[0])
			if _, err := db.Replace(ctx, &bad, "test", "bad"); err == nil || !strings.Contains(err.Error(), "import") {
				t.Errorf("a duplicate node: %v", err)
			}
			if v, _ := db.Version(ctx); v != 2 {
				t.Errorf("version after a refused import: %d", v)
			}
			// The audit log: both imports, newest first, with the
			// testbed before and after; the refused one left none.
			log, err := db.Log(ctx, 0)
			if err != nil || len(log) != 2 {
				t.Fatalf("audit log: %v, %+v", err, log)
			}
			if e := log[0]; e.Seq <= log[1].Seq || e.Actor != "test" || e.Action != "import" || e.Object != "testbed" ||
				e.Before != `{"version":1,"mgmt_ipv6_prefix":"fd65:fc41:c50f::/48","islands":2,"servers":1,"nodes":2,"hosts":1}` ||
				e.After != `{"version":2,"source":"testdata","mgmt_ipv6_prefix":"fd65:fc41:c50f::/48","islands":2,"servers":1,"nodes":2,"hosts":1}` {
				t.Errorf("newest entry: %+v", e)
			}
			if log[1].Before != "" || log[1].At.IsZero() {
				t.Errorf("first import: %+v", log[1])
			}
			if one, _ := db.Log(ctx, 1); len(one) != 1 || one[0].Seq != log[0].Seq {
				t.Errorf("Log(1): %+v", one)
			}
		})
	}
}

// A database migrated by a newer mgmtnet is refused with a clear error,
// and left as it is.
func TestRefusesNewerSchema(t *testing.T) {
	ctx := context.Background()
	for name, url := range backends(t) {
		t.Run(name, func(t *testing.T) {
			db, err := Open(ctx, url, nil)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := db.sql.ExecContext(ctx, db.rebind(`UPDATE schema_version SET version = ?`), SchemaVersion+1); err != nil {
				t.Fatal(err)
			}
			db.Close()
			_, err = Open(ctx, url, nil)
			if !errors.Is(err, ErrSchemaTooNew) || !strings.Contains(err.Error(), "run a newer mgmtnet") {
				t.Fatalf("newer schema: %v", err)
			}
		})
	}
}

// Two instances on one PostgreSQL database: they migrate it together
// (one waits for the other), and a write on one is read on the other.
func TestTwoInstancesShareOnePostgres(t *testing.T) {
	ctx := context.Background()
	url := pgtest.Start(t)
	dbs := make([]*DB, 2)
	errs := make([]error, 2)
	var wg sync.WaitGroup
	for i := range dbs {
		wg.Go(func() { dbs[i], errs[i] = Open(ctx, url, nil) })
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("instance %d: %v", i, err)
		}
		defer dbs[i].Close()
	}
	if _, err := dbs[0].Replace(ctx, testdataFile(t), "test", "testdata"); err != nil {
		t.Fatal(err)
	}
	f, v, err := dbs[1].Testbed(ctx)
	if err != nil || v != 1 || len(f.Nodes) != 2 {
		t.Fatalf("the other instance reads version %d, %v", v, err)
	}
}

func TestOpenErrors(t *testing.T) {
	ctx := context.Background()
	for _, url := range []string{"mysql://x", "sqlite:", "/var/lib/x.db"} {
		if _, err := Open(ctx, url, nil); !errors.Is(err, ErrBadURL) {
			t.Errorf("%q: %v", url, err)
		}
	}
	dir := t.TempDir()
	// A missing directory is created; one that cannot be is an error
	// that names the database.
	db, err := Open(ctx, "sqlite:"+filepath.Join(dir, "new", "dir", "r.db"), nil)
	if err != nil {
		t.Errorf("a database in a new directory: %v", err)
	} else {
		db.Close()
	}
	if err := os.WriteFile(filepath.Join(dir, "file"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(ctx, "sqlite:"+filepath.Join(dir, "file", "r.db"), nil); err == nil || !strings.Contains(err.Error(), "open registry database sqlite:") {
		t.Errorf("a database under a file: %v", err)
	}
	if got := redact("postgres://u:secret@h/db"); got != "postgres://u:xxxxx@h/db" {
		t.Errorf("redact: %s", got)
	}
}

// Member writes are checked as clients check what the registry serves, and
// refused with the client's reason; each is one audited transaction.
func TestMemberWrites(t *testing.T) {
	ctx := context.Background()
	for name, url := range backends(t) {
		t.Run(name, func(t *testing.T) {
			db, f := openTestbed(t, url)
			key := f.Nodes[0].Tinc.PubKey
			node := registry.FileMember{ID: 40, Name: "node-40", Island: 1, Tinc: &registry.FileTinc{PubKey: key}}
			v, _, err := db.PutMember(ctx, "op", KindNode, node, true)
			if err != nil || v != 2 {
				t.Fatalf("add node 40: version %d, %v", v, err)
			}
			got, err := db.Member(ctx, KindNode, 40)
			if err != nil || got.Tinc == nil || got.Tinc.Name != "node_40" {
				t.Fatalf("node 40: %+v, %v", got, err)
			}
			if _, _, err := db.PutMember(ctx, "op", KindNode, node, true); !errors.Is(err, ErrExists) {
				t.Errorf("add twice: %v", err)
			}
			for _, tc := range []struct {
				name   string
				mod    func(*registry.FileMember)
				reason string
			}{
				{"bad key", func(m *registry.FileMember) { m.Tinc = &registry.FileTinc{PubKey: "ssh-rsa AAAA"} }, "public key is not PEM"},
				{"another's address", func(m *registry.FileMember) { m.MgmtAddr = "fd65:fc41:c50f:1f::2" }, "it is the address of node 31"},
				{"no such island", func(m *registry.FileMember) { m.Island = 9 }, "island 9 does not exist"},
			} {
				m := node
				m.Tinc = &registry.FileTinc{PubKey: key}
				tc.mod(&m)
				if _, _, err := db.PutMember(ctx, "op", KindNode, m, false); !errors.Is(err, ErrRejected) || !strings.Contains(err.Error(), tc.reason) {
					t.Errorf("%s: %v; want rejected: %s", tc.name, err, tc.reason)
				}
			}
			if v, _ := db.Version(ctx); v != 2 {
				t.Errorf("version after refused writes: %d, want 2", v)
			}
			// A key removed: no error (clients skip the member).
			keyless := node
			keyless.Tinc = nil
			if _, _, err := db.PutMember(ctx, "op", KindNode, keyless, false); err != nil {
				t.Errorf("remove the key: %v", err)
			}
			if _, err := db.DeleteIsland(ctx, "op", 1); !errors.Is(err, ErrRejected) || !strings.Contains(err.Error(), "in use") {
				t.Errorf("remove an island in use: %v", err)
			}
			if _, err := db.PutIsland(ctx, "op", registry.FileIsland{ID: 3, Name: "three"}, true); err != nil {
				t.Errorf("add island 3: %v", err)
			}
			if _, err := db.DeleteIsland(ctx, "op", 3); err != nil {
				t.Errorf("remove island 3: %v", err)
			}
			if _, err := db.DeleteMember(ctx, "op", KindNode, 40); err != nil {
				t.Errorf("remove node 40: %v", err)
			}
			if _, err := db.DeleteMember(ctx, "op", KindNode, 40); !errors.Is(err, ErrNotFound) {
				t.Errorf("remove node 40 again: %v", err)
			}
			log, err := db.Log(ctx, 0)
			if err != nil {
				t.Fatal(err)
			}
			var actions []string
			for _, e := range log {
				actions = append(actions, e.Actor+" "+e.Action+" "+e.Object)
			}
			want := []string{"op node rm node 40", "op island rm island 3", "op island add island 3", "op node set node 40", "op node add node 40", "test import testbed"}
			if diff := cmp.Diff(want, actions); diff != "" {
				t.Errorf("audit log (-want +got):\n%s", diff)
			}
			if !strings.Contains(log[0].Before, `"name":"node-40"`) || log[0].After != "" {
				t.Errorf("rm entry: %+v", log[0])
			}
		})
	}
}

// A backup is a whole SQLite copy, of either kind of database: the same
// testbed at the same version, and the same audit log.
func TestBackup(t *testing.T) {
	ctx := context.Background()
	for name, url := range backends(t) {
		t.Run(name, func(t *testing.T) {
			db, _ := openTestbed(t, url)
			if _, err := db.PutIsland(ctx, "op", registry.FileIsland{ID: 9, Name: "nine"}, true); err != nil {
				t.Fatal(err)
			}
			path := filepath.Join(t.TempDir(), "backup.db")
			if err := db.Backup(ctx, path); err != nil {
				t.Fatal(err)
			}
			if err := db.Backup(ctx, path); err == nil || !strings.Contains(err.Error(), "not replacing it") {
				t.Errorf("backup over an existing file: %v", err)
			}
			b, err := Open(ctx, "sqlite:"+path, nil)
			if err != nil {
				t.Fatal(err)
			}
			defer b.Close()
			want, wv, _ := db.Testbed(ctx)
			got, gv, err := b.Testbed(ctx)
			if err != nil || gv != wv {
				t.Fatalf("backup: version %d (want %d), %v", gv, wv, err)
			}
			if diff := cmp.Diff(want, got, cmpopts.EquateEmpty(), cmp.Comparer(func(a, b interface{ String() string }) bool { return a.String() == b.String() })); diff != "" {
				t.Errorf("backup's testbed (-want +got):\n%s", diff)
			}
			wl, _ := db.Log(ctx, 0)
			gl, err := b.Log(ctx, 0)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(wl, gl, cmp.Comparer(func(a, b time.Time) bool { return a.Equal(b) })); diff != "" {
				t.Errorf("backup's audit log (-want +got):\n%s", diff)
			}
			ents, _ := os.ReadDir(filepath.Dir(path))
			for _, e := range ents {
				if strings.Contains(e.Name(), ".tmp-") {
					t.Errorf("a temporary file is left: %s", e.Name())
				}
			}
		})
	}
}

// A token's key is shown once and kept only as its hash; a revoked or
// unknown key does not authenticate; roles and scopes are checked.
func TestTokens(t *testing.T) {
	ctx := context.Background()
	for name, url := range backends(t) {
		t.Run(name, func(t *testing.T) {
			db, err := Open(ctx, url, nil)
			if err != nil {
				t.Fatal(err)
			}
			defer db.Close()
			key, id, err := db.CreateToken(ctx, "op", "alice's nodes", RoleNodeAdmin, []string{"node 32", "node 31"})
			if err != nil || len(key) != 40 || strings.Trim(key, "0123456789abcdef") != "" {
				t.Fatalf("create: %q, %v", key, err)
			}
			var n int
			if err := db.sql.QueryRowContext(ctx, db.rebind(`SELECT COUNT(*) FROM tokens WHERE hash = ? OR hash = ?`), key, hashKey(key)).Scan(&n); err != nil || n != 1 {
				t.Fatalf("stored: %d rows, %v", n, err)
			}
			var raw string
			db.sql.QueryRowContext(ctx, `SELECT hash FROM tokens`).Scan(&raw)
			if raw == key {
				t.Fatalf("the key itself is stored")
			}
			tok, err := db.Authenticate(ctx, key)
			if err != nil || tok.ID != id || tok.Role != RoleNodeAdmin || !slices.Equal(tok.Scope, []string{"node 31", "node 32"}) {
				t.Errorf("authenticate: %+v, %v", tok, err)
			}
			for _, bad := range []string{"", "x", strings.Repeat("0", 40), key[:39], key + "0"} {
				if _, err := db.Authenticate(ctx, bad); !errors.Is(err, ErrBadToken) {
					t.Errorf("key %q: %v", bad, err)
				}
			}
			for _, tc := range []struct {
				role  string
				scope []string
			}{{RoleOperator, []string{"node 31"}}, {RoleNodeAdmin, nil}, {RoleNodeAdmin, []string{"host 7"}}, {RoleHostOwner, []string{"host x"}}, {"root", nil}} {
				if _, _, err := db.CreateToken(ctx, "op", "", tc.role, tc.scope); !errors.Is(err, ErrRejected) {
					t.Errorf("%s %v: %v", tc.role, tc.scope, err)
				}
			}
			if err := db.RevokeToken(ctx, "op", id); err != nil {
				t.Fatal(err)
			}
			if _, err := db.Authenticate(ctx, key); !errors.Is(err, ErrBadToken) {
				t.Errorf("revoked key: %v", err)
			}
			if err := db.RevokeToken(ctx, "op", id); err == nil || !strings.Contains(err.Error(), "revoked already") {
				t.Errorf("revoke twice: %v", err)
			}
			if err := db.RevokeToken(ctx, "op", 99); !errors.Is(err, ErrNotFound) {
				t.Errorf("revoke 99: %v", err)
			}
			toks, err := db.Tokens(ctx)
			if err != nil || len(toks) != 1 || toks[0].Revoked.IsZero() || toks[0].Name != "alice's nodes" {
				t.Errorf("tokens: %+v, %v", toks, err)
			}
			log, _ := db.Log(ctx, 0)
			if len(log) != 2 || log[0].Action != "token revoke" || log[1].Action != "token create" || strings.Contains(log[1].After, key) {
				t.Errorf("audit log: %+v", log)
			}
		})
	}
}

// An invite enrols its member once, before it expires, and only with a key
// that a client would take; each failure says which.
func TestInvites(t *testing.T) {
	ctx := context.Background()
	for name, url := range backends(t) {
		t.Run(name, func(t *testing.T) {
			db, f := openTestbed(t, url)
			if _, _, err := db.PutMember(ctx, "op", KindNode, registry.FileMember{ID: 40, Name: "node-40", Island: 1}, true); err != nil {
				t.Fatal(err)
			}
			if _, err := db.CreateInvite(ctx, "op", KindNode, 41, time.Hour); !errors.Is(err, ErrNotFound) {
				t.Errorf("invite for a missing node: %v", err)
			}
			key, err := db.CreateInvite(ctx, "op", KindNode, 40, time.Hour)
			if err != nil {
				t.Fatal(err)
			}
			pub := f.Nodes[0].Tinc.PubKey
			if _, _, err := db.Enrol(ctx, KindNode, 40, key, "ssh-rsa AAAA"); !errors.Is(err, ErrRejected) {
				t.Errorf("enrol with a bad key: %v", err)
			}
			if _, _, err := db.Enrol(ctx, KindNode, 31, key, pub); !errors.Is(err, ErrInviteUnknown) {
				t.Errorf("enrol another node: %v", err)
			}
			m, _, err := db.Enrol(ctx, KindNode, 40, key, pub)
			if err != nil || m.Tinc == nil || m.Tinc.Name != "node_40" {
				t.Fatalf("enrol: %+v, %v", m, err)
			}
			if _, _, err := db.Enrol(ctx, KindNode, 40, key, pub); !errors.Is(err, ErrInviteSpent) {
				t.Errorf("enrol twice: %v", err)
			}
			short, err := db.CreateInvite(ctx, "op", KindNode, 40, time.Nanosecond)
			if err != nil {
				t.Fatal(err)
			}
			time.Sleep(time.Millisecond)
			if _, _, err := db.Enrol(ctx, KindNode, 40, short, pub); !errors.Is(err, ErrInviteExpired) {
				t.Errorf("enrol with an expired invite: %v", err)
			}
			log, _ := db.Log(ctx, 3)
			if log[0].Action != "invite create" || log[1].Action != "node enrol" || strings.Contains(log[0].After, short) {
				t.Errorf("audit log: %+v", log)
			}
		})
	}
}

// The feed: for every version a reader may hold, what Changes gives, put
// over the testbed of that version, is the testbed now. An import raises
// the floor; a version from the future is refused.
func TestChanges(t *testing.T) {
	ctx := context.Background()
	for name, url := range backends(t) {
		t.Run(name, func(t *testing.T) {
			db, f := openTestbed(t, url)
			key := f.Nodes[0].Tinc.PubKey
			at := map[uint64]*registry.File{}
			snap := func() {
				tb, v, err := db.Testbed(ctx)
				if err != nil {
					t.Fatal(err)
				}
				at[v] = tb
			}
			snap()
			steps := []func() (uint64, error){
				func() (uint64, error) {
					v, _, err := db.PutMember(ctx, "op", KindNode, registry.FileMember{ID: 40, Name: "n40", Tinc: &registry.FileTinc{PubKey: key}}, true)
					return v, err
				},
				func() (uint64, error) {
					v, _, err := db.PutMember(ctx, "op", KindNode, registry.FileMember{ID: 41, Name: "n41", Properties: map[string]string{"a": "b"}}, true)
					return v, err
				},
				func() (uint64, error) { return db.DeleteMember(ctx, "op", KindNode, 31) },
				func() (uint64, error) {
					return db.PutIsland(ctx, "op", registry.FileIsland{ID: 7, Name: "seven"}, true)
				},
				func() (uint64, error) {
					v, _, err := db.PutMember(ctx, "op", KindNode, registry.FileMember{ID: 40, Name: "n40 renamed", Island: 7, Tinc: &registry.FileTinc{PubKey: key}}, false)
					return v, err
				},
				// Removed, then added again: a put, not a removal.
				func() (uint64, error) {
					v, _, err := db.PutMember(ctx, "op", KindNode, registry.FileMember{ID: 31, Name: "back", Tinc: &registry.FileTinc{PubKey: key}}, true)
					return v, err
				},
				func() (uint64, error) { return db.DeleteMember(ctx, "op", KindNode, 41) },
			}
			for i, step := range steps {
				if _, err := step(); err != nil {
					t.Fatalf("step %d: %v", i, err)
				}
				snap()
			}
			now, cur, _ := db.Testbed(ctx)
			for since, old := range at {
				c, err := db.Changes(ctx, since)
				if err != nil {
					t.Fatalf("since %d: %v", since, err)
				}
				if c.Version != cur || c.Head.MgmtPrefix != now.MgmtPrefix || len(c.Head.Islands) != len(now.Islands) {
					t.Errorf("since %d: version %d head %+v", since, c.Version, c.Head)
				}
				got := c.Apply(old)
				if diff := cmp.Diff(now, got, cmpopts.EquateEmpty(), cmp.Comparer(func(a, b interface{ String() string }) bool { return a.String() == b.String() })); diff != "" {
					t.Errorf("since %d: testbed %d + changes != testbed %d (-now +got):\n%s", since, since, cur, diff)
				}
				if since == cur && (len(c.Put) != 0 || len(c.Removed) != 0) {
					t.Errorf("since now: %+v", c)
				}
			}
			if c, _ := db.Changes(ctx, cur-1); len(c.Put) != 0 || len(c.Removed) != 1 || c.Removed[0].ID != 41 {
				t.Errorf("last step: %+v", c)
			}
			if _, err := db.Changes(ctx, cur+1); !errors.Is(err, ErrFeedGone) {
				t.Errorf("a future version: %v", err)
			}
			v, err := db.Replace(ctx, f, "op", "testdata")
			if err != nil {
				t.Fatal(err)
			}
			if _, err := db.Changes(ctx, cur); !errors.Is(err, ErrFeedGone) {
				t.Errorf("from before an import: %v", err)
			}
			if c, err := db.Changes(ctx, v); err != nil || len(c.Put)+len(c.Removed) != 0 {
				t.Errorf("from the import: %+v, %v", c, err)
			}
		})
	}
}

// Users: a password for a token of the user's role (Django's hash
// format, so an old controller's hashes can be set as they are); an
// unknown user and a wrong password fail alike; removing the user revokes
// the tokens it got.
func TestUsers(t *testing.T) {
	ctx := context.Background()
	for name, url := range backends(t) {
		t.Run(name, func(t *testing.T) {
			db, _ := openTestbed(t, url)
			if err := db.CreateUser(ctx, "op", "alice", "short", "", RoleNodeAdmin, []string{"node 31"}); !errors.Is(err, ErrRejected) {
				t.Errorf("a short password: %v", err)
			}
			if err := db.CreateUser(ctx, "op", "alice", "correct horse battery", "", RoleNodeAdmin, []string{"node 31"}); err != nil {
				t.Fatal(err)
			}
			if err := db.CreateUser(ctx, "op", "alice", "another password!", "", RoleOperator, nil); !errors.Is(err, ErrExists) {
				t.Errorf("alice twice: %v", err)
			}
			// "django password" in Django 1.6's form (12000 iterations, as its
			// auth_user table holds it), made with Python's
			// hashlib.pbkdf2_hmac, which Django's hasher calls.
			const django = "pbkdf2_sha256$12000$Lc2FzjWz0M1x$NZsLDzHOvfismWuOjJkWwpFuLkHv5S82cC4X1qZ+ivo="
			if err := db.CreateUser(ctx, "op", "bob", "", django, RoleOperator, nil); err != nil {
				t.Fatal(err)
			}
			for _, tc := range []struct{ user, password string }{{"alice", "wrong password!!"}, {"nobody", "correct horse battery"}, {"bob", "not his password"}} {
				if _, err := db.Login(ctx, tc.user, tc.password); !errors.Is(err, ErrBadLogin) {
					t.Errorf("%s with a wrong password: %v", tc.user, err)
				}
			}
			if _, err := db.Login(ctx, "bob", "django password"); err != nil {
				t.Errorf("bob with the old controller's hash: %v", err)
			}
			key, err := db.Login(ctx, "alice", "correct horse battery")
			if err != nil {
				t.Fatal(err)
			}
			tok, err := db.Authenticate(ctx, key)
			if err != nil || tok.Role != RoleNodeAdmin || !slices.Equal(tok.Scope, []string{"node 31"}) || tok.Name != "login:alice" {
				t.Errorf("alice's token: %+v, %v", tok, err)
			}
			users, err := db.Users(ctx)
			if err != nil || len(users) != 2 || users[0].Name != "alice" {
				t.Errorf("users: %+v, %v", users, err)
			}
			if err := db.DeleteUser(ctx, "op", "alice"); err != nil {
				t.Fatal(err)
			}
			if _, err := db.Authenticate(ctx, key); !errors.Is(err, ErrBadToken) {
				t.Errorf("alice's token after her removal: %v", err)
			}
			if _, err := db.Login(ctx, "alice", "correct horse battery"); !errors.Is(err, ErrBadLogin) {
				t.Errorf("alice after her removal: %v", err)
			}
		})
	}
}
