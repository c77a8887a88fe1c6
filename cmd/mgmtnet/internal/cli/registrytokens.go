//go:build !nodb && !mips && !mipsle && !mips64 && !mips64le

package cli

import (
	"context"
	"fmt"
	"strconv"
	"time"

	"github.com/confine-project/mgmtnet/addressing"
	"github.com/confine-project/mgmtnet/registrydb"
)

const registryTokenSynopsis = `  mgmtnet registry token create --role operator|node-admin|host-owner
                                [--node ID]... [--host ID]... [--name TEXT] [--db URL]
  mgmtnet registry token list [--json] [--db URL]
  mgmtnet registry token revoke ID [--db URL]

API tokens of the registry database. create prints the token's key once, on
stdout: the database keeps only its SHA-256, so a lost key is revoked and
made again. An operator's token may write everything; a node admin's the
key and addresses of its --node ids; a host owner's its --host ids.
revoke stops a token at once. Every change is in the audit log, without
the key. "registry serve --db" takes them as "Authorization: Token <key>".

Examples:
  mgmtnet registry token create --role operator --name "testbed operator"
  mgmtnet registry token create --role node-admin --node 001f --node 32 --name alice
  mgmtnet registry token list
  mgmtnet registry token revoke 2
`

// runRegistryToken runs "registry token ...".
func runRegistryToken(ctx context.Context, env Env, args []string) error {
	fs := newFlagSet("registry token", registryTokenSynopsis, env.Stderr)
	dbURL := fs.String("db", defaultRegistryDB, "the registry database `URL`")
	role := fs.String("role", "", "create: the token's `ROLE`: operator, node-admin or host-owner")
	name := fs.String("name", "", "create: what the token is for, `TEXT`")
	asJSON := fs.Bool("json", false, "list: print JSON")
	var nodes, hosts stringList
	fs.Var(&nodes, "node", "create: a node `ID` a node admin may write (repeatable)")
	fs.Var(&hosts, "host", "create: a host `ID` a host owner may write (repeatable)")
	pos, err := parseInterspersed(fs, args, env.Stdout)
	if err != nil {
		return err
	}
	if len(pos) == 0 {
		return usagef("registry token: missing action: create, list or revoke")
	}
	scope, err := scopeOf(nodes, hosts)
	if err != nil {
		return err
	}
	switch pos[0] {
	case "create":
		if len(pos) != 1 || *role == "" {
			return usagef("token create: want --role and no arguments")
		}
	case "list", "revoke":
		if *role != "" || *name != "" || len(scope) > 0 {
			return usagef("token %s: --role, --name, --node and --host are for create", pos[0])
		}
		if want := map[string]int{"list": 1, "revoke": 2}[pos[0]]; len(pos) != want {
			return usagef("token %s: want %s", pos[0], map[string]string{"list": "no arguments", "revoke": "one token ID"}[pos[0]])
		}
	default:
		return usagef("registry token: unknown action %q: want create, list or revoke", pos[0])
	}
	db, err := registrydb.Open(ctx, *dbURL, env.Logger)
	if err != nil {
		return err
	}
	defer db.Close()
	switch pos[0] {
	case "create":
		key, id, err := db.CreateToken(ctx, actor(), *name, *role, scope)
		if err != nil {
			return err
		}
		fmt.Fprintln(env.Stdout, key)
		fmt.Fprintf(env.Stderr, "created token %d (%s); its key, above, is shown only now\n", id, *role)
		return nil
	case "revoke":
		id, err := strconv.ParseInt(pos[1], 10, 64)
		if err != nil {
			return usagef("token revoke %q: want a token ID (registry token list)", pos[1])
		}
		if err := db.RevokeToken(ctx, actor(), id); err != nil {
			return err
		}
		fmt.Fprintf(env.Stderr, "revoked token %d\n", id)
		return nil
	}
	toks, err := db.Tokens(ctx)
	if err != nil {
		return err
	}
	if *asJSON {
		if toks == nil {
			toks = []registrydb.Token{}
		}
		return printJSON(env, toks)
	}
	fmt.Fprintf(env.Stdout, "%-4s %-11s %-20s %-10s %-20s %s\n", "ID", "ROLE", "CREATED", "STATE", "NAME", "SCOPE")
	for _, t := range toks {
		state := "active"
		if !t.Revoked.IsZero() {
			state = "revoked"
		}
		fmt.Fprintf(env.Stdout, "%-4d %-11s %-20s %-10s %-20s %v\n", t.ID, t.Role, t.Created.UTC().Format(time.RFC3339), state, t.Name, t.Scope)
	}
	return nil
}

const registryInviteSynopsis = `  mgmtnet registry invite (--node ID | --host ID) [--ttl 24h] [--db URL]

A one-time invite for a node or host that an operator has added (registry
node add): its key, printed once on stdout, lets the member register its
own public key, so that nobody copies keys off nodes. On the node:
"mgmtnet node-boot --enrol KEY" (or the UCI option mgmtnet.enrol_token)
uploads the node's public key at boot, over the registry's pinned TLS. The
invite is spent by its first use, and expires after --ttl.

Examples:
  mgmtnet registry node add 001f --island 1
  mgmtnet registry invite --node 001f --ttl 48h
`

// scopeOf is the scope of --node and --host ids.
func scopeOf(nodes, hosts []string) ([]string, error) {
	var scope []string
	for _, n := range nodes {
		id, err := addressing.ParseNodeID(n)
		if err != nil {
			return nil, usagef("--node %q: %w", n, err)
		}
		scope = append(scope, fmt.Sprintf("node %d", id))
	}
	for _, h := range hosts {
		id, err := addressing.ParseID48("host", h)
		if err != nil {
			return nil, usagef("--host %q: %w", h, err)
		}
		scope = append(scope, fmt.Sprintf("host %d", id))
	}
	return scope, nil
}

// runRegistryInvite runs "registry invite".
func runRegistryInvite(ctx context.Context, env Env, args []string) error {
	fs := newFlagSet("registry invite", registryInviteSynopsis, env.Stderr)
	dbURL := fs.String("db", defaultRegistryDB, "the registry database `URL`")
	node := fs.String("node", "", "the node's `ID` (decimal, or the firmware's four hex digits)")
	host := fs.String("host", "", "the host's `ID`")
	ttl := fs.Duration("ttl", 24*time.Hour, "how long the invite is valid")
	pos, err := parseInterspersed(fs, args, env.Stdout)
	if err != nil {
		return err
	}
	if len(pos) != 0 || (*node == "") == (*host == "") {
		return usagef("registry invite: want exactly one of --node ID or --host ID, and no arguments")
	}
	if *ttl <= 0 {
		return usagef("--ttl %v: want a positive duration", *ttl)
	}
	kind, idText := registrydb.KindNode, *node
	if *host != "" {
		kind, idText = registrydb.KindHost, *host
	}
	id, err := parseMemberID(kind, idText)
	if err != nil {
		return usageError{err}
	}
	db, err := registrydb.Open(ctx, *dbURL, env.Logger)
	if err != nil {
		return err
	}
	defer db.Close()
	key, err := db.CreateInvite(ctx, actor(), kind, id, *ttl)
	if err != nil {
		return err
	}
	fmt.Fprintln(env.Stdout, key)
	fmt.Fprintf(env.Stderr, "invite for %s %d, valid until %s, spent by its first use; on the node: mgmtnet node-boot --enrol KEY\n",
		kind, id, time.Now().Add(*ttl).UTC().Format(time.RFC3339))
	return nil
}
