package nft

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
)

// Set is a named set of a Table: IPv4 addresses with intervals, as nft
// writes "set NAME { type ipv4_addr; flags interval; elements = { ... } }".
// Rules look destinations up in it (DAddrInSet). Its identity is its name
// and its content: Apply replaces a set whose addresses differ from the
// wanted ones (also when someone changed the kernel's copy behind our
// back), within the same batch as the rules.
type Set struct {
	Name string
	// Prefixes are the IPv4 prefixes the set holds. Overlapping and
	// adjacent prefixes are merged when the set is installed and compared;
	// String prints the smallest list of prefixes that covers the same
	// addresses. Empty is a set that matches nothing.
	Prefixes []netip.Prefix

	// odd is set by Observe for a set that is not one we write (another
	// key type, no interval flag, a map): Apply replaces it.
	odd bool
}

// DAddrInSet matches IPv4 destination addresses in the table's set name:
// ip daddr @name.
func DAddrInSet(name string) Term {
	return Term{text: "ip daddr @" + name, needs: protoIPv4, exprs: []expr.Any{
		// struct iphdr: daddr at 16.
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: 16, Len: 4},
		&expr.Lookup{SourceRegister: 1, SetName: name},
	}}
}

// span is an inclusive range of IPv4 addresses, as integers.
type span struct{ lo, hi uint32 }

func u32(a netip.Addr) uint32 { b := a.As4(); return binary.BigEndian.Uint32(b[:]) }

func addr4(v uint32) netip.Addr {
	var b [4]byte
	binary.BigEndian.PutUint32(b[:], v)
	return netip.AddrFrom4(b)
}

func spanOf(p netip.Prefix) span {
	p = p.Masked()
	lo := u32(p.Addr().Unmap())
	return span{lo, lo | uint32(uint64(1)<<(32-p.Bits())-1)}
}

// merge returns the spans sorted, with overlapping and adjacent ones
// joined.
func merge(in []span) []span {
	s := slices.Clone(in)
	slices.SortFunc(s, func(a, b span) int {
		switch {
		case a.lo < b.lo:
			return -1
		case a.lo > b.lo:
			return 1
		}
		return 0
	})
	var out []span
	for _, x := range s {
		if n := len(out); n > 0 && (out[n-1].hi == ^uint32(0) || x.lo <= out[n-1].hi+1) {
			out[n-1].hi = max(out[n-1].hi, x.hi)
			continue
		}
		out = append(out, x)
	}
	return out
}

func spansOf(ps []netip.Prefix) []span {
	var s []span
	for _, p := range ps {
		if p.IsValid() && p.Addr().Unmap().Is4() {
			s = append(s, spanOf(p))
		}
	}
	return merge(s)
}

// prefixesOf returns the smallest list of prefixes, in address order,
// that covers exactly the spans.
func prefixesOf(spans []span) []netip.Prefix {
	var out []netip.Prefix
	for _, s := range spans {
		lo := uint64(s.lo)
		for lo <= uint64(s.hi) {
			bits := 32
			// Widen while lo stays aligned and the block stays inside.
			for bits > 0 {
				size := uint64(1) << (32 - (bits - 1))
				if lo%size != 0 || lo+size-1 > uint64(s.hi) {
					break
				}
				bits--
			}
			out = append(out, netip.PrefixFrom(addr4(uint32(lo)), bits))
			lo += uint64(1) << (32 - bits)
		}
	}
	return out
}

// MergePrefixes returns the smallest list of IPv4 prefixes, in address
// order, that covers the same addresses as ps. Invalid and IPv6 prefixes
// are left out.
func MergePrefixes(ps []netip.Prefix) []netip.Prefix { return prefixesOf(spansOf(ps)) }

// SubtractPrefixes returns the IPv4 addresses of a that are not in b, as
// the smallest list of prefixes in address order.
func SubtractPrefixes(a, b []netip.Prefix) []netip.Prefix {
	out := spansOf(a)
	for _, cut := range spansOf(b) {
		var next []span
		for _, s := range out {
			if cut.hi < s.lo || cut.lo > s.hi {
				next = append(next, s)
				continue
			}
			if cut.lo > s.lo {
				next = append(next, span{s.lo, cut.lo - 1})
			}
			if cut.hi < s.hi {
				next = append(next, span{cut.hi + 1, s.hi})
			}
		}
		out = next
	}
	return prefixesOf(out)
}

// elements encodes spans as the kernel's interval set elements, as nft
// does: a start key for each span and an interval end key one past its
// last address, left out for a span that reaches 255.255.255.255 (the
// interval then runs to the end of the address space).
func elements(spans []span) []nftables.SetElement {
	var out []nftables.SetElement
	for _, s := range spans {
		lo := addr4(s.lo).As4()
		out = append(out, nftables.SetElement{Key: lo[:]})
		if s.hi != ^uint32(0) {
			end := addr4(s.hi + 1).As4()
			out = append(out, nftables.SetElement{Key: end[:], IntervalEnd: true})
		}
	}
	return out
}

// spansOfElements decodes interval set elements (in any order) back into
// spans; ok is false for a key that is not 4 bytes long.
func spansOfElements(es []nftables.SetElement) (spans []span, ok bool) {
	type point struct {
		v   uint32
		end bool
	}
	pts := make([]point, 0, len(es))
	for _, e := range es {
		if len(e.Key) != 4 {
			return nil, false
		}
		pts = append(pts, point{binary.BigEndian.Uint32(e.Key), e.IntervalEnd})
	}
	// By address; at the same address an end (of the interval before)
	// comes before a start.
	slices.SortFunc(pts, func(a, b point) int {
		switch {
		case a.v != b.v:
			if a.v < b.v {
				return -1
			}
			return 1
		case a.end == b.end:
			return 0
		case a.end:
			return -1
		}
		return 1
	})
	open, start := false, uint32(0)
	for _, p := range pts {
		switch {
		case !p.end && !open:
			open, start = true, p.v
		case p.end && open:
			if p.v > start {
				spans = append(spans, span{start, p.v - 1})
			}
			open = false
		}
	}
	if open {
		spans = append(spans, span{start, ^uint32(0)})
	}
	return merge(spans), true
}

func (s Set) nft(t *nftables.Table) *nftables.Set {
	return &nftables.Set{Table: t, Name: s.Name, KeyType: nftables.TypeIPAddr, Interval: true}
}

// canonical is the set's content as compared and printed.
func (s Set) canonical() []netip.Prefix { return MergePrefixes(s.Prefixes) }

func sameSet(have, want Set) bool {
	return !have.odd && have.Name == want.Name && slices.Equal(have.canonical(), want.canonical())
}

// elementsText prints prefixes as nft's elements list.
func elementsText(ps []netip.Prefix) string {
	s := make([]string, len(ps))
	for i, p := range ps {
		s[i] = p.String()
	}
	return strings.Join(s, ", ")
}

func (s Set) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "\tset %s {\n", s.Name)
	if s.odd {
		b.WriteString("\t\t# not an ipv4_addr interval set\n")
	}
	b.WriteString("\t\ttype ipv4_addr\n\t\tflags interval\n")
	if ps := s.canonical(); len(ps) > 0 {
		fmt.Fprintf(&b, "\t\telements = { %s }\n", elementsText(ps))
	}
	b.WriteString("\t}\n")
	return b.String()
}
