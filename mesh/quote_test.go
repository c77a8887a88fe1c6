package mesh

import (
	"strings"
	"testing"
)

// evil is what a hostile registry puts in its strings to forge lines and
// colours on the operator's terminal.
const evil = "\n\x1b[31m"

// TestProblemsQuoteRegistryStrings: every string of the registry that
// reaches a rejection or a warning is quoted, so no line break or escape
// code gets through.
func TestProblemsQuoteRegistryStrings(t *testing.T) {
	name := node(t, 31)
	name.Tinc.Name = "node_31" + evil
	addr := server(t, 2, CandidateAddress{Addr: "gw.example.net" + evil}, CandidateAddress{Addr: "10.0.0.1" + evil, Port: 70000})
	mgmt := node(t, 5)
	mgmt.MgmtAddr = "fd00::1" + evil
	backend := node(t, 6)
	backend.Backend = "tinc" + evil
	key := node(t, 7)
	key.Tinc.PubKey = "-----BEGIN RSA PUBLIC KEY-----" + evil
	egress := node(t, 8)
	egress.Properties = map[string]string{EgressProperty: "weight=1" + evil}
	res := Build(plan, []Candidate{name, addr, mgmt, backend, key, egress}, BuildOptions{})
	var all []Problem
	all = append(all, res.Rejected...)
	all = append(all, res.Warnings...)
	all = append(all, res.Skipped...)
	if len(all) < 6 {
		t.Fatalf("%d problems, want one per bad string at least: %q", len(all), all)
	}
	for _, p := range all {
		s := p.String()
		if strings.ContainsAny(s, "\n\x1b") {
			t.Errorf("raw control characters in %q", s)
		}
		if strings.Contains(p.Reason, "31m") && !strings.Contains(s, `\x1b[31m`) && !strings.Contains(s, `\u001b[31m`) {
			t.Errorf("%q shows the string but not quoted", s)
		}
	}
	t.Logf("%q", all)
}
