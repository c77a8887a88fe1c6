package egress

import (
	"context"
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/nftables"
	"github.com/google/nftables/expr"

	"github.com/confine-project/mgmtnet/internal/nft"
	"github.com/confine-project/mgmtnet/internal/nft/nfttest"
)

var (
	egressPrefix = netip.MustParsePrefix("100.64.0.0/16")
	on           = Gateway{TincIface: "confine", WANIface: "wan", EgressPrefix: egressPrefix, Enabled: true}
)

func TestValidate(t *testing.T) {
	for _, tt := range []struct {
		name string
		g    Gateway
		err  string
	}{
		{"zero", Gateway{}, ""},
		{"disabled with junk", Gateway{TincIface: "../x", Enabled: false}, ""},
		{"on", on, ""},
		{"no wan", Gateway{TincIface: "confine", EgressPrefix: egressPrefix, Enabled: true}, "WAN interface: interface name is empty"},
		{"wan is tinc", Gateway{TincIface: "confine", WANIface: "confine", EgressPrefix: egressPrefix, Enabled: true}, "is the tinc interface"},
		{"bad tinc", Gateway{TincIface: "a/b", WANIface: "wan", EgressPrefix: egressPrefix, Enabled: true}, "tinc interface"},
		{"no prefix", Gateway{TincIface: "confine", WANIface: "wan", Enabled: true}, "egress prefix invalid Prefix"},
		{"ipv6 prefix", Gateway{TincIface: "confine", WANIface: "wan", EgressPrefix: netip.MustParsePrefix("fd00::/64"), Enabled: true}, "want an IPv4 prefix"},
		{"prefix /0", Gateway{TincIface: "confine", WANIface: "wan", EgressPrefix: netip.MustParsePrefix("0.0.0.0/0"), Enabled: true}, "longer than /0"},
	} {
		err := tt.g.Validate()
		if (err == nil) != (tt.err == "") || (err != nil && !strings.Contains(err.Error(), tt.err)) {
			t.Errorf("%s: Validate = %v, want %q", tt.name, err, tt.err)
		}
	}
}

func TestRender(t *testing.T) {
	for _, tt := range []struct {
		name string
		g    Gateway
	}{
		{"on", on},
		// An unmasked prefix is masked; other names show through.
		{"other", Gateway{TincIface: "tinc0", WANIface: "eth0.2", EgressPrefix: netip.MustParsePrefix("10.128.1.2/9"), Enabled: true}},
		{"off", Gateway{TincIface: "confine", WANIface: "wan", EgressPrefix: egressPrefix}},
	} {
		got, err := tt.g.Render()
		if err != nil {
			t.Fatalf("%s: %v", tt.name, err)
		}
		nfttest.Golden(t, "gateway_render_"+tt.name, got)
	}
	if _, err := (Gateway{Enabled: true}).Render(); err == nil {
		t.Error("Render of an invalid Gateway succeeded")
	}
}

// env is a backend: the fake, or a throwaway network namespace with a tun
// "confine" and veths "wan" and "wan2".
type env struct {
	conn   nft.Conn
	kernel *nfttest.NS
}

func envs() []struct {
	name string
	make func(t *testing.T) env
} {
	return []struct {
		name string
		make func(t *testing.T) env
	}{
		{"fake", func(*testing.T) env { return env{conn: nft.NewFake()} }},
		{"kernel", func(t *testing.T) env {
			ns := nfttest.New(t)
			ns.AddTun(t, "confine", 1400)
			ns.AddVeth(t, "wan")
			ns.AddVeth(t, "wan2")
			return env{conn: ns.NFT, kernel: ns}
		}},
	}
}

// state prints every inet table, read back through the seam.
func state(t *testing.T, c nft.Conn) string {
	t.Helper()
	tables, err := c.ListTablesOfFamily(nft.Family)
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	for _, tb := range tables {
		ot, _, err := nft.Observe(t.Context(), c, tb.Name)
		if err != nil {
			t.Fatal(err)
		}
		b.WriteString(ot.String())
	}
	return b.String()
}

// addForeign adds a table of someone else's, and our table as a previous
// run left it, with a counter that has counted: its value must survive
// every Apply that keeps egress on.
func addForeign(t *testing.T, c nft.Conn) {
	t.Helper()
	ft := c.AddTable(&nftables.Table{Name: "filter", Family: nftables.TableFamilyINet})
	c.AddChain(&nftables.Chain{Name: "forward", Table: ft, Type: nftables.ChainTypeFilter, Hooknum: nftables.ChainHookForward, Priority: nftables.ChainPriorityFilter})
	c.AddRule(&nftables.Rule{Table: ft, Chain: &nftables.Chain{Name: "forward"}, Exprs: []expr.Any{&expr.Verdict{Kind: expr.VerdictAccept}}})
	ours := c.AddTable(&nftables.Table{Name: TableName, Family: nft.Family})
	c.AddObj(&nftables.NamedObj{Table: ours, Name: CounterSpoofed, Type: nftables.ObjTypeCounter, Obj: &expr.Counter{Packets: 7, Bytes: 420}})
	if err := c.Flush(); err != nil {
		t.Fatalf("add foreign state: %v", err)
	}
}

// The same steps, writes and states against the fake and a kernel
// namespace. Each step's golden file holds the writes Apply made and the
// nftables state after it.
func TestApply(t *testing.T) {
	steps := []struct {
		name string
		want Gateway
	}{
		{"1-enable", on},
		{"2-again", on},
		{"3-change", Gateway{TincIface: "confine", WANIface: "wan2", EgressPrefix: netip.MustParsePrefix("100.64.0.0/15"), Enabled: true}},
		{"4-disable", Gateway{TincIface: "confine", WANIface: "wan2", EgressPrefix: netip.MustParsePrefix("100.64.0.0/15")}},
		{"5-cleanup-again", Gateway{}},
	}
	for _, mk := range envs() {
		t.Run(mk.name, func(t *testing.T) {
			e := mk.make(t)
			addForeign(t, e.conn)
			for _, s := range steps {
				var log []string
				a := NewApplier(&nft.Recorder{Conn: e.conn, Tee: func(w string) { log = append(log, w) }}, nil)
				if err := a.Apply(t.Context(), s.want); err != nil {
					t.Fatalf("%s: Apply: %v", s.name, err)
				}
				writes := "(none)\n"
				if len(log) > 0 {
					writes = strings.Join(log, "\n") + "\n"
				}
				nfttest.Golden(t, "gateway_apply_"+s.name, "# writes\n"+writes+"# state\n"+state(t, e.conn))
				if e.kernel != nil {
					nfttest.CheckExprs(t, e.conn, s.want.table())
				}
				got, err := a.Counters(t.Context())
				if err != nil {
					t.Fatalf("%s: Counters: %v", s.name, err)
				}
				var want map[string]uint64
				if s.want.Enabled {
					want = map[string]uint64{CounterForwarded: 0, CounterMasqueraded: 0, CounterMisrouted: 0, CounterReturned: 0, CounterSpoofed: 7, CounterWANInitiated: 0}
				}
				if d := cmp.Diff(want, got, cmp.Transformer("nilEmpty", func(m map[string]uint64) map[string]uint64 {
					if len(m) == 0 {
						return nil
					}
					return m
				})); d != "" {
					t.Errorf("%s: Counters (-want +got):\n%s", s.name, d)
				}
			}
		})
	}
}

func TestCounterValues(t *testing.T) {
	f := nft.NewFake()
	a := NewApplier(f, nil)
	if err := a.Apply(context.Background(), on); err != nil {
		t.Fatal(err)
	}
	if err := f.SetCounter(TableName, CounterWANInitiated, 3, 180); err != nil {
		t.Fatal(err)
	}
	got, err := a.CounterValues(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if got[CounterWANInitiated] != (Counter{Packets: 3, Bytes: 180}) || len(got) != 6 {
		t.Errorf("CounterValues = %v", got)
	}
	// A traffic-counted table is not a changed table.
	before := len(f.Writes())
	if err := a.Apply(context.Background(), on); err != nil || len(f.Writes()) != before {
		t.Errorf("Apply after counting: %v, writes %v", err, f.Writes()[before:])
	}
}

// An invalid Gateway changes nothing, even when egress is on.
func TestApplyInvalid(t *testing.T) {
	f := nft.NewFake()
	a := NewApplier(f, nil)
	if err := a.Apply(context.Background(), on); err != nil {
		t.Fatal(err)
	}
	before := f.String()
	if err := a.Apply(context.Background(), Gateway{TincIface: "confine", Enabled: true}); err == nil {
		t.Fatal("Apply of an invalid Gateway succeeded")
	}
	if f.String() != before {
		t.Error("an invalid Apply changed the table")
	}
}

func TestSetForwarding(t *testing.T) {
	for _, bad := range []string{"", "..", "all/../x", "a b"} {
		if err := SetForwarding(bad, true); err == nil {
			t.Errorf("SetForwarding(%q) succeeded", bad)
		}
	}
	ns := nfttest.New(t)
	ns.AddVeth(t, "wan")
	read := func(iface string) string {
		var b []byte
		err := ns.Do(func() (err error) {
			b, err = os.ReadFile(filepath.Join("/proc/sys/net/ipv4/conf", iface, "forwarding"))
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
		return strings.TrimSpace(string(b))
	}
	for _, v := range []bool{true, false, true} {
		if err := ns.Do(func() error { return SetForwarding("wan", v) }); err != nil {
			t.Fatalf("SetForwarding(wan, %v): %v", v, err)
		}
		want := map[bool]string{true: "1", false: "0"}[v]
		if got := read("wan"); got != want {
			t.Errorf("forwarding on wan = %s after SetForwarding %v", got, v)
		}
	}
	// Only that interface: the namespace's others keep theirs.
	if got := read("wanp"); got != "0" {
		t.Errorf("forwarding on wanp = %s; SetForwarding changed another interface", got)
	}
	err := ns.Do(func() error { return SetForwarding("nosuch0", true) })
	if !errors.Is(err, os.ErrNotExist) {
		t.Errorf("SetForwarding on a missing interface = %v, want not exist", err)
	}
}

// IPv6 and traffic that does not involve tinc are never judged: every
// rule of the base chains is IPv4 and names the tinc interface.
func TestOnlyIPv4ThroughTinc(t *testing.T) {
	for _, c := range on.table().Chains {
		if c.Hook == nil {
			continue
		}
		for _, r := range c.Rules {
			if !strings.HasPrefix(r.Text, "meta nfproto ipv4 ") || !(strings.Contains(r.Text, `"confine"`) || c.Name == chainPostrouting) {
				t.Errorf("base chain %s: rule %q judges more than IPv4 through tinc", c.Name, r.Text)
			}
		}
	}
}

// nft(8) reads back what Apply installed as the rules Render prints.
func TestReadBack(t *testing.T) {
	ns := nfttest.New(t)
	ns.AddTun(t, "confine", 1400)
	ns.AddVeth(t, "wan")
	if err := NewApplier(ns.NFT, nil).Apply(t.Context(), on); err != nil {
		t.Fatal(err)
	}
	out, ok := ns.Run(t, "nft", "list", "table", "inet", TableName)
	if !ok {
		t.Skip("nft(8) is not installed")
	}
	t.Logf("nft list table inet %s:\n%s", TableName, out)
	plan, _ := on.Render()
	for _, l := range strings.Split(plan, "\n") {
		l = strings.TrimSpace(l)
		// nft leaves out a "meta nfproto ipv4" that "ip saddr" implies.
		if strings.Contains(l, "ip saddr") {
			l = strings.TrimPrefix(l, "meta nfproto ipv4 ")
		}
		if strings.HasPrefix(l, "counter ") && strings.HasSuffix(l, "{") || l == "}" || l == "" {
			continue // counters print their values
		}
		if !strings.Contains(out, l) {
			t.Errorf("nft list does not show %q", l)
		}
	}
}
