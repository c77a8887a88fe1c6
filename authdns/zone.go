package authdns

import (
	"cmp"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/miekg/dns"

	"github.com/confine-project/mgmtnet/addressing"
	"github.com/confine-project/mgmtnet/mesh"
)

// SkipReason says why a member's registry name is not served.
type SkipReason uint8

// The reasons a registry name is skipped.
const (
	// SkipInvalid: the name, lower-cased, is not a DNS host label
	// (letters, digits and inner hyphens, at most 63).
	SkipInvalid SkipReason = iota + 1
	// SkipDuplicate: several members have the same name; none gets it.
	SkipDuplicate
	// SkipReserved: the name is one the plan gives out (node-7, server-2,
	// also when no such member exists today) or looks like one (node-07,
	// slice-...), is a name server's (or the first label of one), starts
	// with "_" (service labels), or is one that hosts and browsers resolve
	// to configure themselves or reach the local host (localhost...,
	// wpad, isatap: see reservedLabels).
	SkipReserved
)

var skipNames = [...]string{SkipInvalid: "invalid", SkipDuplicate: "duplicate", SkipReserved: "reserved"}

// String returns "invalid", "duplicate" or "reserved".
func (r SkipReason) String() string {
	if int(r) < len(skipNames) && skipNames[r] != "" {
		return skipNames[r]
	}
	return fmt.Sprintf("skip(%d)", uint8(r))
}

// SkippedName is a member's registry name that the zone does not serve.
// The member still has its plan name (node-31...).
type SkippedName struct {
	Member string // the member's tinc name
	Name   string // the registry name, as received
	Reason SkipReason
}

// String describes the skip for a log: `node_31: name "my node": not a
// DNS label`.
func (s SkippedName) String() string {
	var why string
	switch s.Reason {
	case SkipInvalid:
		why = "not a DNS label (letters, digits and inner hyphens, at most 63)"
	case SkipDuplicate:
		why = "other members have the same name"
	case SkipReserved:
		why = "reserved: a name of the addressing plan or of a name server, or one clients trust (localhost, wpad...)"
	default:
		why = s.Reason.String()
	}
	return fmt.Sprintf("%s: name %q: %s", s.Member, s.Name, why)
}

// rrset holds the address records of an in-zone name server. Each slice
// has len == cap, so that a message built on it can never append into the
// zone's memory.
type rrset struct {
	aaaa []dns.RR
	a    []dns.RR
}

// member is one testbed member in the zone. Its AAAA record is made per
// query, in the pooled reply: storing one per member would double the
// zone's memory for no measurable speed.
type member struct {
	addr netip.Addr
	fqdn string // its plan name, the target of its PTR record
}

// alias is a registry name served for a member.
type alias struct {
	fqdn   string
	member int32
}

// apex holds what the apex of one zone answers.
type apex struct {
	name   string
	soa    []dns.RR // the SOA with the zone's TTL, for answers
	negSOA []dns.RR // the SOA with the negative TTL, for the authority section of NXDOMAIN and NODATA (RFC 2308 §3)
	ns     []dns.RR
	glue   []dns.RR // addresses of in-zone name servers: the additional section of NS answers
}

// Zone is the forward and reverse zone of one testbed: an immutable value
// whose lookups are map lookups or plan computations, safe for concurrent
// use. Build one with NewZone.
type Zone struct {
	cfg    Config // normalized
	tb     *mesh.Testbed
	plan   addressing.Plan
	serial uint32
	allow  []netip.Prefix
	fwd    apex
	rev    apex

	// members, sorted by address: the source of transfers and of the
	// reverse zone's empty non-terminals.
	members []member
	// names maps the fully qualified, lower-case plan name and registry
	// name of each member to its index in members.
	names  map[string]int32
	byAddr map[netip.Addr]int32
	nodes  nodeSet
	// aliases are the registry names served, sorted.
	aliases []alias
	// servers are the in-zone name servers' records, and nsNames their
	// names in Config order.
	servers map[string]*rrset
	nsNames []string
	// nsLabels are the first labels of the name servers' names, in the
	// zone or not: no member may be called like a name server.
	nsLabels map[string]bool
	// ents are the forward empty non-terminals: the names between the
	// apex and deep name server names.
	ents    map[string]struct{}
	skipped []SkippedName
	// journal are the changes that led to this zone, oldest first, the
	// last ending at serial: the answers to IXFR.
	journal []*delta
}

// nodeSet is a set of node ids: a bit per possible id.
type nodeSet [(1 << 16) / 64]uint64

func (s *nodeSet) add(n uint16)      { s[n/64] |= 1 << (n % 64) }
func (s *nodeSet) has(n uint16) bool { return s[n/64]&(1<<(n%64)) != 0 }

func hdr(name string, t uint16, ttl uint32) dns.RR_Header {
	return dns.RR_Header{Name: name, Rrtype: t, Class: dns.ClassINET, Ttl: ttl}
}

// seconds converts a validated duration (whole seconds, at most 2^31-1)
// to a TTL.
func seconds(d time.Duration) uint32 { return uint32(d / time.Second) }

// NewZone builds the zones of tb as cfg describes them, with the
// testbed's Serial as the SOA serial. It fails only when cfg is invalid or
// tb is nil.
func NewZone(cfg Config, tb *mesh.Testbed) (*Zone, error) {
	if tb == nil {
		return nil, errors.New("dns zone: no testbed")
	}
	return newZone(cfg, tb, tb.Serial())
}

// newZone is NewZone with the SOA serial given.
func newZone(cfg Config, tb *mesh.Testbed, serial uint32) (*Zone, error) {
	if tb == nil {
		return nil, errors.New("dns zone: no testbed")
	}
	cfg, err := cfg.normalized()
	if err != nil {
		return nil, err
	}
	plan := tb.Plan()
	revName, err := addressing.ReverseZone(plan.Mgmt())
	if err != nil {
		return nil, fmt.Errorf("dns zone: %w", err)
	}
	z := &Zone{cfg: cfg, tb: tb, plan: plan, serial: serial, servers: map[string]*rrset{}}
	z.allow = cfg.Allow
	if len(z.allow) == 0 {
		z.allow = append([]netip.Prefix{plan.Mgmt()}, loopback()...)
	}
	ttl := seconds(cfg.TTL)
	z.fwd = z.newApex(cfg.Zone)
	z.rev = z.newApex(revName)

	// Name servers inside the zone: their addresses, and the empty
	// non-terminals between them and the apex.
	z.nsLabels = map[string]bool{}
	for _, ns := range cfg.NS {
		first, _, _ := strings.Cut(ns.Name, ".")
		z.nsLabels[first] = true
		if !dns.IsSubDomain(cfg.Zone, ns.Name) {
			continue
		}
		set := &rrset{}
		addrs := ns.Addrs
		if ns.Member != "" {
			if m, ok := tb.Lookup(ns.Member); ok && !slices.Contains(addrs, m.Addr) {
				addrs = append(addrs[:len(addrs):len(addrs)], m.Addr)
			}
		}
		for _, a := range addrs {
			if a.Is4() || a.Is4In6() {
				v4 := a.Unmap().As4()
				set.a = append(set.a, &dns.A{Hdr: hdr(ns.Name, dns.TypeA, ttl), A: net.IP(v4[:])})
			} else {
				v6 := a.As16()
				set.aaaa = append(set.aaaa, &dns.AAAA{Hdr: hdr(ns.Name, dns.TypeAAAA, ttl), AAAA: net.IP(v6[:])})
			}
		}
		set.a, set.aaaa = slices.Clip(set.a), slices.Clip(set.aaaa)
		z.fwd.glue = append(z.fwd.glue, set.aaaa...)
		z.fwd.glue = append(z.fwd.glue, set.a...)
		z.servers[ns.Name] = set
		z.nsNames = append(z.nsNames, ns.Name)
		for p := parent(ns.Name); p != cfg.Zone; p = parent(p) {
			z.ents = addENT(z.ents, p)
		}
	}
	z.fwd.glue = slices.Clip(z.fwd.glue)
	z.rev.glue = z.fwd.glue
	for p := range z.ents {
		if _, ok := z.servers[p]; ok {
			delete(z.ents, p) // a name server name above another
		}
	}

	z.addMembers(tb)
	return z, nil
}

func addENT(m map[string]struct{}, name string) map[string]struct{} {
	if m == nil {
		m = map[string]struct{}{}
	}
	m[name] = struct{}{}
	return m
}

// parent returns the name one label up ("b.c." for "a.b.c.").
func parent(name string) string {
	_, rest, _ := strings.Cut(name, ".")
	if rest == "" {
		return "."
	}
	return rest
}

func (z *Zone) newApex(name string) apex {
	c := z.cfg
	soa := func(ttl uint32) []dns.RR {
		return []dns.RR{&dns.SOA{
			Hdr: hdr(name, dns.TypeSOA, ttl), Ns: c.NS[0].Name, Mbox: c.SOA.Mbox, Serial: z.serial,
			Refresh: seconds(c.SOA.Refresh), Retry: seconds(c.SOA.Retry), Expire: seconds(c.SOA.Expire), Minttl: seconds(c.SOA.Minimum),
		}}
	}
	a := apex{name: name, soa: soa(seconds(c.TTL)), negSOA: soa(seconds(min(c.TTL, c.SOA.Minimum)))}
	for _, ns := range c.NS {
		a.ns = append(a.ns, &dns.NS{Hdr: hdr(name, dns.TypeNS, seconds(c.TTL)), Ns: ns.Name})
	}
	a.ns = slices.Clip(a.ns)
	return a
}

// addMembers adds the plan name and address of every member and, where
// usable, its registry name.
func (z *Zone) addMembers(tb *mesh.Testbed) {
	n := tb.Len()
	z.members = make([]member, 0, n)
	labels := make([]string, n) // the plan label of each member, in testbed order
	for i := range n {
		m := tb.At(i)
		label, err := addressing.DNSLabel(addressing.Entity{Kind: m.Kind, ID: m.ID})
		if err != nil {
			continue // a validated member always has a name
		}
		labels[i] = label
		z.members = append(z.members, member{addr: m.Addr, fqdn: label + "." + z.cfg.Zone})
		if m.Kind == addressing.KindNode {
			z.nodes.add(uint16(m.ID))
		}
	}
	slices.SortFunc(z.members, func(a, b member) int { return a.addr.Compare(b.addr) })
	z.names = make(map[string]int32, len(z.members))
	z.byAddr = make(map[netip.Addr]int32, len(z.members))
	for i, m := range z.members {
		z.names[m.fqdn] = int32(i)
		z.byAddr[m.addr] = int32(i)
	}
	z.addRegistryNames(tb, labels)
}

// addRegistryNames serves each member's registry name, lower-cased, when
// it is a DNS label that no other member has and that is not reserved.
func (z *Zone) addRegistryNames(tb *mesh.Testbed, labels []string) {
	type claim struct {
		m     *mesh.Member
		label string
	}
	claims := map[string][]claim{}
	for i := range tb.Len() {
		m := tb.At(i)
		if m.Name == "" {
			continue
		}
		label := strings.ToLower(m.Name)
		switch {
		case label == labels[i]:
			// The registry's name is the plan name: nothing to add.
		case strings.HasPrefix(label, "_"):
			// Not a host label either, but a service label (_ldap._tcp):
			// refused as reserved, as a claim on a service name.
			z.skipped = append(z.skipped, SkippedName{Member: m.TincName, Name: m.Name, Reason: SkipReserved})
		case !hostLabel(label):
			z.skipped = append(z.skipped, SkippedName{Member: m.TincName, Name: m.Name, Reason: SkipInvalid})
		case planName(label) || planLike(label) || reservedLabel(label) || z.nsLabels[label] ||
			z.reserved(label+"."+z.cfg.Zone):
			z.skipped = append(z.skipped, SkippedName{Member: m.TincName, Name: m.Name, Reason: SkipReserved})
		default:
			claims[label] = append(claims[label], claim{m, label})
		}
	}
	for _, cs := range claims {
		if len(cs) == 1 {
			fqdn := cs[0].label + "." + z.cfg.Zone
			z.aliases = append(z.aliases, alias{fqdn: fqdn, member: z.byAddr[cs[0].m.Addr]})
			continue
		}
		for _, c := range cs {
			z.skipped = append(z.skipped, SkippedName{Member: c.m.TincName, Name: c.m.Name, Reason: SkipDuplicate})
		}
	}
	slices.SortFunc(z.aliases, func(a, b alias) int { return strings.Compare(a.fqdn, b.fqdn) })
	for _, a := range z.aliases {
		z.names[a.fqdn] = a.member
	}
	slices.SortFunc(z.skipped, func(a, b SkippedName) int {
		return cmp.Or(strings.Compare(a.Member, b.Member), strings.Compare(a.Name, b.Name))
	})
}

// reservedLabels are the registry names no member may claim, whatever
// the zone: clients resolve them, often through the search list, to
// reach the local host or to configure themselves, so whoever holds one
// in the management zone can intercept traffic or credentials. localhost
// (RFC 6761; "localhost" is also a prefix: localhost4, localhost6),
// localdomain, the Debian /etc/hosts names (ip6-localhost...), wpad (web
// proxy autodiscovery), isatap (ISATAP tunnel routers), autodiscover
// (mail client set-up) and broadcasthost.
var reservedLabels = map[string]bool{
	"localdomain": true, "ip6-localhost": true, "ip6-loopback": true, "ip6-localnet": true,
	"ip6-mcastprefix": true, "ip6-allnodes": true, "ip6-allrouters": true,
	"wpad": true, "isatap": true, "autodiscover": true, "broadcasthost": true,
}

// reservedLabel reports whether label is in reservedLabels or starts
// with "localhost".
func reservedLabel(label string) bool {
	return reservedLabels[label] || strings.HasPrefix(label, "localhost")
}

// planKinds are the words that start the plan's names (node-31,
// slice-5.node-31...).
var planKinds = []string{"node", "server", "host", "gateway", "sliver", "slice"}

// planLike reports whether label looks like a name of the plan without
// being one (node-031, server-99999999, host-1x) or starts with "slice-":
// served, it would pass for the plan's name of another member or sliver.
func planLike(label string) bool {
	if strings.HasPrefix(label, "slice-") {
		return true
	}
	for _, k := range planKinds {
		if rest, ok := strings.CutPrefix(label, k+"-"); ok && rest != "" && '0' <= rest[0] && rest[0] <= '9' {
			return true
		}
	}
	return false
}

// reserved reports whether a forward name is taken by a name server or
// lies on the way to one.
func (z *Zone) reserved(fqdn string) bool {
	_, isServer := z.servers[fqdn]
	_, isENT := z.ents[fqdn]
	return isServer || isENT
}

// hostLabel reports whether s is a DNS host label (RFC 1123): 1 to 63
// lower-case letters, digits and hyphens, not starting or ending with a
// hyphen.
func hostLabel(s string) bool {
	if s == "" || len(s) > 63 || s[0] == '-' || s[len(s)-1] == '-' {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '-') {
			return false
		}
	}
	return true
}

// Origin returns the forward zone's name, e.g. "mgmt.community-lab.net.".
func (z *Zone) Origin() string { return z.fwd.name }

// ReverseOrigin returns the reverse zone's name, the ip6.arpa. name of the
// management /48.
func (z *Zone) ReverseOrigin() string { return z.rev.name }

// Serial returns the zones' SOA serial (see Server.SetTestbed).
func (z *Zone) Serial() uint32 { return z.serial }

// Testbed returns the snapshot the zone was built from.
func (z *Zone) Testbed() *mesh.Testbed { return z.tb }

// Len returns the number of forward names with address records: the plan
// names of the members, the registry names served and in-zone name
// servers. Sliver names, computed on demand, are not counted.
func (z *Zone) Len() int {
	n := len(z.names)
	for _, set := range z.servers {
		if len(set.aaaa)+len(set.a) > 0 {
			n++
		}
	}
	return n
}

// Skipped returns the registry names not served, and why, sorted by
// member. The slice must not be modified.
func (z *Zone) Skipped() []SkippedName { return z.skipped }

// allowed reports whether a client may query the zones.
func allowed(prefixes []netip.Prefix, client netip.Addr) bool {
	for _, p := range prefixes {
		if p.Contains(client) {
			return true
		}
	}
	return false
}

// inZone reports whether the lower-case name qname is origin or below
// it. Names with escapes ("a\.b") take the slow, label-aware path: an
// escaped dot does not separate labels.
func inZone(qname, origin string) bool {
	if len(qname) < len(origin) || !strings.HasSuffix(qname, origin) {
		return false
	}
	if len(qname) == len(origin) {
		return true
	}
	if qname[len(qname)-len(origin)-1] != '.' {
		return false
	}
	if strings.IndexByte(qname, '\\') >= 0 {
		return dns.IsSubDomain(origin, qname)
	}
	return true
}

// answer is the outcome of a lookup in a zone.
type answer struct {
	rcode  int
	answer []dns.RR
	ns     []dns.RR
	extra  []dns.RR
}

// scratch holds the records a lookup computes (a sliver's AAAA, a PTR),
// so that they live in the pooled per-query value instead of the heap.
type scratch struct {
	aaaa dns.AAAA
	ip   [16]byte
	ptr  dns.PTR
	one  [1]dns.RR
}

func (s *scratch) aaaaRR(name string, ttl uint32, a netip.Addr) []dns.RR {
	s.ip = a.As16()
	s.aaaa = dns.AAAA{Hdr: hdr(name, dns.TypeAAAA, ttl), AAAA: s.ip[:]}
	s.one[0] = &s.aaaa
	return s.one[:]
}

func (s *scratch) ptrRR(name string, ttl uint32, target string) []dns.RR {
	s.ptr = dns.PTR{Hdr: hdr(name, dns.TypePTR, ttl), Ptr: target}
	s.one[0] = &s.ptr
	return s.one[:]
}

func (a *apex) nodata() answer { return answer{rcode: dns.RcodeSuccess, ns: a.negSOA} }
func (a *apex) nxdomain() answer {
	return answer{rcode: dns.RcodeNameError, ns: a.negSOA}
}

// atApex answers a query for the apex of a zone. ANY gets the SOA alone
// (RFC 8482 §4.2).
func (a *apex) atApex(qtype uint16) answer {
	switch qtype {
	case dns.TypeSOA, dns.TypeANY:
		return answer{answer: a.soa}
	case dns.TypeNS:
		return answer{answer: a.ns, extra: a.glue}
	}
	return a.nodata()
}

// lookupForward answers qname (lower case, inside the forward zone) for
// qtype; name is the question's name as asked, the owner of computed
// records.
func (z *Zone) lookupForward(s *scratch, name, qname string, qtype uint16) answer {
	if qname == z.fwd.name {
		return z.fwd.atApex(qtype)
	}
	ttl := seconds(z.cfg.TTL)
	if i, ok := z.names[qname]; ok {
		if qtype == dns.TypeAAAA || qtype == dns.TypeANY { // RFC 8482: ANY gets one RRset
			return answer{answer: s.aaaaRR(name, ttl, z.members[i].addr)}
		}
		return z.fwd.nodata()
	}
	if set, ok := z.servers[qname]; ok {
		switch {
		case (qtype == dns.TypeAAAA || qtype == dns.TypeANY) && len(set.aaaa) > 0:
			return answer{answer: set.aaaa}
		case (qtype == dns.TypeA || qtype == dns.TypeANY) && len(set.a) > 0:
			return answer{answer: set.a}
		}
		return z.fwd.nodata()
	}
	if _, ok := z.ents[qname]; ok {
		return z.fwd.nodata()
	}
	// A sliver's management name: slice-<s>[-iface-<i>].node-<n>. The
	// prefix test keeps the plan's parser (and its error values) off the
	// path of other missing names.
	rel := qname[:len(qname)-len(z.fwd.name)-1]
	if strings.HasPrefix(rel, "slice-") {
		if e, err := addressing.ParseDNSLabel(rel); err == nil && e.Kind == addressing.KindSliver && z.nodes.has(e.Node) {
			addr, err := z.plan.SliverAddr(addressing.SpaceMgmt, e.Node, e.ID, e.Iface)
			if err == nil {
				if qtype == dns.TypeAAAA || qtype == dns.TypeANY {
					return answer{answer: s.aaaaRR(name, ttl, addr)}
				}
				return z.fwd.nodata()
			}
		}
	}
	return z.fwd.nxdomain()
}

// ptrNibbles is the number of nibble labels between the reverse zone of a
// /48 and a full address: 128-48 bits, 4 bits each.
const ptrNibbles = (128 - 48) / 4

// lookupReverse answers qname (lower case, inside the reverse zone).
func (z *Zone) lookupReverse(s *scratch, name, qname string, qtype uint16) answer {
	if qname == z.rev.name {
		return z.rev.atApex(qtype)
	}
	// rel is "x.y.z." : one hex nibble per label, the least significant
	// first.
	rel := qname[:len(qname)-len(z.rev.name)]
	k := len(rel) / 2
	if len(rel)%2 != 0 || k > ptrNibbles {
		return z.rev.nxdomain()
	}
	var nibbles [ptrNibbles]byte
	for i := 0; i < k; i++ {
		v := hexVal(rel[2*i])
		if v < 0 || rel[2*i+1] != '.' {
			return z.rev.nxdomain()
		}
		nibbles[k-1-i] = byte(v) // nibbles[0] is the most significant
	}
	if k < ptrNibbles {
		if z.hasBelow(nibbles[:k]) {
			return z.rev.nodata() // an empty non-terminal
		}
		return z.rev.nxdomain()
	}
	addr, err := addressing.ParsePTRName(qname)
	if err != nil {
		return z.rev.nxdomain()
	}
	target, ok := z.ptrTarget(addr)
	if !ok {
		return z.rev.nxdomain()
	}
	if qtype != dns.TypePTR && qtype != dns.TypeANY {
		return z.rev.nodata()
	}
	return answer{answer: s.ptrRR(name, seconds(z.cfg.TTL), target)}
}

// ptrTarget returns the name of a member's address, or of the management
// address of a sliver of a present node, computed from the plan.
func (z *Zone) ptrTarget(addr netip.Addr) (string, bool) {
	if i, ok := z.byAddr[addr]; ok {
		return z.members[i].fqdn, true
	}
	e, err := z.plan.Reverse(addr)
	if err != nil || e.Kind != addressing.KindSliver || e.Space != addressing.SpaceMgmt || !z.nodes.has(e.Node) {
		return "", false
	}
	label, err := addressing.DNSLabel(e)
	if err != nil {
		return "", false
	}
	return label + "." + z.fwd.name, true
}

// hasBelow reports whether some PTR name lies below the reverse name made
// of the /48 and these leading nibbles (fewer than ptrNibbles): whether
// that name is an empty non-terminal rather than a missing name.
//
// A member qualifies when its address falls in the range the nibbles
// span (a binary search). A sliver of a present node qualifies when the
// range's lowest address with its last bit set is one: any sliver range
// has it, since the nibbles then fix the node word and the "10" of the
// iface word, and leave the slice's last nibble free (a shorter prefix
// holds the node's own address, a member).
func (z *Zone) hasBelow(nibbles []byte) bool {
	lo := z.plan.Mgmt().Addr().As16()
	hi := lo
	for i := range ptrNibbles {
		b := 6 + i/2
		shift := 4 * (1 - i%2)
		v := byte(0xf)
		if i < len(nibbles) {
			v = nibbles[i]
			lo[b] |= v << shift
		}
		hi[b] |= v << shift
	}
	loA, hiA := netip.AddrFrom16(lo), netip.AddrFrom16(hi)
	i, _ := slices.BinarySearchFunc(z.members, loA, func(m member, a netip.Addr) int { return m.addr.Compare(a) })
	if i < len(z.members) && z.members[i].addr.Compare(hiA) <= 0 {
		return true
	}
	lo[15] |= 1
	e, err := z.plan.Reverse(netip.AddrFrom16(lo))
	return err == nil && e.Kind == addressing.KindSliver && e.Space == addressing.SpaceMgmt && z.nodes.has(e.Node)
}

func hexVal(c byte) int {
	switch {
	case '0' <= c && c <= '9':
		return int(c - '0')
	case 'a' <= c && c <= 'f':
		return int(c-'a') + 10
	}
	return -1
}

// transferChunk is the most uncompressed record bytes put in one AXFR
// message, well under the 64 KiB a TCP DNS message can carry.
const transferChunk = 16 << 10

// transfer sends the records of the forward (or reverse) zone to emit in
// chunks, SOA first and last (RFC 5936). It stops when emit returns
// false. Sliver names are computed, not stored, and are not transferred.
func (z *Zone) transfer(reverse bool, emit func([]dns.RR) bool) bool {
	a := &z.fwd
	if reverse {
		a = &z.rev
	}
	c := chunker{emit: emit}
	add, addAll := c.add, c.addAll
	if !addAll(a.soa) || !addAll(a.ns) {
		return false
	}
	if reverse {
		ttl := seconds(z.cfg.TTL)
		for i := range z.members {
			m := &z.members[i]
			if !add(&dns.PTR{Hdr: hdr(addressing.PTRName(m.addr), dns.TypePTR, ttl), Ptr: m.fqdn}) {
				return false
			}
		}
	} else {
		// Name servers, members (by address), registry names (by name).
		for _, name := range z.nsNames {
			set := z.servers[name]
			if !addAll(set.aaaa) || !addAll(set.a) {
				return false
			}
		}
		ttl := seconds(z.cfg.TTL)
		aaaa := func(name string, a netip.Addr) dns.RR {
			return &dns.AAAA{Hdr: hdr(name, dns.TypeAAAA, ttl), AAAA: a.AsSlice()}
		}
		for _, m := range z.members {
			if !add(aaaa(m.fqdn, m.addr)) {
				return false
			}
		}
		for _, a := range z.aliases {
			if !add(aaaa(a.fqdn, z.members[a.member].addr)) {
				return false
			}
		}
	}
	return addAll(a.soa) && c.flush()
}
