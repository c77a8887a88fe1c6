package mesh

import (
	"fmt"
	"net/netip"
)

// ChoosePrefix picks the management /48 to validate candidates against.
//
// The registry's testbed_params.mgmt_ipv6_prefix can differ from the prefix
// the controller actually computed member addresses with (confine.md §3),
// and the members' addresses are what tinc will route. So: when the
// declared prefix holds at least half of the candidates' addresses it is
// used; otherwise the /48 that holds most of them is used, and the returned
// note says so. With no usable address at all the declared prefix (or
// fallback, when the registry declared none) is used.
func ChoosePrefix(declared, fallback netip.Prefix, cands []Candidate) (netip.Prefix, string) {
	if !declared.IsValid() {
		declared = fallback
	}
	counts := map[netip.Prefix]int{}
	total := 0
	for i := range cands {
		a, err := netip.ParseAddr(cands[i].MgmtAddr)
		if err != nil || !a.Is6() || a.Is4In6() {
			continue
		}
		p, _ := a.Prefix(48)
		counts[p]++
		total++
	}
	if total == 0 || counts[declared]*2 >= total {
		return declared, ""
	}
	best := declared
	for p, n := range counts {
		if n > counts[best] || (n == counts[best] && p.Addr().Less(best.Addr())) {
			best = p
		}
	}
	return best, fmt.Sprintf("the registry declares prefix %s, but %d of %d member addresses are in %s: validating against %s",
		declared, counts[best], total, best, best)
}
