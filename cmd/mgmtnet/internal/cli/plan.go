package cli

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"net/netip"
	"strconv"
	"strings"

	"github.com/confine-project/mgmtnet/addressing"
)

const planSynopsis = `  mgmtnet plan node ID [--prefix P] [--json]
  mgmtnet plan server ID
  mgmtnet plan host ID
  mgmtnet plan gateway ID          (legacy gateways: parsed, never assigned)
  mgmtnet plan sliver --node ID --slice ID [--iface N]
  mgmtnet plan reverse ADDRESS
  mgmtnet plan testbed --nodes A-B [--servers A-B] [--hosts A-B]

Node ids are decimal (31), 0x hex (0x1f) or the firmware's 4 hex digits
(001f); server, host and slice ids are decimal or 0x hex. Ranges are A-B or
comma lists of them (1-3,7). Flags may come before or after arguments.

Examples:
  mgmtnet plan node 31
  mgmtnet plan node 001f --prefix fd65:fc41:c50f::/48 --json
  mgmtnet plan sliver --node 31 --slice 5
  mgmtnet plan reverse fdf5:5351:1dfd::2
  mgmtnet plan testbed --nodes 1-100 --servers 2-3 --json
`

// planFlags are the flags every plan form takes.
type planFlags struct {
	prefix, debug, private, privIPv4, egress string
	zone                                     string
	json                                     bool
	node, slice, iface                       string
	nodes, servers, hosts                    string
}

func (f *planFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&f.prefix, "prefix", addressing.DefaultMgmtPrefix().String(), "management `/48` (Community-Lab's by default; VCT used fd65:fc41:c50f::/48)")
	fs.StringVar(&f.debug, "debug-prefix", addressing.DefaultDebugPrefix().String(), "slivers' debug `/48`")
	fs.StringVar(&f.private, "private-prefix", addressing.DefaultPrivatePrefix().String(), "slivers' node-local private `/48`")
	fs.StringVar(&f.privIPv4, "private-ipv4", addressing.DefaultPrivateIPv4().String(), "slivers' node-local private IPv4 `/24`")
	fs.StringVar(&f.egress, "egress-prefix", addressing.DefaultEgressPrefix().String(), "node egress IPv4 `prefix` (/16 or shorter)")
	fs.StringVar(&f.zone, "zone", "", "DNS `zone` to qualify dns_name with (e.g. mgmt.community-lab.net); relative names when empty")
	fs.BoolVar(&f.json, "json", false, "print one JSON object per entity, one per line")
	fs.StringVar(&f.node, "node", "", "sliver: node `ID`")
	fs.StringVar(&f.slice, "slice", "", "sliver: slice `ID`")
	fs.StringVar(&f.iface, "iface", "1", "sliver: management iface `number` (0..255)")
	fs.StringVar(&f.nodes, "nodes", "", "testbed: node id `range`s, e.g. 1-100")
	fs.StringVar(&f.servers, "servers", "", "testbed: server id `range`s, e.g. 2-3")
	fs.StringVar(&f.hosts, "hosts", "", "testbed: host id `range`s, e.g. 1-10")
}

func (f *planFlags) plan() (addressing.Plan, error) {
	var c addressing.Config
	var err error
	if c.Mgmt, err = addressing.ParsePrefix48(f.prefix); err != nil {
		return addressing.Plan{}, usagef("--prefix: %w", err)
	}
	if c.Debug, err = addressing.ParsePrefix48(f.debug); err != nil {
		return addressing.Plan{}, usagef("--debug-prefix: %w", err)
	}
	if c.Private, err = addressing.ParsePrefix48(f.private); err != nil {
		return addressing.Plan{}, usagef("--private-prefix: %w", err)
	}
	if c.PrivateIPv4, err = netip.ParsePrefix(f.privIPv4); err != nil {
		return addressing.Plan{}, usagef("--private-ipv4: %w", err)
	}
	if c.Egress, err = netip.ParsePrefix(f.egress); err != nil {
		return addressing.Plan{}, usagef("--egress-prefix: %w", err)
	}
	p, err := addressing.NewFromConfig(c)
	if err != nil {
		return addressing.Plan{}, usageError{err}
	}
	return p, nil
}

func runPlan(ctx context.Context, env Env, args []string) error {
	fs := newFlagSet("plan", planSynopsis, env.Stderr)
	var f planFlags
	f.register(fs)
	pos, err := parseInterspersed(fs, args, env.Stdout)
	if err != nil {
		return err
	}
	if len(pos) == 0 {
		return usagef("missing form: node, server, host, gateway, sliver, reverse or testbed")
	}
	p, err := f.plan()
	if err != nil {
		return err
	}
	out := bufio.NewWriter(env.Stdout)
	defer out.Flush()
	w := &planWriter{w: out, json: f.json, zone: strings.TrimSuffix(f.zone, ".")}
	form, rest := pos[0], pos[1:]
	one := func(what string) (string, error) {
		if len(rest) != 1 {
			return "", usagef("plan %s: want exactly one %s, got %d arguments", form, what, len(rest))
		}
		return rest[0], nil
	}
	switch form {
	case "node":
		s, err := one("node id")
		if err != nil {
			return err
		}
		n, err := addressing.ParseNodeID(s)
		if err != nil {
			return usageError{err}
		}
		return w.single(memberRow(p, addressing.KindNode, uint64(n)))
	case "server", "host", "gateway":
		s, err := one(form + " id")
		if err != nil {
			return err
		}
		id, err := addressing.ParseID48(form, s)
		if err != nil {
			return usageError{err}
		}
		kind, _ := addressing.ParseKind(form)
		return w.single(memberRow(p, kind, id))
	case "sliver":
		if len(rest) != 0 {
			return usagef("plan sliver takes flags only: --node ID --slice ID [--iface N]")
		}
		if f.node == "" || f.slice == "" {
			return usagef("plan sliver: --node and --slice are required")
		}
		n, err := addressing.ParseNodeID(f.node)
		if err != nil {
			return usagef("--node: %w", err)
		}
		slice, err := addressing.ParseID48("slice", f.slice)
		if err != nil {
			return usagef("--slice: %w", err)
		}
		iface, err := addressing.ParseIface(f.iface)
		if err != nil {
			return usagef("--iface: %w", err)
		}
		return w.single(sliverRow(p, addressing.Entity{Kind: addressing.KindSliver, ID: slice, Node: n, Iface: iface}))
	case "reverse":
		s, err := one("address")
		if err != nil {
			return err
		}
		a, err := netip.ParseAddr(s)
		if err != nil {
			return usagef("plan reverse: %q is not an IPv4 or IPv6 address", s)
		}
		e, err := p.Reverse(a)
		if err != nil {
			return err // not in the plan: a runtime answer, exit 1
		}
		var r planRow
		switch {
		case e.Kind == addressing.KindSliver:
			r = sliverRow(p, e)
		default:
			r = memberRow(p, e.Kind, e.ID)
		}
		r.Query = a.String()
		return w.single(r)
	case "testbed":
		if len(rest) != 0 {
			return usagef("plan testbed takes flags only: --nodes A-B [--servers A-B] [--hosts A-B]")
		}
		if f.nodes == "" && f.servers == "" && f.hosts == "" {
			return usagef("plan testbed: give at least one of --nodes, --servers, --hosts")
		}
		return planTestbed(ctx, w, p, f)
	}
	return usagef("unknown form %q: want node, server, host, gateway, sliver, reverse or testbed", form)
}

// planRow is one entity as plan prints it.
type planRow struct {
	Query      string            `json:"query,omitempty"`
	Kind       string            `json:"kind"`
	ID         uint64            `json:"id"`
	IDHex      string            `json:"id_hex"`
	Address    string            `json:"address"`
	Subnet     string            `json:"subnet"`
	TincName   string            `json:"tinc_name"`
	DNSName    string            `json:"dns_name,omitempty"`
	PTR        string            `json:"ptr"`
	EgressIPv4 string            `json:"egress_ipv4,omitempty"`
	Node       *uint16           `json:"node,omitempty"`
	Slice      *uint64           `json:"slice,omitempty"`
	Iface      *uint8            `json:"iface,omitempty"`
	Container  *uint8            `json:"container,omitempty"`
	Addresses  map[string]string `json:"addresses,omitempty"`
	Note       string            `json:"note,omitempty"`
}

// memberRow describes a node, server, host or legacy gateway. The ids were
// validated by the caller, so the plan's errors cannot happen here.
func memberRow(p addressing.Plan, kind addressing.Kind, id uint64) planRow {
	e := addressing.Entity{Kind: kind, ID: id}
	a, _ := p.Address(e)
	sub, _ := p.TincSubnet(kind, id)
	name, _ := addressing.TincName(kind, id)
	label, _ := addressing.DNSLabel(e)
	r := planRow{Kind: kind.String(), ID: id, IDHex: fmt.Sprintf("%#x", id), Address: a.String(),
		Subnet: sub.String(), TincName: name, DNSName: label, PTR: addressing.PTRName(a)}
	switch kind {
	case addressing.KindNode:
		r.IDHex = addressing.FormatFirmwareNodeID(uint16(id))
		eg, _ := p.EgressIPv4(uint16(id))
		r.EgressIPv4 = eg.String()
	case addressing.KindGateway:
		r.Note = "legacy gateway (removed from the controller in 2014)"
	}
	return r
}

// sliverRow describes a sliver address.
func sliverRow(p addressing.Plan, e addressing.Entity) planRow {
	slice, iface := e.ID, e.Iface
	r := planRow{Kind: "sliver", ID: e.ID, IDHex: fmt.Sprintf("%#x", e.ID), Slice: &slice}
	switch e.Space {
	case addressing.SpaceIPv4:
		a, _ := p.SliverIPv4(e.Container)
		c := e.Container
		r = planRow{Kind: "sliver", Container: &c, Address: a.String(), Subnet: p.SliverIPv4Prefix().String(),
			PTR: addressing.PTRName(a), Note: "node-local private IPv4: the same on every node"}
		return r
	case addressing.SpacePrivate:
		a, _ := p.SliverAddr(addressing.SpacePrivate, 0, e.ID, 0)
		r.Address = a.String()
		r.PTR = addressing.PTRName(a)
		r.Addresses = map[string]string{"private": a.String()}
		r.Note = "node-local private IPv6: the node is not part of the address"
		return r
	}
	node := e.Node
	r.Node, r.Iface = &node, &iface
	mgmt, _ := p.SliverAddr(addressing.SpaceMgmt, e.Node, e.ID, e.Iface)
	debug, _ := p.SliverAddr(addressing.SpaceDebug, e.Node, e.ID, e.Iface)
	priv, _ := p.SliverAddr(addressing.SpacePrivate, 0, e.ID, 0)
	r.Addresses = map[string]string{"mgmt": mgmt.String(), "debug": debug.String(), "private": priv.String()}
	r.Address = mgmt.String()
	if e.Space == addressing.SpaceDebug {
		r.Address = debug.String()
	}
	a, _ := netip.ParseAddr(r.Address)
	r.PTR = addressing.PTRName(a)
	sub, _ := p.NodeSubnet(e.Node)
	r.Subnet = sub.String()
	r.TincName, _ = addressing.TincName(addressing.KindNode, uint64(e.Node))
	mgmtEntity := e
	mgmtEntity.Space = addressing.SpaceMgmt
	r.DNSName, _ = addressing.DNSLabel(mgmtEntity)
	if e.Space == addressing.SpaceDebug {
		r.Note = "debug address: not routed over tinc"
	}
	return r
}

type planWriter struct {
	w    *bufio.Writer
	json bool
	zone string
}

func (w *planWriter) qualify(r *planRow) {
	if w.zone != "" && r.DNSName != "" {
		r.DNSName += "." + w.zone + "."
	}
}

// single prints one entity: a JSON line, or an aligned two-column table.
func (w *planWriter) single(r planRow) error {
	w.qualify(&r)
	if w.json {
		return w.jsonLine(r)
	}
	type kv struct{ k, v string }
	rows := []kv{{"query", r.Query}, {"kind", r.Kind}}
	if r.Container == nil {
		rows = append(rows, kv{"id", fmt.Sprintf("%d (%s)", r.ID, r.IDHex)})
	}
	if r.Node != nil {
		rows = append(rows, kv{"node", strconv.Itoa(int(*r.Node))}, kv{"iface", strconv.Itoa(int(*r.Iface))})
	}
	if r.Container != nil {
		rows = append(rows, kv{"container", strconv.Itoa(int(*r.Container))})
	}
	rows = append(rows, kv{"address", r.Address})
	for _, k := range []string{"mgmt", "debug", "private"} {
		if v, ok := r.Addresses[k]; ok && len(r.Addresses) > 1 {
			rows = append(rows, kv{k + " address", v})
		}
	}
	rows = append(rows, kv{"subnet", r.Subnet}, kv{"tinc name", r.TincName}, kv{"dns name", r.DNSName},
		kv{"egress ipv4", r.EgressIPv4}, kv{"ptr", r.PTR}, kv{"note", r.Note})
	for _, x := range rows {
		if x.v != "" {
			fmt.Fprintf(w.w, "%-16s %s\n", x.k, x.v)
		}
	}
	return nil
}

func (w *planWriter) jsonLine(r planRow) error {
	b, err := json.Marshal(r)
	if err != nil {
		return fmt.Errorf("encode json: %w", err)
	}
	w.w.Write(b)
	return w.w.WriteByte('\n')
}

// idRange is an inclusive range of ids.
type idRange struct{ lo, hi uint64 }

// parseRanges parses "A-B,C,D-E" with parse for each id.
func parseRanges(what, s string, parse func(string) (uint64, error)) ([]idRange, error) {
	var out []idRange
	for _, part := range strings.Split(s, ",") {
		lo, hi, isRange := strings.Cut(strings.TrimSpace(part), "-")
		a, err := parse(lo)
		if err != nil {
			return nil, usagef("--%s %q: %w", what, s, err)
		}
		b := a
		if isRange {
			if b, err = parse(hi); err != nil {
				return nil, usagef("--%s %q: %w", what, s, err)
			}
		}
		if b < a {
			return nil, usagef("--%s %q: range %s is backwards", what, s, part)
		}
		out = append(out, idRange{a, b})
	}
	return out, nil
}

// planTestbed streams a table (or JSON lines) of whole id ranges: servers,
// then hosts, then nodes. Columns are sized from the widest row of each
// range so output starts at once and stays aligned.
func planTestbed(ctx context.Context, w *planWriter, p addressing.Plan, f planFlags) error {
	type section struct {
		kind   addressing.Kind
		ranges []idRange
	}
	var sections []section
	add := func(kind addressing.Kind, flagName, s string, parse func(string) (uint64, error)) error {
		if s == "" {
			return nil
		}
		r, err := parseRanges(flagName, s, parse)
		if err != nil {
			return err
		}
		sections = append(sections, section{kind, r})
		return nil
	}
	parseNode := func(s string) (uint64, error) { n, err := addressing.ParseNodeID(s); return uint64(n), err }
	if err := add(addressing.KindServer, "servers", f.servers, func(s string) (uint64, error) { return addressing.ParseID48("server", s) }); err != nil {
		return err
	}
	if err := add(addressing.KindHost, "hosts", f.hosts, func(s string) (uint64, error) { return addressing.ParseID48("host", s) }); err != nil {
		return err
	}
	if err := add(addressing.KindNode, "nodes", f.nodes, parseNode); err != nil {
		return err
	}
	cols := []string{"KIND", "ID", "HEX", "ADDRESS", "SUBNET", "TINC NAME", "DNS NAME", "EGRESS IPV4"}
	fields := func(r planRow) []string {
		return []string{r.Kind, strconv.FormatUint(r.ID, 10), r.IDHex, r.Address, r.Subnet, r.TincName, r.DNSName, r.EgressIPv4}
	}
	widths := make([]int, len(cols))
	for i, c := range cols {
		widths[i] = len(c)
	}
	for _, s := range sections {
		for _, rg := range s.ranges {
			for _, id := range []uint64{rg.lo, rg.hi} {
				r := memberRow(p, s.kind, id)
				w.qualify(&r)
				for i, v := range fields(r) {
					widths[i] = max(widths[i], len(v))
				}
			}
		}
	}
	var buf []byte
	line := func(vals []string) {
		buf = buf[:0]
		for i, v := range vals {
			buf = fmt.Appendf(buf, "%-*s  ", widths[i], v)
		}
		buf = append(bytes.TrimRight(buf, " "), '\n')
		w.w.Write(buf)
	}
	if !w.json {
		line(cols)
	}
	count := 0
	for _, s := range sections {
		for _, rg := range s.ranges {
			for id := rg.lo; ; id++ {
				if count%4096 == 0 {
					if err := ctx.Err(); err != nil {
						return fmt.Errorf("plan testbed: %w", err)
					}
				}
				count++
				r := memberRow(p, s.kind, id)
				w.qualify(&r)
				if w.json {
					if err := w.jsonLine(r); err != nil {
						return err
					}
				} else {
					line(fields(r))
				}
				if id == rg.hi {
					break
				}
			}
		}
	}
	return nil
}
