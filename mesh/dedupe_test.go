package mesh

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/confine-project/mgmtnet/addressing"
)

// dedupeByMaps is dedupe as it was written with maps, before firstOf: the
// reference the sorted version must agree with, message for message.
func dedupeByMaps(ms []Member) map[int]string {
	bad := map[int]string{}
	byName := map[string]int{}
	type kid struct {
		k  addressing.Kind
		id uint64
	}
	byID := map[kid]int{}
	for i := range ms {
		if j, ok := byName[ms[i].TincName]; ok && ms[i].Equal(&ms[j]) {
			bad[i] = "identical"
			continue
		}
		if j, ok := byName[ms[i].TincName]; ok {
			bad[i] = "tinc name " + ms[i].TincName + " is also claimed by " + ms[j].Label()
			bad[j] = "tinc name " + ms[j].TincName + " is also claimed by " + ms[i].Label()
		} else {
			byName[ms[i].TincName] = i
		}
		k := kid{ms[i].Kind, ms[i].ID}
		if j, ok := byID[k]; ok {
			bad[i] = "listed twice by the registry, with different content"
			bad[j] = "listed twice by the registry, with different content"
		} else {
			byID[k] = i
		}
	}
	return bad
}

func TestDedupeMatchesMaps(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	names := []string{"server", "server_2", "node_1", "node_2", "host_1"}
	for round := 0; round < 500; round++ {
		var ms []Member
		for i := 0; i < 1+r.IntN(8); i++ {
			kind := []addressing.Kind{addressing.KindServer, addressing.KindNode, addressing.KindHost}[r.IntN(3)]
			id := uint64(1 + r.IntN(2))
			m := Member{Kind: kind, ID: id, TincName: names[r.IntN(len(names))], Name: fmt.Sprint(r.IntN(2)),
				Subnets: []netip.Prefix{netip.MustParsePrefix(fmt.Sprintf("fd00:%d:%d::/64", kind, id))}}
			if len(ms) > 0 && r.IntN(3) == 0 {
				m = ms[r.IntN(len(ms))]
			}
			ms = append(ms, m)
		}
		want := dedupeByMaps(ms)
		out, probs := dedupe(ms)
		got := map[int]string{}
		for _, p := range probs {
			for i := range ms {
				if ms[i].Kind == p.Kind && ms[i].ID == p.ID && ms[i].TincName == p.TincName {
					if _, dup := got[i]; !dup {
						got[i] = p.Reason
						break
					}
				}
			}
		}
		kept := len(ms) - len(want)
		for i, w := range want {
			if w == "identical" {
				delete(want, i)
			}
		}
		if len(out) != kept {
			t.Fatalf("round %d: kept %d, want %d (%+v)", round, len(out), kept, ms)
		}
		if diff := cmp.Diff(len(want), len(got)); diff != "" {
			t.Fatalf("round %d: problems (-maps +sorted):\n%s\n%v\n%v", round, diff, want, got)
		}
		wantReasons, gotReasons := map[string]int{}, map[string]int{}
		for _, v := range want {
			wantReasons[v]++
		}
		for _, v := range got {
			gotReasons[v]++
		}
		if diff := cmp.Diff(wantReasons, gotReasons); diff != "" {
			t.Fatalf("round %d: reasons (-maps +sorted):\n%s", round, diff)
		}
	}
}
