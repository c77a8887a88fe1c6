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
		{"allow ipv6", Gateway{TincIface: "confine", WANIface: "wan", EgressPrefix: egressPrefix, Allow: []netip.Prefix{netip.MustParsePrefix("fd00::/8")}, Enabled: true}, "allow[0] fd00::/8: not an IPv4 prefix"},
		{"deny invalid", Gateway{TincIface: "confine", WANIface: "wan", EgressPrefix: egressPrefix, Deny: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), {}}, Enabled: true}, "deny[1] invalid Prefix: not an IPv4 prefix"},
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
		// An operator's proxy in 10.0.0.0/8, a documentation range denied.
		{"allow-deny", Gateway{TincIface: "confine", WANIface: "wan", EgressPrefix: egressPrefix, Enabled: true,
			Allow: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}, Deny: []netip.Prefix{netip.MustParsePrefix("203.0.113.0/24")}}},
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
		{"3-change", Gateway{TincIface: "confine", WANIface: "wan2", EgressPrefix: netip.MustParsePrefix("100.64.0.0/15"), Enabled: true,
			Allow: []netip.Prefix{netip.MustParsePrefix("10.1.2.0/24")}}},
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
					want = map[string]uint64{CounterBlockedDestination: 0, CounterForwarded: 0, CounterMasqueraded: 0, CounterMisrouted: 0, CounterReturned: 0, CounterSpoofed: 7, CounterWANInitiated: 0}
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
	if got[CounterWANInitiated] != (Counter{Packets: 3, Bytes: 180}) || len(got) != 7 {
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

// Traffic that involves neither tinc nor the WAN is never judged, nor is
// IPv6 that does not come from the WAN: every rule of the base chains
// names the tinc interface or the WAN, and only the one for what comes
// from the WAN judges IPv6 too.
func TestOnlyTincAndWAN(t *testing.T) {
	for _, c := range on.table().Chains {
		if c.Hook == nil {
			continue
		}
		for _, r := range c.Rules {
			switch {
			case r.Text == `iifname "wan" jump `+chainFromWAN:
			case !strings.HasPrefix(r.Text, "meta nfproto ipv4 "):
				t.Errorf("base chain %s: rule %q judges IPv6 that is not from the WAN", c.Name, r.Text)
			case !strings.Contains(r.Text, `"confine"`) && c.Name != chainPostrouting:
				t.Errorf("base chain %s: rule %q judges traffic that does not involve tinc", c.Name, r.Text)
			}
		}
	}
}

// The blocked destinations: the special-purpose ranges, less Allow, plus
// Deny, which wins.
func TestBlocked(t *testing.T) {
	ps := func(s ...string) []netip.Prefix {
		var out []netip.Prefix
		for _, x := range s {
			out = append(out, netip.MustParsePrefix(x))
		}
		return out
	}
	special := "0.0.0.0/8 10.0.0.0/8 100.64.0.0/10 127.0.0.0/8 169.254.0.0/16 172.16.0.0/12 192.0.0.0/24 192.168.0.0/16 198.18.0.0/15 224.0.0.0/3"
	for _, tt := range []struct {
		name        string
		allow, deny []netip.Prefix
		want        string
	}{
		// 224.0.0.0/4 and 240.0.0.0/4 are adjacent: one prefix.
		{"default", nil, nil, special},
		{"allow a /24 of 10/8", ps("10.1.2.0/24"), nil,
			"0.0.0.0/8 10.0.0.0/16 10.1.0.0/23 10.1.3.0/24 10.1.4.0/22 10.1.8.0/21 10.1.16.0/20 10.1.32.0/19 10.1.64.0/18 10.1.128.0/17 10.2.0.0/15 10.4.0.0/14 10.8.0.0/13 10.16.0.0/12 10.32.0.0/11 10.64.0.0/10 10.128.0.0/9 100.64.0.0/10 127.0.0.0/8 169.254.0.0/16 172.16.0.0/12 192.0.0.0/24 192.168.0.0/16 198.18.0.0/15 224.0.0.0/3"},
		{"allow all of 10/8 and deny a documentation range", ps("10.0.0.0/8"), ps("198.51.100.0/24"),
			"0.0.0.0/8 100.64.0.0/10 127.0.0.0/8 169.254.0.0/16 172.16.0.0/12 192.0.0.0/24 192.168.0.0/16 198.18.0.0/15 198.51.100.0/24 224.0.0.0/3"},
		{"deny wins", ps("10.0.0.0/8"), ps("10.9.0.0/16"),
			"0.0.0.0/8 10.9.0.0/16 100.64.0.0/10 127.0.0.0/8 169.254.0.0/16 172.16.0.0/12 192.0.0.0/24 192.168.0.0/16 198.18.0.0/15 224.0.0.0/3"},
		{"allow everything", ps("0.0.0.0/0"), nil, ""},
	} {
		g := on
		g.Allow, g.Deny = tt.allow, tt.deny
		var got []string
		for _, p := range g.Blocked() {
			got = append(got, p.String())
		}
		if s := strings.Join(got, " "); s != tt.want {
			t.Errorf("%s: Blocked =\n%s\nwant\n%s", tt.name, s, tt.want)
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
		// nft wraps a set's elements over several lines.
		if strings.HasPrefix(l, "elements = ") {
			if squash := strings.NewReplacer(" ", "", "\t", "", "\n", ""); !strings.Contains(squash.Replace(out), squash.Replace(l)) {
				t.Errorf("nft list does not show the set's %q", l)
			}
			continue
		}
		if !strings.Contains(out, l) {
			t.Errorf("nft list does not show %q", l)
		}
	}
}
