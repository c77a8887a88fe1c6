package cli

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"

	"github.com/confine-project/mgmtnet/mesh/registry"
	"github.com/confine-project/mgmtnet/tincgen"
)

const registrySynopsis = `  mgmtnet registry serve [--db URL | --testbed FILE | --synthetic SPEC] [--listen ADDR]
                         [--tls-cert FILE --tls-key FILE] [--per-page N]
  mgmtnet registry init --prefix P/48 [--db URL]
  mgmtnet registry import --from FILE|URL [--db URL]
  mgmtnet registry export [--db URL] [--out FILE]
  mgmtnet registry backup FILE [--db URL]
  mgmtnet registry log [--db URL] [--limit N] [--json]
  mgmtnet registry node|server|host|island add|set|rm|list|show ...
  mgmtnet registry token create|list|revoke ...
  mgmtnet registry user add|list|rm ...
  mgmtnet registry invite (--node ID | --host ID) [--ttl 24h]
  mgmtnet registry synth SPEC [--out FILE]

serve answers the CONFINE registry REST API as the 2015 controller v1.0
does (or v0.11.2 to v0.11.9, for a testbed file with "dialect": "v0"):
gzip, its ETags and 304s, Link headers and pagination, at http://ADDR/api/,
from the registry database (the default), a testbed file or a synthetic
testbed. It stops on SIGINT or SIGTERM. From a database it also takes
writes with API tokens (PATCH, DELETE, POST of members; enrolment with an
invite; POST /api-token-auth/ for users' tokens) and offers the change feed
(changes/, linked from the base), and checks the database for a new version
four times a second, so a write elsewhere (the admin CLI, an import,
another instance sharing a PostgreSQL database) is served within about a
quarter of a second. A testbed file or a synthetic testbed is read-only. A
testbed file is re-read when it changes: its mtime and size are checked at
most once a second, on requests, and on SIGHUP. A file that no longer loads
keeps the last good testbed served, and the log says why.

--db is sqlite:PATH (default ` + defaultRegistryDB + `; the file
is created) or postgres://... (a pgx connection string: several instances
can share one database). The schema is migrated at start; a schema newer
than this binary is refused.

init starts an empty testbed in a database that holds none, with its
management /48. import replaces the database's testbed with a testbed file, or with what a
live registry (the 2015 controller, or another mgmtnet) answers at URL: the
migration path off the old controller. export writes the database's testbed
as a testbed file (stdout by default). backup writes an online, consistent
copy of the database, SQLite or PostgreSQL, to a new SQLite FILE: the
testbed at its version and the audit log. node, server, host and island add,
change, remove, list and show members and islands, checked as clients check
them ("mgmtnet registry node --help"). token creates, lists and revokes API
tokens ("mgmtnet registry token --help"); user adds users who trade a
password for a token ("mgmtnet registry user --help"). log prints the audit log, newest
first: every write, who made it ("cli:<user>"), when, and the testbed
before and after.

synth writes a synthetic testbed file (stdout by default) to edit or serve.

SPEC is nodes=N,hosts=N,servers=N with optional keys=N (distinct RSA keys,
assigned round-robin; default min(members, 16)), keybits=N (default 2048),
and prefix=P/48 (default fd65:fc41:c50f::/48). Nodes get ids 1..N,
servers 2..S+1 (id 2 is tinc name "server"), hosts 1..H.

Examples:
  mgmtnet registry init --prefix fdf5:5351:1dfd::/48
  mgmtnet registry import --from https://controller.example/api/ --db sqlite:/var/lib/mgmtnet/registry.db
  mgmtnet registry serve --db sqlite:/var/lib/mgmtnet/registry.db --listen [::]:8080
  mgmtnet registry export --out testbed.json
  mgmtnet registry backup /var/backups/registry-$(date +%F).db
  mgmtnet registry log --limit 5
  mgmtnet registry serve --testbed mesh/registry/testdata/testbed.json
  mgmtnet registry serve --synthetic nodes=65520,hosts=1000,servers=10 --listen [::1]:8080
  mgmtnet registry serve --testbed testbed.json --tls-cert reg.crt --tls-key reg.key --listen :443
  mgmtnet registry synth nodes=100,servers=2,hosts=3,keys=4 --out testbed.json
`

func runRegistry(ctx context.Context, env Env, args []string) error {
	if len(args) > 0 {
		switch args[0] {
		case "node", "server", "host", "island":
			return runRegistryMember(ctx, env, args[0], args[1:])
		case "token":
			return runRegistryToken(ctx, env, args[1:])
		case "user":
			return runRegistryUser(ctx, env, args[1:])
		case "invite":
			return runRegistryInvite(ctx, env, args[1:])
		}
	}
	fs := newFlagSet("registry", registrySynopsis, env.Stderr)
	dbURL := fs.String("db", "", "serve, import, export: the registry database `URL`, sqlite:PATH or postgres://... (default "+defaultRegistryDB+")")
	from := fs.String("from", "", "import: a testbed `FILE`, or the base URI of a live registry")
	testbed := fs.String("testbed", "", "serve: testbed `FILE` (JSON)")
	synthetic := fs.String("synthetic", "", "serve: a synthetic testbed of this `SPEC`")
	listen := fs.String("listen", "127.0.0.1:8080", "serve: `ADDR` to listen on (host:port)")
	tlsCert := fs.String("tls-cert", "", "serve: TLS certificate `FILE` (PEM); serve HTTPS")
	tlsKey := fs.String("tls-key", "", "serve: TLS private key `FILE` (PEM)")
	perPage := fs.Int("per-page", 0, "serve: paginate lists with this page `size` unless a client asks for one (0: unpaginated, like the controller)")
	out := fs.String("out", "", "synth, export: write to `FILE` instead of stdout")
	limit := fs.Int("limit", 20, "log: the newest `N` entries (0: all)")
	prefix := fs.String("prefix", "", "init: the testbed's management `/48`")
	asJSON := fs.Bool("json", false, "log: print the entries as a JSON array")
	pos, err := parseInterspersed(fs, args, env.Stdout)
	if err != nil {
		return err
	}
	if len(pos) == 0 {
		return usagef("missing form: serve, init, import, export, backup, log or synth")
	}
	if pos[0] != "log" && (*limit != 20 || *asJSON) {
		return usagef("--limit and --json are for registry log")
	}
	if pos[0] != "init" && *prefix != "" {
		return usagef("--prefix is for registry init")
	}
	switch pos[0] {
	case "serve":
		if len(pos) != 1 {
			return usagef("serve takes flags only, got %q", pos[1:])
		}
		if *out != "" {
			return usagef("--out is for registry synth")
		}
		n := 0
		for _, v := range []string{*dbURL, *testbed, *synthetic} {
			if v != "" {
				n++
			}
		}
		if n > 1 {
			return usagef("serve: give one of --db URL, --testbed FILE or --synthetic SPEC")
		}
		if *from != "" {
			return usagef("--from is for registry import")
		}
		if n == 0 {
			*dbURL = defaultRegistryDB
		}
		if (*tlsCert == "") != (*tlsKey == "") {
			return usagef("serve: --tls-cert and --tls-key go together")
		}
		if *perPage < 0 {
			return usagef("--per-page %d: want 0 or more", *perPage)
		}
		return registryServe(ctx, env, serveConfig{
			db: *dbURL, testbed: *testbed, synthetic: *synthetic, listen: *listen,
			tlsCert: *tlsCert, tlsKey: *tlsKey, perPage: *perPage,
		})
	case "backup":
		if len(pos) != 2 {
			return usagef("backup: want exactly one FILE")
		}
		if *testbed != "" || *synthetic != "" || *from != "" || *out != "" {
			return usagef("backup takes only FILE and --db")
		}
		if *dbURL == "" {
			*dbURL = defaultRegistryDB
		}
		return registryBackup(ctx, env, *dbURL, pos[1])
	case "init":
		if len(pos) != 1 || *prefix == "" {
			return usagef("init: want --prefix P/48 and no arguments")
		}
		if *testbed != "" || *synthetic != "" || *from != "" || *out != "" {
			return usagef("init takes only --prefix and --db")
		}
		if *dbURL == "" {
			*dbURL = defaultRegistryDB
		}
		return registryInit(ctx, env, *dbURL, *prefix)
	case "log":
		if len(pos) != 1 {
			return usagef("log takes flags only, got %q", pos[1:])
		}
		if *limit < 0 {
			return usagef("--limit %d: want 0 or more", *limit)
		}
		if *dbURL == "" {
			*dbURL = defaultRegistryDB
		}
		return registryLog(ctx, env, *dbURL, *limit, *asJSON)
	case "import", "export":
		if len(pos) != 1 {
			return usagef("%s takes flags only, got %q", pos[0], pos[1:])
		}
		if *testbed != "" || *synthetic != "" || *tlsCert != "" || *tlsKey != "" || *perPage != 0 {
			return usagef("%s takes only --db and %s", pos[0], map[string]string{"import": "--from", "export": "--out"}[pos[0]])
		}
		if *dbURL == "" {
			*dbURL = defaultRegistryDB
		}
		if pos[0] == "import" {
			if *from == "" || *out != "" {
				return usagef("import: want --from FILE|URL (and no --out)")
			}
			return registryImport(ctx, env, *dbURL, *from)
		}
		if *from != "" {
			return usagef("export: --from is for registry import")
		}
		return registryExport(ctx, env, *dbURL, *out)
	case "synth":
		if len(pos) != 2 {
			return usagef("synth: want exactly one SPEC, e.g. nodes=100,servers=1,hosts=2")
		}
		if *testbed != "" || *synthetic != "" || *tlsCert != "" || *tlsKey != "" || *perPage != 0 || *dbURL != "" || *from != "" {
			return usagef("synth takes only SPEC and --out")
		}
		spec, err := registry.ParseSyntheticSpec(pos[1])
		if err != nil {
			return usageError{err}
		}
		return registrySynth(env, spec, *out)
	}
	return usagef("unknown form %q: want serve, init, import, export, backup, log or synth", pos[0])
}

func registrySynth(env Env, spec registry.SyntheticSpec, out string) error {
	f, err := registry.Synthetic(spec)
	if err != nil {
		return err
	}
	return writeTestbedFile(env, f, out)
}

// writeTestbedFile writes f as a testbed file to out, or to stdout when out
// is "".
func writeTestbedFile(env Env, f *registry.File, out string) error {
	b, err := json.MarshalIndent(f, "", "  ")
	if err != nil {
		return fmt.Errorf("encode testbed: %w", err)
	}
	b = append(b, '\n')
	if out == "" {
		_, err := env.Stdout.Write(b)
		return err
	}
	// Through a synced temporary file renamed into place (fetchhosts.go):
	// a server watching out never reads half a file, and the mode is 0644
	// rather than CreateTemp's 0600.
	return tincgen.WriteFileAtomic(out, b, 0o644)
}

// dbServer is what "registry serve --db" serves from (dbServing, in the
// builds that have the database).
type dbServer interface {
	// Handler is the write API in front of srv.
	Handler(srv *registry.Server) http.Handler
	// Follow serves the database's new versions until stop closes.
	Follow(ctx context.Context, srv *registry.Server, stop <-chan struct{})
	Close() error
}

// defaultRegistryDB is the database of "mgmtnet registry" when --db is not
// given (registrydb.DefaultURL).
const defaultRegistryDB = "sqlite:/var/lib/mgmtnet/registry.db"

type serveConfig struct {
	db, testbed, synthetic string
	listen                 string
	tlsCert, tlsKey        string
	perPage                int
}

func registryServe(ctx context.Context, env Env, c serveConfig) error {
	log := env.Logger
	var f *registry.File
	var err error
	var dbs dbServer
	if c.db != "" {
		if f, dbs, err = serveFromDB(ctx, c.db, log); err != nil {
			return err
		}
		defer dbs.Close()
	} else if c.synthetic != "" {
		spec, err := registry.ParseSyntheticSpec(c.synthetic)
		if err != nil {
			return usagef("--synthetic: %w", err)
		}
		f, err = registry.Synthetic(spec)
		if err != nil {
			return err
		}
	} else if f, err = registry.LoadFile(c.testbed); err != nil {
		return err
	}
	srv := registry.NewServer(f, log)
	srv.DefaultPerPage = c.perPage
	var handler http.Handler = srv
	if dbs != nil {
		// The write API in front; and follow the database: a write
		// anywhere (an import, another instance on the same
		// PostgreSQL) is served within a second.
		handler = dbs.Handler(srv)
		stop := make(chan struct{})
		var wg sync.WaitGroup
		wg.Go(func() { dbs.Follow(ctx, srv, stop) })
		defer func() {
			close(stop)
			wg.Wait()
		}()
	}
	if c.testbed != "" {
		rl := registry.NewFileReloader(srv, c.testbed, log)
		handler = rl
		// The SIGHUP goroutine ends when registryServe returns, however
		// it returns, and registryServe waits for it: a reload it runs
		// does not outlive the server.
		hup := make(chan os.Signal, 1)
		signal.Notify(hup, syscall.SIGHUP)
		stop := make(chan struct{})
		var wg sync.WaitGroup
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				case <-hup:
					rl.Check(true)
				}
			}
		})
		defer func() {
			signal.Stop(hup)
			close(stop)
			wg.Wait()
		}()
	}

	hs := &http.Server{
		Handler:           handler,
		ReadHeaderTimeout: 10 * time.Second,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
		BaseContext:       func(net.Listener) context.Context { return ctx },
	}
	scheme := "http"
	if c.tlsCert != "" {
		cert, err := tls.LoadX509KeyPair(c.tlsCert, c.tlsKey)
		if err != nil {
			return fmt.Errorf("load TLS certificate: %w", err)
		}
		hs.TLSConfig = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
		scheme = "https"
	}
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", c.listen)
	if err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	servers, nodes, hosts := f.Count()
	fmt.Fprintf(env.Stderr, "serving %d nodes, %d servers, %d hosts at %s://%s%s\n", nodes, servers, hosts, scheme, ln.Addr(), registry.PathPrefix)

	errc := make(chan error, 1)
	go func() {
		if hs.TLSConfig != nil {
			errc <- hs.ServeTLS(ln, "", "")
		} else {
			errc <- hs.Serve(ln)
		}
	}()
	select {
	case err := <-errc:
		return fmt.Errorf("serve: %w", err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := hs.Shutdown(sctx); err != nil {
		return fmt.Errorf("shut down: %w", err)
	}
	if err := <-errc; err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("serve: %w", err)
	}
	log.Info("registry stopped")
	return nil
}
