package mesh

import (
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
	res := Build(addressing.Default(), []Candidate{srv, bad, n, h})
	if len(res.Rejected) != 0 {
		t.Fatalf("rejected: %v", res.Rejected)
	}
	want := map[string]Egress{"server": {Offered: true, Weight: 20}, "server_3": {}, "node_31": {Offered: true, Weight: 10}, "host_7": {}}
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
	for _, s := range []string{"server 3 (server_3)", `weight "lots"`, "host 7 (host_7)", "only servers and nodes can offer egress"} {
		if !strings.Contains(joined, s) {
			t.Errorf("warnings %q lack %q", joined, s)
		}
	}
	gws := res.Testbed.EgressGateways()
	if len(gws) != 2 || gws[0].TincName != "node_31" || gws[1].TincName != "server" {
		t.Errorf("EgressGateways: %v", gws)
	}
}
