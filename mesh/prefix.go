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
	c := prefixCount{m: map[netip.Prefix]int{}}
	for i := range cands {
		c.add(cands[i].MgmtAddr)
	}
	return c.choose(declared, fallback)
}

// prefixCount counts the /48s of candidates' addresses, for ChoosePrefix.
// It holds one entry per distinct /48, not the addresses.
type prefixCount struct {
	m     map[netip.Prefix]int
	total int
}

// add counts the /48 of a candidate's mgmt_net.addr, if it is an IPv6
// address, and returns it.
func (c *prefixCount) add(mgmtAddr string) (netip.Prefix, bool) {
	a, err := netip.ParseAddr(mgmtAddr)
	if err != nil || !a.Is6() || a.Is4In6() {
		return netip.Prefix{}, false
	}
	p, _ := a.Prefix(48)
	c.m[p]++
	c.total++
	return p, true
}

// remove takes back n addresses in p.
func (c *prefixCount) remove(p netip.Prefix, n int) {
	c.total -= n
	if c.m[p] -= n; c.m[p] <= 0 {
		delete(c.m, p)
	}
}

func (c *prefixCount) choose(declared, fallback netip.Prefix) (netip.Prefix, string) {
	if !declared.IsValid() {
		declared = fallback
	}
	counts, total := c.m, c.total
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
