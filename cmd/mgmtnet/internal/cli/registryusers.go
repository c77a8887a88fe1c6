//go:build !nodb && !mips && !mipsle && !mips64 && !mips64le

package cli

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/confine-project/mgmtnet/registrydb"
)

const registryUserSynopsis = `  mgmtnet registry user add NAME --role operator|node-admin|host-owner
                            [--node ID]... [--host ID]... [--password-file FILE|-]
                            [--django-hash HASH] [--db URL]
  mgmtnet registry user list [--json] [--db URL]
  mgmtnet registry user rm NAME [--db URL]

Users of the registry database trade their name and password for an API
token of their role, as at the 2015 controller: POST /api-token-auth/ with
username and password (a form or JSON) answers {"token": "<key>"}. Roles
and --node/--host scopes are a token's ("mgmtnet registry token --help").

add reads the password (at least 12 characters) from the first line of
--password-file, "-" for standard input (the default); it is never a flag,
so it stays out of shell history and ps. --django-hash takes a hash from
the old controller's auth_user table instead (pbkdf2_sha256$...), so users
keep their passwords when they move. Passwords are kept as Django keeps
them (PBKDF2-HMAC-SHA256, 600 000 iterations). Each login makes a new
token; rm removes the user and revokes every token it got.

Examples:
  mgmtnet registry user add alice --role node-admin --node 001f --password-file alice.pw
  echo 'correct horse battery' | mgmtnet registry user add ops --role operator
  mgmtnet registry user list
  mgmtnet registry user rm alice
`

// runRegistryUser runs "registry user ...".
func runRegistryUser(ctx context.Context, env Env, args []string) error {
	fs := newFlagSet("registry user", registryUserSynopsis, env.Stderr)
	dbURL := fs.String("db", defaultRegistryDB, "the registry database `URL`")
	role := fs.String("role", "", "add: the user's `ROLE`: operator, node-admin or host-owner")
	pwFile := fs.String("password-file", "-", "add: read the password from the first line of `FILE` (- for standard input)")
	django := fs.String("django-hash", "", "add: the password's `HASH` from the old controller (pbkdf2_sha256$...), instead of a password")
	asJSON := fs.Bool("json", false, "list: print JSON")
	var nodes, hosts stringList
	fs.Var(&nodes, "node", "add: a node `ID` a node admin may write (repeatable)")
	fs.Var(&hosts, "host", "add: a host `ID` a host owner may write (repeatable)")
	pos, err := parseInterspersed(fs, args, env.Stdout)
	if err != nil {
		return err
	}
	if len(pos) == 0 {
		return usagef("registry user: missing action: add, list or rm")
	}
	scope, err := scopeOf(nodes, hosts)
	if err != nil {
		return err
	}
	want := map[string]int{"add": 2, "list": 1, "rm": 2}
	n, ok := want[pos[0]]
	switch {
	case !ok:
		return usagef("registry user: unknown action %q: want add, list or rm", pos[0])
	case len(pos) != n:
		return usagef("registry user %s: want %s", pos[0], map[bool]string{true: "one NAME", false: "no arguments"}[n == 2])
	case pos[0] == "add" && *role == "":
		return usagef("registry user add: want --role")
	case pos[0] != "add" && (*role != "" || len(scope) > 0 || *django != ""):
		return usagef("registry user %s: --role, --node, --host and --django-hash are for add", pos[0])
	}
	var password string
	if pos[0] == "add" && *django == "" {
		if password, err = readPassword(env, *pwFile); err != nil {
			return err
		}
	}
	db, err := registrydb.Open(ctx, *dbURL, env.Logger)
	if err != nil {
		return err
	}
	defer db.Close()
	switch pos[0] {
	case "add":
		if err := db.CreateUser(ctx, actor(), pos[1], password, *django, *role, scope); err != nil {
			return err
		}
		fmt.Fprintf(env.Stderr, "added user %s (%s)\n", pos[1], *role)
		return nil
	case "rm":
		if err := db.DeleteUser(ctx, actor(), pos[1]); err != nil {
			return err
		}
		fmt.Fprintf(env.Stderr, "removed user %s and revoked its tokens\n", pos[1])
		return nil
	}
	users, err := db.Users(ctx)
	if err != nil {
		return err
	}
	if *asJSON {
		if users == nil {
			users = []registrydb.User{}
		}
		return printJSON(env, users)
	}
	fmt.Fprintf(env.Stdout, "%-20s %-11s %-20s %s\n", "NAME", "ROLE", "CREATED", "SCOPE")
	for _, u := range users {
		fmt.Fprintf(env.Stdout, "%-20s %-11s %-20s %v\n", u.Name, u.Role, u.Created.UTC().Format(time.RFC3339), u.Scope)
	}
	return nil
}

// readPassword reads the first line of path ("-": standard input).
func readPassword(env Env, path string) (string, error) {
	var r io.Reader = env.Stdin
	if path != "-" {
		f, err := os.Open(path)
		if err != nil {
			return "", fmt.Errorf("--password-file: %w", err)
		}
		defer f.Close()
		r = f
	}
	if r == nil {
		return "", usagef("registry user add: no password: give --password-file FILE")
	}
	line, err := bufio.NewReader(r).ReadString('\n')
	if err != nil && err != io.EOF {
		return "", fmt.Errorf("read the password: %w", err)
	}
	line = strings.TrimRight(line, "\r\n")
	if line == "" {
		return "", usagef("registry user add: an empty password (give it on the first line of --password-file, or on standard input)")
	}
	return line, nil
}
