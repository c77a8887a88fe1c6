package mesh

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"iter"
	"maps"
	"slices"
	"strings"
	"sync"

	"github.com/confine-project/mgmtnet/addressing"
)

// Testbed is an immutable snapshot of the valid members of a management
// network, sorted by tinc name. Its version is a digest of its content:
// two snapshots with the same members have the same version.
type Testbed struct {
	plan addressing.Plan
	// members are sorted by tinc name, which Lookup searches: no index
	// map, which would be 3 MB more at 66 000 members.
	members []Member
	version string
	// ungranted are the tinc addresses the grant policy dropped, by tinc
	// name: nil but for members the policy refused to make gateways, so
	// that Candidates gives what the registry said.
	ungranted map[string][]TincAddress

	assignOnce sync.Once
	assignment *Assignment
}

func newTestbed(plan addressing.Plan, ms []Member) *Testbed {
	slices.SortFunc(ms, func(a, b Member) int { return strings.Compare(a.TincName, b.TincName) })
	t := &Testbed{plan: plan, members: ms}
	t.version = t.digest()
	return t
}

// Empty returns a testbed with no members.
func Empty(plan addressing.Plan) *Testbed { return newTestbed(plan, nil) }

// Plan returns the addressing plan the members were validated against.
func (t *Testbed) Plan() addressing.Plan { return t.plan }

// Version returns a short hex digest of the snapshot's content.
func (t *Testbed) Version() string { return t.version }

// Serial returns a 32-bit number derived from the version, for uses such
// as a DNS SOA serial that need a number.
func (t *Testbed) Serial() uint32 {
	b, _ := hex.DecodeString(t.version[:8])
	return binary.BigEndian.Uint32(b)
}

// Len returns the number of members.
func (t *Testbed) Len() int { return len(t.members) }

// At returns the i-th member in tinc-name order. It must not be modified.
func (t *Testbed) At(i int) *Member { return &t.members[i] }

// All iterates over the members in tinc-name order.
func (t *Testbed) All() iter.Seq[*Member] {
	return func(yield func(*Member) bool) {
		for i := range t.members {
			if !yield(&t.members[i]) {
				return
			}
		}
	}
}

// Candidates iterates over the members in tinc-name order, each as a
// candidate that validates to it again (with the same plan and policy):
// the tinc addresses the policy dropped included, the properties as the
// registry gave them, the address and key as validated. A cache of the
// snapshot can so be saved from the Testbed, one member at a time, rather
// than from the registry's answer. Candidates that were rejected or
// skipped are not in it. The candidates share the members' strings and
// properties map, which must not be modified.
func (t *Testbed) Candidates() iter.Seq[Candidate] {
	return func(yield func(Candidate) bool) {
		for i := range t.members {
			m := &t.members[i]
			addrs := m.Addresses
			if u, ok := t.ungranted[m.TincName]; ok {
				addrs = u
			}
			ct := &CandidateTinc{Name: m.TincName, PubKey: m.PubKey}
			if len(addrs) > 0 {
				ct.Addresses = make([]CandidateAddress, len(addrs))
				for j, a := range addrs {
					ct.Addresses[j] = CandidateAddress{Addr: a.Host, Port: int(a.Port), Island: a.Island}
				}
			}
			c := Candidate{Kind: m.Kind, ID: m.ID, Name: m.Name, Island: m.Island, MgmtAddr: m.Addr.String(),
				Backend: "tinc", Tinc: ct, Properties: m.Properties}
			if !yield(c) {
				return
			}
		}
	}
}

// Lookup returns the member with the given tinc name.
func (t *Testbed) Lookup(tincName string) (*Member, bool) {
	i, ok := slices.BinarySearchFunc(t.members, tincName, func(m Member, name string) int { return strings.Compare(m.TincName, name) })
	if !ok {
		return nil, false
	}
	return &t.members[i], true
}

// Count returns the number of members of each kind.
func (t *Testbed) Count() map[addressing.Kind]int {
	c := map[addressing.Kind]int{}
	for i := range t.members {
		c[t.members[i].Kind]++
	}
	return c
}

// Gateways returns the members that have tinc addresses, in tinc-name order.
func (t *Testbed) Gateways() []*Member {
	var gws []*Member
	for i := range t.members {
		if t.members[i].IsGateway() {
			gws = append(gws, &t.members[i])
		}
	}
	return gws
}

// digest hashes every field of every member in order, with lengths, so
// that no two different snapshots share a digest by accident.
func (t *Testbed) digest() string {
	h := sha256.New()
	var buf []byte
	str := func(s string) {
		buf = binary.AppendUvarint(buf[:0], uint64(len(s)))
		buf = append(buf, s...)
		h.Write(buf)
	}
	num := func(v uint64) {
		buf = binary.AppendUvarint(buf[:0], v)
		h.Write(buf)
	}
	str(t.plan.Mgmt().String())
	num(uint64(len(t.members)))
	for i := range t.members {
		m := &t.members[i]
		num(uint64(m.Kind))
		num(m.ID)
		str(m.Name)
		str(m.TincName)
		str(m.Addr.String())
		num(uint64(len(m.Subnets)))
		for _, p := range m.Subnets {
			str(p.String())
		}
		str(m.PubKey)
		num(uint64(len(m.Addresses)))
		for _, a := range m.Addresses {
			str(a.Host)
			num(uint64(a.Port))
			num(a.Island)
		}
		num(m.Island)
		// What the grant policy kept of the properties.
		str(m.Egress.String())
		str(m.DNS.Addr.String())
		num(uint64(m.DNS.Weight))
		keys := slices.Sorted(maps.Keys(m.Properties))
		num(uint64(len(keys)))
		for _, k := range keys {
			str(k)
			str(m.Properties[k])
		}
	}
	return hex.EncodeToString(h.Sum(nil)[:8])
}

// Changes is the difference between two snapshots, by tinc name, each list
// sorted.
type Changes struct {
	Added   []string
	Removed []string
	Changed []string
}

// Empty reports whether nothing changed.
func (c Changes) Empty() bool { return len(c.Added)+len(c.Removed)+len(c.Changed) == 0 }

// Diff returns what changed from old to new. A nil old is an empty testbed.
func Diff(old, new *Testbed) Changes {
	var c Changes
	var om, nm []Member
	if old != nil {
		om = old.members
	}
	if new != nil {
		nm = new.members
	}
	// Both are sorted by tinc name: merge.
	i, j := 0, 0
	for i < len(om) || j < len(nm) {
		switch {
		case j == len(nm) || (i < len(om) && om[i].TincName < nm[j].TincName):
			c.Removed = append(c.Removed, om[i].TincName)
			i++
		case i == len(om) || nm[j].TincName < om[i].TincName:
			c.Added = append(c.Added, nm[j].TincName)
			j++
		default:
			if !om[i].Equal(&nm[j]) {
				c.Changed = append(c.Changed, nm[j].TincName)
			}
			i++
			j++
		}
	}
	return c
}
