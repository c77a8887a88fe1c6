package mesh

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"net/netip"
	"strings"
	"sync"
	"testing"

	"github.com/confine-project/mgmtnet/addressing"
	"github.com/google/go-cmp/cmp"
)

var (
	keyOnce        sync.Once
	pkcs1, spki    string
	plan           = addressing.Default()
	ecdsaSPKIKeyPE = "-----BEGIN PUBLIC KEY-----\nMFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEEVs/o5+uQbTjL3chynL4wXgUg2R9\nq9UU8I5mEovUf86QZ7kOBIjJwqnzD1omageEHWwHdBO6B+dFabmdT9POxg==\n-----END PUBLIC KEY-----\n"
)

func keys(t testing.TB) (string, string) {
	keyOnce.Do(func() {
		k, err := rsa.GenerateKey(rand.Reader, 2048)
		if err != nil {
			panic(err)
		}
		pkcs1 = string(pem.EncodeToMemory(&pem.Block{Type: "RSA PUBLIC KEY", Bytes: x509.MarshalPKCS1PublicKey(&k.PublicKey)}))
		der, _ := x509.MarshalPKIXPublicKey(&k.PublicKey)
		spki = string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}))
	})
	return pkcs1, spki
}

func node(t testing.TB, id uint64) Candidate {
	k, _ := keys(t)
	a, _ := plan.Address(addressing.Entity{Kind: addressing.KindNode, ID: id})
	name, _ := addressing.TincName(addressing.KindNode, id)
	return Candidate{Kind: addressing.KindNode, ID: id, Name: "n", MgmtAddr: a.String(), Backend: "tinc",
		Tinc: &CandidateTinc{Name: name, PubKey: k}}
}

func server(t testing.TB, id uint64, addrs ...CandidateAddress) Candidate {
	k, _ := keys(t)
	a, _ := plan.ServerAddr(id)
	name, _ := addressing.TincName(addressing.KindServer, id)
	return Candidate{Kind: addressing.KindServer, ID: id, MgmtAddr: a.String(), Backend: "tinc",
		Tinc: &CandidateTinc{Name: name, PubKey: k, Addresses: addrs}}
}

func TestBuildValid(t *testing.T) {
	_, sk := keys(t)
	h := Candidate{Kind: addressing.KindHost, ID: 7, MgmtAddr: "FDF5:5351:1DFD:0:2000::7", Backend: "tinc",
		Tinc: &CandidateTinc{Name: "host_7", PubKey: strings.ReplaceAll(sk, "\n", "\r\n")}}
	res := Build(plan, []Candidate{
		node(t, 31), node(t, 2),
		server(t, 2, CandidateAddress{Addr: "gw.Example.net"}, CandidateAddress{Addr: "10.241.0.254", Port: 655, Island: 2}),
		h,
	}, BuildOptions{})
	if len(res.Rejected)+len(res.Skipped)+len(res.Warnings) != 0 {
		t.Fatalf("unexpected problems: %+v", res)
	}
	tb := res.Testbed
	var names []string
	for m := range tb.All() {
		names = append(names, m.TincName)
	}
	if diff := cmp.Diff([]string{"host_7", "node_2", "node_31", "server"}, names); diff != "" {
		t.Errorf("members not sorted by tinc name (-want +got):\n%s", diff)
	}
	srv, ok := tb.Lookup("server")
	if !ok {
		t.Fatal("server missing")
	}
	want := []TincAddress{{Host: "gw.example.net", Port: 655}, {Host: "10.241.0.254", Port: 655, Island: 2}}
	if diff := cmp.Diff(want, srv.Addresses); diff != "" {
		t.Errorf("server addresses (-want +got):\n%s", diff)
	}
	if srv.Subnets[0] != netip.MustParsePrefix("fdf5:5351:1dfd::2/128") || !srv.IsGateway() {
		t.Errorf("server subnets %v gateway %v", srv.Subnets, srv.IsGateway())
	}
	n, _ := tb.Lookup("node_31")
	if n.Subnets[0] != netip.MustParsePrefix("fdf5:5351:1dfd:1f::/64") || n.IsGateway() {
		t.Errorf("node subnets %v", n.Subnets)
	}
	host, _ := tb.Lookup("host_7")
	if strings.Contains(host.PubKey, "\r") || !strings.HasSuffix(host.PubKey, "-----END PUBLIC KEY-----\n") {
		t.Errorf("host key not normalized: %q", host.PubKey)
	}
	if c := tb.Count(); c[addressing.KindNode] != 2 || c[addressing.KindServer] != 1 || c[addressing.KindHost] != 1 {
		t.Errorf("Count = %v", c)
	}
	if gws := tb.Gateways(); len(gws) != 1 || gws[0].TincName != "server" {
		t.Errorf("Gateways = %v", gws)
	}
}

func TestBuildRejects(t *testing.T) {
	k, _ := keys(t)
	mod := func(c Candidate, f func(*Candidate)) Candidate { f(&c); return c }
	tests := []struct {
		name    string
		cand    Candidate
		skipped bool
		reason  string
	}{
		{"path traversal name", mod(node(t, 3), func(c *Candidate) { c.Tinc.Name = "../x" }), false, `tinc name "../x"`},
		{"empty name", mod(node(t, 3), func(c *Candidate) { c.Tinc.Name = "" }), false, "tinc name"},
		{"name with space", mod(node(t, 3), func(c *Candidate) { c.Tinc.Name = "node 3" }), false, "tinc name"},
		{"tinc null", mod(node(t, 3), func(c *Candidate) { c.Tinc = nil }), true, "no tinc key registered"},
		{"native", mod(node(t, 3), func(c *Candidate) { c.Backend = "native" }), true, "native"},
		{"odd backend", mod(node(t, 3), func(c *Candidate) { c.Backend = "wireguard" }), false, `backend "wireguard"`},
		{"node 0", mod(node(t, 3), func(c *Candidate) { c.ID = 0 }), false, "node id 0"},
		{"node too big", mod(node(t, 3), func(c *Candidate) { c.ID = 0xfff1 }), false, "out of range"},
		{"sliver kind", mod(node(t, 3), func(c *Candidate) { c.Kind = addressing.KindSliver }), false, "not a tinc member"},
		{"addr of another node", mod(node(t, 3), func(c *Candidate) { c.MgmtAddr = "fdf5:5351:1dfd:4::2" }), false, "it is the address of node 4"},
		{"addr P::2 for a node", mod(node(t, 3), func(c *Candidate) { c.MgmtAddr = "fdf5:5351:1dfd::2" }), false, "it is the address of server 2"},
		{"addr outside plan", mod(node(t, 3), func(c *Candidate) { c.MgmtAddr = "fd65:fc41:c50f:3::2" }), false, "outside the plan's fdf5:5351:1dfd::/48"},
		{"addr not assigned", mod(node(t, 3), func(c *Candidate) { c.MgmtAddr = "fdf5:5351:1dfd:3::1" }), false, "not an address the plan assigns"},
		{"addr ipv4", mod(node(t, 3), func(c *Candidate) { c.MgmtAddr = "10.0.0.1" }), false, "not an IPv6 address"},
		{"key garbage", mod(node(t, 3), func(c *Candidate) { c.Tinc.PubKey = "ssh-rsa AAAA" }), false, "not PEM"},
		{"key empty", mod(node(t, 3), func(c *Candidate) { c.Tinc.PubKey = " \n" }), false, "public key is empty"},
		{"key truncated", mod(node(t, 3), func(c *Candidate) {
			c.Tinc.PubKey = strings.Replace(k, k[40:60], "", 1)
		}), false, "public key"},
		{"key ecdsa", mod(node(t, 3), func(c *Candidate) { c.Tinc.PubKey = ecdsaSPKIKeyPE }), false, "tinc 1.0 needs RSA"},
		{"key private", mod(node(t, 3), func(c *Candidate) {
			c.Tinc.PubKey = strings.ReplaceAll(k, "RSA PUBLIC KEY", "RSA PRIVATE KEY")
		}), false, `PEM type "RSA PRIVATE KEY"`},
		{"key trailing", mod(node(t, 3), func(c *Candidate) { c.Tinc.PubKey = k + "Address = 1.2.3.4\n" }), false, "trailing data"},
		// pem.Decode skips text before the block: it must not reach a host file.
		{"key with lines before it", mod(node(t, 3), func(c *Candidate) {
			c.Tinc.PubKey = "Subnet = 0.0.0.0/0\nSubnet = fdf5:5351:1dfd:1f:0:0:0:0/64\n" + k
		}), false, "public key is not PEM"},
		{"name of another kind", mod(node(t, 3), func(c *Candidate) { c.Tinc.Name = "host_3" }), false, `tinc name "host_3" is not node 3's: want node_3`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			good := node(t, 9)
			res := Build(plan, []Candidate{tt.cand, good}, BuildOptions{})
			probs := res.Rejected
			if tt.skipped {
				probs = res.Skipped
			}
			if len(probs) != 1 || !strings.Contains(probs[0].String(), tt.reason) {
				t.Fatalf("problems = %+v (rejected %+v, skipped %+v); want one containing %q", probs, res.Rejected, res.Skipped, tt.reason)
			}
			if !strings.HasPrefix(probs[0].String(), tt.cand.Kind.String()+" ") {
				t.Errorf("problem %q does not name the member", probs[0])
			}
			if res.Testbed.Len() != 1 {
				t.Errorf("the good member was not kept: %d members", res.Testbed.Len())
			}
			if _, ok := res.Testbed.Lookup("node_9"); !ok {
				t.Error("node_9 missing")
			}
		})
	}
}

func TestBuildTincAddresses(t *testing.T) {
	s := server(t, 2,
		CandidateAddress{Addr: "0.0.0.0", Port: 655},
		CandidateAddress{Addr: "10.0.0.1", Port: 70000},
		CandidateAddress{Addr: "10.0.0.1", Port: -1},
		CandidateAddress{Addr: "bad host\nSubnet = ::/0"},
		CandidateAddress{Addr: "::"},
		CandidateAddress{Addr: "224.0.0.1"},
		CandidateAddress{Addr: "127.0.0.1"},
		CandidateAddress{Addr: "fe80::1"},
		CandidateAddress{Addr: "2001:db8::1", Port: 656},
		CandidateAddress{Addr: "2001:db8::1", Port: 656}, // duplicate
		CandidateAddress{Addr: "gw-1.example.net."},
	)
	res := Build(plan, []Candidate{s}, BuildOptions{})
	if len(res.Rejected) != 0 {
		t.Fatalf("rejected: %v", res.Rejected)
	}
	var reasons []string
	for _, w := range res.Warnings {
		reasons = append(reasons, w.String())
	}
	joined := strings.Join(reasons, "\n")
	for _, want := range []string{"tinc address 0.0.0.0 dropped", "port 70000 dropped", "port -1 dropped", `"bad host\nSubnet = ::/0" dropped`, "tinc address :: dropped", "224.0.0.1 dropped", "127.0.0.1 dropped: a loopback", "fe80::1 dropped"} {
		if !strings.Contains(joined, want) {
			t.Errorf("warnings lack %q:\n%s", want, joined)
		}
	}
	srv, _ := res.Testbed.Lookup("server")
	want := []TincAddress{{Host: "2001:db8::1", Port: 656}, {Host: "gw-1.example.net.", Port: 655}}
	if diff := cmp.Diff(want, srv.Addresses); diff != "" {
		t.Errorf("addresses (-want +got):\n%s", diff)
	}
}

func TestBuildDuplicates(t *testing.T) {
	_, spkiKey := keys(t)
	a := node(t, 5)
	b := node(t, 6)
	b.Tinc.Name = "node_5" // claims node 5's name
	c := node(t, 7)
	d := node(t, 7) // listed twice, with another key
	d.Tinc = &CandidateTinc{Name: "node_7", PubKey: spkiKey}
	e := node(t, 9) // listed twice, identical (pages shifted): kept once
	h := Candidate{Kind: addressing.KindHost, ID: 8, MgmtAddr: "fdf5:5351:1dfd:0:2000::8", Backend: "tinc",
		Tinc: &CandidateTinc{Name: "server", PubKey: spkiKey}} // a host posing as the main server
	res := Build(plan, []Candidate{a, b, c, d, node(t, 8), e, e, h}, BuildOptions{})
	var kept []string
	for m := range res.Testbed.All() {
		kept = append(kept, m.TincName)
	}
	if diff := cmp.Diff([]string{"node_5", "node_8", "node_9"}, kept); diff != "" {
		t.Errorf("kept (-want +got):\n%s", diff)
	}
	var got []string
	for _, p := range res.Rejected {
		got = append(got, p.String())
	}
	want := []string{
		`node 6 (node_5): tinc name "node_5" is not node 6's: want node_6`,
		"node 7 (node_7): listed twice by the registry, with different content",
		"node 7 (node_7): listed twice by the registry, with different content",
		`host 8 (server): tinc name "server" is not host 8's: want host_8`,
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("rejections (-want +got):\n%s", diff)
	}
}

func TestDedupeOverlap(t *testing.T) {
	// Build never produces overlapping subnets for consistent ids, so test
	// the check directly with members whose subnets overlap.
	ms := []Member{
		{Kind: addressing.KindNode, ID: 1, TincName: "a", Subnets: []netip.Prefix{netip.MustParsePrefix("fdf5:5351:1dfd:1::/64")}},
		{Kind: addressing.KindHost, ID: 2, TincName: "b", Subnets: []netip.Prefix{netip.MustParsePrefix("fdf5:5351:1dfd:1::5/128")}},
		{Kind: addressing.KindHost, ID: 3, TincName: "c", Subnets: []netip.Prefix{netip.MustParsePrefix("fdf5:5351:1dfd:2::5/128")}},
	}
	kept, probs := dedupe(ms)
	if len(kept) != 1 || kept[0].TincName != "c" || len(probs) != 2 || !strings.Contains(probs[0].Reason, "overlaps") {
		t.Errorf("kept %v problems %v", kept, probs)
	}
}

func TestVersionAndDiff(t *testing.T) {
	base := []Candidate{node(t, 1), node(t, 2), node(t, 3), server(t, 2, CandidateAddress{Addr: "10.0.0.1"})}
	a := Build(plan, base, BuildOptions{}).Testbed
	// Same content in another order: same version.
	rev := []Candidate{base[3], base[2], base[1], base[0]}
	if b := Build(plan, rev, BuildOptions{}).Testbed; b.Version() != a.Version() || b.Serial() != a.Serial() {
		t.Errorf("version depends on order: %s vs %s", a.Version(), b.Version())
	}
	changed := append([]Candidate(nil), base...)
	changed[1] = node(t, 2)
	changed[1].Name = "renamed"
	changed = changed[1:] // node_1 removed
	changed = append(changed, node(t, 4))
	b := Build(plan, changed, BuildOptions{}).Testbed
	if b.Version() == a.Version() {
		t.Error("different content, same version")
	}
	got := Diff(a, b)
	want := Changes{Added: []string{"node_4"}, Removed: []string{"node_1"}, Changed: []string{"node_2"}}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("Diff (-want +got):\n%s", diff)
	}
	if !Diff(a, a).Empty() {
		t.Error("Diff(a, a) not empty")
	}
	if d := Diff(nil, a); len(d.Added) != 4 {
		t.Errorf("Diff(nil, a) = %+v", d)
	}
	if d := Diff(a, Empty(plan)); len(d.Removed) != 4 {
		t.Errorf("Diff(a, empty) = %+v", d)
	}
	// Properties count.
	p1 := server(t, 3)
	p1.Properties = map[string]string{"mgmtnet.egress": "weight=10"}
	p2 := server(t, 3)
	p2.Properties = map[string]string{"mgmtnet.egress": "weight=20"}
	if d := Diff(Build(plan, []Candidate{p1}, BuildOptions{}).Testbed, Build(plan, []Candidate{p2}, BuildOptions{}).Testbed); len(d.Changed) != 1 {
		t.Errorf("property change not seen: %+v", d)
	}
}

func TestNormalizePublicKey(t *testing.T) {
	k, s := keys(t)
	for _, in := range []string{k, s, "\n\n" + k + "\n\n", strings.ReplaceAll(k, "\n", "\r\n")} {
		out, err := NormalizePublicKey(in)
		if err != nil {
			t.Fatalf("NormalizePublicKey: %v", err)
		}
		if out != k && out != s {
			t.Errorf("not canonical: %q", out)
		}
		if strings.Contains(out, "\r") || strings.HasPrefix(out, "\n") || !strings.HasSuffix(out, "-----\n") || strings.HasSuffix(out, "\n\n") {
			t.Errorf("not normalized: %q", out)
		}
	}
}

// The controller stores a key as it was submitted (only CRLF and the
// space around it normalised), so a registry may hold base64 lines of
// any length: they are read and re-wrapped to 64 columns, the same key.
func TestNormalizePublicKeyRewraps(t *testing.T) {
	k, s := keys(t)
	for _, want := range []string{k, s} {
		lines := strings.Split(strings.TrimSpace(want), "\n")
		body := strings.Join(lines[1:len(lines)-1], "")
		var wrapped76 []string
		for b := body; len(b) > 0; {
			n := min(76, len(b))
			wrapped76 = append(wrapped76, b[:n])
			b = b[n:]
		}
		for name, in := range map[string]string{
			"76 columns": lines[0] + "\n" + strings.Join(wrapped76, "\n") + "\n" + lines[len(lines)-1],
			"one line":   lines[0] + "\n" + body + "\n" + lines[len(lines)-1],
		} {
			out, err := NormalizePublicKey(in)
			if err != nil || out != want {
				t.Errorf("%s: %q, %v; want the 64-column key", name, out, err)
			}
		}
	}
}

func FuzzBuild(f *testing.F) {
	k, _ := keys(f)
	f.Add(uint8(1), uint64(31), "node_31", "fdf5:5351:1dfd:1f::2", k, "10.0.0.1", 655)
	f.Add(uint8(2), uint64(2), "server", "fdf5:5351:1dfd::2", k, "0.0.0.0", 0)
	f.Add(uint8(3), uint64(7), "../x", "fdf5:5351:1dfd:0:2000::7", "junk", "gw.example.net", 70000)
	f.Fuzz(func(t *testing.T, kind uint8, id uint64, name, addr, key, taddr string, port int) {
		c := Candidate{Kind: addressing.Kind(kind % 6), ID: id, MgmtAddr: addr, Backend: "tinc",
			Tinc: &CandidateTinc{Name: name, PubKey: key, Addresses: []CandidateAddress{{Addr: taddr, Port: port}}}}
		res := Build(plan, []Candidate{c}, BuildOptions{})
		if res.Testbed.Len()+len(res.Rejected)+len(res.Skipped) != 1 {
			t.Fatalf("candidate neither kept nor rejected: %+v", res)
		}
		for m := range res.Testbed.All() {
			if !ValidTincName(m.TincName) {
				t.Fatalf("invalid tinc name kept: %q", m.TincName)
			}
			e, err := plan.Reverse(m.Addr)
			if err != nil || e.Kind != m.Kind || e.ID != m.ID {
				t.Fatalf("address %s of %s does not reverse to it: %v %v", m.Addr, m.Label(), e, err)
			}
			for _, a := range m.Addresses {
				if strings.ContainsAny(a.Host, " \t\r\n#=") || a.Port == 0 {
					t.Fatalf("unsafe tinc address kept: %+v", a)
				}
			}
			if _, err := NormalizePublicKey(m.PubKey); err != nil {
				t.Fatalf("kept key does not normalize: %v", err)
			}
		}
	})
}

func TestChoosePrefix(t *testing.T) {
	vct := netip.MustParsePrefix("fd65:fc41:c50f::/48")
	clab := addressing.DefaultMgmtPrefix()
	cands := []Candidate{node(t, 1), node(t, 2), node(t, 3)} // in clab
	if p, note := ChoosePrefix(clab, vct, cands); p != clab || note != "" {
		t.Errorf("agreeing prefix: %s %q", p, note)
	}
	p, note := ChoosePrefix(vct, clab, cands)
	if p != clab || !strings.Contains(note, "3 of 3 member addresses are in fdf5:5351:1dfd::/48") {
		t.Errorf("disagreeing prefix: %s %q", p, note)
	}
	if p, _ := ChoosePrefix(netip.Prefix{}, vct, nil); p != vct {
		t.Errorf("no declared prefix, no members: %s", p)
	}
}

func TestBuildKeyCache(t *testing.T) {
	cache := NewKeyCache()
	a := Build(plan, []Candidate{node(t, 1), node(t, 2)}, BuildOptions{Keys: cache})
	b := Build(plan, []Candidate{node(t, 1), node(t, 2)}, BuildOptions{Keys: cache})
	if a.Testbed.Version() != b.Testbed.Version() || len(cache.m) != 1 {
		t.Errorf("cached build differs or cache holds %d keys", len(cache.m))
	}
	bad := node(t, 3)
	bad.Tinc.PubKey = "junk"
	c := Build(plan, []Candidate{bad}, BuildOptions{Keys: cache})
	if len(c.Rejected) != 1 || len(cache.m) != 0 {
		t.Errorf("a bad key was cached or accepted: %v, %d keys", c.Rejected, len(cache.m))
	}
}

// "mgmt_net": {} (no management-network record on the controller) is no
// rejection: the controller computes the address from the id, and so does
// Build, with a warning.
func TestBuildMgmtNetWithoutAddr(t *testing.T) {
	c := node(t, 3)
	c.MgmtAddr, c.Backend = "", ""
	res := Build(addressing.Default(), []Candidate{c}, BuildOptions{})
	if len(res.Rejected) != 0 || len(res.Warnings) != 1 || !strings.Contains(res.Warnings[0].String(), "using the plan's fdf5:5351:1dfd:3::2") {
		t.Fatalf("rejected %v, warnings %v", res.Rejected, res.Warnings)
	}
	m, ok := res.Testbed.Lookup("node_3")
	if !ok || m.Addr.String() != "fdf5:5351:1dfd:3::2" || m.Subnets[0].String() != "fdf5:5351:1dfd:3::/64" {
		t.Errorf("member %+v", m)
	}
}
