package mesh

import (
	"slices"
	"strings"
	"testing"

	"github.com/confine-project/mgmtnet/addressing"
)

func TestParseEgress(t *testing.T) {
	tests := []struct {
		in      string
		want    Egress
		wantErr string
	}{
		{in: "weight=10", want: Egress{Offered: true, Weight: 10}},
		{in: " weight = 0 ", want: Egress{Offered: true, Weight: 0}},
		{in: "weight=65535", want: Egress{Offered: true, Weight: 65535}},
		{in: "on", want: Egress{Offered: true, Weight: DefaultEgressWeight}},
		{in: "YES", want: Egress{Offered: true, Weight: DefaultEgressWeight}},
		{in: "off", want: Egress{}},
		{in: "false", want: Egress{}},
		{in: "", wantErr: "empty egress declaration"},
		{in: "weight=65536", wantErr: "want an integer in 0..65535"},
		{in: "weight=-1", wantErr: "want an integer in 0..65535"},
		{in: "weight=ten", wantErr: "want an integer"},
		{in: "wieght=10", wantErr: `unknown key "wieght"`},
		{in: "weight=1,weight=2", wantErr: "weight given twice"},
		{in: "fast", wantErr: "is not key=value"},
	}
	for _, tt := range tests {
		got, err := ParseEgress(tt.in)
		if tt.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("ParseEgress(%q) = %v, %v; want error with %q", tt.in, got, err, tt.wantErr)
			}
			continue
		}
		if err != nil || got != tt.want {
			t.Errorf("ParseEgress(%q) = %+v, %v; want %+v", tt.in, got, err, tt.want)
		}
		if tt.want.Offered {
			if back, err := ParseEgress(got.String()); err != nil || back != got {
				t.Errorf("ParseEgress(%q.String()=%q) = %+v, %v", tt.in, got.String(), back, err)
			}
		}
	}
}

func FuzzParseEgress(f *testing.F) {
	for _, s := range []string{"weight=10", "on", "off", "weight=1,weight=2", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		e, err := ParseEgress(s)
		if err != nil {
			return
		}
		if e.Weight < 0 || e.Weight > MaxEgressWeight || (!e.Offered && e.Weight != 0) {
			t.Fatalf("ParseEgress(%q) = %+v", s, e)
		}
	})
}

func TestBuildEgress(t *testing.T) {
	srv := server(t, 2, CandidateAddress{Addr: "10.241.1.1", Port: 655})
	srv.Properties = map[string]string{EgressProperty: "weight=20"}
	bad := server(t, 3, CandidateAddress{Addr: "10.241.1.3", Port: 655})
	bad.Properties = map[string]string{EgressProperty: "weight=lots"}
	n := node(t, 31)
	n.Properties = map[string]string{EgressProperty: "on"}
	h := Candidate{Kind: addressing.KindHost, ID: 7, MgmtAddr: "fdf5:5351:1dfd:0:2000::7", Backend: "tinc",
		Tinc: &CandidateTinc{Name: "host_7", PubKey: n.Tinc.PubKey}, Properties: map[string]string{EgressProperty: "on"}}
	cands := []Candidate{srv, bad, n, h}
	for _, tc := range []struct {
		name   string
		policy Policy
		node   Egress
		warn   []string
		gws    []string
	}{
		// A node's registry property alone never makes it an egress
		// gateway: it would outbid the servers for every sliver's traffic.
		{"default policy", Policy{}, Egress{},
			[]string{"node 31 (node_31): property mgmtnet.egress ignored: only servers may offer egress"}, []string{"server"}},
		{"node listed", Policy{Egress: []string{"node_31"}}, Egress{Offered: true, Weight: 10}, nil, []string{"node_31", "server"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res := Build(addressing.Default(), cands, BuildOptions{Policy: tc.policy})
			if len(res.Rejected) != 0 {
				t.Fatalf("rejected: %v", res.Rejected)
			}
			want := map[string]Egress{"server": {Offered: true, Weight: 20}, "server_3": {}, "node_31": tc.node, "host_7": {}}
			for name, e := range want {
				m, ok := res.Testbed.Lookup(name)
				if !ok {
					t.Fatalf("%s missing", name)
				}
				if m.Egress != e {
					t.Errorf("%s: egress %+v, want %+v", name, m.Egress, e)
				}
			}
			var warned []string
			for _, w := range res.Warnings {
				warned = append(warned, w.String())
			}
			joined := strings.Join(warned, "\n")
			for _, s := range append([]string{"server 3 (server_3)", `weight "lots"`, "host 7 (host_7)", "only servers and nodes can offer egress"}, tc.warn...) {
				if !strings.Contains(joined, s) {
					t.Errorf("warnings %q lack %q", joined, s)
				}
			}
			var gws []string
			for _, g := range res.Testbed.EgressGateways() {
				gws = append(gws, g.TincName)
			}
			if !slices.Equal(gws, tc.gws) {
				t.Errorf("EgressGateways: %v, want %v", gws, tc.gws)
			}
		})
	}
}

// TestPolicyGateways: tinc addresses on a node or host do not make it a
// ConnectTo target unless the policy lists it; a server keeps them.
func TestPolicyGateways(t *testing.T) {
	srv := server(t, 2, CandidateAddress{Addr: "10.241.1.1", Port: 655})
	n := node(t, 31)
	n.Tinc.Addresses = []CandidateAddress{{Addr: "10.241.2.41", Port: 655}}
	for _, tc := range []struct {
		policy Policy
		gws    []string
	}{
		{Policy{}, []string{"server"}},
		{Policy{Gateways: []string{"node_31"}}, []string{"node_31", "server"}},
	} {
		res := Build(addressing.Default(), []Candidate{srv, n}, BuildOptions{Policy: tc.policy})
		var gws []string
		for _, g := range res.Testbed.Gateways() {
			gws = append(gws, g.TincName)
		}
		if !slices.Equal(gws, tc.gws) {
			t.Errorf("policy %+v: gateways %v, want %v", tc.policy, gws, tc.gws)
		}
		if len(tc.policy.Gateways) == 0 {
			if len(res.Warnings) != 1 || !strings.Contains(res.Warnings[0].String(), "node 31 (node_31): tinc addresses ignored (1): only servers may be gateways") {
				t.Errorf("warnings: %v", res.Warnings)
			}
		}
	}
}
