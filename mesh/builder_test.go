package mesh

import (
	"net/netip"
	"testing"

	"github.com/confine-project/mgmtnet/addressing"
	"github.com/google/go-cmp/cmp"
)

// builderCandidates are valid, rejected and skipped candidates, one with
// tinc addresses the default policy drops.
func builderCandidates(t *testing.T) []Candidate {
	bad := node(t, 5)
	bad.MgmtAddr = "fdf5:5351:1dfd:5::9"
	badKey := node(t, 6)
	badKey.Tinc.PubKey = "junk"
	badKey.MgmtAddr = "not an address"
	skipped := node(t, 7)
	skipped.Tinc = nil
	nodeGW := node(t, 8)
	nodeGW.Tinc.Addresses = []CandidateAddress{{Addr: "192.0.2.8"}}
	return []Candidate{node(t, 1), node(t, 2), bad, badKey, skipped, nodeGW,
		server(t, 2, CandidateAddress{Addr: "192.0.2.1", Port: 656, Island: 3})}
}

func TestBuilderRollback(t *testing.T) {
	cands := builderCandidates(t)
	want := Build(plan, cands, BuildOptions{})
	b := NewBuilder(BuildOptions{Keys: NewKeyCache()})
	b.Add(&cands[0])
	b.Checkpoint()
	for i := range cands[1:] {
		b.Add(&cands[1+i])
	}
	other := node(t, 9)
	other.MgmtAddr = "fd00:1:2:3::9" // counts for another /48 until rolled back
	b.Add(&other)
	b.Rollback()
	if b.Len() != 1 {
		t.Fatalf("Len after Rollback = %d, want 1", b.Len())
	}
	b.Checkpoint()
	for i := range cands[1:] {
		b.Add(&cands[1+i])
	}
	if p, note := b.ChoosePrefix(netip.Prefix{}, plan.Mgmt()); p != plan.Mgmt() || note != "" {
		t.Errorf("ChoosePrefix = %s, %q; want %s", p, note, plan.Mgmt())
	}
	got := b.Build(plan)
	if got.Testbed.Version() != want.Testbed.Version() {
		t.Errorf("version %s, want Build's %s", got.Testbed.Version(), want.Testbed.Version())
	}
	if diff := cmp.Diff(want.Rejected, got.Rejected); diff != "" {
		t.Errorf("rejected (-Build +Builder):\n%s", diff)
	}
	if diff := cmp.Diff(want.Skipped, got.Skipped); diff != "" {
		t.Errorf("skipped (-Build +Builder):\n%s", diff)
	}
	if diff := cmp.Diff(want.Warnings, got.Warnings); diff != "" {
		t.Errorf("warnings (-Build +Builder):\n%s", diff)
	}
}

func TestBuilderChoosePrefixMatches(t *testing.T) {
	cands := builderCandidates(t)
	other := netip.MustParsePrefix("fd00:1:2::/48")
	for i := range cands {
		if a, err := netip.ParseAddr(cands[i].MgmtAddr); err == nil {
			b := other.Addr().As16()
			a16 := a.As16()
			copy(a16[:6], b[:6])
			cands[i].MgmtAddr = netip.AddrFrom16(a16).String()
		}
	}
	b := NewBuilder(BuildOptions{})
	for i := range cands {
		b.Add(&cands[i])
	}
	p1, n1 := ChoosePrefix(plan.Mgmt(), plan.Mgmt(), cands)
	p2, n2 := b.ChoosePrefix(plan.Mgmt(), plan.Mgmt())
	if p1 != p2 || n1 != n2 || p1 != other {
		t.Errorf("Builder.ChoosePrefix = %s %q; ChoosePrefix = %s %q; want %s", p2, n2, p1, n1, other)
	}
	otherPlan, err := addressing.New(p2)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := b.Build(otherPlan).Testbed.Version(), Build(otherPlan, cands, BuildOptions{}).Testbed.Version(); got != want {
		t.Errorf("version %s, want %s", got, want)
	}
}

// The candidates of a testbed build it again, the policy's refusals
// included: a cache saved from them is the snapshot, under a changed
// policy too.
func TestTestbedCandidatesRebuild(t *testing.T) {
	cands := builderCandidates(t)
	res := Build(plan, cands, BuildOptions{})
	var again []Candidate
	for c := range res.Testbed.Candidates() {
		again = append(again, c)
	}
	if len(again) != res.Testbed.Len() {
		t.Fatalf("%d candidates, want %d", len(again), res.Testbed.Len())
	}
	if v := Build(plan, again, BuildOptions{}).Testbed.Version(); v != res.Testbed.Version() {
		t.Errorf("rebuilt version %s, want %s", v, res.Testbed.Version())
	}
	policy := Policy{Gateways: []string{"node_8"}}
	want := Build(plan, cands, BuildOptions{Policy: policy}).Testbed.Version()
	if v := Build(plan, again, BuildOptions{Policy: policy}).Testbed.Version(); v != want {
		t.Errorf("rebuilt with node_8 a gateway: version %s, want %s", v, want)
	}
}

// A Rollback across the Builder's chunks of members.
func TestBuilderRollbackChunks(t *testing.T) {
	var cands []Candidate
	for id := uint64(1); id <= 3000; id++ {
		cands = append(cands, node(t, id))
	}
	cands[10].Tinc.PubKey = "junk" // pending until Build
	cands[1600].Tinc.PubKey = "junk"
	cands[2500].MgmtAddr = "" // rolled back
	for _, grow := range []int{0, 1200, 2100} {
		testBuilderRollbackChunks(t, cands, grow)
	}
}

func testBuilderRollbackChunks(t *testing.T, cands []Candidate, grow int) {
	b := NewBuilder(BuildOptions{})
	b.Grow(grow)
	for i := range cands[:1500] {
		b.Add(&cands[i])
	}
	b.Checkpoint()
	for i := range cands[1500:] {
		b.Add(&cands[1500+i])
	}
	b.Rollback()
	b.Checkpoint()
	for i := range cands[1500:2049] {
		b.Add(&cands[1500+i])
	}
	got := b.Build(plan)
	want := Build(plan, cands[:2049], BuildOptions{})
	if got.Testbed.Len() != 2047 || got.Testbed.Version() != want.Testbed.Version() {
		t.Errorf("Grow(%d): %d members, version %s; want 2047, %s", grow, got.Testbed.Len(), got.Testbed.Version(), want.Testbed.Version())
	}
	if diff := cmp.Diff(want.Rejected, got.Rejected); diff != "" {
		t.Errorf("rejected (-Build +Builder):\n%s", diff)
	}
}
