//go:build !nodb && !mips && !mipsle && !mips64 && !mips64le

package cli

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"strings"

	"github.com/confine-project/mgmtnet/addressing"
	"github.com/confine-project/mgmtnet/mesh/registry"
	"github.com/confine-project/mgmtnet/registrydb"
)

const registryMemberSynopsis = `  mgmtnet registry node|server|host add ID [--name NAME] [--island ID] [--pubkey FILE]
                                   [--address ADDR[:PORT][@ISLAND]]... [--property KEY=VALUE]...
                                   [--backend tinc|native] [--db URL]
  mgmtnet registry node|server|host set ID [the same flags; each given replaces that part]
  mgmtnet registry node|server|host rm ID
  mgmtnet registry node|server|host list|show ID [--json]
  mgmtnet registry island add|set ID --name NAME [--description TEXT]
  mgmtnet registry island rm ID
  mgmtnet registry island list [--json]

The admin commands on the registry database (see "mgmtnet registry
--help" for --db). Every write is checked as clients check what the
registry serves, and a write that a client would reject is refused with the
client's reason; it is one transaction with its audit record
("mgmtnet registry log"), and "registry serve" serves it within a second.

A node's ID is decimal or the firmware's four hex digits (001f is 31). A
member with a key (--pubkey, a PEM file, PKCS#1 or SPKI) gets its tinc name
from its kind and id (node_31, server, server_3, host_7). --pubkey none,
--no-addresses and --property KEY= remove. --address is repeatable, in the
order clients get them: 10.0.1.1, gw.example.net:656, 10.0.1.1@2 (in
island 2).

Exit status: 0 success, 1 error (refused, not found, the database), 2
usage error.

Examples:
  mgmtnet registry island add 1 --name island-1
  mgmtnet registry server add 2 --name server --pubkey /etc/tinc/confine/rsa_key.pub --address 192.0.2.1@1
  mgmtnet registry node add 001f --island 1 --pubkey node-31.pub
  mgmtnet registry node set 31 --property arch=x86_64
  mgmtnet registry node list
  mgmtnet registry node rm 31
`

// stringList is a repeatable flag.
type stringList []string

func (s *stringList) String() string     { return strings.Join(*s, ",") }
func (s *stringList) Set(v string) error { *s = append(*s, v); return nil }

// runRegistryMember runs "registry node|server|host|island ...".
func runRegistryMember(ctx context.Context, env Env, kind string, args []string) error {
	fs := newFlagSet("registry "+kind, registryMemberSynopsis, env.Stderr)
	dbURL := fs.String("db", defaultRegistryDB, "the registry database `URL`")
	name := fs.String("name", "", "the member's or island's `NAME`")
	island := fs.String("island", "", "the member's island `ID` (0: none)")
	pubkey := fs.String("pubkey", "", "the member's tinc public key, a PEM `FILE` (none: remove it)")
	backend := fs.String("backend", "", "the member's management network backend: tinc or native")
	desc := fs.String("description", "", "an island's description `TEXT`")
	noAddrs := fs.Bool("no-addresses", false, "remove the member's tinc addresses")
	asJSON := fs.Bool("json", false, "list, show: print JSON")
	var addrs, props stringList
	fs.Var(&addrs, "address", "a tinc address `ADDR[:PORT][@ISLAND]` (repeatable; replaces the list)")
	fs.Var(&props, "property", "a property `KEY=VALUE` (repeatable; KEY= removes it)")
	pos, err := parseInterspersed(fs, args, env.Stdout)
	if err != nil {
		return err
	}
	if len(pos) == 0 {
		return usagef("registry %s: missing action: add, set, rm, list or show", kind)
	}
	given := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { given[f.Name] = true })
	action := pos[0]
	needID := action != "list"
	if needID && len(pos) != 2 || !needID && len(pos) != 1 {
		return usagef("registry %s %s: want %s", kind, action, map[bool]string{true: "one ID", false: "no arguments"}[needID])
	}
	var id uint64
	if needID {
		if id, err = parseMemberID(kind, pos[1]); err != nil {
			return usageError{err}
		}
	}
	writes := []string{"name", "island", "pubkey", "backend", "description", "no-addresses", "address", "property"}
	switch action {
	case "add", "set":
	case "rm", "list", "show":
		for _, w := range writes {
			if given[w] {
				return usagef("registry %s %s: --%s is for add and set", kind, action, w)
			}
		}
	default:
		return usagef("registry %s: unknown action %q: want add, set, rm, list or show", kind, action)
	}
	if kind == "island" {
		for _, w := range []string{"island", "pubkey", "backend", "no-addresses", "address", "property"} {
			if given[w] {
				return usagef("registry island: --%s is for members", w)
			}
		}
	} else if given["description"] {
		return usagef("registry %s: --description is for islands", kind)
	}
	if *noAddrs && len(addrs) > 0 {
		return usagef("--no-addresses and --address exclude each other")
	}
	db, err := registrydb.Open(ctx, *dbURL, env.Logger)
	if err != nil {
		return err
	}
	defer db.Close()
	if kind == "island" {
		return islandAction(ctx, env, db, action, id, *name, *desc, given, *asJSON)
	}
	switch action {
	case "list", "show":
		f, _, err := db.Testbed(ctx)
		if err != nil {
			return err
		}
		return printMembers(env, f, kind, id, action == "show", *asJSON)
	case "rm":
		v, err := db.DeleteMember(ctx, actor(), kind, id)
		if err != nil {
			return err
		}
		fmt.Fprintf(env.Stderr, "removed %s %d (version %d)\n", kind, id, v)
		return nil
	}
	var m registry.FileMember
	if action == "set" {
		if m, err = db.Member(ctx, kind, id); err != nil {
			return err
		}
	} else {
		m = registry.FileMember{ID: id, Name: fmt.Sprintf("%s-%d", kind, id)}
	}
	if given["name"] {
		m.Name = *name
	}
	if given["island"] {
		if m.Island, err = strconv.ParseUint(*island, 10, 64); err != nil {
			return usagef("--island %q: want an island id", *island)
		}
	}
	if given["backend"] {
		if *backend != "tinc" && *backend != "native" {
			return usagef("--backend %q: want tinc or native", *backend)
		}
		m.Backend = *backend
	}
	if given["pubkey"] {
		if *pubkey == "none" {
			m.Tinc = nil
		} else {
			b, err := os.ReadFile(*pubkey)
			if err != nil {
				return fmt.Errorf("read the public key: %w", err)
			}
			t := &registry.FileTinc{PubKey: string(b)}
			if m.Tinc != nil {
				t.Addresses = m.Tinc.Addresses
			}
			m.Tinc = t
		}
	}
	if *noAddrs || len(addrs) > 0 {
		if m.Tinc == nil {
			return fmt.Errorf("%s %d has no key: give --pubkey too (a tinc address goes with a key)", kind, id)
		}
		m.Tinc.Addresses = nil
		for _, a := range addrs {
			fa, err := parseTincAddress(a)
			if err != nil {
				return usageError{err}
			}
			m.Tinc.Addresses = append(m.Tinc.Addresses, fa)
		}
	}
	for _, p := range props {
		k, v, ok := strings.Cut(p, "=")
		if !ok || k == "" {
			return usagef("--property %q: want KEY=VALUE", p)
		}
		if v == "" {
			delete(m.Properties, k)
			continue
		}
		if m.Properties == nil {
			m.Properties = map[string]string{}
		}
		m.Properties[k] = v
	}
	v, warnings, err := db.PutMember(ctx, actor(), kind, m, action == "add")
	if err != nil {
		return err
	}
	for _, w := range warnings {
		fmt.Fprintf(env.Stderr, "warning: %s\n", w)
	}
	verb := map[string]string{"add": "added", "set": "changed"}[action]
	fmt.Fprintf(env.Stderr, "%s %s %d (version %d)\n", verb, kind, id, v)
	return nil
}

// parseMemberID reads a member's id: a node's is decimal or the
// firmware's four hex digits.
func parseMemberID(kind, s string) (uint64, error) {
	if kind == registrydb.KindNode {
		n, err := addressing.ParseNodeID(s)
		return uint64(n), err
	}
	return addressing.ParseID48(kind, s)
}

// parseTincAddress reads ADDR[:PORT][@ISLAND] (an IPv6 literal in brackets
// when it has a port: [2001:db8::1]:656).
func parseTincAddress(s string) (registry.FileAddress, error) {
	var a registry.FileAddress
	rest := s
	if i := strings.LastIndexByte(rest, '@'); i >= 0 {
		n, err := strconv.ParseUint(rest[i+1:], 10, 64)
		if err != nil {
			return a, fmt.Errorf("--address %q: island %q: want an id", s, rest[i+1:])
		}
		a.Island, rest = n, rest[:i]
	}
	if ap, err := netip.ParseAddrPort(rest); err == nil {
		a.Addr, a.Port = ap.Addr().String(), int(ap.Port())
		return a, nil
	}
	if host, port, ok := strings.Cut(rest, ":"); ok && !strings.Contains(port, ":") {
		n, err := strconv.Atoi(port)
		if err != nil {
			return a, fmt.Errorf("--address %q: port %q: want a number", s, port)
		}
		a.Addr, a.Port = host, n
		return a, nil
	}
	a.Addr = strings.Trim(rest, "[]")
	if a.Addr == "" {
		return a, fmt.Errorf("--address %q: no address", s)
	}
	return a, nil
}

// printMembers lists the members of a kind, or shows one.
func printMembers(env Env, f *registry.File, kind string, id uint64, one, asJSON bool) error {
	var ms []registry.FileMember
	switch kind {
	case registrydb.KindServer:
		ms = f.Servers
	case registrydb.KindNode:
		ms = f.Nodes
	case registrydb.KindHost:
		ms = f.Hosts
	}
	if one {
		i := slices.IndexFunc(ms, func(m registry.FileMember) bool { return m.ID == id })
		if i < 0 {
			return fmt.Errorf("%s %d: %w", kind, id, registrydb.ErrNotFound)
		}
		ms = ms[i : i+1]
	}
	if asJSON {
		var v any = ms
		if one {
			v = ms[0]
		} else if ms == nil {
			v = []registry.FileMember{}
		}
		return printJSON(env, v)
	}
	if one {
		m := ms[0]
		fmt.Fprintf(env.Stdout, "%s %d\nname       %s\nisland     %d\n", kind, m.ID, m.Name, m.Island)
		if m.Backend != "" {
			fmt.Fprintf(env.Stdout, "backend    %s\n", m.Backend)
		}
		if m.Tinc == nil {
			fmt.Fprintf(env.Stdout, "tinc       no key\n")
		} else {
			fmt.Fprintf(env.Stdout, "tinc name  %s\n", m.Tinc.Name)
			for _, a := range m.Tinc.Addresses {
				fmt.Fprintf(env.Stdout, "address    %s %d (island %d)\n", a.Addr, a.Port, a.Island)
			}
			fmt.Fprintf(env.Stdout, "%s", m.Tinc.PubKey)
		}
		keys := make([]string, 0, len(m.Properties))
		for k := range m.Properties {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		for _, k := range keys {
			fmt.Fprintf(env.Stdout, "property   %s=%s\n", k, m.Properties[k])
		}
		return nil
	}
	fmt.Fprintf(env.Stdout, "%-8s %-24s %-7s %-12s %s\n", "ID", "NAME", "ISLAND", "TINC", "ADDRESSES")
	for _, m := range ms {
		tinc, addrs := "-", ""
		if m.Tinc != nil {
			tinc = m.Tinc.Name
			var as []string
			for _, a := range m.Tinc.Addresses {
				as = append(as, a.Addr)
			}
			addrs = strings.Join(as, " ")
		}
		fmt.Fprintf(env.Stdout, "%-8d %-24s %-7d %-12s %s\n", m.ID, m.Name, m.Island, tinc, addrs)
	}
	return nil
}

// islandAction runs "registry island add|set|rm|list".
func islandAction(ctx context.Context, env Env, db *registrydb.DB, action string, id uint64, name, desc string, given map[string]bool, asJSON bool) error {
	switch action {
	case "list":
		f, _, err := db.Testbed(ctx)
		if err != nil {
			return err
		}
		if asJSON {
			isl := f.Islands
			if isl == nil {
				isl = []registry.FileIsland{}
			}
			return printJSON(env, isl)
		}
		fmt.Fprintf(env.Stdout, "%-8s %-24s %s\n", "ID", "NAME", "DESCRIPTION")
		for _, is := range f.Islands {
			fmt.Fprintf(env.Stdout, "%-8d %-24s %s\n", is.ID, is.Name, is.Description)
		}
		return nil
	case "show":
		return usagef("registry island show: use list")
	case "rm":
		v, err := db.DeleteIsland(ctx, actor(), id)
		if err != nil {
			return err
		}
		fmt.Fprintf(env.Stderr, "removed island %d (version %d)\n", id, v)
		return nil
	}
	is := registry.FileIsland{ID: id, Name: name, Description: desc}
	if action == "set" {
		f, _, err := db.Testbed(ctx)
		if err != nil {
			return err
		}
		i := slices.IndexFunc(f.Islands, func(x registry.FileIsland) bool { return x.ID == id })
		if i < 0 {
			return fmt.Errorf("island %d: %w", id, registrydb.ErrNotFound)
		}
		is = f.Islands[i]
		if given["name"] {
			is.Name = name
		}
		if given["description"] {
			is.Description = desc
		}
	} else if !given["name"] {
		return usagef("registry island add: want --name")
	}
	v, err := db.PutIsland(ctx, actor(), is, action == "add")
	if err != nil {
		return err
	}
	fmt.Fprintf(env.Stderr, "%s island %d (version %d)\n", map[string]string{"add": "added", "set": "changed"}[action], id, v)
	return nil
}

// printJSON prints v as indented JSON on stdout.
func printJSON(env Env, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return fmt.Errorf("encode: %w", err)
	}
	_, err = fmt.Fprintf(env.Stdout, "%s\n", b)
	return err
}
