package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"testing"
)

func run(t *testing.T, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	var out, errb bytes.Buffer
	code = Run(context.Background(), args, Env{Stdout: &out, Stderr: &errb})
	return out.String(), errb.String(), code
}

func TestPlanForms(t *testing.T) {
	tests := []struct {
		args     []string
		code     int
		contains []string
	}{
		{[]string{"plan", "node", "31"}, 0, []string{"fdf5:5351:1dfd:1f::2", "fdf5:5351:1dfd:1f::/64", "node_31", "node-31", "100.64.0.31"}},
		{[]string{"plan", "node", "001f", "--prefix", "fd65:fc41:c50f::/48"}, 0, []string{"fd65:fc41:c50f:1f::2"}},
		{[]string{"plan", "--prefix", "fd65:fc41:c50f", "node", "0x1f"}, 0, []string{"fd65:fc41:c50f:1f::2"}},
		{[]string{"plan", "server", "2"}, 0, []string{"fdf5:5351:1dfd::2", "tinc name        server\n", "server-2"}},
		{[]string{"plan", "host", "0x123456789ab"}, 0, []string{"fdf5:5351:1dfd:0:2000:123:4567:89ab"}},
		{[]string{"plan", "sliver", "--node", "31", "--slice", "5"}, 0, []string{"fdf5:5351:1dfd:1f:1001::5", "slice-5.node-31", "fd5f:eee5:e6ad:1f:1001::5"}},
		{[]string{"plan", "sliver", "--node", "31", "--slice", "5", "--iface", "4"}, 0, []string{"fdf5:5351:1dfd:1f:1004::5"}},
		{[]string{"plan", "reverse", "fdf5:5351:1dfd::2"}, 0, []string{"server", "id               2 (0x2)"}},
		{[]string{"plan", "reverse", "fdf5:5351:1dfd:1f:1001::5"}, 0, []string{"sliver", "node             31"}},
		{[]string{"plan", "reverse", "100.64.0.31"}, 0, []string{"node_31"}},
		{[]string{"plan", "testbed", "--nodes", "1-3", "--servers", "2"}, 0, []string{"KIND", "node_3", "server  2"}},
		{[]string{"plan", "--help"}, 0, []string{"mgmtnet plan testbed"}},
		{[]string{"--help"}, 0, []string{"Commands:", "plan"}},
	}
	for _, tt := range tests {
		out, errOut, code := run(t, tt.args...)
		if code != tt.code {
			t.Errorf("%v: exit %d, want %d; stderr %q", tt.args, code, tt.code, errOut)
		}
		for _, c := range tt.contains {
			if !strings.Contains(out, c) {
				t.Errorf("%v: stdout lacks %q:\n%s", tt.args, c, out)
			}
		}
	}
}

func TestPlanErrors(t *testing.T) {
	tests := []struct {
		args []string
		code int
		msg  string
	}{
		{[]string{"plan", "reverse", "2001:db8::1"}, 1, "not in this plan"},
		{[]string{"plan", "reverse", "fdf5:5351:1dfd:1f::1"}, 1, "inside node 31's /64"},
		{[]string{"plan", "reverse", "nonsense"}, 2, "not an IPv4 or IPv6 address"},
		{[]string{"plan", "node", "0"}, 2, "allowed 1..65520"},
		{[]string{"plan", "node", "65521"}, 2, "allowed 1..65520"},
		{[]string{"plan", "node"}, 2, "want exactly one node id"},
		{[]string{"plan", "node", "1", "2"}, 2, "want exactly one node id"},
		{[]string{"plan", "server", "0x1000000000000"}, 2, "out of range"},
		{[]string{"plan", "sliver", "--node", "31"}, 2, "--node and --slice are required"},
		{[]string{"plan", "sliver", "--node", "31", "--slice", "5", "--iface", "300"}, 2, "0..255"},
		{[]string{"plan", "node", "31", "--prefix", "fdf5::/32"}, 2, "want a /48"},
		{[]string{"plan", "testbed"}, 2, "at least one of"},
		{[]string{"plan", "testbed", "--nodes", "5-1"}, 2, "backwards"},
		{[]string{"plan", "frobnicate"}, 2, "unknown form"},
		{[]string{"plan"}, 2, "missing form"},
		{[]string{"plan", "node", "31", "--bogus"}, 2, "flag provided but not defined"},
		{[]string{"nosuchcommand"}, 2, "unknown command"},
		{nil, 2, "Usage:"},
	}
	for _, tt := range tests {
		_, errOut, code := run(t, tt.args...)
		if code != tt.code || !strings.Contains(errOut, tt.msg) {
			t.Errorf("%v: exit %d stderr %q; want exit %d and %q", tt.args, code, errOut, tt.code, tt.msg)
		}
	}
}

func TestPlanJSON(t *testing.T) {
	out, _, code := run(t, "plan", "testbed", "--nodes", "1-2,0xfff0", "--servers", "2", "--hosts", "7", "--json", "--zone", "mgmt.example.")
	if code != 0 {
		t.Fatalf("exit %d", code)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 5 {
		t.Fatalf("want 5 JSON lines, got %d:\n%s", len(lines), out)
	}
	var rows []map[string]any
	for _, l := range lines {
		var m map[string]any
		if err := json.Unmarshal([]byte(l), &m); err != nil {
			t.Fatalf("bad JSON line %q: %v", l, err)
		}
		for _, k := range []string{"kind", "id", "address", "subnet", "tinc_name", "dns_name"} {
			if _, ok := m[k]; !ok {
				t.Errorf("line %q lacks %q", l, k)
			}
		}
		rows = append(rows, m)
	}
	if rows[0]["kind"] != "server" || rows[0]["tinc_name"] != "server" || rows[0]["address"] != "fdf5:5351:1dfd::2" {
		t.Errorf("server row = %v", rows[0])
	}
	if rows[1]["kind"] != "host" || rows[1]["dns_name"] != "host-7.mgmt.example." {
		t.Errorf("host row = %v", rows[1])
	}
	last := rows[4]
	if last["kind"] != "node" || last["id"].(float64) != 0xfff0 || last["egress_ipv4"] != "100.64.255.240" {
		t.Errorf("node row = %v", last)
	}

	out, _, _ = run(t, "plan", "sliver", "--json", "--node", "001f", "--slice", "0x5")
	var s map[string]any
	if err := json.Unmarshal([]byte(out), &s); err != nil {
		t.Fatal(err)
	}
	addrs, _ := s["addresses"].(map[string]any)
	if s["kind"] != "sliver" || s["node"].(float64) != 31 || s["slice"].(float64) != 5 || s["iface"].(float64) != 1 ||
		addrs["mgmt"] != "fdf5:5351:1dfd:1f:1001::5" || addrs["debug"] != "fd5f:eee5:e6ad:1f:1001::5" ||
		addrs["private"] != "fdbd:e804:6aa9:0:1000::5" {
		t.Errorf("sliver json = %v", s)
	}
}
