package registryapi

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/confine-project/mgmtnet/mesh/registry"
	"github.com/confine-project/mgmtnet/registrydb"
	"github.com/confine-project/mgmtnet/tincgen"
)

// testDB is a real SQLite database with the testdata testbed imported.
func testDB(t *testing.T) (*registrydb.DB, *registry.File) {
	t.Helper()
	ctx := context.Background()
	db, err := registrydb.Open(ctx, "sqlite:"+filepath.Join(t.TempDir(), "registry.db"), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	f, err := registry.LoadFile("../mesh/registry/testdata/testbed.json")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.Replace(ctx, f, "test", "testdata"); err != nil {
		t.Fatal(err)
	}
	return db, f
}

// The write API against a real SQLite database: tokens, roles, the
// client's checks, and the controller's error answers.
func TestWriteAPI(t *testing.T) {
	ctx := context.Background()
	db, f := testDB(t)
	op, _, err := db.CreateToken(ctx, "test", "operator", registrydb.RoleOperator, nil)
	if err != nil {
		t.Fatal(err)
	}
	alice, _, err := db.CreateToken(ctx, "test", "alice", registrydb.RoleNodeAdmin, []string{"node 31"})
	if err != nil {
		t.Fatal(err)
	}
	gone, goneID, _ := db.CreateToken(ctx, "test", "gone", registrydb.RoleOperator, nil)
	if err := db.RevokeToken(ctx, "test", goneID); err != nil {
		t.Fatal(err)
	}
	h := New(db, registry.NewServer(f, nil), nil)
	var written atomic.Uint64
	h.Written = func(_ context.Context, v uint64) { written.Store(v) }
	ts := httptest.NewServer(h)
	defer ts.Close()
	_, pub, err := tincgen.GenerateKey(nil, 2048)
	if err != nil {
		t.Fatal(err)
	}
	newKey, _ := json.Marshal(string(pub))

	do := func(method, path, token, body string) (int, string) {
		t.Helper()
		req, _ := http.NewRequest(method, ts.URL+path, strings.NewReader(body))
		if token != "" {
			req.Header.Set("Authorization", "Token "+token)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var b strings.Builder
		buf := make([]byte, 4096)
		for {
			n, err := resp.Body.Read(buf)
			b.Write(buf[:n])
			if err != nil {
				break
			}
		}
		return resp.StatusCode, b.String()
	}
	for _, tc := range []struct {
		name, method, path, token, body string
		status                          int
		contains                        string
	}{
		{"read", "GET", "/api/nodes/31/", "", "", 200, `"node_31"`},
		{"no token", "PATCH", "/api/nodes/31/", "", `{}`, 401, `"Invalid token."`},
		{"bad token", "PATCH", "/api/nodes/31/", strings.Repeat("a", 40), `{}`, 401, `"Invalid token."`},
		{"revoked token", "PATCH", "/api/nodes/31/", gone, `{}`, 401, `"Invalid token."`},
		{"another's node", "PATCH", "/api/nodes/32/", alice, `{"tinc": {"pubkey": ` + string(newKey) + `}}`, 403, "may not write node 32"},
		{"a node admin renames", "PATCH", "/api/nodes/31/", alice, `{"name": "x"}`, 403, "Only an operator may set name"},
		{"a node admin sets egress", "PATCH", "/api/nodes/31/", alice, `{"properties": {"mgmtnet.egress": "yes"}}`, 403, "egress and DNS-service grants"},
		{"a node admin makes a gateway", "PATCH", "/api/nodes/31/", alice, `{"tinc": {"addresses": [{"addr": "192.0.2.9"}]}}`, 403, "Only an operator may set tinc addresses"},
		{"bad key", "PATCH", "/api/nodes/31/", alice, `{"tinc": {"pubkey": "ssh-rsa AAAA"}}`, 400, "rejected: node 31 (node_31): public key is not PEM"},
		{"not JSON", "PATCH", "/api/nodes/31/", alice, `{"tinc": `, 400, "want a JSON object"},
		{"unknown field", "PATCH", "/api/nodes/31/", alice, `{"tinc": {"key": "x"}}`, 400, "unknown field"},
		{"new key", "PATCH", "/api/nodes/31/", alice, `{"tinc": {"pubkey": ` + string(newKey) + `}}`, 200, `"name":"node_31"`},
		{"no such island", "PATCH", "/api/nodes/31/", op, `{"island": 9}`, 400, "island 9 does not exist"},
		{"operator deletes", "DELETE", "/api/nodes/32/", op, ``, 204, ``},
		{"a node admin deletes", "DELETE", "/api/nodes/31/", alice, ``, 403, "permission"},
		{"gone", "DELETE", "/api/nodes/32/", op, ``, 404, `"Not found."`},
		{"add without an id", "POST", "/api/nodes/", op, `{}`, 400, "id: want the new member's id"},
		{"a node admin adds", "POST", "/api/nodes/", alice, `{"id": 40}`, 403, "Only an operator may add members"},
		{"add without a token", "POST", "/api/nodes/", "", `{"id": 40}`, 401, "Invalid token."},
		{"add with a bad key", "POST", "/api/nodes/", op, `{"id": 40, "tinc": {"pubkey": "x"}}`, 400, "rejected: node 40 (node_40): public key is not PEM"},
		{"add", "POST", "/api/nodes/", op, `{"id": 40, "name": "forty", "island": 1, "tinc": {"pubkey": ` + string(newKey) + `}}`, 201, `"name":"node_40"`},
		{"add twice", "POST", "/api/nodes/", op, `{"id": 40}`, 400, "exists already"},
		{"add a host", "POST", "/api/hosts/", op, `{"id": 9, "name": "laptop"}`, 201, `"name":"laptop"`},
		{"POST a member", "POST", "/api/nodes/31/", op, `{}`, 405, "not allowed"},
	} {
		status, body := do(tc.method, tc.path, tc.token, tc.body)
		if status != tc.status || !strings.Contains(body, tc.contains) {
			t.Errorf("%s: %d %s; want %d with %q", tc.name, status, body, tc.status, tc.contains)
		}
	}
	m, err := db.Member(ctx, registrydb.KindNode, 31)
	if err != nil || m.Tinc == nil || m.Tinc.PubKey != string(pub) {
		t.Errorf("node 31's key was not changed: %+v, %v", m, err)
	}
	if v, _ := db.Version(ctx); written.Load() != v {
		t.Errorf("Written saw version %d, the database is at %d", written.Load(), v)
	}
	if m, err := db.Member(ctx, registrydb.KindNode, 40); err != nil || m.Name != "forty" || m.Island != 1 || m.Tinc == nil || m.Tinc.PubKey != string(pub) {
		t.Errorf("node 40 as added: %+v, %v", m, err)
	}
	log, _ := db.Log(ctx, 4)
	if len(log) != 4 || log[0].Actor != "token:1 (operator)" || log[0].Action != "host add" || log[1].Action != "node add" || log[2].Action != "node rm" || log[3].Actor != "token:2 (alice)" || log[3].Action != "node set" {
		t.Errorf("audit log: %+v", log)
	}
}

// Enrolment: an invite is the only credential, spent once; each refusal
// says why.
func TestEnrolAPI(t *testing.T) {
	ctx := context.Background()
	db, f := testDB(t)
	if _, _, err := db.PutMember(ctx, "op", registrydb.KindNode, registry.FileMember{ID: 40, Name: "node-40", Island: 1}, true); err != nil {
		t.Fatal(err)
	}
	invite, err := db.CreateInvite(ctx, "op", registrydb.KindNode, 40, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(New(db, registry.NewServer(f, nil), nil))
	defer ts.Close()
	c, err := registry.New(ts.URL+"/api/", registry.Options{})
	if err != nil {
		t.Fatal(err)
	}
	key := f.Nodes[0].Tinc.PubKey
	for _, tc := range []struct {
		name, token, pubkey string
		id                  uint64
		err                 string
	}{
		{"unknown", strings.Repeat("0", 40), key, 40, "status 403: unknown invite token"},
		{"another node", invite, key, 31, "status 403: unknown invite token"},
		{"bad key", invite, "ssh-rsa AAAA", 40, "status 400: rejected: node 40 (node_40): public key is not PEM"},
		{"good", invite, key, 40, ""},
		{"spent", invite, key, 40, "status 403: the invite token was used already"},
	} {
		err := c.Enrol(ctx, "nodes", tc.id, tc.token, tc.pubkey)
		if tc.err == "" && err != nil || tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)) {
			t.Errorf("%s: %v; want %q", tc.name, err, tc.err)
		}
	}
	if m, err := db.Member(ctx, registrydb.KindNode, 40); err != nil || m.Tinc == nil || m.Tinc.PubKey != key {
		t.Errorf("node 40 after enrolment: %+v, %v", m, err)
	}
}

// A user's password for a token, as at the controller: a form or JSON,
// the framework's answers, and the token works on the write API.
func TestTokenAuth(t *testing.T) {
	ctx := context.Background()
	db, f := testDB(t)
	if err := db.CreateUser(ctx, "op", "alice", "correct horse battery", "", registrydb.RoleNodeAdmin, []string{"node 31"}); err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(New(db, registry.NewServer(f, nil), nil))
	defer ts.Close()
	post := func(ct, body string) (int, string) {
		resp, err := http.Post(ts.URL+"/api-token-auth/", ct, strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	for _, tc := range []struct {
		name, ct, body string
		status         int
		contains       string
	}{
		{"wrong password", "application/x-www-form-urlencoded", "username=alice&password=nope", 400, `{"non_field_errors":["Unable to login with provided credentials."]}`},
		{"unknown user", "application/json", `{"username": "mallory", "password": "correct horse battery"}`, 400, "Unable to login"},
		{"no password", "application/json", `{"username": "alice"}`, 400, `{"password":["This field is required."]}`},
		{"not JSON", "application/json", `{"username": `, 400, "JSON parse error"},
	} {
		if status, body := post(tc.ct, tc.body); status != tc.status || !strings.Contains(body, tc.contains) {
			t.Errorf("%s: %d %s; want %d with %s", tc.name, status, body, tc.status, tc.contains)
		}
	}
	status, body := post("application/x-www-form-urlencoded", "username=alice&password=correct+horse+battery")
	var got struct{ Token string }
	if status != 200 || json.Unmarshal([]byte(body), &got) != nil || len(got.Token) != 40 {
		t.Fatalf("login: %d %s", status, body)
	}
	// The token is alice's: her node, not another.
	for _, tc := range []struct {
		path   string
		status int
	}{{"/api/nodes/31/", 200}, {"/api/nodes/32/", 403}} {
		req, _ := http.NewRequest("PATCH", ts.URL+tc.path, strings.NewReader(`{"tinc": {"pubkey": `+jsonString(f.Nodes[0].Tinc.PubKey)+`}}`))
		req.Header.Set("Authorization", "Token "+got.Token)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != tc.status {
			t.Errorf("PATCH %s with alice's login token: %s, want %d", tc.path, resp.Status, tc.status)
		}
	}
	if resp, err := http.Get(ts.URL + "/api-token-auth/"); err != nil || resp.StatusCode != 405 {
		t.Errorf("GET /api-token-auth/: %v %v", resp.Status, err)
	}
}
