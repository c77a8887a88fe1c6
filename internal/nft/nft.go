// Package nft is the nftables plumbing shared by the node's and the
// gateway's egress appliers: a small connection seam (Conn) with a strict
// fake, a desired-state model of one table we own entirely (Table), rule
// terms that carry their nft syntax and their kernel expressions side by
// side, and Apply, which makes the kernel's copy of the table match the
// desired one atomically and only when it differs.
//
// Ownership is per table: whatever is inside a table an applier owns is
// its own, and nothing outside it is ever read for reconciliation or
// changed. Each rule carries its canonical text in its user data; that text
// is what Apply compares. The kernel's expressions are not compared: the
// library cannot decode all of them back (rt and byteorder are skipped),
// and what the kernel echoes varies between versions.
//
// The package does not decide policy: which rules an egress needs is for
// the vpn (node) and gateway/egress (gateway) packages. It does not touch
// routes, links or sysctls.
package nft

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"github.com/google/nftables/userdata"
)

// Family is the family of every table we own. inet sees IPv4 and IPv6 in
// one table; each rule says which it judges (NFProtoIPv4).
const Family = nftables.TableFamilyINet

// Conn is what Apply, Observe and ReadCounters need of an nftables netlink
// connection. *nftables.Conn implements it (nftables.New, with
// nftables.WithNetNSFd for a namespace); Fake is its strict fake.
//
// The read methods talk to the kernel at once. The write methods queue a
// message; Flush sends the queue as one batch, which nf_tables commits as
// one transaction: all of it or none of it.
type Conn interface {
	ListTablesOfFamily(family nftables.TableFamily) ([]*nftables.Table, error)
	ListChainsOfTableFamily(family nftables.TableFamily) ([]*nftables.Chain, error)
	GetRules(t *nftables.Table, c *nftables.Chain) ([]*nftables.Rule, error)
	GetNamedObjects(t *nftables.Table) ([]nftables.Obj, error)
	GetSets(t *nftables.Table) ([]*nftables.Set, error)
	GetSetElements(s *nftables.Set) ([]nftables.SetElement, error)

	AddTable(t *nftables.Table) *nftables.Table
	DelTable(t *nftables.Table)
	FlushTable(t *nftables.Table)
	AddChain(c *nftables.Chain) *nftables.Chain
	DelChain(c *nftables.Chain)
	AddRule(r *nftables.Rule) *nftables.Rule
	AddObj(o nftables.Obj) nftables.Obj
	DeleteObject(o nftables.Obj)
	AddSet(s *nftables.Set, vals []nftables.SetElement) error
	DelSet(s *nftables.Set)
	Flush() error
}

var _ Conn = (*nftables.Conn)(nil)

// Table is the desired content of one inet table that we own entirely. A
// Table with no chains, no counters and no sets is absent: Apply deletes
// it.
type Table struct {
	Name string
	// Counters are named counter objects (nft "counter name"). They keep
	// their values when Apply replaces the table's rules.
	Counters []string
	// Sets are named IPv4 interval sets that rules look addresses up in.
	Sets   []Set
	Chains []Chain

	// others are the named objects other than counters that Observe
	// found, and flags the table's flags (e.g. dormant); a desired Table
	// has neither.
	others []*nftables.NamedObj
	flags  uint32
}

// Chain is one chain of a Table, with its rules in order.
type Chain struct {
	Name string
	// Hook makes a base chain; nil makes a regular chain (a jump target).
	Hook  *Hook
	Rules []Rule
}

// Hook attaches a base chain to a netfilter hook. Our base chains always
// have policy accept: they judge only the traffic their rules match, and
// leave every other packet to the machine's own firewall.
type Hook struct {
	Type     nftables.ChainType
	Num      nftables.ChainHook
	Priority nftables.ChainPriority

	// dropPolicy is set by Observe for a base chain found with policy
	// drop, which a desired Table never has.
	dropPolicy bool
}

// Rule is one rule: its canonical nft text (also its identity, stored in
// the rule's user data) and its expressions. Build it with NewRule so the
// two cannot disagree.
type Rule struct {
	Text  string
	Exprs []expr.Any
}

// Absent reports whether t asks for no table at all.
func (t Table) Absent() bool { return len(t.Chains) == 0 && len(t.Counters) == 0 && len(t.Sets) == 0 }

// keyType is the user-data TLV type that holds a rule's canonical text. nft
// knows types 0 (comment) and 1 (ebtables policy) and skips the others, so
// the key neither shows up as a comment nor clashes with one an operator
// adds. The kernel stores user data opaquely.
const keyType userdata.Type = 0xc0

// maxKey is the most a one-byte TLV length (and the kernel's 256-byte
// NFT_USERDATA_MAXLEN, less the TLV header) allows.
const maxKey = 254

// ruleKey returns the user data that identifies a rule by its text (at
// most maxKey bytes: Table.Validate checks).
func ruleKey(text string) []byte { return userdata.Append(nil, keyType, []byte(text)) }

// keyOf returns the canonical text stored in a rule's user data, or "" for
// a rule we did not write.
func keyOf(ud []byte) string {
	v, _ := tlv(ud, keyType)
	return string(v)
}

// tlv returns the value of the first TLV of type typ in ud. Unlike
// userdata.Get it checks lengths, so a foreign rule's malformed user data
// cannot make us panic.
func tlv(ud []byte, typ userdata.Type) ([]byte, bool) {
	for len(ud) >= 2 {
		t, n := userdata.Type(ud[0]), int(ud[1])
		if len(ud) < 2+n {
			return nil, false
		}
		if t == typ {
			return ud[2 : 2+n], true
		}
		ud = ud[2+n:]
	}
	return nil, false
}

func (t Table) nft() *nftables.Table { return &nftables.Table{Name: t.Name, Family: Family} }

// Validate checks that t is a table Apply can install: a name, unique
// chain and counter names, and every rule within the key size.
func (t Table) Validate() error {
	if t.Name == "" {
		return errors.New("nftables table: no name")
	}
	seen := map[string]bool{}
	for _, c := range t.Counters {
		if c == "" || seen["counter "+c] {
			return fmt.Errorf("nftables table %s: empty or duplicate counter %q", t.Name, c)
		}
		seen["counter "+c] = true
	}
	for _, s := range t.Sets {
		if s.Name == "" || seen["set "+s.Name] {
			return fmt.Errorf("nftables table %s: empty or duplicate set %q", t.Name, s.Name)
		}
		seen["set "+s.Name] = true
		for _, p := range s.Prefixes {
			if !p.IsValid() || !p.Addr().Unmap().Is4() {
				return fmt.Errorf("nftables table %s set %s: %v is not an IPv4 prefix", t.Name, s.Name, p)
			}
		}
	}
	for _, c := range t.Chains {
		if c.Name == "" || seen["chain "+c.Name] {
			return fmt.Errorf("nftables table %s: empty or duplicate chain %q", t.Name, c.Name)
		}
		seen["chain "+c.Name] = true
		for _, r := range c.Rules {
			if r.Text == "" || len(r.Text) > maxKey || len(r.Exprs) == 0 {
				return fmt.Errorf("nftables table %s chain %s: rule %q: empty, or text over %d bytes", t.Name, c.Name, r.Text, maxKey)
			}
		}
	}
	return nil
}

// Observe reads table name back from the kernel through c: its chains
// (with hook, priority and policy), each chain's rules (Text is the key we
// stored, "" for a rule we did not write; Exprs are what the library could
// decode), its counter objects and its named sets (anonymous ones belong to
// their rules). ok is false when there is no such table.
func Observe(ctx context.Context, c Conn, name string) (t Table, ok bool, err error) {
	if err := ctx.Err(); err != nil {
		return Table{}, false, err
	}
	tables, err := c.ListTablesOfFamily(Family)
	if err != nil {
		return Table{}, false, fmt.Errorf("list nftables tables: %w", err)
	}
	i := slices.IndexFunc(tables, func(x *nftables.Table) bool { return x.Name == name })
	if i < 0 {
		return Table{Name: name}, false, nil
	}
	t = Table{Name: name, flags: tables[i].Flags}
	nt := t.nft()
	chains, err := c.ListChainsOfTableFamily(Family)
	if err != nil {
		return Table{}, false, fmt.Errorf("list chains of table inet %s: %w", name, err)
	}
	for _, ch := range chains {
		if ch.Table == nil || ch.Table.Name != name {
			continue
		}
		oc := Chain{Name: ch.Name}
		if ch.Hooknum != nil {
			h := &Hook{Type: ch.Type, Num: *ch.Hooknum}
			if ch.Priority != nil {
				h.Priority = *ch.Priority
			}
			h.dropPolicy = ch.Policy != nil && *ch.Policy == nftables.ChainPolicyDrop
			oc.Hook = h
		}
		rules, err := c.GetRules(nt, &nftables.Chain{Name: ch.Name, Table: nt})
		if err != nil {
			return Table{}, false, fmt.Errorf("list rules of chain inet %s %s: %w", name, ch.Name, err)
		}
		for _, r := range rules {
			oc.Rules = append(oc.Rules, Rule{Text: keyOf(r.UserData), Exprs: r.Exprs})
		}
		t.Chains = append(t.Chains, oc)
	}
	slices.SortFunc(t.Chains, func(a, b Chain) int { return strings.Compare(a.Name, b.Name) })
	objs, err := c.GetNamedObjects(nt)
	if err != nil {
		return Table{}, false, fmt.Errorf("list objects of table inet %s: %w", name, err)
	}
	for _, o := range objs {
		no, isNamed := o.(*nftables.NamedObj)
		if !isNamed {
			continue
		}
		if no.Type == nftables.ObjTypeCounter {
			t.Counters = append(t.Counters, no.Name)
		} else {
			t.others = append(t.others, &nftables.NamedObj{Table: nt, Name: no.Name, Type: no.Type})
		}
	}
	slices.Sort(t.Counters)
	sets, err := c.GetSets(nt)
	if err != nil {
		return Table{}, false, fmt.Errorf("list sets of table inet %s: %w", name, err)
	}
	for _, s := range sets {
		if s.Anonymous {
			continue
		}
		ss := Set{Name: s.Name, odd: s.KeyType.Name != nftables.TypeIPAddr.Name || !s.Interval || s.IsMap || s.Concatenation}
		els, err := c.GetSetElements(&nftables.Set{Table: nt, Name: s.Name, ID: s.ID, KeyType: s.KeyType, Interval: s.Interval, IsMap: s.IsMap})
		if err != nil {
			return Table{}, false, fmt.Errorf("list elements of set inet %s %s: %w", name, s.Name, err)
		}
		spans, ok := spansOfElements(els)
		ss.odd = ss.odd || !ok
		ss.Prefixes = prefixesOf(spans)
		t.Sets = append(t.Sets, ss)
	}
	slices.SortFunc(t.Sets, func(a, b Set) int { return strings.Compare(a.Name, b.Name) })
	return t, true, nil
}

// Apply makes the kernel's table want.Name match want, through c, and
// reports whether it changed anything.
//
//   - An absent want deletes the table, if it exists, in one message.
//   - A table that already matches (same counters, same chains with the
//     same hooks, same rule keys in the same order) is left alone: no
//     message is sent.
//   - Otherwise one batch creates the table if needed, flushes every rule,
//     deletes chains, objects and sets not wanted (or wanted differently),
//     creates the missing chains, counters and sets (with their elements),
//     and adds every rule. nf_tables
//     commits a batch as one transaction, so packets see either the old
//     rules or the new ones, never an empty table. Counters that stay
//     wanted keep their values.
func Apply(ctx context.Context, c Conn, want Table) (changed bool, err error) {
	if err := want.Validate(); err != nil {
		return false, err
	}
	have, exists, err := Observe(ctx, c, want.Name)
	if err != nil {
		return false, err
	}
	nt := want.nft()
	if want.Absent() {
		if !exists {
			return false, nil
		}
		c.DelTable(nt)
		if err := c.Flush(); err != nil {
			return false, fmt.Errorf("delete nftables table inet %s: %w", want.Name, err)
		}
		return true, nil
	}
	if exists && same(have, want) {
		return false, nil
	}
	if err := ctx.Err(); err != nil {
		return false, err
	}

	// AddTable creates the table, or (on an existing one) clears its
	// flags: a dormant table would not judge any packet.
	c.AddTable(nt)
	haveChains := map[string]Chain{}
	if exists {
		c.FlushTable(nt)
		for _, hc := range have.Chains {
			haveChains[hc.Name] = hc
			if wc, ok := want.chain(hc.Name); !ok || !sameHook(hc.Hook, wc.Hook) {
				c.DelChain(&nftables.Chain{Name: hc.Name, Table: nt})
				delete(haveChains, hc.Name)
			}
		}
		for _, o := range have.Counters {
			if !slices.Contains(want.Counters, o) {
				c.DeleteObject(&nftables.NamedObj{Table: nt, Name: o, Type: nftables.ObjTypeCounter})
			}
		}
		for _, o := range have.others {
			c.DeleteObject(o)
		}
		// Rules that look up a set are gone with the flush, so a set can
		// be replaced whole: deleted here, added again below.
		for _, hs := range have.Sets {
			if ws, ok := want.set(hs.Name); !ok || !sameSet(hs, ws) {
				c.DelSet(&nftables.Set{Table: nt, Name: hs.Name})
			}
		}
	}
	for _, wc := range want.Chains {
		if _, kept := haveChains[wc.Name]; !kept {
			c.AddChain(wc.nft(nt))
		}
	}
	for _, name := range want.Counters {
		if !slices.Contains(have.Counters, name) {
			c.AddObj(&nftables.NamedObj{Table: nt, Name: name, Type: nftables.ObjTypeCounter, Obj: &expr.Counter{}})
		}
	}
	for _, ws := range want.Sets {
		if hs, ok := have.set(ws.Name); exists && ok && sameSet(hs, ws) {
			continue
		}
		if err := c.AddSet(ws.nft(nt), elements(spansOf(ws.Prefixes))); err != nil {
			return false, fmt.Errorf("add nftables set inet %s %s: %w", want.Name, ws.Name, err)
		}
	}
	for _, wc := range want.Chains {
		ch := &nftables.Chain{Name: wc.Name, Table: nt}
		for _, r := range wc.Rules {
			c.AddRule(&nftables.Rule{Table: nt, Chain: ch, Exprs: r.Exprs, UserData: ruleKey(r.Text)})
		}
	}
	if err := c.Flush(); err != nil {
		return false, fmt.Errorf("replace nftables table inet %s: %w", want.Name, err)
	}
	return true, nil
}

func (t Table) set(name string) (Set, bool) {
	i := slices.IndexFunc(t.Sets, func(s Set) bool { return s.Name == name })
	if i < 0 {
		return Set{}, false
	}
	return t.Sets[i], true
}

func (t Table) chain(name string) (Chain, bool) {
	i := slices.IndexFunc(t.Chains, func(c Chain) bool { return c.Name == name })
	if i < 0 {
		return Chain{}, false
	}
	return t.Chains[i], true
}

func (c Chain) nft(t *nftables.Table) *nftables.Chain {
	ch := &nftables.Chain{Name: c.Name, Table: t}
	if c.Hook != nil {
		accept := nftables.ChainPolicyAccept
		ch.Type = c.Hook.Type
		ch.Hooknum = nftables.ChainHookRef(c.Hook.Num)
		ch.Priority = nftables.ChainPriorityRef(c.Hook.Priority)
		ch.Policy = &accept
	}
	return ch
}

func sameHook(a, b *Hook) bool {
	if a == nil || b == nil {
		return a == nil && b == nil
	}
	return *a == *b
}

// same reports whether the observed table have already is want.
func same(have, want Table) bool {
	wc := slices.Clone(want.Counters)
	slices.Sort(wc)
	if have.flags != 0 || len(have.others) > 0 || !slices.Equal(have.Counters, wc) || len(have.Chains) != len(want.Chains) || len(have.Sets) != len(want.Sets) {
		return false
	}
	for _, hs := range have.Sets {
		if ws, ok := want.set(hs.Name); !ok || !sameSet(hs, ws) {
			return false
		}
	}
	for _, hc := range have.Chains {
		w, ok := want.chain(hc.Name)
		if !ok || !sameHook(hc.Hook, w.Hook) || len(hc.Rules) != len(w.Rules) {
			return false
		}
		for i := range hc.Rules {
			if hc.Rules[i].Text != w.Rules[i].Text {
				return false
			}
		}
	}
	return true
}

// Counter is the value of a named counter.
type Counter struct {
	Packets, Bytes uint64
}

// ReadCounters returns the named counters of table name (empty when the
// table does not exist).
func ReadCounters(ctx context.Context, c Conn, name string) (map[string]Counter, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	tables, err := c.ListTablesOfFamily(Family)
	if err != nil {
		return nil, fmt.Errorf("list nftables tables: %w", err)
	}
	if !slices.ContainsFunc(tables, func(x *nftables.Table) bool { return x.Name == name }) {
		return map[string]Counter{}, nil
	}
	objs, err := c.GetNamedObjects(&nftables.Table{Name: name, Family: Family})
	if err != nil {
		return nil, fmt.Errorf("read counters of table inet %s: %w", name, err)
	}
	out := make(map[string]Counter, len(objs))
	for _, o := range objs {
		no, ok := o.(*nftables.NamedObj)
		if !ok || no.Type != nftables.ObjTypeCounter {
			continue
		}
		if ctr, ok := no.Obj.(*expr.Counter); ok {
			out[no.Name] = Counter{Packets: ctr.Packets, Bytes: ctr.Bytes}
		}
	}
	return out, nil
}

// String renders t in nft's syntax (as "nft list table" prints it, up to
// the spelling of implied matches), sorted: counters, then sets and chains
// by name, rules in order. Observed rules we did not write show as
// "# foreign rule (N expressions)".
func (t Table) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "table inet %s {\n", t.Name)
	counters := slices.Clone(t.Counters)
	slices.Sort(counters)
	for _, c := range counters {
		fmt.Fprintf(&b, "\tcounter %s {\n\t}\n", c)
	}
	sets := slices.Clone(t.Sets)
	slices.SortFunc(sets, func(a, b Set) int { return strings.Compare(a.Name, b.Name) })
	for _, s := range sets {
		b.WriteString(s.String())
	}
	chains := slices.Clone(t.Chains)
	slices.SortFunc(chains, func(a, b Chain) int { return strings.Compare(a.Name, b.Name) })
	for _, c := range chains {
		fmt.Fprintf(&b, "\tchain %s {\n", c.Name)
		if h := c.Hook; h != nil {
			policy := "accept"
			if h.dropPolicy {
				policy = "drop"
			}
			fmt.Fprintf(&b, "\t\ttype %s hook %s priority %s; policy %s;\n", h.Type, hookName(h.Num), priorityName(h.Priority), policy)
		}
		for _, r := range c.Rules {
			if r.Text == "" {
				fmt.Fprintf(&b, "\t\t# foreign rule (%d expressions)\n", len(r.Exprs))
				continue
			}
			fmt.Fprintf(&b, "\t\t%s\n", r.Text)
		}
		b.WriteString("\t}\n")
	}
	b.WriteString("}\n")
	return b.String()
}

func hookName(h nftables.ChainHook) string {
	switch h {
	case *nftables.ChainHookPrerouting:
		return "prerouting"
	case *nftables.ChainHookInput:
		return "input"
	case *nftables.ChainHookForward:
		return "forward"
	case *nftables.ChainHookOutput:
		return "output"
	case *nftables.ChainHookPostrouting:
		return "postrouting"
	}
	return fmt.Sprintf("%d", h)
}

// priorityName spells the standard priorities of the ip, ip6 and inet
// families as nft does (nft(8), "CHAIN PRIORITIES").
func priorityName(p nftables.ChainPriority) string {
	names := map[nftables.ChainPriority]string{
		-300: "raw", -150: "mangle", -100: "dstnat", 0: "filter", 50: "security", 100: "srcnat",
	}
	if n, ok := names[p]; ok {
		return n
	}
	return fmt.Sprintf("%d", p)
}
