package authdns

import (
	"net/netip"

	"github.com/miekg/dns"

	"github.com/confine-project/mgmtnet/addressing"
)

// Limits of the IXFR journal (RFC 1995). A secondary whose serial is not
// in it gets the whole zone instead, which RFC 1995 §4 allows.
const (
	// journalDeltas is how many changes are kept: at one change a minute
	// (the default poll), over an hour of them.
	journalDeltas = 64
	// journalSlack is added to the zone's member count to bound the
	// records the whole journal holds: a journal larger than the zone
	// costs more than an AXFR to send.
	journalSlack = 1024
)

// delta is what changed in the two zones from one serial to the next:
// the records deleted and added, in transfer order. It is immutable.
type delta struct {
	from, to       uint32
	fwdDel, fwdAdd []dns.RR
	revDel, revAdd []dns.RR
}

func (d *delta) records() int {
	return len(d.fwdDel) + len(d.fwdAdd) + len(d.revDel) + len(d.revAdd)
}

// diff returns the changes from old to z. Name server records come from
// the configuration, which does not change while the server runs, so the
// difference is in the members' AAAA and PTR records.
func diff(old, z *Zone) *delta {
	d := &delta{from: old.serial, to: z.serial}
	ttl := seconds(z.cfg.TTL)
	aaaa := func(name string, a netip.Addr) dns.RR {
		return &dns.AAAA{Hdr: hdr(name, dns.TypeAAAA, ttl), AAAA: a.AsSlice()}
	}
	ptr := func(a netip.Addr, target string) dns.RR {
		return &dns.PTR{Hdr: hdr(addressing.PTRName(a), dns.TypePTR, ttl), Ptr: target}
	}
	oldAddr := func(i int32) netip.Addr { return old.members[i].addr }
	newAddr := func(i int32) netip.Addr { return z.members[i].addr }
	oldName := func(i int32) string { return old.members[i].fqdn }
	newName := func(i int32) string { return z.members[i].fqdn }
	d.fwdDel = changed(old.names, z.names, oldAddr, newAddr, aaaa)
	d.fwdAdd = changed(z.names, old.names, newAddr, oldAddr, aaaa)
	d.revDel = changed(old.byAddr, z.byAddr, oldName, newName, ptr)
	d.revAdd = changed(z.byAddr, old.byAddr, newName, oldName, ptr)
	return d
}

// changed returns the record of each key of from whose value (of
// fromVal) is not the same in to (of toVal): with from the old zone, the
// records deleted; with from the new one, those added.
func changed[K comparable, V comparable](from, to map[K]int32, fromVal, toVal func(int32) V, rr func(K, V) dns.RR) []dns.RR {
	var out []dns.RR
	for k, i := range from {
		v := fromVal(i)
		if j, ok := to[k]; !ok || toVal(j) != v {
			out = append(out, rr(k, v))
		}
	}
	return out
}

// nextJournal returns old's journal with the change to z appended, its
// oldest changes dropped to keep within the limits. The old journal is
// shared, never modified.
func nextJournal(old, z *Zone) []*delta {
	d := diff(old, z)
	budget := len(z.members) + journalSlack
	if d.records() > budget {
		return nil // bigger than the zone: a secondary is better off with an AXFR
	}
	j := append(old.journal[:len(old.journal):len(old.journal)], d)
	total := 0
	first := len(j)
	for first > 0 && len(j)-first < journalDeltas && total+j[first-1].records() <= budget {
		first--
		total += j[first].records()
	}
	return j[first:]
}

// chain returns the changes that take a secondary at serial from to the
// zone's serial, or false when the journal does not reach back to it.
func (z *Zone) chain(from uint32) ([]*delta, bool) {
	for i, d := range z.journal {
		if d.from == from {
			return z.journal[i:], true
		}
	}
	return nil, false
}

// soaAt returns a's SOA record with another serial: the framing of one
// change in an IXFR answer.
func soaAt(a *apex, serial uint32) dns.RR {
	soa := *a.soa[0].(*dns.SOA)
	soa.Serial = serial
	return &soa
}

// incremental sends the IXFR answer (RFC 1995 §4) for a secondary at a
// serial the journal reaches back to: the current SOA, then for each
// change the old SOA, the records deleted, the new SOA and the records
// added, then the current SOA again. It stops when emit returns false.
func (z *Zone) incremental(reverse bool, changes []*delta, emit func([]dns.RR) bool) bool {
	a := &z.fwd
	if reverse {
		a = &z.rev
	}
	c := chunker{emit: emit}
	if !c.addAll(a.soa) {
		return false
	}
	for _, d := range changes {
		del, add := d.fwdDel, d.fwdAdd
		if reverse {
			del, add = d.revDel, d.revAdd
		}
		if !c.add(soaAt(a, d.from)) || !c.addAll(del) || !c.add(soaAt(a, d.to)) || !c.addAll(add) {
			return false
		}
	}
	return c.addAll(a.soa) && c.flush()
}

// chunker groups records into transfer messages of about transferChunk
// bytes.
type chunker struct {
	emit  func([]dns.RR) bool
	chunk []dns.RR
	size  int
}

func (c *chunker) add(rr dns.RR) bool {
	c.chunk = append(c.chunk, rr)
	c.size += dns.Len(rr)
	if c.size < transferChunk {
		return true
	}
	ok := c.emit(c.chunk)
	c.chunk, c.size = nil, 0
	return ok
}

func (c *chunker) addAll(rrs []dns.RR) bool {
	for _, rr := range rrs {
		if !c.add(rr) {
			return false
		}
	}
	return true
}

func (c *chunker) flush() bool {
	if len(c.chunk) == 0 {
		return true
	}
	ok := c.emit(c.chunk)
	c.chunk, c.size = nil, 0
	return ok
}
