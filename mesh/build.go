package mesh

import (
	"cmp"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"github.com/confine-project/mgmtnet/addressing"
)

// Candidate is a member as a source (the registry) describes it, before
// validation. Strings are as received.
type Candidate struct {
	Kind       addressing.Kind
	ID         uint64
	Name       string
	Island     uint64 // 0 for none
	MgmtAddr   string // mgmt_net.addr
	Backend    string // "tinc" or "native"; v0's tinc_client/tinc_server are "tinc"
	Tinc       *CandidateTinc
	Properties map[string]string
}

// CandidateTinc is a candidate's tinc section; nil when the registry has no
// key for the member.
type CandidateTinc struct {
	Name      string
	PubKey    string
	Addresses []CandidateAddress
}

// CandidateAddress is one tinc address as received. Port 0 means none was
// given (tinc's default 655 applies).
type CandidateAddress struct {
	Addr   string
	Port   int
	Island uint64
}

// Result is the outcome of Build.
type Result struct {
	Testbed *Testbed
	// Rejected are candidates that failed validation.
	Rejected []Problem
	// Skipped are candidates deliberately not in the VPN: no tinc key, or
	// the native backend.
	Skipped []Problem
	// Warnings are members that were kept with a part dropped (an unusable
	// tinc address).
	Warnings []Problem
}

// Build validates candidates against the plan and returns the snapshot of
// the valid ones. A candidate that fails is rejected on its own, with a
// reason that names it; the rest still form the testbed. Build never fails
// as a whole: an empty testbed is a valid result (the caller's mass-deletion
// guard decides what to do with it). o adds a key cache and the grant
// policy (Policy), applied to every member that passes validation; a
// daemon streams its candidates into a Builder instead.
func Build(plan addressing.Plan, cands []Candidate, o BuildOptions) Result {
	b := NewBuilder(o)
	for i := range cands {
		b.Add(&cands[i])
	}
	return b.Build(plan)
}

// KeyCache remembers the public keys that passed NormalizePublicKey, so
// that a daemon rebuilding a snapshot of 66 000 members after a one-member
// change parses only the keys it has not seen (an RSA key parse is most of
// Build's time). It is not safe for concurrent use; the zero value is not
// usable: make one with NewKeyCache.
type KeyCache struct {
	m, next map[string]string
}

// NewKeyCache returns an empty cache.
func NewKeyCache() *KeyCache { return &KeyCache{m: map[string]string{}, next: map[string]string{}} }

func (k *KeyCache) normalize(raw string) (string, error) {
	if n, ok := k.m[raw]; ok {
		if n == raw {
			k.next[n] = n // key by the string already kept, not this new copy
		} else {
			k.next[raw] = n
		}
		return n, nil
	}
	n, err := NormalizePublicKey(raw)
	if err == nil {
		if n == raw {
			// Keep one copy: the member, the map key and the value then share
			// the registry's string (keys are most of a snapshot's memory).
			n = raw
		}
		k.next[raw] = n
	}
	return n, err
}

// rotate keeps only the keys used by the last Build, so the cache never
// holds more than one snapshot's keys.
func (k *KeyCache) rotate() { k.m, k.next = k.next, map[string]string{} }

// Builder validates candidates one at a time, as a source decodes them,
// into a Testbed: Build's work without the whole candidate list in memory.
// It keeps what a Testbed keeps of each candidate (a Member, and for the
// few that fail, a Problem) and drops the rest at once, so its memory
// follows the snapshot, not the registry's answer.
//
// The management prefix is often known only once every candidate has been
// seen (ChoosePrefix), so Add checks everything that does not depend on
// the plan, key parsing included, and counts the /48 of each address;
// Build then checks the addresses and Subnets against the plan chosen.
// The reasons and their order are Build's: a candidate with a wrong address
// and a bad key is rejected for its address.
//
// A Builder is not safe for concurrent use and builds one testbed: after
// Build it must not be used again.
type Builder struct {
	o BuildOptions
	// members are validated except for the plan's checks, in chunks of
	// memberChunk: appending to one slice of 66 000 would copy it a dozen
	// times as it grows, every old copy garbage, and leave it a quarter
	// larger than needed.
	// The first chunk holds first members (see Grow).
	members  [][]Member
	first    int
	n        int       // members kept
	pend     []pending // of the few members that have something pending, by index
	rejected []Problem
	skipped  []Problem
	prefixes prefixCount
	added    int // candidates added (and not rolled back)
	cp       checkpoint
}

// memberChunk is how many members a chunk of Builder.members holds: 200
// KB of them.
const memberChunk = 1024

// pending is what Build still needs of a member that Add kept, beyond the
// Member: nothing, for nearly every member, so only the others have one.
type pending struct {
	i int // the member's index
	// rawAddr is mgmt_net.addr as received when it is not a usable IPv6
	// address (Member.Addr is then invalid); addrEmpty when it is blank.
	rawAddr   string
	addrEmpty bool
	keyErr    error // reported only after the plan's checks, as Build does
	warnings  []string
}

func (pd *pending) empty() bool {
	return pd.rawAddr == "" && !pd.addrEmpty && pd.keyErr == nil && len(pd.warnings) == 0
}

// member returns the i-th member kept.
func (b *Builder) member(i int) *Member {
	if i < b.first {
		return &b.members[0][i]
	}
	i -= b.first
	return &b.members[1+i/memberChunk][i%memberChunk]
}

// chunkStart returns the index of the first member of chunk k.
func (b *Builder) chunkStart(k int) int {
	if k == 0 {
		return 0
	}
	return b.first + (k-1)*memberChunk
}

// Grow makes room for about n members before the first Add, in one array
// that becomes the Testbed's as it is: a daemon that passes the size of
// the testbed it runs on builds the next one without a copy of the
// members (and without their chunks beside them).
func (b *Builder) Grow(n int) {
	if len(b.members) == 0 && n > memberChunk {
		b.first = n + n/16 + 16 // room for some new members too
	}
}

// checkpoint is a Builder's state at Checkpoint; since are the /48s counted
// after it, run-length encoded (a collection's members mostly share one).
type checkpoint struct {
	members, pend, rejected, skipped, added int
	since                                   []prefixRun
}

type prefixRun struct {
	p netip.Prefix
	n int
}

// NewBuilder returns an empty Builder.
func NewBuilder(o BuildOptions) *Builder {
	if o.Keys != nil {
		// Forget the keys of an earlier Builder that never built (a fetch
		// that failed half-way): the cache holds one snapshot's keys.
		clear(o.Keys.next)
	}
	return &Builder{o: o, first: memberChunk, prefixes: prefixCount{m: map[netip.Prefix]int{}}}
}

// Len returns the number of candidates added.
func (b *Builder) Len() int { return b.added }

// Add validates c as far as that does not depend on the plan. It does not
// keep c, only strings of it.
func (b *Builder) Add(c *Candidate) {
	b.added++
	if p, ok := b.prefixes.add(c.MgmtAddr); ok {
		if n := len(b.cp.since); n > 0 && b.cp.since[n-1].p == p {
			b.cp.since[n-1].n++
		} else {
			b.cp.since = append(b.cp.since, prefixRun{p, 1})
		}
	}
	m, pd, skip, err := validate(c, b.o.Keys)
	if err != nil {
		p := Problem{Kind: c.Kind, ID: c.ID, Reason: err.Error()}
		if c.Tinc != nil && ValidTincName(c.Tinc.Name) {
			p.TincName = c.Tinc.Name
		}
		if skip {
			b.skipped = append(b.skipped, p)
		} else {
			b.rejected = append(b.rejected, p)
		}
		return
	}
	if last := len(b.members) - 1; last < 0 || len(b.members[last]) == cap(b.members[last]) {
		size := memberChunk
		if last < 0 {
			size = b.first
		}
		b.members = append(b.members, make([]Member, 0, size))
	}
	last := len(b.members) - 1
	b.members[last] = append(b.members[last], m)
	if !pd.empty() {
		pd.i = b.n
		b.pend = append(b.pend, pd)
	}
	b.n++
}

// Checkpoint marks the state that Rollback returns to.
func (b *Builder) Checkpoint() {
	b.cp = checkpoint{members: b.n, pend: len(b.pend), rejected: len(b.rejected), skipped: len(b.skipped), added: b.added, since: b.cp.since[:0]}
}

// Rollback forgets every candidate added since the last Checkpoint (or
// since NewBuilder): a source whose transfer failed half-way adds the same
// candidates again on its next attempt.
func (b *Builder) Rollback() {
	for _, r := range b.cp.since {
		b.prefixes.remove(r.p, r.n)
	}
	for b.n > b.cp.members {
		last := len(b.members) - 1
		keep := max(b.cp.members-b.chunkStart(last), 0)
		clear(b.members[last][keep:])
		b.members[last] = b.members[last][:keep]
		b.n = b.chunkStart(last) + keep
		if keep == 0 {
			b.members = b.members[:last]
		}
	}
	clear(b.pend[b.cp.pend:])
	clear(b.rejected[b.cp.rejected:])
	clear(b.skipped[b.cp.skipped:])
	b.pend = b.pend[:b.cp.pend]
	b.rejected, b.skipped = b.rejected[:b.cp.rejected], b.skipped[:b.cp.skipped]
	b.added = b.cp.added
	b.cp.since = b.cp.since[:0]
}

// ChoosePrefix is ChoosePrefix over the candidates added so far.
func (b *Builder) ChoosePrefix(declared, fallback netip.Prefix) (netip.Prefix, string) {
	return b.prefixes.choose(declared, fallback)
}

// Build finishes validation against plan and returns the testbed, as
// Build would for the candidates added.
func (b *Builder) Build(plan addressing.Plan) Result {
	res := Result{Rejected: b.rejected, Skipped: b.skipped}
	var ungranted map[string][]TincAddress
	// The members that pass are finished in their chunks, then copied into
	// one array of exactly their number, the chunks garbage after; or, in
	// one chunk (see Grow), kept in it.
	pass := make([]bool, b.n)
	passed := 0
	var none pending
	for i, p := 0, 0; i < b.n; i++ {
		m, pd := b.member(i), &none
		if p < len(b.pend) && b.pend[p].i == i {
			pd = &b.pend[p]
			p++
		}
		warnings, err := finish(plan, m, pd)
		if err != nil {
			res.Rejected = append(res.Rejected, Problem{Kind: m.Kind, ID: m.ID, TincName: m.TincName, Reason: err.Error()})
			continue
		}
		addrs := m.Addresses
		if g := b.o.Policy.grant(m); len(g) > 0 {
			warnings = append(warnings, g...)
			if len(m.Addresses) == 0 && len(addrs) > 0 {
				if ungranted == nil {
					ungranted = map[string][]TincAddress{}
				}
				ungranted[m.TincName] = addrs
			}
		}
		for _, w := range warnings {
			res.Warnings = append(res.Warnings, Problem{Kind: m.Kind, ID: m.ID, TincName: m.TincName, Reason: w})
		}
		pass[i] = true
		passed++
	}
	var out []Member
	if len(b.members) == 1 {
		out = b.members[0][:0] // in place: a member moves only forward
	} else {
		out = make([]Member, 0, passed)
	}
	for i := range b.n {
		if pass[i] {
			out = append(out, *b.member(i))
		}
	}
	if len(b.members) == 1 {
		clear(b.members[0][len(out):b.n])
	}
	b.members, b.pend, b.n = nil, nil, 0
	members, dups := dedupe(out)
	res.Rejected = append(res.Rejected, dups...)
	sortProblems(res.Rejected)
	sortProblems(res.Skipped)
	sortProblems(res.Warnings)
	res.Testbed = newTestbed(plan, members)
	for name := range ungranted {
		if _, ok := res.Testbed.Lookup(name); !ok {
			delete(ungranted, name)
		}
	}
	res.Testbed.ungranted = ungranted
	if b.o.Keys != nil {
		b.o.Keys.rotate()
	}
	return res
}

// validate checks what of one candidate does not depend on the plan.
// skip reports a deliberate skip (no key, native backend) rather than a
// rejection.
func validate(c *Candidate, keys *KeyCache) (m Member, pd pending, skip bool, err error) {
	switch c.Kind {
	case addressing.KindNode:
		if err := addressing.CheckNode(c.ID); err != nil {
			return m, pd, false, err
		}
	case addressing.KindServer, addressing.KindHost, addressing.KindGateway:
		if err := addressing.CheckID48(c.Kind.String(), c.ID); err != nil {
			return m, pd, false, err
		}
	default:
		return m, pd, false, fmt.Errorf("kind %s is not a tinc member", c.Kind)
	}
	switch c.Backend {
	case "tinc", "":
	case "native":
		return m, pd, true, fmt.Errorf("skipped: backend is native, not in the tinc VPN")
	default:
		return m, pd, false, fmt.Errorf("mgmt_net backend %q: want tinc or native", c.Backend)
	}
	if c.Tinc == nil {
		return m, pd, true, fmt.Errorf("skipped: no tinc key registered (tinc is null)")
	}
	m.Kind, m.ID, m.Name, m.Island = c.Kind, c.ID, c.Name, c.Island
	if !ValidTincName(c.Tinc.Name) {
		return m, pd, false, fmt.Errorf("tinc name %q: want one or more of [A-Za-z0-9_]", c.Tinc.Name)
	}
	// A tinc name is bound to its member's kind and id: otherwise any
	// member could take the host file (and so the Subnets) of another,
	// absent or rejected one, e.g. a host naming itself "server".
	if k, id, err := addressing.ParseTincName(c.Tinc.Name); err != nil || k != c.Kind || id != c.ID {
		want, _ := addressing.TincName(c.Kind, c.ID)
		return m, pd, false, fmt.Errorf("tinc name %q is not %s's: want %s", c.Tinc.Name, label(c.Kind, c.ID, ""), want)
	}
	m.TincName = c.Tinc.Name

	// The address is checked against the plan in finish.
	addrStr := strings.TrimSpace(c.MgmtAddr)
	addr, err := netip.ParseAddr(addrStr)
	switch {
	case addrStr == "":
		pd.addrEmpty = true
	case err != nil || !addr.Is6() || addr.Zone() != "" || addr.Is4In6():
		pd.rawAddr = c.MgmtAddr
	default:
		m.Addr = addr
	}

	var key string
	if keys != nil {
		key, err = keys.normalize(c.Tinc.PubKey)
	} else {
		key, err = NormalizePublicKey(c.Tinc.PubKey)
	}
	if err != nil {
		pd.keyErr = err
		return m, pd, false, nil
	}
	m.PubKey = key

	for _, a := range c.Tinc.Addresses {
		ta, err := checkTincAddress(a)
		if err != nil {
			pd.warnings = append(pd.warnings, err.Error())
			continue
		}
		if slices.ContainsFunc(m.Addresses, func(x TincAddress) bool { return x.Host == ta.Host && x.Port == ta.Port }) {
			continue
		}
		m.Addresses = append(m.Addresses, ta)
	}
	if len(c.Properties) > 0 {
		m.Properties = make(map[string]string, len(c.Properties))
		for k, val := range c.Properties {
			m.Properties[k] = val
		}
	}
	var w string
	if m.Egress, w = egressOf(c.Kind, c.Properties); w != "" {
		pd.warnings = append(pd.warnings, w)
	}
	if m.Capacity, w = capacityOf(c.Properties); w != "" {
		pd.warnings = append(pd.warnings, w)
	}
	return m, pd, false, nil
}

// finish checks a member that validate kept against the plan: its address
// and Subnets, then its key, and reads its DNS service. It returns the
// member's warnings.
func finish(plan addressing.Plan, m *Member, pd *pending) ([]string, error) {
	want, err := plan.Address(addressing.Entity{Kind: m.Kind, ID: m.ID})
	if err != nil {
		return nil, err
	}
	var warnings []string
	switch {
	case pd.addrEmpty:
		// The controller renders "mgmt_net": {} for a member that has no
		// management-network record yet, and writes its host file with
		// the address it computes from the id all the same. So does this.
		m.Addr = want
		warnings = append(warnings, fmt.Sprintf("mgmt_net gives no addr (\"mgmt_net\": {} when the controller has no management-network record for it); using the plan's %s, as the controller does", want))
	case !m.Addr.IsValid():
		return nil, fmt.Errorf("mgmt_net.addr %q is not an IPv6 address; the plan says %s", pd.rawAddr, want)
	}
	if addr := m.Addr; addr != want {
		what := "outside the plan's " + plan.Mgmt().String()
		if e, err := plan.Reverse(addr); err == nil {
			what = "the address of " + e.String()
		} else if plan.Mgmt().Contains(addr) {
			what = "not an address the plan assigns"
		}
		return nil, fmt.Errorf("mgmt_net.addr %s disagrees with the plan: it is %s, but %s is %s", addr, what, label(m.Kind, m.ID, ""), want)
	}
	sub, err := plan.TincSubnet(m.Kind, m.ID)
	if err != nil {
		return nil, err
	}
	if pd.keyErr != nil {
		return nil, pd.keyErr
	}
	m.Subnets = []netip.Prefix{sub}
	warnings = append(warnings, pd.warnings...)
	var w string
	if m.DNS, w = dnsServiceOf(plan, m.Properties); w != "" {
		warnings = append(warnings, w)
	}
	return warnings, nil
}

// checkTincAddress validates a gateway address: an IP literal or a host
// name, never 0.0.0.0 or another unspecified/multicast address, and a port
// in 1..65535 (0 means the default 655).
func checkTincAddress(a CandidateAddress) (TincAddress, error) {
	host := strings.TrimSpace(a.Addr)
	port := a.Port
	if port == 0 {
		port = DefaultTincPort
	}
	if port < 1 || port > 65535 {
		return TincAddress{}, fmt.Errorf("tinc address %q port %d dropped: want 1..65535", host, a.Port)
	}
	if ip, err := netip.ParseAddr(host); err == nil {
		ip = ip.Unmap()
		if ip.IsUnspecified() || ip.IsMulticast() || ip.Zone() != "" {
			return TincAddress{}, fmt.Errorf("tinc address %s dropped: clients cannot connect to an unspecified, multicast or zoned address (a setup-script default?)", host)
		}
		if ip.IsLoopback() || ip.IsLinkLocalUnicast() {
			return TincAddress{}, fmt.Errorf("tinc address %s dropped: a loopback or link-local address is not reachable by other members", host)
		}
		return TincAddress{Host: ip.String(), Port: uint16(port), Island: a.Island}, nil
	}
	if !validHostName(host) {
		return TincAddress{}, fmt.Errorf("tinc address %q dropped: neither an IP address nor a valid host name", a.Addr)
	}
	return TincAddress{Host: strings.ToLower(host), Port: uint16(port), Island: a.Island}, nil
}

// Bounds of the RSA keys NormalizePublicKey accepts. 2048 bits is the
// least anyone should trust today (and what tinc 1.0 and node-boot
// generate); more than 16384 is no key anyone makes, only a way to make
// every peer's handshake expensive. The exponent must be odd (an even one
// has no inverse: no private key decrypts for it) and at least 65537 (3,
// or 1, which leaves the message as it is, are attacks or mistakes).
const (
	MinRSABits     = 2048
	MaxRSABits     = 16384
	MinRSAExponent = 65537
)

// maxKeyPEM bounds the text of a public key, checked before anything is
// decoded so that a key of megabits costs nothing: a PEM SPKI key of
// MaxRSABits bits, with a 32-bit exponent, is under 3000 bytes.
const maxKeyPEM = 4096

// checkRSAKey applies the bounds above.
func checkRSAKey(k *rsa.PublicKey) error {
	if bits := k.N.BitLen(); bits < MinRSABits || bits > MaxRSABits {
		return fmt.Errorf("RSA key of %d bits; want %d to %d", bits, MinRSABits, MaxRSABits)
	}
	if k.E < MinRSAExponent || k.E%2 == 0 {
		return fmt.Errorf("RSA key with public exponent %d; want an odd exponent of at least %d", k.E, MinRSAExponent)
	}
	return nil
}

// NormalizePublicKey checks that s holds exactly one PEM RSA public key,
// PKCS#1 ("RSA PUBLIC KEY", tinc's own form) or X.509 SPKI ("PUBLIC KEY"),
// with LF or CRLF line endings and blank space around it, and returns it
// re-encoded canonically: the same type, 64-column base64, LF endings, one
// final newline. That is byte for byte what tinc, OpenSSL and the
// controller write for such a key, and it guarantees that nothing but the
// key itself (no "Subnet =" line smuggled before or after it) reaches a host
// file. The key must have MinRSABits to MaxRSABits bits and an odd exponent
// of at least MinRSAExponent; a text longer than such a key can be is
// refused before it is decoded.
func NormalizePublicKey(s string) (string, error) {
	if len(s) > maxKeyPEM && len(strings.TrimSpace(s)) > maxKeyPEM {
		// The bits the modulus would have, about: 6 bits a base64 byte.
		return "", fmt.Errorf("RSA key of about %d bits (%d bytes of PEM); want %d to %d", len(strings.TrimSpace(s))*6, len(s), MinRSABits, MaxRSABits)
	}
	t := strings.TrimSpace(strings.ReplaceAll(s, "\r\n", "\n"))
	if t == "" {
		return "", fmt.Errorf("public key is empty")
	}
	if !strings.HasPrefix(t, "-----BEGIN ") {
		return "", fmt.Errorf("public key is not PEM (want -----BEGIN RSA PUBLIC KEY----- or -----BEGIN PUBLIC KEY-----)")
	}
	block, rest := pem.Decode([]byte(t))
	if block == nil {
		return "", fmt.Errorf("public key is not valid PEM")
	}
	if len(strings.TrimSpace(string(rest))) != 0 {
		return "", fmt.Errorf("public key has trailing data after the PEM block")
	}
	if len(block.Headers) != 0 {
		return "", fmt.Errorf("public key PEM has headers; want a plain key")
	}
	switch block.Type {
	case "RSA PUBLIC KEY":
		k, err := x509.ParsePKCS1PublicKey(block.Bytes)
		if err != nil {
			return "", fmt.Errorf("public key: parse PKCS#1 RSA public key: %w", err)
		}
		if err := checkRSAKey(k); err != nil {
			return "", err
		}
	case "PUBLIC KEY":
		k, err := x509.ParsePKIXPublicKey(block.Bytes)
		if err != nil {
			return "", fmt.Errorf("public key: parse SPKI public key: %w", err)
		}
		rk, ok := k.(*rsa.PublicKey)
		if !ok {
			return "", fmt.Errorf("public key: a %T, but tinc 1.0 needs RSA", k)
		}
		if err := checkRSAKey(rk); err != nil {
			return "", err
		}
	default:
		return "", fmt.Errorf("public key: PEM type %q; want RSA PUBLIC KEY or PUBLIC KEY", block.Type)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: block.Type, Bytes: block.Bytes})), nil
}

// dedupe rejects every member whose tinc name, (kind, id) or Subnets
// collide with another's: which of two claimants is genuine cannot be told,
// so neither is trusted.
func dedupe(ms []Member) ([]Member, []Problem) {
	bad := map[int]string{}
	// The first member of each tinc name and of each (kind, id), found by
	// sorting indexes rather than with maps of 66 000 entries (6 MB at the
	// moment a daemon holds two snapshots).
	firstName := firstOf(len(ms), func(a, b int) int { return strings.Compare(ms[a].TincName, ms[b].TincName) })
	firstID := firstOf(len(ms), func(a, b int) int {
		if c := cmp.Compare(ms[a].Kind, ms[b].Kind); c != 0 {
			return c
		}
		return cmp.Compare(ms[a].ID, ms[b].ID)
	})
	identical := map[int]bool{}
	for i := range ms {
		j := int(firstName[i])
		if j != i && ms[i].Equal(&ms[j]) {
			identical[i] = true // the same member listed twice (pages shifted): keep one
			continue
		}
		if j != i {
			bad[i] = "tinc name " + ms[i].TincName + " is also claimed by " + ms[j].Label()
			bad[j] = "tinc name " + ms[j].TincName + " is also claimed by " + ms[i].Label()
		}
		// The first of a (kind, id) is never an identical copy: that has
		// the name, and so the (kind, id), of an earlier member.
		if j := int(firstID[i]); j != i {
			bad[i] = "listed twice by the registry, with different content"
			bad[j] = "listed twice by the registry, with different content"
		}
	}
	// Overlapping subnets: sort all (prefix, owner) pairs and compare
	// neighbours; a prefix that contains the next one overlaps it.
	type owned struct {
		p netip.Prefix
		i int
	}
	var all []owned
	for i := range ms {
		if identical[i] {
			continue
		}
		for _, p := range ms[i].Subnets {
			all = append(all, owned{p, i})
		}
	}
	slices.SortFunc(all, func(a, b owned) int {
		if c := a.p.Addr().Compare(b.p.Addr()); c != 0 {
			return c
		}
		return a.p.Bits() - b.p.Bits()
	})
	for k := 0; k+1 < len(all); k++ {
		// Compare with every following prefix that starts inside this one.
		for l := k + 1; l < len(all) && all[k].p.Contains(all[l].p.Addr()); l++ {
			a, b := all[k], all[l]
			if a.i == b.i {
				continue
			}
			if _, dup := bad[a.i]; !dup {
				bad[a.i] = fmt.Sprintf("subnet %s overlaps %s of %s", a.p, b.p, ms[b.i].Label())
			}
			if _, dup := bad[b.i]; !dup {
				bad[b.i] = fmt.Sprintf("subnet %s overlaps %s of %s", b.p, a.p, ms[a.i].Label())
			}
		}
	}
	if len(bad) == 0 && len(identical) == 0 {
		return ms, nil
	}
	var probs []Problem
	out := ms[:0:0]
	for i := range ms {
		if identical[i] {
			continue
		}
		if reason, ok := bad[i]; ok {
			probs = append(probs, Problem{Kind: ms[i].Kind, ID: ms[i].ID, TincName: ms[i].TincName, Reason: reason, Conflict: true})
			continue
		}
		out = append(out, ms[i])
	}
	return out, probs
}

// firstOf returns, for each of n elements, the index of the first element
// equal to it by cmp (itself when it is the first).
func firstOf(n int, cmp func(a, b int) int) []int32 {
	idx := make([]int32, n)
	for i := range idx {
		idx[i] = int32(i)
	}
	slices.SortStableFunc(idx, func(a, b int32) int { return cmp(int(a), int(b)) })
	first := make([]int32, n)
	for k := 0; k < n; k++ {
		if k > 0 && cmp(int(idx[k-1]), int(idx[k])) == 0 {
			first[idx[k]] = first[idx[k-1]]
		} else {
			first[idx[k]] = idx[k]
		}
	}
	return first
}

func sortProblems(ps []Problem) {
	slices.SortFunc(ps, func(a, b Problem) int {
		if a.Kind != b.Kind {
			return int(a.Kind) - int(b.Kind)
		}
		if a.ID != b.ID {
			if a.ID < b.ID {
				return -1
			}
			return 1
		}
		if c := strings.Compare(a.TincName, b.TincName); c != 0 {
			return c
		}
		return strings.Compare(a.Reason, b.Reason)
	})
}
