package registry

import (
	"compress/gzip"
	"context"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func base64Std(b []byte) string { return base64.StdEncoding.EncodeToString(b) }

func mustURL(s string) *url.URL {
	u, err := url.Parse(s)
	if err != nil {
		panic(err)
	}
	return u
}

type response struct {
	Status      int
	ContentType string
	Link        string
	Location    string
	Body        string
}

func do(h http.Handler, method, target string, hdr ...string) (response, http.Header) {
	req := httptest.NewRequest(method, target, nil)
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return response{rec.Code, rec.Header().Get("Content-Type"), rec.Header().Get("Link"), rec.Header().Get("Location"), rec.Body.String()}, rec.Header()
}

func TestServerResponses(t *testing.T) {
	f := loadTestdata(t)
	f.Nodes[1].Tinc.PubKey = "K32" // short bodies below
	f.Nodes[0].Tinc.PubKey = "K31"
	srv := NewServer(f, nil)
	const ex = "http://example.com/api/"
	ct := func(r string) string {
		return `application/json; profile="http://confine-project.eu/schema/registry/v1/` + r + `"`
	}
	node31 := `{"uri":"` + ex + `nodes/31/","id":31,"name":"node-31","island":{"uri":"` + ex + `islands/1/","id":1},"mgmt_net":{"addr":"fd65:fc41:c50f:1f::2","backend":"tinc"},"tinc":{"name":"node_31","pubkey":"K31","addresses":[]},"properties":{}}`
	node32 := `{"uri":"` + ex + `nodes/32/","id":32,"name":"node-32","island":{"uri":"` + ex + `islands/2/","id":2},"mgmt_net":{"addr":"fd65:fc41:c50f:20::2","backend":"tinc"},"tinc":{"name":"node_32","pubkey":"K32","addresses":[]},"properties":{"arch":"x86_64"}}`
	host7 := `{"uri":"` + ex + `hosts/7/","id":7,"name":"laptop","island":null,"mgmt_net":{"addr":"fd65:fc41:c50f:0:2000::7","backend":"tinc"},"tinc":null}`
	notFound := `{"detail":"Not found."}`
	rel := func(r string) string { return `rel="http://confine-project.eu/rel/registry/` + r + `"` }
	bases := `<` + ex + `>; ` + rel("base") + `, <` + ex + `>; rel="http://confine-project.eu/rel/controller/base"`
	page := func(q, r string) string { return `<` + ex + `nodes/?` + q + `>; rel="` + r + `"` }
	tests := []struct {
		method, target string
		want           response
	}{
		{"GET", "/api/", response{200, ct("base"),
			`<` + ex + `>; ` + rel("base") + `, <` + ex + `nodes/>; ` + rel("node-list") + `, <` + ex + `servers/>; ` + rel("server-list") + `, <` + ex + `islands/>; ` + rel("island-list") + `, <` + ex + `hosts/>; ` + rel("host-list"), "",
			`{"confine_params":{"debug_ipv6_prefix":"fd5f:eee5:e6ad::/48","priv_ipv6_prefix":"fdbd:e804:6aa9::/48"},"testbed_params":{"mgmt_ipv6_prefix":"fd65:fc41:c50f::/48"},"testbed_resources":[],"uri":"` + ex + `"}`}},
		// Every list has first and last, paginated or not.
		{"GET", "/api/nodes/", response{200, ct("resource-list"), bases + ", " + page("page=1", "first") + ", " + page("page=1", "last"), "", "[" + node31 + "," + node32 + "]"}},
		{"GET", "/api/nodes/31/", response{200, ct("node"), bases + `, <` + ex + `nodes/>; ` + rel("node-list"), "", node31}},
		{"GET", "/api/hosts/", response{200, ct("resource-list"), bases + `, <` + ex + `hosts/?page=1>; rel="first", <` + ex + `hosts/?page=1>; rel="last"`, "", "[" + host7 + "]"}},
		{"GET", "/api/islands/2/", response{200, ct("island"), bases + `, <` + ex + `islands/>; ` + rel("island-list"), "", `{"uri":"` + ex + `islands/2/","id":2,"name":"island-2","description":"reached over the Internet"}`}},
		{"HEAD", "/api/nodes/31/", response{200, ct("node"), bases + `, <` + ex + `nodes/>; ` + rel("node-list"), "", ""}},
		{"GET", "/api/nodes/?per_page=1", response{200, ct("resource-list"),
			bases + ", " + page("per_page=1&page=1", "first") + ", " + page("per_page=1&page=2", "last") + ", " + page("per_page=1&page=2", "next"), "", "[" + node31 + "]"}},
		{"GET", "/api/nodes/?page=2&per_page=1", response{200, ct("resource-list"),
			bases + ", " + page("per_page=1&page=1", "first") + ", " + page("per_page=1&page=2", "last") + ", " + page("per_page=1&page=1", "prev"), "", "[" + node32 + "]"}},
		// The controller's answers to odd pages: out of range is the
		// last page, not a number is the first; per_page below 1 is 1,
		// not a number is the default (everything).
		{"GET", "/api/nodes/?per_page=1&page=3", response{200, ct("resource-list"),
			bases + ", " + page("per_page=1&page=1", "first") + ", " + page("per_page=1&page=2", "last") + ", " + page("per_page=1&page=1", "prev"), "", "[" + node32 + "]"}},
		{"GET", "/api/nodes/?per_page=1&page=x", response{200, ct("resource-list"),
			bases + ", " + page("per_page=1&page=1", "first") + ", " + page("per_page=1&page=2", "last") + ", " + page("per_page=1&page=2", "next"), "", "[" + node31 + "]"}},
		{"GET", "/api/nodes/?page=2", response{200, ct("resource-list"), bases + ", " + page("page=1", "first") + ", " + page("page=1", "last"), "", "[" + node31 + "," + node32 + "]"}},
		{"GET", "/api/nodes/?per_page=0", response{200, ct("resource-list"),
			bases + ", " + page("per_page=1&page=1", "first") + ", " + page("per_page=1&page=2", "last") + ", " + page("per_page=1&page=2", "next"), "", "[" + node31 + "]"}},
		{"GET", "/api/nodes/?per_page=all", response{200, ct("resource-list"), bases + ", " + page("page=1", "first") + ", " + page("page=1", "last"), "", "[" + node31 + "," + node32 + "]"}},
		{"GET", "/api/nodes/99/", response{404, "application/json", "", "", notFound}},
		{"GET", "/api/nodes/x/", response{404, "application/json", "", "", notFound}},
		{"GET", "/api/slices/", response{404, "application/json", "", "", notFound}},
		{"GET", "/other", response{404, "application/json", "", "", notFound}},
		{"GET", "/api/nodes?per_page=1", response{301, "text/html; charset=utf-8", "", "/api/nodes/?per_page=1", "<a href=\"/api/nodes/?per_page=1\">Moved Permanently</a>.\n\n"}},
		{"POST", "/api/nodes/", response{405, "application/json", "", "", `{"detail":"Method \"POST\" not allowed."}`}},
	}
	for _, tt := range tests {
		t.Run(tt.method+" "+tt.target, func(t *testing.T) {
			got, _ := do(srv, tt.method, tt.target)
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
		})
	}
}

func TestServerETags(t *testing.T) {
	srv := NewServer(loadTestdata(t), nil)
	for _, target := range []string{"/api/", "/api/nodes/", "/api/nodes/31/", "/api/nodes/?per_page=1&page=2"} {
		first, h := do(srv, "GET", target)
		etag := h.Get("ETag")
		if first.Status != 200 || len(etag) != 34 || etag[0] != '"' || etag[33] != '"' {
			t.Fatalf("%s: status %d, ETag %q; want 32 hex digits quoted, like Django's", target, first.Status, etag)
		}
		// Django 1.6's CommonMiddleware compares If-None-Match as one
		// string: only the bare tag matches. Its 304 is a new response,
		// with none of the 200's headers.
		got, h2 := do(srv, "GET", target, "If-None-Match", etag)
		if got.Status != 304 || got.Body != "" || h2.Get("ETag") != "" || h2.Get("Content-Type") != "" || h2.Get("Link") != "" {
			t.Errorf("%s If-None-Match %s: status %d, body %q, headers %v", target, etag, got.Status, got.Body, h2)
		}
		for _, inm := range []string{"W/" + etag, `"other", ` + etag, "*", strings.TrimSuffix(etag, `"`) + `;gzip"`, " " + etag} {
			if got, _ := do(srv, "GET", target, "If-None-Match", inm); got.Status != 200 {
				t.Errorf("%s If-None-Match %s: status %d; the controller answers 200", target, inm, got.Status)
			}
		}
	}
	// A changed member changes the list's and its own ETag, not others'.
	_, h := do(srv, "GET", "/api/nodes/")
	_, h31 := do(srv, "GET", "/api/nodes/31/")
	_, h32 := do(srv, "GET", "/api/nodes/32/")
	f := loadTestdata(t)
	f.Nodes[1].Name = "changed"
	srv.SetFile(f)
	_, h2 := do(srv, "GET", "/api/nodes/")
	_, h231 := do(srv, "GET", "/api/nodes/31/")
	_, h232 := do(srv, "GET", "/api/nodes/32/")
	if h.Get("ETag") == h2.Get("ETag") || h32.Get("ETag") == h232.Get("ETag") || h31.Get("ETag") != h231.Get("ETag") {
		t.Errorf("ETags after changing node 32: list %s -> %s, node 31 %s -> %s, node 32 %s -> %s",
			h.Get("ETag"), h2.Get("ETag"), h31.Get("ETag"), h231.Get("ETag"), h32.Get("ETag"), h232.Get("ETag"))
	}
}

func TestServerV0Shapes(t *testing.T) {
	f := loadTestdata(t)
	f.Dialect = DialectV0
	f.Servers[0].Tinc.PubKey = "KS"
	f.Nodes[0].Tinc.PubKey = "K31"
	srv := NewServer(f, nil)
	base, _ := do(srv, "GET", "/api/")
	// v0.11.2 to v0.11.9: the registry relations, the v0 profiles.
	if !strings.Contains(base.Link, `rel="http://confine-project.eu/rel/registry/node-list"`) || base.ContentType != `application/json; profile="http://confine-project.eu/schema/registry/v0/base"` {
		t.Errorf("v0 Link: %s, Content-Type %s", base.Link, base.ContentType)
	}
	var got []map[string]any
	for _, target := range []string{"/api/servers/2/", "/api/nodes/31/", "/api/hosts/7/"} {
		r, _ := do(srv, "GET", target)
		var m map[string]any
		if err := json.Unmarshal([]byte(r.Body), &m); err != nil {
			t.Fatal(err)
		}
		got = append(got, map[string]any{"mgmt_net": m["mgmt_net"], "has_tinc": m["tinc"] != nil})
		if _, ok := m["tinc"]; !ok {
			t.Errorf("%s: no top-level tinc; v0.11 had it next to mgmt_net's", target)
		}
	}
	isl := func(id float64) map[string]any {
		return map[string]any{"uri": fmt.Sprintf("http://example.com/api/islands/%v/", id), "id": id}
	}
	want := []map[string]any{
		{"has_tinc": true, "mgmt_net": map[string]any{"addr": "fd65:fc41:c50f::2", "backend": "tinc_server", "tinc_client": nil, "native": nil,
			"tinc_server": map[string]any{"name": "server", "pubkey": "KS", "is_active": true, "addresses": []any{
				map[string]any{"addr": "10.0.1.1", "port": 655.0, "island": isl(1)},
				map[string]any{"addr": "198.51.100.1", "port": 655.0, "island": isl(2)}}}}},
		{"has_tinc": true, "mgmt_net": map[string]any{"addr": "fd65:fc41:c50f:1f::2", "backend": "tinc_client", "tinc_server": nil, "native": nil,
			"tinc_client": map[string]any{"name": "node_31", "pubkey": "K31"}}},
		{"has_tinc": false, "mgmt_net": map[string]any{"addr": "fd65:fc41:c50f:0:2000::7", "backend": "tinc_client", "tinc_server": nil, "tinc_client": nil, "native": nil}},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
}

func TestParseFile(t *testing.T) {
	good := `{"mgmt_ipv6_prefix": "fd65:fc41:c50f::/48", "islands": [{"id": 1, "name": "i"}], "nodes": [{"id": 31, "island": 1, "tinc": null}]}`
	tests := []struct {
		name, json, wantErr string
	}{
		{"good", good, ""},
		{"unknown key", `{"mgmt_ipv6_prefix": "fd65:fc41:c50f::/48", "nodez": []}`, `unknown field "nodez"`},
		{"unknown member key", `{"mgmt_ipv6_prefix": "fd65:fc41:c50f::/48", "nodes": [{"id": 1, "tinc": {"nmae": "x"}}]}`, `unknown field "nmae"`},
		{"trailing data", good + "{}", "trailing data"},
		{"no prefix", `{"nodes": []}`, "mgmt_ipv6_prefix is missing"},
		{"bad prefix", `{"mgmt_ipv6_prefix": "fd65::/64"}`, "mgmt_ipv6_prefix"},
		{"bad dialect", `{"mgmt_ipv6_prefix": "fd65:fc41:c50f::/48", "dialect": "v2"}`, `dialect "v2"`},
		{"duplicate node", `{"mgmt_ipv6_prefix": "fd65:fc41:c50f::/48", "nodes": [{"id": 1}, {"id": 1}]}`, "node 1 is listed twice"},
		{"unknown island", `{"mgmt_ipv6_prefix": "fd65:fc41:c50f::/48", "nodes": [{"id": 1, "island": 2}]}`, "node 1: island 2 is not in islands"},
		{"unknown address island", `{"mgmt_ipv6_prefix": "fd65:fc41:c50f::/48", "servers": [{"id": 2, "tinc": {"addresses": [{"addr": "a", "island": 9}]}}]}`, "server 2 tinc address a: island 9"},
		{"node 0 without address", `{"mgmt_ipv6_prefix": "fd65:fc41:c50f::/48", "nodes": [{"id": 0}]}`, "node 0: no mgmt_addr"},
		{"node 0 with address", `{"mgmt_ipv6_prefix": "fd65:fc41:c50f::/48", "nodes": [{"id": 0, "mgmt_addr": "fd65:fc41:c50f::2"}]}`, ""},
		{"bad port", `{"mgmt_ipv6_prefix": "fd65:fc41:c50f::/48", "servers": [{"id": 2, "tinc": {"addresses": [{"addr": "a", "port": 70000}]}}]}`, "port 70000"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ParseFile([]byte(tt.json))
			if tt.wantErr == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("error %v, want one with %q", err, tt.wantErr)
			}
		})
	}
	path := filepath.Join(t.TempDir(), "tb.json")
	os.WriteFile(path, []byte(`{"mgmt_ipv6_prefix": "fd65:fc41:c50f::/48", "x": 1}`), 0o644)
	if _, err := LoadFile(path); err == nil || !strings.Contains(err.Error(), path) {
		t.Errorf("LoadFile error %v does not name the file", err)
	}
}

func TestParseSyntheticSpec(t *testing.T) {
	tests := []struct {
		in      string
		want    SyntheticSpec
		wantErr string
	}{
		{"nodes=65520,hosts=1000,servers=10", SyntheticSpec{Nodes: 65520, Hosts: 1000, Servers: 10}, ""},
		{"nodes=3, keys=2,keybits=2048,prefix=fdf5:5351:1dfd::/48", SyntheticSpec{Nodes: 3, Keys: 2, KeyBits: 2048, Prefix: netip.MustParsePrefix("fdf5:5351:1dfd::/48")}, ""},
		{"", SyntheticSpec{}, "empty"},
		{"nodes=65521", SyntheticSpec{}, "nodes=65521: want 0..65520"},
		{"nodes=-1", SyntheticSpec{}, "nodes=-1: want a non-negative integer"},
		{"nodes=x", SyntheticSpec{}, "nodes=x"},
		{"node=1", SyntheticSpec{}, `unknown key "node"`},
		{"nodes", SyntheticSpec{}, `"nodes" is not key=value`},
		{"nodes=1,nodes=2", SyntheticSpec{}, "nodes given twice"},
		{"keybits=512", SyntheticSpec{}, "keybits=512"},
		{"prefix=fd00::/64", SyntheticSpec{}, "prefix=fd00::/64"},
		{"prefix=nonsense", SyntheticSpec{}, "prefix=nonsense"},
		{"servers=509", SyntheticSpec{}, "servers=509"},
	}
	for _, tt := range tests {
		got, err := ParseSyntheticSpec(tt.in)
		if tt.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("ParseSyntheticSpec(%q) error %v, want one with %q", tt.in, err, tt.wantErr)
			}
			continue
		}
		if err != nil {
			t.Errorf("ParseSyntheticSpec(%q): %v", tt.in, err)
			continue
		}
		if diff := cmp.Diff(tt.want, got, cmp.Comparer(func(a, b netip.Prefix) bool { return a == b })); diff != "" {
			t.Errorf("ParseSyntheticSpec(%q) (-want +got):\n%s", tt.in, diff)
		}
	}
}

func TestSynthetic(t *testing.T) {
	f, err := Synthetic(SyntheticSpec{Nodes: 5, Servers: 256, Hosts: 2, Keys: 3, KeyBits: 2048})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, i := range []int{0, 1, 253, 254, 255} {
		s := f.Servers[i]
		got = append(got, fmt.Sprintf("%d %s %s", s.ID, s.Tinc.Name, s.Tinc.Addresses[0].Addr))
	}
	want := []string{"2 server 198.51.100.1", "3 server_3 198.51.100.2", "255 server_255 198.51.100.254", "256 server_256 203.0.113.1", "257 server_257 203.0.113.2"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("servers (-want +got):\n%s", diff)
	}
	keys := map[string]int{}
	for _, g := range f.groups() {
		for _, m := range g.members {
			keys[m.Tinc.PubKey]++
		}
	}
	if len(keys) != 3 {
		t.Errorf("%d distinct keys, want 3", len(keys))
	}
	for k := range keys {
		block, _ := pem.Decode([]byte(k))
		if block == nil || block.Type != "RSA PUBLIC KEY" {
			t.Fatalf("key %q", k)
		}
		pub, err := x509.ParsePKCS1PublicKey(block.Bytes)
		if err != nil || pub.N.BitLen() != 2048 {
			t.Errorf("key: %v, %d bits", err, pub.N.BitLen())
		}
		for _, line := range strings.Split(strings.TrimSpace(k), "\n") {
			if len(line) > 64 {
				t.Errorf("line of %d columns", len(line))
			}
		}
	}
	if f.Nodes[4].ID != 5 || f.Nodes[4].Tinc.Name != "node_5" || f.Hosts[1].Tinc.Name != "host_2" {
		t.Errorf("nodes/hosts: %+v %+v", f.Nodes[4], f.Hosts[1])
	}
	// It serves and fetches as valid members.
	c := newClient(t, serve(t, NewServer(f, nil)), fastOptions())
	snap, err := c.Fetch(context.Background(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(snap.Candidates) != 263 || snap.Prefix.String() != "fd65:fc41:c50f::/48" {
		t.Errorf("%d candidates, prefix %s", len(snap.Candidates), snap.Prefix)
	}
}

// BenchmarkServeNodes serves the largest testbed (65 520 nodes) over
// real HTTP: a GET of /api/nodes/ read to the end, so MB/s is what a
// client receives. The File is rendered before the timer starts.
func BenchmarkServeNodes(b *testing.B) {
	f, err := Synthetic(SyntheticSpec{Nodes: 65520, Keys: 4, KeyBits: 2048})
	if err != nil {
		b.Fatal(err)
	}
	ts := httptest.NewServer(NewServer(f, nil))
	b.Cleanup(ts.Close)
	get := func() int64 {
		resp, err := ts.Client().Get(ts.URL + "/api/nodes/")
		if err != nil {
			b.Fatal(err)
		}
		defer resp.Body.Close()
		n, err := io.Copy(io.Discard, resp.Body)
		if err != nil || resp.StatusCode != 200 {
			b.Fatalf("status %d, %d bytes, %v", resp.StatusCode, n, err)
		}
		return n
	}
	b.SetBytes(get())
	b.ReportAllocs()
	for b.Loop() {
		get()
	}
}

// BenchmarkRenderNodes measures rendering the largest testbed: what the
// first request after a (re)load waits for.
func BenchmarkRenderNodes(b *testing.B) {
	f, err := Synthetic(SyntheticSpec{Nodes: 65520, Keys: 4, KeyBits: 2048})
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		render(f)
	}
}

func BenchmarkFetch(b *testing.B) {
	f, err := Synthetic(SyntheticSpec{Nodes: 10000, Servers: 2, Hosts: 10, Keys: 4, KeyBits: 2048})
	if err != nil {
		b.Fatal(err)
	}
	c := newClient(b, serve(b, NewServer(f, nil)), Options{})
	b.ReportAllocs()
	for b.Loop() {
		snap, err := c.Fetch(context.Background(), nil)
		if err != nil {
			b.Fatal(err)
		}
		if len(snap.Candidates) != 10012 {
			b.Fatalf("%d candidates", len(snap.Candidates))
		}
	}
}

// TestServerManyHosts: every Host gets URIs of its own, but the testbed is
// rendered once, however many Hosts ask.
func TestServerManyHosts(t *testing.T) {
	f := loadTestdata(t)
	srv := NewServer(f, nil)
	etags := map[string]bool{}
	hosts := []string{`a"b\c<d>`} // not a valid Host, but ServeHTTP may be called with anything
	for i := range 20 {
		hosts = append(hosts, fmt.Sprintf("host-%d.example:8080", i))
	}
	for _, host := range hosts {
		for _, target := range []string{"/api/nodes/", "/api/nodes/?per_page=1&page=2", "/api/nodes/31/"} {
			req := httptest.NewRequest("GET", target, nil)
			req.Host = host
			rec := httptest.NewRecorder()
			srv.ServeHTTP(rec, req)
			if rec.Code != 200 || rec.Header().Get("Content-Length") != fmt.Sprint(rec.Body.Len()) {
				t.Fatalf("%s %s: status %d, Content-Length %s for %d bytes", host, target, rec.Code, rec.Header().Get("Content-Length"), rec.Body.Len())
			}
			var got any
			if err := json.Unmarshal(rec.Body.Bytes(), &got); err != nil {
				t.Fatalf("%s %s: %v\n%s", host, target, err, rec.Body)
			}
			var uris []string
			var walk func(v any)
			walk = func(v any) {
				switch v := v.(type) {
				case map[string]any:
					if u, ok := v["uri"].(string); ok {
						uris = append(uris, u)
					}
					for _, e := range v {
						walk(e)
					}
				case []any:
					for _, e := range v {
						walk(e)
					}
				}
			}
			walk(got)
			if len(uris) == 0 {
				t.Fatalf("%s %s: no uri in %s", host, target, rec.Body)
			}
			for _, u := range uris {
				if !strings.HasPrefix(u, "http://"+host+"/api/") {
					t.Errorf("%s %s: uri %q", host, target, u)
				}
			}
			etag := rec.Header().Get("ETag")
			if etags[etag] {
				t.Errorf("%s %s: ETag %s of another body", host, target, etag)
			}
			etags[etag] = true
		}
	}
	if n := srv.renders.Load(); n != 1 {
		t.Errorf("rendered %d times, want once", n)
	}
	// The same testbed again: rendered again (lazily), same ETags.
	_, h := do(srv, "GET", "/api/nodes/")
	srv.SetFile(loadTestdata(t))
	_, h2 := do(srv, "GET", "/api/nodes/")
	if h.Get("ETag") != h2.Get("ETag") {
		t.Errorf("ETag of an unchanged testbed changed on SetFile: %s -> %s", h.Get("ETag"), h2.Get("ETag"))
	}
	if n := srv.renders.Load(); n != 2 {
		t.Errorf("rendered %d times, want twice", n)
	}
}

// TestServerAssignment: a member that is not a gateway carries the
// gateways the testbed's assignment gives it; gateways carry none.
func TestServerAssignment(t *testing.T) {
	f, err := Synthetic(SyntheticSpec{Nodes: 3, Servers: 3, Keys: 2, KeyBits: 2048})
	if err != nil {
		t.Fatal(err)
	}
	srv := NewServer(f, nil)
	r, _ := do(srv, "GET", "http://example.com/api/nodes/1/")
	if r.Status != 200 || !strings.Contains(r.Body, `"mgmtnet_gateways":["`) {
		t.Fatalf("node 1: %d %s", r.Status, r.Body)
	}
	var n struct {
		Gateways []string `json:"mgmtnet_gateways"`
	}
	json.Unmarshal([]byte(r.Body), &n)
	if len(n.Gateways) != 3 {
		t.Errorf("node 1's gateways %v, want all 3 (the testbed fits)", n.Gateways)
	}
	for _, s := range f.Servers {
		if len(s.Tinc.Addresses) == 0 {
			t.Fatalf("synthetic server %d has no tinc address", s.ID)
		}
	}
	r, _ = do(srv, "GET", "http://example.com/api/servers/")
	if r.Status != 200 || strings.Contains(r.Body, "mgmtnet_gateways") {
		t.Errorf("servers (all gateways): %d %s", r.Status, r.Body)
	}
}

// The controller's GZipMiddleware, replayed: bodies of 200 bytes or more
// vary on Accept-Encoding and, to a client that accepts gzip, go
// compressed with the tag "<tag>;gzip", which never gets a 304; the bare
// tag does.
func TestServerGzipLikeDjango(t *testing.T) {
	srv := NewServer(loadTestdata(t), nil)
	plain, ph := do(srv, "GET", "/api/nodes/")
	got, h := do(srv, "GET", "/api/nodes/", "Accept-Encoding", "deflate, gzip;q=0.5")
	if got.Status != 200 || h.Get("Content-Encoding") != "gzip" || h.Get("Vary") != "Accept, Cookie, Accept-Encoding" {
		t.Fatalf("gzip answer: status %d, headers %v", got.Status, h)
	}
	if want := strings.TrimSuffix(ph.Get("ETag"), `"`) + `;gzip"`; h.Get("ETag") != want {
		t.Errorf("gzip ETag %q, want %q", h.Get("ETag"), want)
	}
	if h.Get("Content-Length") != strconv.Itoa(len(got.Body)) {
		t.Errorf("Content-Length %s of %d bytes", h.Get("Content-Length"), len(got.Body))
	}
	zr, err := gzip.NewReader(strings.NewReader(got.Body))
	if err != nil {
		t.Fatal(err)
	}
	unzipped, err := io.ReadAll(zr)
	if err != nil || string(unzipped) != plain.Body {
		t.Errorf("unzipped body differs from the plain one (err %v)", err)
	}
	if ph.Get("Content-Encoding") != "" || ph.Get("Vary") != "Accept, Cookie, Accept-Encoding" {
		t.Errorf("plain answer: headers %v", ph)
	}
	if r, _ := do(srv, "GET", "/api/nodes/", "Accept-Encoding", "gzip", "If-None-Match", h.Get("ETag")); r.Status != 200 {
		t.Errorf("the ;gzip tag sent back: status %d, want 200 as from the controller", r.Status)
	}
	if r, _ := do(srv, "GET", "/api/nodes/", "Accept-Encoding", "gzip", "If-None-Match", ph.Get("ETag")); r.Status != 304 {
		t.Errorf("the bare tag sent back: status %d, want 304", r.Status)
	}
	// HEAD has the GET's headers, Content-Length of the gzipped body too.
	if _, hh := do(srv, "HEAD", "/api/nodes/", "Accept-Encoding", "gzip"); hh.Get("Content-Length") != h.Get("Content-Length") || hh.Get("ETag") != h.Get("ETag") {
		t.Errorf("HEAD headers %v", hh)
	}
	// Under 200 bytes: neither compressed nor Vary: Accept-Encoding.
	f := loadTestdata(t)
	f.Islands = f.Islands[:1]
	small := NewServer(f, nil)
	if r, sh := do(small, "GET", "/api/islands/1/", "Accept-Encoding", "gzip"); len(r.Body) >= 200 || sh.Get("Content-Encoding") != "" || sh.Get("Vary") != "Accept, Cookie" {
		t.Errorf("small body (%d bytes): headers %v", len(r.Body), sh)
	}
}

// Gzipped bodies are kept per base: each Host gets its own URIs, also from
// the cache, and Hosts past the first gzipCacheBases are compressed
// for themselves and not kept.
func TestServerGzipPerHost(t *testing.T) {
	srv := NewServer(loadTestdata(t), nil)
	get := func(host, target string) string {
		req := httptest.NewRequest("GET", target, nil)
		req.Host = host
		req.Header.Set("Accept-Encoding", "gzip")
		rec := httptest.NewRecorder()
		srv.ServeHTTP(rec, req)
		if rec.Header().Get("Content-Encoding") != "gzip" {
			t.Fatalf("%s %s: not gzipped", host, target)
		}
		zr, err := gzip.NewReader(rec.Body)
		if err != nil {
			t.Fatal(err)
		}
		b, err := io.ReadAll(zr)
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	for round := range 2 {
		for i := range gzipCacheBases + 2 {
			host := fmt.Sprintf("h%d.example", i)
			for _, target := range []string{"/api/", "/api/nodes/", "/api/nodes/31/"} {
				if b := get(host, target); !strings.Contains(b, `"uri":"http://`+host+`/api/`) || strings.Contains(b, "h0.example") && i != 0 {
					t.Errorf("round %d, %s %s: body has another Host's URIs:\n%.200s", round, host, target, b)
				}
			}
		}
	}
	sv := srv.cur.Load()
	sv.gz.mu.Lock()
	defer sv.gz.mu.Unlock()
	if len(sv.gz.bases) != gzipCacheBases {
		t.Errorf("%d bases cached, want %d", len(sv.gz.bases), gzipCacheBases)
	}
}
