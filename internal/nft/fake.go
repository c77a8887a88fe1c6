package nft

import (
	"bytes"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"github.com/google/nftables/userdata"
	"golang.org/x/sys/unix"
)

// Fake is a strict in-memory Conn. Like the kernel it queues writes until
// Flush and commits a batch all or nothing, and it refuses what nf_tables
// refuses with the same errno (errors.Is works as with the real Conn):
//
//   - ENOENT for a missing table, chain, jump target, counter or looked-up
//     set, and for deleting what does not exist;
//   - EBUSY for deleting a chain that a jump still targets, or a counter
//     or set a rule still uses;
//   - EEXIST for re-adding a chain with another hook, type or priority, and
//     for adding a set that exists (stricter than the kernel, which takes
//     an identical one; we always delete first);
//   - EOPNOTSUPP for a jump to a base chain, "rt mtu" in a base chain of
//     another hook than forward, output and postrouting, and a NAT
//     statement outside a nat base chain (stricter than the kernel, which
//     also takes one in a regular chain that only nat chains reach; we
//     never need that).
//
// It records every call (Calls, Writes) and prints its state as sorted
// text (String). The zero value is not usable; call NewFake.
type Fake struct {
	mu       sync.Mutex
	tables   map[tableID]*fakeTable
	queue    []fakeOp
	calls    []string
	writes   []string
	handle   uint64
	failNext error
}

var _ Conn = (*Fake)(nil)

type tableID struct {
	family nftables.TableFamily
	name   string
}

type fakeTable struct {
	flags  uint32
	chains map[string]*fakeChain
	objs   map[string]*fakeObj
	sets   map[string]*fakeSet
}

type fakeSet struct {
	keyType  nftables.SetDatatype
	interval bool
	elems    []nftables.SetElement
}

type fakeChain struct {
	typ    nftables.ChainType
	hook   *nftables.ChainHook
	prio   *nftables.ChainPriority
	policy *nftables.ChainPolicy
	rules  []*nftables.Rule
}

type fakeObj struct {
	typ nftables.ObjType
	ctr expr.Counter
}

type fakeOp struct {
	desc  string
	apply func(st map[tableID]*fakeTable) error
}

// NewFake returns an empty Fake: no tables.
func NewFake() *Fake { return &Fake{tables: map[tableID]*fakeTable{}} }

// Calls returns every call so far, one line each, in order.
func (f *Fake) Calls() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.calls)
}

// Writes returns the calls so far that would change the kernel (every
// queued message, and each Flush that sent any), in order.
func (f *Fake) Writes() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.writes)
}

// FailNextFlush makes the next Flush fail with err, applying nothing.
func (f *Fake) FailNextFlush(err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.failNext = err
}

// SetCounter sets the value of the named counter name in table (family
// inet), as traffic would. It fails if there is no such counter.
func (f *Fake) SetCounter(table, name string, packets, bytes uint64) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	t, ok := f.tables[tableID{Family, table}]
	if !ok {
		return fmt.Errorf("fake nftables: table inet %s: %w", table, unix.ENOENT)
	}
	o, ok := t.objs[name]
	if !ok || o.typ != nftables.ObjTypeCounter {
		return fmt.Errorf("fake nftables: counter %s: %w", name, unix.ENOENT)
	}
	o.ctr = expr.Counter{Packets: packets, Bytes: bytes}
	return nil
}

func (f *Fake) call(format string, args ...any) {
	f.calls = append(f.calls, fmt.Sprintf(format, args...))
}

func (f *Fake) enqueue(desc string, apply func(st map[tableID]*fakeTable) error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, desc)
	f.writes = append(f.writes, desc)
	f.queue = append(f.queue, fakeOp{desc: desc, apply: apply})
}

func famName(fam nftables.TableFamily) string {
	switch fam {
	case nftables.TableFamilyINet:
		return "inet"
	case nftables.TableFamilyIPv4:
		return "ip"
	case nftables.TableFamilyIPv6:
		return "ip6"
	case nftables.TableFamilyUnspecified:
		return "unspec"
	}
	return fmt.Sprintf("family-%d", fam)
}

func errf(errno unix.Errno, format string, args ...any) error {
	return fmt.Errorf("fake nftables: "+format+": %w", append(args, errno)...)
}

// ListTablesOfFamily returns the tables of family (all of them for
// TableFamilyUnspecified), sorted by name.
func (f *Fake) ListTablesOfFamily(family nftables.TableFamily) ([]*nftables.Table, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.call("ListTablesOfFamily %s", famName(family))
	var out []*nftables.Table
	for _, id := range f.sortedTables() {
		if family == nftables.TableFamilyUnspecified || id.family == family {
			out = append(out, &nftables.Table{Name: id.name, Family: id.family, Flags: f.tables[id].flags, Use: uint32(len(f.tables[id].chains))})
		}
	}
	return out, nil
}

func (f *Fake) sortedTables() []tableID {
	ids := slices.Collect(maps.Keys(f.tables))
	slices.SortFunc(ids, func(a, b tableID) int {
		if a.family != b.family {
			return int(a.family) - int(b.family)
		}
		return strings.Compare(a.name, b.name)
	})
	return ids
}

// ListChainsOfTableFamily returns the chains of every table of family,
// sorted by table and name.
func (f *Fake) ListChainsOfTableFamily(family nftables.TableFamily) ([]*nftables.Chain, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.call("ListChainsOfTableFamily %s", famName(family))
	var out []*nftables.Chain
	for _, id := range f.sortedTables() {
		if family != nftables.TableFamilyUnspecified && id.family != family {
			continue
		}
		t := f.tables[id]
		for _, name := range slices.Sorted(maps.Keys(t.chains)) {
			c := t.chains[name]
			out = append(out, &nftables.Chain{
				Name: name, Table: &nftables.Table{Name: id.name, Family: id.family},
				Type: c.typ, Hooknum: clonePtr(c.hook), Priority: clonePtr(c.prio), Policy: clonePtr(c.policy),
			})
		}
	}
	return out, nil
}

func clonePtr[T any](p *T) *T {
	if p == nil {
		return nil
	}
	v := *p
	return &v
}

// GetRules returns the rules of chain c of table t, in order.
func (f *Fake) GetRules(t *nftables.Table, c *nftables.Chain) ([]*nftables.Rule, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.call("GetRules %s %s %s", famName(t.Family), t.Name, c.Name)
	ft, ok := f.tables[tableID{t.Family, t.Name}]
	if !ok {
		return nil, errf(unix.ENOENT, "table %s %s", famName(t.Family), t.Name)
	}
	fc, ok := ft.chains[c.Name]
	if !ok {
		return nil, errf(unix.ENOENT, "chain %s %s %s", famName(t.Family), t.Name, c.Name)
	}
	out := make([]*nftables.Rule, len(fc.rules))
	for i, r := range fc.rules {
		out[i] = cloneRule(r)
	}
	return out, nil
}

func cloneRule(r *nftables.Rule) *nftables.Rule {
	return &nftables.Rule{
		Table:    &nftables.Table{Name: r.Table.Name, Family: r.Table.Family},
		Chain:    &nftables.Chain{Name: r.Chain.Name},
		Handle:   r.Handle,
		Exprs:    slices.Clone(r.Exprs),
		UserData: bytes.Clone(r.UserData),
	}
}

// GetNamedObjects returns the named objects of table t as NamedObj, with
// a counter's value in an *expr.Counter.
func (f *Fake) GetNamedObjects(t *nftables.Table) ([]nftables.Obj, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.call("GetNamedObjects %s %s", famName(t.Family), t.Name)
	ft, ok := f.tables[tableID{t.Family, t.Name}]
	if !ok {
		return nil, errf(unix.ENOENT, "table %s %s", famName(t.Family), t.Name)
	}
	var out []nftables.Obj
	for _, name := range slices.Sorted(maps.Keys(ft.objs)) {
		o := ft.objs[name]
		ctr := o.ctr
		out = append(out, &nftables.NamedObj{Table: &nftables.Table{Name: t.Name, Family: t.Family}, Name: name, Type: o.typ, Obj: &ctr})
	}
	return out, nil
}

// AddTable queues "add table": create it, or reset its flags.
func (f *Fake) AddTable(t *nftables.Table) *nftables.Table {
	id := tableID{t.Family, t.Name}
	f.enqueue(describeTable("AddTable", t), func(st map[tableID]*fakeTable) error {
		if ft, ok := st[id]; ok {
			ft.flags = 0
			return nil
		}
		st[id] = newFakeTable()
		return nil
	})
	return t
}

// DelTable queues "delete table": the table and all it holds.
func (f *Fake) DelTable(t *nftables.Table) {
	id := tableID{t.Family, t.Name}
	desc := describeTable("DelTable", t)
	f.enqueue(desc, func(st map[tableID]*fakeTable) error {
		if _, ok := st[id]; !ok {
			return errf(unix.ENOENT, "%s", desc)
		}
		delete(st, id)
		return nil
	})
}

// FlushTable queues "flush table": every rule of every chain.
func (f *Fake) FlushTable(t *nftables.Table) {
	id := tableID{t.Family, t.Name}
	desc := describeTable("FlushTable", t)
	f.enqueue(desc, func(st map[tableID]*fakeTable) error {
		ft, ok := st[id]
		if !ok {
			return errf(unix.ENOENT, "%s", desc)
		}
		for _, c := range ft.chains {
			c.rules = nil
		}
		return nil
	})
}

// AddChain queues "add chain": create it, or update an existing chain's
// policy (its type, hook and priority cannot change).
func (f *Fake) AddChain(c *nftables.Chain) *nftables.Chain {
	id := tableID{c.Table.Family, c.Table.Name}
	want := fakeChain{typ: c.Type, hook: clonePtr(c.Hooknum), prio: clonePtr(c.Priority), policy: clonePtr(c.Policy)}
	desc := describeChain("AddChain", c)
	f.enqueue(desc, func(st map[tableID]*fakeTable) error {
		ft, ok := st[id]
		if !ok {
			return errf(unix.ENOENT, "%s: no table", desc)
		}
		base := want.hook != nil
		if base != (want.prio != nil) || base != (want.typ != "") {
			return errf(unix.EINVAL, "%s: a base chain needs type, hook and priority; a regular chain none", desc)
		}
		if !base && want.policy != nil {
			return errf(unix.EOPNOTSUPP, "%s: policy on a regular chain", desc)
		}
		if have, ok := ft.chains[c.Name]; ok {
			if have.typ != want.typ || !ptrEq(have.hook, want.hook) || !ptrEq(have.prio, want.prio) {
				return errf(unix.EEXIST, "%s: exists with another type, hook or priority", desc)
			}
			if want.policy != nil {
				have.policy = want.policy
			}
			return nil
		}
		nc := want
		if base && nc.policy == nil {
			accept := nftables.ChainPolicyAccept
			nc.policy = &accept
		}
		ft.chains[c.Name] = &nc
		return nil
	})
	return c
}

func ptrEq[T comparable](a, b *T) bool {
	if a == nil || b == nil {
		return a == nil && b == nil
	}
	return *a == *b
}

// DelChain queues "delete chain": the chain and its rules.
func (f *Fake) DelChain(c *nftables.Chain) {
	id := tableID{c.Table.Family, c.Table.Name}
	desc := describeChain("DelChain", c)
	f.enqueue(desc, func(st map[tableID]*fakeTable) error {
		ft, ok := st[id]
		if !ok {
			return errf(unix.ENOENT, "%s: no table", desc)
		}
		if _, ok := ft.chains[c.Name]; !ok {
			return errf(unix.ENOENT, "%s", desc)
		}
		for name, other := range ft.chains {
			if name == c.Name {
				continue
			}
			for _, r := range other.rules {
				for _, e := range r.Exprs {
					if v, ok := e.(*expr.Verdict); ok && v.Chain == c.Name {
						return errf(unix.EBUSY, "%s: chain %s jumps to it", desc, name)
					}
				}
			}
		}
		delete(ft.chains, c.Name)
		return nil
	})
}

// AddRule queues "add rule", appended to its chain.
func (f *Fake) AddRule(r *nftables.Rule) *nftables.Rule {
	id := tableID{r.Table.Family, r.Table.Name}
	desc := describeRule(r)
	stored := &nftables.Rule{
		Table:    &nftables.Table{Name: id.name, Family: id.family},
		Chain:    &nftables.Chain{Name: r.Chain.Name},
		Exprs:    slices.Clone(r.Exprs),
		UserData: bytes.Clone(r.UserData),
	}
	f.enqueue(desc, func(st map[tableID]*fakeTable) error {
		ft, ok := st[id]
		if !ok {
			return errf(unix.ENOENT, "%s: no table", desc)
		}
		c, ok := ft.chains[r.Chain.Name]
		if !ok {
			return errf(unix.ENOENT, "%s: no chain", desc)
		}
		if len(stored.UserData) > 256 {
			return errf(unix.EINVAL, "%s: user data over 256 bytes", desc)
		}
		if len(stored.Exprs) == 0 {
			return errf(unix.EINVAL, "%s: no expressions", desc)
		}
		for _, e := range stored.Exprs {
			if err := checkExpr(ft, c, e); err != nil {
				return fmt.Errorf("%s: %w", desc, err)
			}
		}
		f.handle++
		stored.Handle = f.handle
		c.rules = append(c.rules, stored)
		return nil
	})
	return r
}

// checkExpr refuses what the kernel refuses when it validates a rule.
func checkExpr(ft *fakeTable, c *fakeChain, e expr.Any) error {
	switch e := e.(type) {
	case *expr.Verdict:
		if e.Kind == expr.VerdictJump || e.Kind == expr.VerdictGoto {
			target, ok := ft.chains[e.Chain]
			if !ok {
				return errf(unix.ENOENT, "jump to missing chain %s", e.Chain)
			}
			if target.hook != nil {
				return errf(unix.EOPNOTSUPP, "jump to base chain %s", e.Chain)
			}
		}
	case *expr.Lookup:
		if _, ok := ft.sets[e.SetName]; !ok {
			return errf(unix.ENOENT, "lookup in missing set %s", e.SetName)
		}
	case *expr.Objref:
		o, ok := ft.objs[e.Name]
		if !ok || int(o.typ) != e.Type {
			return errf(unix.ENOENT, "object %s of type %d", e.Name, e.Type)
		}
	case *expr.NAT, *expr.Masq:
		if c.hook == nil || c.typ != nftables.ChainTypeNAT {
			return errf(unix.EOPNOTSUPP, "nat statement outside a nat base chain")
		}
	case *expr.Rt:
		if e.Key == expr.RtTCPMSS && c.hook != nil {
			switch *c.hook {
			case *nftables.ChainHookForward, *nftables.ChainHookOutput, *nftables.ChainHookPostrouting:
			default:
				return errf(unix.EOPNOTSUPP, "rt mtu outside forward, output and postrouting")
			}
		}
	}
	return nil
}

// AddObj queues "add counter" (a *nftables.NamedObj or
// *nftables.CounterObj). An existing object is left as it is, values
// included, as the kernel does.
func (f *Fake) AddObj(o nftables.Obj) nftables.Obj {
	t, name, typ, ctr := objInfo(o)
	id := tableID{t.Family, t.Name}
	desc := describeObj("AddObj", o)
	f.enqueue(desc, func(st map[tableID]*fakeTable) error {
		ft, ok := st[id]
		if !ok {
			return errf(unix.ENOENT, "%s: no table", desc)
		}
		if typ != nftables.ObjTypeCounter {
			return errf(unix.EOPNOTSUPP, "%s: the fake knows only counters", desc)
		}
		if _, ok := ft.objs[name]; !ok {
			ft.objs[name] = &fakeObj{typ: typ, ctr: ctr}
		}
		return nil
	})
	return o
}

// DeleteObject queues "delete counter".
func (f *Fake) DeleteObject(o nftables.Obj) {
	t, name, typ, _ := objInfo(o)
	id := tableID{t.Family, t.Name}
	desc := describeObj("DeleteObject", o)
	f.enqueue(desc, func(st map[tableID]*fakeTable) error {
		ft, ok := st[id]
		if !ok {
			return errf(unix.ENOENT, "%s: no table", desc)
		}
		if have, ok := ft.objs[name]; !ok || have.typ != typ {
			return errf(unix.ENOENT, "%s", desc)
		}
		for cname, c := range ft.chains {
			for _, r := range c.rules {
				for _, e := range r.Exprs {
					if ref, ok := e.(*expr.Objref); ok && ref.Name == name && ref.Type == int(typ) {
						return errf(unix.EBUSY, "%s: a rule in chain %s uses it", desc, cname)
					}
				}
			}
		}
		delete(ft.objs, name)
		return nil
	})
}

func objInfo(o nftables.Obj) (t *nftables.Table, name string, typ nftables.ObjType, ctr expr.Counter) {
	switch o := o.(type) {
	case *nftables.NamedObj:
		if c, ok := o.Obj.(*expr.Counter); ok && c != nil {
			ctr = *c
		}
		return o.Table, o.Name, o.Type, ctr
	case *nftables.CounterObj:
		return o.Table, o.Name, nftables.ObjTypeCounter, expr.Counter{Packets: o.Packets, Bytes: o.Bytes}
	}
	panic(fmt.Sprintf("fake nftables: unsupported object type %T", o))
}

func objTypeName(t nftables.ObjType) string {
	if t == nftables.ObjTypeCounter {
		return "counter"
	}
	return fmt.Sprintf("object-type-%d", t)
}

func newFakeTable() *fakeTable {
	return &fakeTable{chains: map[string]*fakeChain{}, objs: map[string]*fakeObj{}, sets: map[string]*fakeSet{}}
}

// GetSets returns the named sets of table t, sorted by name.
func (f *Fake) GetSets(t *nftables.Table) ([]*nftables.Set, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.call("GetSets %s %s", famName(t.Family), t.Name)
	ft, ok := f.tables[tableID{t.Family, t.Name}]
	if !ok {
		return nil, errf(unix.ENOENT, "table %s %s", famName(t.Family), t.Name)
	}
	var out []*nftables.Set
	for _, name := range slices.Sorted(maps.Keys(ft.sets)) {
		fs := ft.sets[name]
		out = append(out, &nftables.Set{Table: &nftables.Table{Name: t.Name, Family: t.Family}, Name: name, KeyType: fs.keyType, Interval: fs.interval})
	}
	return out, nil
}

// GetSetElements returns the elements of set s, as added.
func (f *Fake) GetSetElements(s *nftables.Set) ([]nftables.SetElement, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.call("GetSetElements %s %s %s", famName(s.Table.Family), s.Table.Name, s.Name)
	ft, ok := f.tables[tableID{s.Table.Family, s.Table.Name}]
	if !ok {
		return nil, errf(unix.ENOENT, "table %s %s", famName(s.Table.Family), s.Table.Name)
	}
	fs, ok := ft.sets[s.Name]
	if !ok {
		return nil, errf(unix.ENOENT, "set %s %s %s", famName(s.Table.Family), s.Table.Name, s.Name)
	}
	out := make([]nftables.SetElement, len(fs.elems))
	for i, e := range fs.elems {
		out[i] = nftables.SetElement{Key: bytes.Clone(e.Key), IntervalEnd: e.IntervalEnd}
	}
	return out, nil
}

// AddSet queues "add set" with its elements. It refuses a set that
// exists, anonymous sets and maps (we never add them), and keys that do
// not fit the key type.
func (f *Fake) AddSet(s *nftables.Set, vals []nftables.SetElement) error {
	id := tableID{s.Table.Family, s.Table.Name}
	desc := describeSet("AddSet", s, vals)
	stored := &fakeSet{keyType: s.KeyType, interval: s.Interval}
	for _, v := range vals {
		stored.elems = append(stored.elems, nftables.SetElement{Key: bytes.Clone(v.Key), IntervalEnd: v.IntervalEnd})
	}
	f.enqueue(desc, func(st map[tableID]*fakeTable) error {
		ft, ok := st[id]
		if !ok {
			return errf(unix.ENOENT, "%s: no table", desc)
		}
		if s.Anonymous || s.IsMap {
			return errf(unix.EOPNOTSUPP, "%s: the fake knows only named sets", desc)
		}
		if _, ok := ft.sets[s.Name]; ok {
			return errf(unix.EEXIST, "%s: exists", desc)
		}
		for _, e := range stored.elems {
			if uint32(len(e.Key)) != s.KeyType.Bytes || (e.IntervalEnd && !s.Interval) {
				return errf(unix.EINVAL, "%s: element %x does not fit the set", desc, e.Key)
			}
		}
		ft.sets[s.Name] = stored
		return nil
	})
	return nil
}

// DelSet queues "delete set".
func (f *Fake) DelSet(s *nftables.Set) {
	id := tableID{s.Table.Family, s.Table.Name}
	desc := describeSet("DelSet", s, nil)
	f.enqueue(desc, func(st map[tableID]*fakeTable) error {
		ft, ok := st[id]
		if !ok {
			return errf(unix.ENOENT, "%s: no table", desc)
		}
		if _, ok := ft.sets[s.Name]; !ok {
			return errf(unix.ENOENT, "%s", desc)
		}
		for cname, c := range ft.chains {
			for _, r := range c.rules {
				for _, e := range r.Exprs {
					if l, ok := e.(*expr.Lookup); ok && l.SetName == s.Name {
						return errf(unix.EBUSY, "%s: a rule in chain %s uses it", desc, cname)
					}
				}
			}
		}
		delete(ft.sets, s.Name)
		return nil
	})
}

func describeSet(verb string, s *nftables.Set, vals []nftables.SetElement) string {
	desc := fmt.Sprintf("%s %s %s %s", verb, famName(s.Table.Family), s.Table.Name, s.Name)
	if verb == "AddSet" {
		desc += describeElements(vals)
	}
	return desc
}

// describeElements prints interval set elements as the prefixes they
// cover (IPv4 keys), or their count.
func describeElements(vals []nftables.SetElement) string {
	spans, ok := spansOfElements(vals)
	if !ok {
		return fmt.Sprintf(" (%d elements)", len(vals))
	}
	if len(spans) == 0 {
		return ": (empty)"
	}
	return ": " + elementsText(prefixesOf(spans))
}

// Flush commits the queued messages as one transaction: on the first
// error nothing of the batch is applied, and the error is returned.
func (f *Fake) Flush() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	queue := f.queue
	f.queue = nil
	if len(queue) == 0 {
		f.call("Flush (nothing queued)")
		return nil
	}
	desc := fmt.Sprintf("Flush (%d messages)", len(queue))
	f.calls = append(f.calls, desc)
	f.writes = append(f.writes, desc)
	if err := f.failNext; err != nil {
		f.failNext = nil
		return err
	}
	st := cloneState(f.tables)
	saved := f.handle
	for _, op := range queue {
		if err := op.apply(st); err != nil {
			f.handle = saved
			return err
		}
	}
	f.tables = st
	return nil
}

func cloneState(in map[tableID]*fakeTable) map[tableID]*fakeTable {
	out := make(map[tableID]*fakeTable, len(in))
	for id, t := range in {
		nt := newFakeTable()
		nt.flags = t.flags
		for name, c := range t.chains {
			nc := *c
			nc.rules = slices.Clone(c.rules)
			nt.chains[name] = &nc
		}
		for name, o := range t.objs {
			no := *o
			nt.objs[name] = &no
		}
		for name, fs := range t.sets {
			ns := *fs
			ns.elems = slices.Clone(fs.elems)
			nt.sets[name] = &ns
		}
		out[id] = nt
	}
	return out
}

// String prints every table, sorted by family and name, with its counters
// (and their values), chains sorted by name, and each chain's rules in
// order, by the text we stored, or a foreign rule's comment or expression
// count.
func (f *Fake) String() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var b strings.Builder
	for _, id := range f.sortedTables() {
		t := f.tables[id]
		fmt.Fprintf(&b, "table %s %s\n", famName(id.family), id.name)
		for _, name := range slices.Sorted(maps.Keys(t.objs)) {
			o := t.objs[name]
			fmt.Fprintf(&b, "\t%s %s packets %d bytes %d\n", objTypeName(o.typ), name, o.ctr.Packets, o.ctr.Bytes)
		}
		for _, name := range slices.Sorted(maps.Keys(t.sets)) {
			fmt.Fprintf(&b, "\tset %s%s\n", name, describeElements(t.sets[name].elems))
		}
		for _, name := range slices.Sorted(maps.Keys(t.chains)) {
			c := t.chains[name]
			fmt.Fprintf(&b, "\tchain %s%s\n", name, chainSpec(c))
			for _, r := range c.rules {
				text := keyOf(r.UserData)
				if text == "" {
					if cm, ok := tlv(r.UserData, userdata.TypeComment); ok {
						text = fmt.Sprintf("comment %q", strings.TrimRight(string(cm), "\x00"))
					} else {
						text = fmt.Sprintf("(%d expressions)", len(r.Exprs))
					}
				}
				fmt.Fprintf(&b, "\t\t%s\n", text)
			}
		}
	}
	return b.String()
}

func describeTable(verb string, t *nftables.Table) string {
	return fmt.Sprintf("%s %s %s", verb, famName(t.Family), t.Name)
}

func describeChain(verb string, c *nftables.Chain) string {
	spec := ""
	if verb == "AddChain" {
		spec = chainSpec(&fakeChain{typ: c.Type, hook: c.Hooknum, prio: c.Priority, policy: c.Policy})
	}
	return fmt.Sprintf("%s %s %s %s%s", verb, famName(c.Table.Family), c.Table.Name, c.Name, spec)
}

func describeRule(r *nftables.Rule) string {
	text := keyOf(r.UserData)
	if text == "" {
		text = fmt.Sprintf("(%d expressions)", len(r.Exprs))
	}
	return fmt.Sprintf("AddRule %s %s %s: %s", famName(r.Table.Family), r.Table.Name, r.Chain.Name, text)
}

func describeObj(verb string, o nftables.Obj) string {
	t, name, typ, _ := objInfo(o)
	return fmt.Sprintf("%s %s %s %s %s", verb, famName(t.Family), t.Name, objTypeName(typ), name)
}

func chainSpec(c *fakeChain) string {
	if c.hook == nil {
		return ""
	}
	prio := "?"
	if c.prio != nil {
		prio = priorityName(*c.prio)
	}
	policy := ""
	if c.policy != nil {
		policy = " policy accept"
		if *c.policy == nftables.ChainPolicyDrop {
			policy = " policy drop"
		}
	}
	return fmt.Sprintf(" type %s hook %s priority %s%s", c.typ, hookName(*c.hook), prio, policy)
}

// Recorder is a Conn that passes every call to Conn and records the ones
// that write, in the words Fake uses, so a test can check that an applier
// wrote nothing, or what it wrote in which order, against the fake and the
// kernel alike.
type Recorder struct {
	Conn
	// Tee, when set, also gets every write as it is recorded (to merge
	// them with another seam's writes into one log).
	Tee func(write string)

	mu     sync.Mutex
	writes []string
}

var _ Conn = (*Recorder)(nil)

// Writes returns the writes recorded so far, in order.
func (r *Recorder) Writes() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.writes)
}

// Reset forgets the writes recorded so far.
func (r *Recorder) Reset() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.writes = nil
}

func (r *Recorder) record(s string) {
	r.mu.Lock()
	r.writes = append(r.writes, s)
	r.mu.Unlock()
	if r.Tee != nil {
		r.Tee(s)
	}
}

// AddTable records the call and passes it on.
func (r *Recorder) AddTable(t *nftables.Table) *nftables.Table {
	r.record(describeTable("AddTable", t))
	return r.Conn.AddTable(t)
}

// DelTable records the call and passes it on.
func (r *Recorder) DelTable(t *nftables.Table) {
	r.record(describeTable("DelTable", t))
	r.Conn.DelTable(t)
}

// FlushTable records the call and passes it on.
func (r *Recorder) FlushTable(t *nftables.Table) {
	r.record(describeTable("FlushTable", t))
	r.Conn.FlushTable(t)
}

// AddChain records the call and passes it on.
func (r *Recorder) AddChain(c *nftables.Chain) *nftables.Chain {
	r.record(describeChain("AddChain", c))
	return r.Conn.AddChain(c)
}

// DelChain records the call and passes it on.
func (r *Recorder) DelChain(c *nftables.Chain) {
	r.record(describeChain("DelChain", c))
	r.Conn.DelChain(c)
}

// AddRule records the call and passes it on.
func (r *Recorder) AddRule(rule *nftables.Rule) *nftables.Rule {
	r.record(describeRule(rule))
	return r.Conn.AddRule(rule)
}

// AddObj records the call and passes it on.
func (r *Recorder) AddObj(o nftables.Obj) nftables.Obj {
	r.record(describeObj("AddObj", o))
	return r.Conn.AddObj(o)
}

// AddSet records the call and passes it on.
func (r *Recorder) AddSet(s *nftables.Set, vals []nftables.SetElement) error {
	r.record(describeSet("AddSet", s, vals))
	return r.Conn.AddSet(s, vals)
}

// DelSet records the call and passes it on.
func (r *Recorder) DelSet(s *nftables.Set) {
	r.record(describeSet("DelSet", s, nil))
	r.Conn.DelSet(s)
}

// DeleteObject records the call and passes it on.
func (r *Recorder) DeleteObject(o nftables.Obj) {
	r.record(describeObj("DeleteObject", o))
	r.Conn.DeleteObject(o)
}

// Flush records "Flush" and flushes.
func (r *Recorder) Flush() error {
	r.record("Flush")
	return r.Conn.Flush()
}
