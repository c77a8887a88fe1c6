package mesh

import (
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// assignTestbed builds g gateways (servers 1..g, server 2 named "server", each with capacity cap
// when cap > 0) and nodes 1..n.
func assignTestbed(t *testing.T, g, n, cap int, extra ...Candidate) *Testbed {
	t.Helper()
	var cands []Candidate
	for i := 1; i <= g; i++ {
		c := server(t, uint64(i), CandidateAddress{Addr: fmt.Sprintf("192.0.2.%d", i), Island: uint64(i)})
		if cap > 0 {
			c.Properties = map[string]string{CapacityProperty: fmt.Sprint(cap)}
		}
		cands = append(cands, c)
	}
	for i := 1; i <= n; i++ {
		cands = append(cands, node(t, uint64(i)))
	}
	cands = append(cands, extra...)
	res := Build(plan, cands, BuildOptions{})
	if len(res.Rejected)+len(res.Warnings) != 0 {
		t.Fatalf("rejected %v, warnings %v", res.Rejected, res.Warnings)
	}
	return res.Testbed
}

func TestAssignment(t *testing.T) {
	t.Run("fits: every client on every gateway", func(t *testing.T) {
		tb := assignTestbed(t, 3, 50, 0)
		a := tb.Assignment()
		if a.PerMember() != 3 {
			t.Errorf("per member %d, want 3", a.PerMember())
		}
		for _, m := range tb.Gateways() {
			g := m.TincName
			if len(a.On(g)) != 50 || a.Capacity(g) != DefaultCapacity {
				t.Errorf("%s holds %d (capacity %d), want 50 (%d)", g, len(a.On(g)), a.Capacity(g), DefaultCapacity)
			}
		}
		if _, ok := a.Of("server_1"); ok {
			t.Error("a gateway is a client")
		}
	})
	t.Run("larger: two gateways each, none over capacity", func(t *testing.T) {
		tb := assignTestbed(t, 6, 1000, 400)
		a := tb.Assignment()
		if a.PerMember() != 2 {
			t.Fatalf("per member %d, want 2 (6×400/1000)", a.PerMember())
		}
		total := 0
		for _, m := range tb.Gateways() {
			name := m.TincName
			l := len(a.On(name))
			total += l
			if l > 400 || l < 250 {
				t.Errorf("%s holds %d: want at most its capacity 400, and a fair share (about 333)", name, l)
			}
			if !slices.IsSorted(a.On(name)) || len(a.Placed(name)) != l {
				t.Errorf("%s: On not sorted or Placed differs", name)
			}
		}
		if total != 2000 || len(a.Unplaced()) != 0 {
			t.Errorf("total %d, unplaced %v", total, a.Unplaced())
		}
		for i := 1; i <= 1000; i++ {
			n := fmt.Sprintf("node_%d", i)
			gws, ok := a.Of(n)
			if !ok || len(gws) != 2 || gws[0] == gws[1] {
				t.Fatalf("%s: %v", n, gws)
			}
			for _, g := range gws {
				if !a.Holds(g, n) {
					t.Fatalf("%s assigned to %s, which does not hold it", n, g)
				}
			}
		}
	})
	t.Run("stable: a new node moves nobody, a new gateway few", func(t *testing.T) {
		a1 := assignTestbed(t, 6, 1000, 800).Assignment()
		a2 := assignTestbed(t, 6, 1001, 800).Assignment()
		// 6×800/1001 = 4 either way.
		for i := 1; i <= 1000; i++ {
			n := fmt.Sprintf("node_%d", i)
			g1, _ := a1.Of(n)
			g2, _ := a2.Of(n)
			if !slices.Equal(g1, g2) {
				t.Fatalf("%s moved from %v to %v when node_1001 joined", n, g1, g2)
			}
		}
		b1 := assignTestbed(t, 10, 2000, 400).Assignment() // 2 each
		b2 := assignTestbed(t, 11, 2000, 400).Assignment()
		moved := 0
		for i := 1; i <= 2000; i++ {
			n := fmt.Sprintf("node_%d", i)
			g1, _ := b1.Of(n)
			g2, _ := b2.Of(n)
			for _, g := range g1 {
				if !slices.Contains(g2, g) {
					moved++
				}
			}
		}
		// Rendezvous hashing: about 2/11 of the 4000 places move to the new
		// gateway; a modulo hash would move most of them.
		if moved > 1000 {
			t.Errorf("%d of 4000 places moved when an 11th gateway came", moved)
		}
	})
	t.Run("island first", func(t *testing.T) {
		n := node(t, 7)
		n.Island = 3
		n.Tinc.Name, n.ID = "node_7", 7
		var cands []Candidate
		for i := 1; i <= 6; i++ {
			cands = append(cands, server(t, uint64(i), CandidateAddress{Addr: fmt.Sprintf("192.0.2.%d", i), Island: uint64(i)}))
		}
		for i := 1; i <= 5000; i++ {
			if i != 7 {
				cands = append(cands, node(t, uint64(i)))
			}
		}
		cands = append(cands, n)
		res := Build(plan, cands, BuildOptions{})
		gws, _ := res.Testbed.Assignment().Of("node_7")
		if res.Testbed.Assignment().PerMember() != 2 || len(gws) != 2 || gws[0] != "server_3" || len(res.Rejected) != 0 {
			t.Errorf("node_7 in island 3: gateways %v, want server_3 first of 2", gws)
		}
	})
	t.Run("full: spill over, then unplaced", func(t *testing.T) {
		tb := assignTestbed(t, 2, 30, 10)
		a := tb.Assignment()
		if a.PerMember() != 2 {
			t.Errorf("per member %d, want the minimum 2", a.PerMember())
		}
		for _, m := range tb.Gateways() {
			if len(a.On(m.TincName)) != 10 {
				t.Errorf("%s holds %d, want 10", m.TincName, len(a.On(m.TincName)))
			}
		}
		// Nodes take places by id: 1..10 fill both, 11..30 find no room.
		want := []string{}
		for i := 11; i <= 30; i++ {
			want = append(want, fmt.Sprintf("node_%d", i))
		}
		slices.Sort(want)
		if diff := cmp.Diff(want, a.Unplaced()); diff != "" {
			t.Errorf("unplaced (-want +got):\n%s", diff)
		}
	})
	t.Run("servers before nodes", func(t *testing.T) {
		tb := assignTestbed(t, 1, 5, 3, server(t, 9)) // server_9: no address, a client
		on := tb.Assignment().Placed("server_1")
		if len(on) != 3 || on[0] != "server_9" || on[1] != "node_1" {
			t.Errorf("server_1 holds %v, want server_9 first", on)
		}
	})
	t.Run("no gateways", func(t *testing.T) {
		tb := assignTestbed(t, 0, 3, 0)
		if len(tb.Assignment().Unplaced()) != 3 {
			t.Errorf("unplaced %v", tb.Assignment().Unplaced())
		}
	})
}

func TestCapacityProperty(t *testing.T) {
	for _, v := range []string{"0", "1001", "x", "-3", ""} {
		c := server(t, 1, CandidateAddress{Addr: "192.0.2.1"})
		c.Properties = map[string]string{CapacityProperty: v}
		res := Build(plan, []Candidate{c}, BuildOptions{})
		if len(res.Warnings) != 1 || !strings.Contains(res.Warnings[0].String(), CapacityProperty) {
			t.Errorf("%q: warnings %v", v, res.Warnings)
		}
		if res.Testbed.Assignment().Capacity("server_1") != DefaultCapacity {
			t.Errorf("%q: capacity %d", v, res.Testbed.Assignment().Capacity("server_1"))
		}
	}
}

// BenchmarkAssignment66000: the assignment of the whole /48 (65 520
// nodes, 1 000 hosts) to 170 gateways, as every gateway computes it for
// each new snapshot.
func BenchmarkAssignment66000(b *testing.B) {
	t := &testing.T{}
	var cands []Candidate
	for i := 1; i <= 170; i++ {
		cands = append(cands, server(t, uint64(i), CandidateAddress{Addr: fmt.Sprintf("192.0.2.%d", i%250+1)}))
	}
	for i := 1; i <= 65520; i++ {
		cands = append(cands, node(t, uint64(i)))
	}
	tb := Build(plan, cands, BuildOptions{}).Testbed
	b.ResetTimer()
	for b.Loop() {
		a := assign(tb)
		if len(a.Unplaced()) != 0 {
			b.Fatal(len(a.Unplaced()))
		}
	}
}
