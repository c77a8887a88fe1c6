package nft_test

import (
	"context"
	"errors"
	"net/netip"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"github.com/google/nftables/userdata"
	"golang.org/x/sys/unix"

	"github.com/confine-project/mgmtnet/internal/nft"
	"github.com/confine-project/mgmtnet/internal/nft/nfttest"
)

func TestNewRuleText(t *testing.T) {
	tests := []struct {
		name  string
		terms []nft.Term
		want  string
		exprs int
	}{
		{"snat", []nft.Term{nft.NFProtoIPv4(), nft.OIFName("confine"), nft.SAddr(netip.MustParsePrefix("192.168.157.0/25")), nft.SNAT(netip.MustParseAddr("100.64.0.31"))},
			`meta nfproto ipv4 oifname "confine" ip saddr 192.168.157.0/25 snat ip to 100.64.0.31`, 2 + 2 + 3 + 2},
		{"implied nfproto is not spelt", []nft.Term{nft.SAddrNot(netip.MustParsePrefix("100.64.0.0/16")), nft.CounterName("spoofed"), nft.Drop()},
			`ip saddr != 100.64.0.0/16 counter name "spoofed" drop`, 2 + 2 + 1 + 1},
		{"a /32 is an address", []nft.Term{nft.NFProtoIPv4(), nft.SAddr(netip.MustParsePrefix("100.64.0.31/32"))},
			`meta nfproto ipv4 ip saddr 100.64.0.31`, 2 + 2},
		{"unmasked prefix is masked", []nft.Term{nft.NFProtoIPv4(), nft.SAddr(netip.MustParsePrefix("10.1.2.3/8"))},
			`meta nfproto ipv4 ip saddr 10.0.0.0/8`, 2 + 2},
		{"mss clamp implies tcp", []nft.Term{nft.NFProtoIPv4(), nft.IIFName("confine"), nft.TCPSYN(), nft.ClampMSSToRouteMTU()},
			`meta nfproto ipv4 iifname "confine" tcp flags syn / syn,rst tcp option maxseg size set rt mtu`, 2 + 2 + 2 + 3 + 3},
		{"ct, jump, negated oifname", []nft.Term{nft.OIFNameNot("wan"), nft.CtEstablishedRelated(), nft.Jump("x")},
			`oifname != "wan" ct state established,related jump x`, 2 + 3 + 1},
		{"masquerade", []nft.Term{nft.OIFName("wan"), nft.SAddr(netip.MustParsePrefix("100.64.0.0/16")), nft.CounterName("masqueraded"), nft.Masquerade()},
			`oifname "wan" ip saddr 100.64.0.0/16 counter name "masqueraded" masquerade`, 2 + 2 + 2 + 1 + 1},
		{"ipv6", []nft.Term{nft.SAddr(netip.MustParsePrefix("2001:db8::/33")), nft.Accept()},
			`ip6 saddr 2001:db8::/33 accept`, 2 + 3 + 1},
	}
	for _, tt := range tests {
		r := nft.NewRule(tt.terms...)
		if r.Text != tt.want || len(r.Exprs) != tt.exprs {
			t.Errorf("%s: got %q with %d expressions, want %q with %d", tt.name, r.Text, len(r.Exprs), tt.want, tt.exprs)
		}
	}
}

// The expressions are the ones nft generates (nft --debug=netlink) for the
// same text.
func TestNewRuleExprs(t *testing.T) {
	got := nft.NewRule(nft.SAddr(netip.MustParsePrefix("192.168.157.0/25")), nft.TCPSYN()).Exprs
	want := []expr.Any{
		&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{unix.NFPROTO_IPV4}},
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: 12, Len: 4},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4, Mask: []byte{255, 255, 255, 128}, Xor: []byte{0, 0, 0, 0}},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{192, 168, 157, 0}},
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{unix.IPPROTO_TCP}},
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 13, Len: 1},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 1, Mask: []byte{0x06}, Xor: []byte{0}},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{0x02}},
	}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("expressions (-want +got):\n%s", d)
	}
	// An interface name is compared NUL-padded to IFNAMSIZ: an exact match.
	got = nft.NewRule(nft.IIFName("confine")).Exprs
	if c := got[1].(*expr.Cmp); string(c.Data) != "confine\x00\x00\x00\x00\x00\x00\x00\x00\x00" {
		t.Errorf("iifname data %q", c.Data)
	}
}

func TestValidIfname(t *testing.T) {
	for name, ok := range map[string]bool{
		"confine": true, "eth0.2": true, "wan": true, "a_15_bytes_name": true,
		"": false, "a_16_bytes_name!": false, ".": false, "..": false, "a/b": false, "a b": false, "eth0:1": false,
	} {
		if err := nft.ValidIfname(name); (err == nil) != ok {
			t.Errorf("ValidIfname(%q) = %v, want ok %v", name, err, ok)
		}
	}
}

func TestTableString(t *testing.T) {
	got := sample().String()
	want := `table inet mgmtnet_test {
	counter hits {
	}
	chain fwd {
		type filter hook forward priority mangle; policy accept;
		meta nfproto ipv4 iifname "confine" jump sub
	}
	chain post {
		type nat hook postrouting priority srcnat; policy accept;
		meta nfproto ipv4 oifname "confine" ip saddr 192.168.157.0/25 snat ip to 100.64.0.31
	}
	chain sub {
		tcp flags syn / syn,rst tcp option maxseg size set rt mtu
		ip saddr != 100.64.0.0/16 counter name "hits" drop
	}
}
`
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("String (-want +got):\n%s", d)
	}
}

const testTable = "mgmtnet_test"

func sample() nft.Table {
	return nft.Table{
		Name:     testTable,
		Counters: []string{"hits"},
		Chains: []nft.Chain{
			{Name: "fwd", Hook: &nft.Hook{Type: nftables.ChainTypeFilter, Num: *nftables.ChainHookForward, Priority: *nftables.ChainPriorityMangle},
				Rules: []nft.Rule{nft.NewRule(nft.NFProtoIPv4(), nft.IIFName("confine"), nft.Jump("sub"))}},
			{Name: "sub", Rules: []nft.Rule{
				nft.NewRule(nft.TCPSYN(), nft.ClampMSSToRouteMTU()),
				nft.NewRule(nft.SAddrNot(netip.MustParsePrefix("100.64.0.0/16")), nft.CounterName("hits"), nft.Drop()),
			}},
			{Name: "post", Hook: &nft.Hook{Type: nftables.ChainTypeNAT, Num: *nftables.ChainHookPostrouting, Priority: *nftables.ChainPriorityNATSource},
				Rules: []nft.Rule{nft.NewRule(nft.NFProtoIPv4(), nft.OIFName("confine"), nft.SAddr(netip.MustParsePrefix("192.168.157.0/25")), nft.SNAT(netip.MustParseAddr("100.64.0.31")))}},
		},
	}
}

// changed is sample with the SNAT address changed, the "sub" chain gone,
// the jump replaced by a counted accept, and a second counter.
func changed() nft.Table {
	t := sample()
	t.Counters = []string{"hits", "more"}
	t.Chains = []nft.Chain{
		{Name: "fwd", Hook: t.Chains[0].Hook, Rules: []nft.Rule{nft.NewRule(nft.NFProtoIPv4(), nft.IIFName("confine"), nft.CounterName("more"), nft.Accept())}},
		{Name: "post", Hook: t.Chains[2].Hook, Rules: []nft.Rule{nft.NewRule(nft.NFProtoIPv4(), nft.OIFName("confine"), nft.SAddr(netip.MustParsePrefix("192.168.157.0/25")), nft.SNAT(netip.MustParseAddr("100.64.0.32")))}},
	}
	return t
}

// backend is a Conn to test against: the fake, or a kernel namespace.
type backend struct {
	name   string
	kernel bool
	conn   func(t *testing.T) nft.Conn
}

func backends() []backend {
	return []backend{
		{name: "fake", conn: func(*testing.T) nft.Conn { return nft.NewFake() }},
		{name: "kernel", kernel: true, conn: func(t *testing.T) nft.Conn { return nfttest.New(t).NFT }},
	}
}

// addForeign adds a table of someone else's, with a rule and a comment,
// through c.
func addForeign(t *testing.T, c nft.Conn) {
	t.Helper()
	ft := c.AddTable(&nftables.Table{Name: "filter", Family: nftables.TableFamilyINet})
	accept := nftables.ChainPolicyAccept
	ch := c.AddChain(&nftables.Chain{Name: "input", Table: ft, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookInput, Priority: nftables.ChainPriorityFilter, Policy: &accept})
	c.AddRule(&nftables.Rule{Table: ft, Chain: ch, Exprs: []expr.Any{&expr.Verdict{Kind: expr.VerdictAccept}},
		UserData: userdata.AppendString(nil, userdata.TypeComment, "not ours")})
	if err := c.Flush(); err != nil {
		t.Fatalf("add foreign table: %v", err)
	}
}

// foreign observes the foreign table as Observe sees it.
const foreignText = `table inet filter {
	chain input {
		type filter hook input priority filter; policy accept;
		# foreign rule (1 expressions)
	}
}
`

func observe(t *testing.T, c nft.Conn, name string) (string, bool) {
	t.Helper()
	got, ok, err := nft.Observe(t.Context(), c, name)
	if err != nil {
		t.Fatalf("Observe %s: %v", name, err)
	}
	return got.String(), ok
}

// The same steps, with the same expected writes and state, against the
// fake and a kernel namespace.
func TestApply(t *testing.T) {
	for _, b := range backends() {
		t.Run(b.name, func(t *testing.T) {
			conn := b.conn(t)
			addForeign(t, conn)
			// Our table already exists with a counter that has counted
			// (a previous run): its value must survive every replace.
			ours := &nftables.Table{Name: testTable, Family: nft.Family}
			conn.AddTable(ours)
			conn.AddObj(&nftables.NamedObj{Table: ours, Name: "hits", Type: nftables.ObjTypeCounter, Obj: &expr.Counter{Packets: 7, Bytes: 700}})
			if err := conn.Flush(); err != nil {
				t.Fatal(err)
			}
			rec := &nft.Recorder{Conn: conn}

			steps := []struct {
				name   string
				want   nft.Table
				writes []string
			}{
				{"install into the existing table", sample(), []string{
					"AddTable inet mgmtnet_test",
					"FlushTable inet mgmtnet_test",
					"AddChain inet mgmtnet_test fwd type filter hook forward priority mangle policy accept",
					"AddChain inet mgmtnet_test sub",
					"AddChain inet mgmtnet_test post type nat hook postrouting priority srcnat policy accept",
					`AddRule inet mgmtnet_test fwd: meta nfproto ipv4 iifname "confine" jump sub`,
					"AddRule inet mgmtnet_test sub: tcp flags syn / syn,rst tcp option maxseg size set rt mtu",
					`AddRule inet mgmtnet_test sub: ip saddr != 100.64.0.0/16 counter name "hits" drop`,
					`AddRule inet mgmtnet_test post: meta nfproto ipv4 oifname "confine" ip saddr 192.168.157.0/25 snat ip to 100.64.0.31`,
					"Flush",
				}},
				{"again: nothing to do", sample(), nil},
				{"change: one batch", changed(), []string{
					"AddTable inet mgmtnet_test",
					"FlushTable inet mgmtnet_test",
					"DelChain inet mgmtnet_test sub",
					"AddObj inet mgmtnet_test counter more",
					`AddRule inet mgmtnet_test fwd: meta nfproto ipv4 iifname "confine" counter name "more" accept`,
					`AddRule inet mgmtnet_test post: meta nfproto ipv4 oifname "confine" ip saddr 192.168.157.0/25 snat ip to 100.64.0.32`,
					"Flush",
				}},
				{"changed again: nothing to do", changed(), nil},
				{"absent: the table goes", nft.Table{Name: testTable}, []string{"DelTable inet mgmtnet_test", "Flush"}},
				{"absent again: nothing to do", nft.Table{Name: testTable}, nil},
			}
			for _, s := range steps {
				rec.Reset()
				changed, err := nft.Apply(t.Context(), rec, s.want)
				if err != nil {
					t.Fatalf("%s: Apply: %v", s.name, err)
				}
				if d := cmp.Diff(s.writes, rec.Writes()); d != "" {
					t.Errorf("%s: writes (-want +got):\n%s", s.name, d)
				}
				if changed != (len(s.writes) > 0) {
					t.Errorf("%s: changed = %v", s.name, changed)
				}
				got, exists := observe(t, conn, testTable)
				if s.want.Absent() {
					if exists {
						t.Errorf("%s: table still there:\n%s", s.name, got)
					}
				} else {
					if d := cmp.Diff(s.want.String(), got); d != "" {
						t.Errorf("%s: kernel state (-want +got):\n%s", s.name, d)
					}
					ctrs, err := nft.ReadCounters(t.Context(), conn, testTable)
					if err != nil {
						t.Fatal(err)
					}
					if ctrs["hits"] != (nft.Counter{Packets: 7, Bytes: 700}) {
						t.Errorf("%s: counter hits = %+v, want its value kept", s.name, ctrs["hits"])
					}
				}
				if b.kernel {
					nfttest.CheckExprs(t, conn, s.want)
				}
				if got, _ := observe(t, conn, "filter"); got != foreignText {
					t.Errorf("%s: foreign table changed:\n%s", s.name, got)
				}
			}
		})
	}
}

// nft(8) reads back what we wrote as the rules we meant, and does not show
// our keys as comments.
func TestNFTListReadsOurRules(t *testing.T) {
	ns := nfttest.New(t)
	if _, err := nft.Apply(t.Context(), ns.NFT, sample()); err != nil {
		t.Fatal(err)
	}
	out, ok := ns.Run(t, "nft", "list", "table", "inet", testTable)
	if !ok {
		t.Skip("nft(8) is not installed")
	}
	t.Logf("nft list table inet %s:\n%s", testTable, out)
	for _, line := range []string{
		`iifname "confine" jump sub`,
		`tcp flags syn / syn,rst tcp option maxseg size set rt mtu`,
		`ip saddr != 100.64.0.0/16 counter name "hits" drop`,
		`oifname "confine" ip saddr 192.168.157.0/25 snat ip to 100.64.0.31`,
	} {
		if !strings.Contains(out, line) {
			t.Errorf("nft list does not show %q", line)
		}
	}
	if strings.Contains(out, "comment") {
		t.Errorf("our rule keys show up as comments:\n%s", out)
	}
}

// A batch the kernel refuses changes nothing: the old table stays whole.
func TestApplyAtomic(t *testing.T) {
	f := nft.NewFake()
	if _, err := nft.Apply(t.Context(), f, sample()); err != nil {
		t.Fatal(err)
	}
	before := f.String()
	boom := errors.New("boom")
	f.FailNextFlush(boom)
	if _, err := nft.Apply(t.Context(), f, changed()); !errors.Is(err, boom) {
		t.Fatalf("Apply = %v, want boom", err)
	}
	if after := f.String(); after != before {
		t.Errorf("a failed batch changed the state:\n%s\nwas:\n%s", after, before)
	}
	// A rule that jumps to a chain that does not exist fails the whole
	// batch in the fake as in the kernel.
	bad := sample()
	bad.Chains[0].Rules = append(bad.Chains[0].Rules, nft.NewRule(nft.Jump("nowhere")))
	for _, b := range backends() {
		t.Run(b.name, func(t *testing.T) {
			conn := b.conn(t)
			if _, err := nft.Apply(t.Context(), conn, sample()); err != nil {
				t.Fatal(err)
			}
			before, _ := observe(t, conn, testTable)
			if _, err := nft.Apply(t.Context(), conn, bad); err == nil {
				t.Fatal("Apply with a jump to a missing chain succeeded")
			}
			if after, _ := observe(t, conn, testTable); after != before {
				t.Errorf("a refused batch changed the table:\n%s\nwas:\n%s", after, before)
			}
		})
	}
}

// Someone else's rule in our table, or a chain's policy set to drop, is
// a difference that Apply repairs.
func TestApplyRepairs(t *testing.T) {
	for _, b := range backends() {
		t.Run(b.name, func(t *testing.T) {
			conn := b.conn(t)
			if _, err := nft.Apply(t.Context(), conn, sample()); err != nil {
				t.Fatal(err)
			}
			ours := &nftables.Table{Name: testTable, Family: nft.Family}
			drop := nftables.ChainPolicyDrop
			conn.AddChain(&nftables.Chain{Name: "post", Table: ours, Type: nftables.ChainTypeNAT,
				Hooknum: nftables.ChainHookPostrouting, Priority: nftables.ChainPriorityNATSource, Policy: &drop})
			conn.AddRule(&nftables.Rule{Table: ours, Chain: &nftables.Chain{Name: "sub", Table: ours}, Exprs: []expr.Any{&expr.Verdict{Kind: expr.VerdictAccept}}})
			if err := conn.Flush(); err != nil {
				t.Fatal(err)
			}
			got, _ := observe(t, conn, testTable)
			if !strings.Contains(got, "policy drop") || !strings.Contains(got, "# foreign rule") {
				t.Fatalf("tampering not observed:\n%s", got)
			}
			changed, err := nft.Apply(t.Context(), conn, sample())
			if err != nil || !changed {
				t.Fatalf("Apply = %v, %v", changed, err)
			}
			if got, _ := observe(t, conn, testTable); got != sample().String() {
				t.Errorf("not repaired:\n%s", got)
			}
		})
	}
}

func TestReadCountersNoTable(t *testing.T) {
	got, err := nft.ReadCounters(context.Background(), nft.NewFake(), testTable)
	if err != nil || len(got) != 0 {
		t.Errorf("ReadCounters = %v, %v; want empty", got, err)
	}
}

func TestFakeStrict(t *testing.T) {
	f := nft.NewFake()
	tb := &nftables.Table{Name: "t", Family: nft.Family}
	f.AddTable(tb)
	accept := nftables.ChainPolicyAccept
	f.AddChain(&nftables.Chain{Name: "in", Table: tb, Type: nftables.ChainTypeFilter, Hooknum: nftables.ChainHookInput, Priority: nftables.ChainPriorityFilter, Policy: &accept})
	if err := f.Flush(); err != nil {
		t.Fatal(err)
	}
	in := &nftables.Chain{Name: "in", Table: tb}
	for _, tt := range []struct {
		name  string
		queue func()
		errno unix.Errno
	}{
		{"rule in a missing chain", func() {
			f.AddRule(&nftables.Rule{Table: tb, Chain: &nftables.Chain{Name: "x"}, Exprs: []expr.Any{&expr.Verdict{Kind: expr.VerdictAccept}}})
		}, unix.ENOENT},
		{"missing counter", func() {
			f.AddRule(&nftables.Rule{Table: tb, Chain: in, Exprs: []expr.Any{&expr.Objref{Type: 1, Name: "c"}}})
		}, unix.ENOENT},
		{"nat in a filter chain", func() {
			f.AddRule(&nftables.Rule{Table: tb, Chain: in, Exprs: []expr.Any{&expr.Masq{}}})
		}, unix.EOPNOTSUPP},
		{"rt mtu in input", func() {
			f.AddRule(&nftables.Rule{Table: tb, Chain: in, Exprs: []expr.Any{&expr.Rt{Register: 1, Key: expr.RtTCPMSS}}})
		}, unix.EOPNOTSUPP},
		{"change a chain's hook", func() {
			f.AddChain(&nftables.Chain{Name: "in", Table: tb, Type: nftables.ChainTypeFilter, Hooknum: nftables.ChainHookOutput, Priority: nftables.ChainPriorityFilter})
		}, unix.EEXIST},
		{"delete a missing table", func() { f.DelTable(&nftables.Table{Name: "nope", Family: nft.Family}) }, unix.ENOENT},
	} {
		before := f.String()
		tt.queue()
		if err := f.Flush(); !errors.Is(err, tt.errno) {
			t.Errorf("%s: Flush = %v, want %v", tt.name, err, tt.errno)
		}
		if f.String() != before {
			t.Errorf("%s: a failed batch changed the state", tt.name)
		}
	}
}

// A table someone made dormant judges no packet: Apply wakes it.
func TestApplyWakesDormantTable(t *testing.T) {
	ns := nfttest.New(t)
	if _, err := nft.Apply(t.Context(), ns.NFT, sample()); err != nil {
		t.Fatal(err)
	}
	if _, ok := ns.Run(t, "nft", "add", "table", "inet", testTable, "{ flags dormant; }"); !ok {
		t.Skip("nft(8) is not installed")
	}
	changed, err := nft.Apply(t.Context(), ns.NFT, sample())
	if err != nil || !changed {
		t.Fatalf("Apply on a dormant table = %v, %v; want a change", changed, err)
	}
	tables, err := ns.NFT.ListTablesOfFamily(nft.Family)
	if err != nil {
		t.Fatal(err)
	}
	for _, tb := range tables {
		if tb.Name == testTable && tb.Flags != 0 {
			t.Errorf("table flags %#x after Apply, want 0", tb.Flags)
		}
	}
	if changed, err := nft.Apply(t.Context(), ns.NFT, sample()); err != nil || changed {
		t.Errorf("Apply again = %v, %v; want no change", changed, err)
	}
}

func prefixes(s string) []netip.Prefix {
	var out []netip.Prefix
	for _, f := range strings.Fields(s) {
		out = append(out, netip.MustParsePrefix(f))
	}
	return out
}

func prefixText(ps []netip.Prefix) string {
	s := make([]string, len(ps))
	for i, p := range ps {
		s[i] = p.String()
	}
	return strings.Join(s, " ")
}

func TestPrefixArithmetic(t *testing.T) {
	for _, tt := range []struct{ a, b, merged, minus string }{
		{"10.0.0.0/8", "", "10.0.0.0/8", "10.0.0.0/8"},
		// Adjacent and overlapping prefixes merge; host bits are masked.
		{"224.0.0.0/4 240.0.0.0/4 10.1.0.0/16 10.0.0.5/8", "", "10.0.0.0/8 224.0.0.0/3", "10.0.0.0/8 224.0.0.0/3"},
		{"10.0.0.0/8", "10.0.0.0/9", "10.0.0.0/8", "10.128.0.0/9"},
		{"10.0.0.0/8", "10.0.0.0/8", "10.0.0.0/8", ""},
		{"0.0.0.0/0", "255.255.255.255/32 0.0.0.0/32", "0.0.0.0/0",
			"0.0.0.1/32 0.0.0.2/31 0.0.0.4/30 0.0.0.8/29 0.0.0.16/28 0.0.0.32/27 0.0.0.64/26 0.0.0.128/25 0.0.1.0/24 0.0.2.0/23 0.0.4.0/22 0.0.8.0/21 0.0.16.0/20 0.0.32.0/19 0.0.64.0/18 0.0.128.0/17 0.1.0.0/16 0.2.0.0/15 0.4.0.0/14 0.8.0.0/13 0.16.0.0/12 0.32.0.0/11 0.64.0.0/10 0.128.0.0/9 1.0.0.0/8 2.0.0.0/7 4.0.0.0/6 8.0.0.0/5 16.0.0.0/4 32.0.0.0/3 64.0.0.0/2 128.0.0.0/2 192.0.0.0/3 224.0.0.0/4 240.0.0.0/5 248.0.0.0/6 252.0.0.0/7 254.0.0.0/8 255.0.0.0/9 255.128.0.0/10 255.192.0.0/11 255.224.0.0/12 255.240.0.0/13 255.248.0.0/14 255.252.0.0/15 255.254.0.0/16 255.255.0.0/17 255.255.128.0/18 255.255.192.0/19 255.255.224.0/20 255.255.240.0/21 255.255.248.0/22 255.255.252.0/23 255.255.254.0/24 255.255.255.0/25 255.255.255.128/26 255.255.255.192/27 255.255.255.224/28 255.255.255.240/29 255.255.255.248/30 255.255.255.252/31 255.255.255.254/32"},
		// IPv6 is not an IPv4 set's business.
		{"fd00::/8 192.0.2.0/24", "", "192.0.2.0/24", "192.0.2.0/24"},
	} {
		a, b := prefixes(tt.a), prefixes(tt.b)
		if got := prefixText(nft.MergePrefixes(a)); got != tt.merged {
			t.Errorf("Merge(%s) = %s, want %s", tt.a, got, tt.merged)
		}
		if got := prefixText(nft.SubtractPrefixes(a, b)); got != tt.minus {
			t.Errorf("Subtract(%s, %s) = %s, want %s", tt.a, tt.b, got, tt.minus)
		}
	}
}

// A table with an interval set: installed with its elements (one interval
// reaching 255.255.255.255, one starting at 0.0.0.0), read back the same,
// left alone when it matches, and replaced with the rules that use it when
// its content changes.
func TestApplySet(t *testing.T) {
	table := func(elems string) nft.Table {
		return nft.Table{Name: testTable, Counters: []string{"blocked"},
			Sets: []nft.Set{{Name: "dst", Prefixes: prefixes(elems)}},
			Chains: []nft.Chain{{Name: "fwd", Hook: &nft.Hook{Type: nftables.ChainTypeFilter, Num: *nftables.ChainHookForward, Priority: *nftables.ChainPriorityFilter},
				Rules: []nft.Rule{nft.NewRule(nft.DAddrInSet("dst"), nft.CounterName("blocked"), nft.Drop())}}}}
	}
	for _, b := range backends() {
		t.Run(b.name, func(t *testing.T) {
			conn := b.conn(t)
			for _, step := range []struct {
				elems   string
				changed bool
			}{
				{"0.0.0.0/8 10.0.0.0/8 224.0.0.0/4 240.0.0.0/4", true},
				{"0.0.0.0/8 10.0.0.0/8 224.0.0.0/3", false}, // the same addresses
				{"10.0.0.0/8", true},
				{"", true},
				{"198.51.100.0/24", true},
			} {
				want := table(step.elems)
				changed, err := nft.Apply(t.Context(), conn, want)
				if err != nil || changed != step.changed {
					t.Fatalf("%q: Apply = %v, %v; want changed %v", step.elems, changed, err, step.changed)
				}
				if got, _ := observe(t, conn, testTable); got != want.String() {
					t.Errorf("%q: observed\n%s\nwant\n%s", step.elems, got, want.String())
				}
				if b.kernel {
					nfttest.CheckExprs(t, conn, want)
				}
			}
			if _, err := nft.Apply(t.Context(), conn, nft.Table{Name: testTable}); err != nil {
				t.Fatal(err)
			}
			if _, ok := observe(t, conn, testTable); ok {
				t.Error("the table is still there")
			}
		})
	}
	if err := (nft.Table{Name: "x", Sets: []nft.Set{{Name: "s", Prefixes: prefixes("fd00::/8")}}}).Validate(); err == nil {
		t.Error("a set with an IPv6 prefix is valid")
	}
}
