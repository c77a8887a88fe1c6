package registry

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/netip"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/confine-project/mgmtnet/addressing"
	"github.com/confine-project/mgmtnet/mesh"
)

// oldController replays the answers of a controller release older than
// v1.0, with the shapes its code renders (from its serializers, URL
// patterns and renderers):
//
//   - "v0.10" (v0.10 to v0.10.7): relations under rel/server/, the one
//     server as a singleton at /api/server/ (no id), the other gateways
//     at /api/gateways/ (members gateway_<id>, address P:0:1:<id>),
//     mgmt_net with tinc_client/tinc_server only, Content-Type
//     application/json, lists linking only the base, members without a
//     trailing slash;
//   - "v0.11.1" (v0.11, v0.11.1): the same relations and resources, the
//     registry/v0 profiles, and the "#157 compatibility" shape: the old
//     mgmt_net fields next to a top-level tinc;
//   - "v0.11.2" (v0.11.2 to v0.11.9): rel/registry/, a server list at
//     /api/servers/, the singleton still linked (the server with id 2) and
//     /api/gateways/ an empty stub that the base does not link.
func oldController(t *testing.T, release string, key string) (string, *countingHandler) {
	t.Helper()
	mux := http.NewServeMux()
	counter := &countingHandler{h: mux}
	var host string
	ts := serve(t, counter)
	host = strings.TrimSuffix(ts, "/api/")
	rel := "http://confine-project.eu/rel/server/"
	if release == "v0.11.2" {
		rel = "http://confine-project.eu/rel/registry/"
	}
	ct := func(resource string) string {
		if release == "v0.10" {
			return "application/json"
		}
		return `application/json; profile="http://confine-project.eu/schema/registry/v0/` + resource + `"`
	}
	island := map[string]any{"uri": host + "/api/islands/1", "id": 1}
	tincServer := func(name string, addrs ...string) map[string]any {
		var as []any
		for _, a := range addrs {
			as = append(as, map[string]any{"addr": a, "port": 655, "island": island})
		}
		return map[string]any{"name": name, "pubkey": key, "addresses": as, "is_active": true}
	}
	member := func(m map[string]any, tinc map[string]any) map[string]any {
		if release != "v0.10" {
			top := map[string]any{}
			for k, v := range tinc {
				if k != "is_active" {
					top[k] = v
				}
			}
			m["tinc"] = top
		}
		return m
	}
	server := member(map[string]any{"uri": host + "/api/server/1", "name": "server", "description": "",
		"mgmt_net": map[string]any{"addr": "fd65:fc41:c50f::2", "backend": "tinc_server", "tinc_client": nil, "native": nil,
			"tinc_server": tincServer("server", "10.0.1.1")}}, tincServer("server", "10.0.1.1"))
	gateway := member(map[string]any{"uri": host + "/api/gateways/1", "id": 1, "description": "gw",
		"mgmt_net": map[string]any{"addr": "fd65:fc41:c50f:0:1::1", "backend": "tinc_server", "tinc_client": nil, "native": nil,
			"tinc_server": tincServer("gateway_1", "10.0.2.1", "192.0.2.7")}}, tincServer("gateway_1", "10.0.2.1", "192.0.2.7"))
	client := map[string]any{"name": "node_31", "pubkey": key}
	node := member(map[string]any{"uri": host + "/api/nodes/31", "id": 31, "name": "node-31", "island": island,
		"mgmt_net": map[string]any{"addr": "fd65:fc41:c50f:1f::2", "backend": "tinc_client", "tinc_server": nil, "native": nil, "tinc_client": client}}, client)
	// A node without a key: v0.11 still renders tinc_client, with
	// "pubkey": null, and the top-level tinc as null.
	keyless := map[string]any{"uri": host + "/api/nodes/32", "id": 32, "name": "node-32", "island": island,
		"mgmt_net": map[string]any{"addr": "fd65:fc41:c50f:20::2", "backend": "tinc_client", "tinc_server": nil, "native": nil,
			"tinc_client": map[string]any{"name": "node_32", "pubkey": nil}}}
	if release != "v0.10" {
		keyless["tinc"] = nil
	}
	listLink := `<` + host + `/api/>; rel="` + rel + `base"`
	if release != "v0.10" {
		listLink += `, <` + host + `/api/>; rel="http://confine-project.eu/rel/controller/base"`
	}
	if release == "v0.11.2" { // pagination links arrived with it
		listLink += `, <` + host + `/api/x/?page=1>; rel="first", <` + host + `/api/x/?page=1>; rel="last"`
	}
	write := func(w http.ResponseWriter, contentType, link string, v any) {
		w.Header().Set("Content-Type", contentType)
		if link != "" {
			w.Header().Set("Link", link)
		}
		json.NewEncoder(w).Encode(v)
	}
	mux.HandleFunc("/api/", func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/api/" {
			http.NotFound(w, r)
			return
		}
		links := []string{`<` + host + `/api/>; rel="` + rel + `base"`,
			`<` + host + `/api-token-auth/>; rel="http://confine-project.eu/rel/controller/do-get-auth-token"`,
			`<` + host + `/api/nodes/>; rel="` + rel + `node-list"`,
			`<` + host + `/api/server/>; rel="` + rel + `server"`,
			`<` + host + `/api/islands/>; rel="` + rel + `island-list"`,
			`<` + host + `/api/hosts/>; rel="` + rel + `host-list"`}
		if release == "v0.11.2" {
			links = append(links, `<`+host+`/api/servers/>; rel="`+rel+`server-list"`)
		} else {
			links = append(links, `<`+host+`/api/gateways/>; rel="`+rel+`gateway-list"`)
		}
		write(w, ct("base"), strings.Join(links, ", "), map[string]any{"uri": host + "/api/",
			"testbed_params": map[string]any{"mgmt_ipv6_prefix": "fd65:fc41:c50f::/48"}})
	})
	mux.HandleFunc("/api/server/", func(w http.ResponseWriter, r *http.Request) {
		write(w, ct("server"), `<`+host+`/api/>; rel="`+rel+`base"`, server)
	})
	mux.HandleFunc("/api/gateways/", func(w http.ResponseWriter, r *http.Request) {
		if release == "v0.11.2" {
			write(w, ct("resource-list"), listLink, []any{})
			return
		}
		write(w, ct("resource-list"), listLink, []any{gateway})
	})
	mux.HandleFunc("/api/servers/", func(w http.ResponseWriter, r *http.Request) {
		if release != "v0.11.2" {
			http.NotFound(w, r)
			return
		}
		s := map[string]any{}
		for k, v := range server {
			s[k] = v
		}
		s["id"], s["uri"] = 2, host+"/api/servers/2"
		write(w, ct("resource-list"), listLink, []any{s})
	})
	mux.HandleFunc("/api/nodes/", func(w http.ResponseWriter, r *http.Request) {
		write(w, ct("resource-list"), listLink, []any{node, keyless})
	})
	mux.HandleFunc("/api/hosts/", func(w http.ResponseWriter, r *http.Request) {
		write(w, ct("resource-list"), listLink, []any{})
	})
	return ts, counter
}

// Controllers v0.10 to v0.11.1 had no server list; their server and
// gateways are read from the singleton and the gateways collection, and
// validate against the plan (server 2 at P::2, gateway_1 at P:0:1::1).
func TestOldControllerReleases(t *testing.T) {
	key := smallSynthetic(t, 1, 1, 0).Nodes[0].Tinc.PubKey
	for _, tc := range []struct {
		release string
		want    []string
	}{
		// By tinc name, as the testbed holds them.
		{"v0.10", []string{"gateway 1 gateway_1 [10.0.2.1:655 192.0.2.7:655]", "node 31 node_31 []", "server 2 server [10.0.1.1:655]"}},
		{"v0.11.1", []string{"gateway 1 gateway_1 [10.0.2.1:655 192.0.2.7:655]", "node 31 node_31 []", "server 2 server [10.0.1.1:655]"}},
		{"v0.11.2", []string{"node 31 node_31 []", "server 2 server [10.0.1.1:655]"}},
	} {
		t.Run(tc.release, func(t *testing.T) {
			base, counter := oldController(t, tc.release, key)
			c := newClient(t, base, fastOptions())
			snap, err := c.Fetch(context.Background(), nil)
			if err != nil {
				t.Fatal(err)
			}
			if snap.Dialect != DialectV0 || len(snap.Problems) != 0 {
				t.Errorf("dialect %s, problems %v", snap.Dialect, snap.Problems)
			}
			plan, err := addressing.New(netip.MustParsePrefix("fd65:fc41:c50f::/48"))
			if err != nil {
				t.Fatal(err)
			}
			res := mesh.Build(plan, snap.Candidates, mesh.BuildOptions{})
			if len(res.Rejected) != 0 {
				t.Errorf("rejected: %v", res.Rejected)
			}
			if len(res.Skipped) != 1 || !strings.Contains(res.Skipped[0].String(), "no tinc key") {
				t.Errorf("skipped: %v; want node 32, which has no key", res.Skipped)
			}
			var got []string
			for m := range res.Testbed.All() {
				var addrs []string
				for _, a := range m.Addresses {
					addrs = append(addrs, fmt.Sprintf("%s:%d", a.Host, a.Port))
				}
				got = append(got, fmt.Sprintf("%s %d %s %v", m.Kind, m.ID, m.TincName, addrs))
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("members (-want +got):\n%s", diff)
			}
			// From v0.11.2 the server list is read, not the singleton
			// or the gateways stub; before, those and no list.
			n := counter.reset()
			single := n["/api/server/"] + n["/api/gateways/"]
			if tc.release == "v0.11.2" && (single != 0 || n["/api/servers/"] != 1) || tc.release != "v0.11.2" && (single != 2 || n["/api/servers/"] != 0) {
				t.Errorf("requests: %v", n)
			}
		})
	}
}
