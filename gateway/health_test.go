package gateway

import (
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

func TestHealthStateMachine(t *testing.T) {
	t0 := time.Date(2026, 11, 22, 0, 0, 0, 0, time.UTC)
	type step struct {
		at      time.Duration
		ok      bool
		state   EgressState
		changed bool
	}
	tests := []struct {
		name  string
		steps []step
	}{
		{name: "first success announces at once", steps: []step{
			{0, false, EgressProbing, false},
			{time.Second, false, EgressProbing, false},
			{2 * time.Second, true, EgressAnnounced, true},
		}},
		{name: "one failure is not enough", steps: []step{
			{0, true, EgressAnnounced, true},
			{time.Second, false, EgressAnnounced, false},
			{2 * time.Second, true, EgressAnnounced, false},
			{3 * time.Second, false, EgressAnnounced, false},
			{4 * time.Second, false, EgressWithdrawn, true},
		}},
		{name: "hold-down restarts on a failure", steps: []step{
			{0, true, EgressAnnounced, true},
			{1 * time.Second, false, EgressAnnounced, false},
			{2 * time.Second, false, EgressWithdrawn, true},
			{3 * time.Second, true, EgressWithdrawn, false},  // hold-down starts
			{10 * time.Second, true, EgressWithdrawn, false}, // 7s < 10s
			{11 * time.Second, false, EgressWithdrawn, false},
			{12 * time.Second, true, EgressWithdrawn, false},  // starts again
			{21 * time.Second, true, EgressWithdrawn, false},  // 9s
			{22 * time.Second, true, EgressAnnounced, true},   // 10s
			{23 * time.Second, false, EgressAnnounced, false}, // failures count from zero again
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHealth(2, 10*time.Second)
			for i, s := range tt.steps {
				changed := h.observe(ProbeResult{At: t0.Add(s.at), OK: s.ok})
				if h.state != s.state || changed != s.changed {
					t.Fatalf("step %d (%v ok=%v): state %s changed %v, want %s %v", i, s.at, s.ok, h.state, changed, s.state, s.changed)
				}
				if h.announced() != (s.state == EgressAnnounced) {
					t.Fatalf("step %d: announced() = %v in state %s", i, h.announced(), h.state)
				}
			}
		})
	}
}

func TestProbers(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	// A port nothing listens on: listen, note it, close.
	dead, _ := net.Listen("tcp", "127.0.0.1:0")
	deadAddr := dead.Addr().String()
	dead.Close()
	ok := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	defer ok.Close()
	broken := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusBadGateway) }))
	defer broken.Close()

	tests := []struct {
		method  string
		targets []string
		ok      bool
		target  string
		failure []string
	}{
		{ProbeTCP, []string{ln.Addr().String()}, true, ln.Addr().String(), nil},
		{ProbeTCP, []string{deadAddr, ln.Addr().String()}, true, ln.Addr().String(), nil},
		{ProbeTCP, []string{deadAddr}, false, "", []string{"tcp " + deadAddr, "refused"}},
		{ProbeHTTP, []string{ok.URL}, true, ok.URL, nil},
		{ProbeHTTP, []string{broken.URL}, false, "", []string{"status 502"}},
		{ProbeICMP, []string{"not-an-address"}, false, "", []string{"not an IPv4 address"}},
	}
	for _, tt := range tests {
		p := newProber(ProbeConfig{Method: tt.method, Targets: tt.targets, Timeout: Duration(2 * time.Second)})
		r := p.probe(context.Background())
		if r.OK != tt.ok || r.Target != tt.target {
			t.Errorf("%s %v: %+v, want ok=%v target %q", tt.method, tt.targets, r, tt.ok, tt.target)
		}
		for _, s := range tt.failure {
			if !strings.Contains(r.Failure, s) {
				t.Errorf("%s %v: failure %q lacks %q", tt.method, tt.targets, r.Failure, s)
			}
		}
	}
}

func TestEgressConfig(t *testing.T) {
	base := "registry:\n  url: http://127.0.0.1:8080/api/\n"
	tests := []struct {
		yaml    string
		wantErr string
	}{
		{yaml: "egress:\n  enabled: true\n  wan: wan0\n  probe:\n    targets: [\"198.51.100.80:80\"]\n"},
		{yaml: "egress:\n  enabled: true\n  probe:\n    targets: [\"198.51.100.80:80\"]\n", wantErr: "egress.wan: required"},
		{yaml: "egress:\n  enabled: true\n  wan: wan0\n", wantErr: "egress.probe.targets: at least one target"},
		{yaml: "egress:\n  wan: wan0\n  probe:\n    method: icmp\n    targets: [\"example.net\"]\n", wantErr: "want an IPv4 address for icmp"},
		{yaml: "egress:\n  wan: wan0\n  probe:\n    method: http\n    targets: [\"198.51.100.80:80\"]\n", wantErr: "want an http or https URL"},
		{yaml: "egress:\n  wan: wan0\n  probe:\n    method: udp\n", wantErr: `egress.probe.method "udp"`},
		{yaml: "egress:\n  weight: 70000\n", wantErr: "egress.weight 70000"},
		{yaml: "egress:\n  prefix: 100.64.0.0/20\n", wantErr: "egress.prefix"},
		{yaml: "egress:\n  wan: wan0\n  probe:\n    interval: 1s\n    timeout: 2s\n", wantErr: "at most egress.probe.interval"},
		{yaml: "egress:\n  wna: wan0\n", wantErr: "field wna not found"},
		{yaml: "egress:\n  allow: [10.0.0.0/8, 169.254.169.254/32]\n  deny: [198.51.100.0/24]\n"},
		{yaml: "egress:\n  deny: [10.0.0.0/8, 192.0.2.0/24, 10.0.0.0/33]\n", wantErr: `egress.deny[2]: "10.0.0.0/33" is not an IPv4 prefix`},
		{yaml: "egress:\n  allow: [\"fd00::/8\"]\n", wantErr: `egress.allow[0]: "fd00::/8" is not an IPv4 prefix`},
		{yaml: "egress:\n  allow: [10.1.2.3]\n", wantErr: `egress.allow[0]: "10.1.2.3" is not an IPv4 prefix`},
		{yaml: "egress:\n  allow: [10.1.2.3/24]\n", wantErr: `egress.allow[0]: "10.1.2.3/24" has host bits set (want 10.1.2.0/24)`},
	}
	for _, tt := range tests {
		c, err := ParseConfig([]byte(base + tt.yaml))
		if err == nil {
			err = c.Validate()
		}
		if tt.wantErr == "" {
			if err != nil {
				t.Errorf("%q: %v", tt.yaml, err)
			}
			continue
		}
		if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
			t.Errorf("%q: error %v, want %q", tt.yaml, err, tt.wantErr)
		}
	}
}
