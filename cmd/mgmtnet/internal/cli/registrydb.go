//go:build !nodb && !mips && !mipsle && !mips64 && !mips64le

package cli

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"os/user"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/confine-project/mgmtnet/addressing"
	"github.com/confine-project/mgmtnet/mesh/registry"
	"github.com/confine-project/mgmtnet/registryapi"
	"github.com/confine-project/mgmtnet/registrydb"
)

// The registry database, in every build but a node's (tag nodb, and MIPS,
// for which modernc.org/sqlite does not build): it adds about 8 MB.

// dbPollInterval is how often "registry serve --db" asks the database for
// its version, to see writes that other instances or the admin CLI made:
// one row, so cheap at any testbed size. A new version wakes the change
// feed's waiting readers at once; the read API serves it once the
// testbed is read again.
const dbPollInterval = 250 * time.Millisecond

// serveFromDB opens the database of "registry serve --db" and reads its
// testbed.
func serveFromDB(ctx context.Context, url string, log *slog.Logger) (*registry.File, dbServer, error) {
	db, err := registrydb.Open(ctx, url, log)
	if err != nil {
		return nil, nil, err
	}
	f, version, err := db.Testbed(ctx)
	if err != nil {
		db.Close()
		return nil, nil, err
	}
	return f, &dbServing{db: db, log: log, have: version}, nil
}

// dbServing is "registry serve --db": the database, the version served,
// and the write API in front of the read API.
type dbServing struct {
	db  *registrydb.DB
	log *slog.Logger
	api *registryapi.Handler

	mu      sync.Mutex
	have    uint64
	failing bool
}

func (s *dbServing) Close() error { return s.db.Close() }

// Handler is the write API (registryapi) in front of srv; a write is
// served by this instance at once, and by others sharing the database
// within dbPollInterval.
func (s *dbServing) Handler(srv *registry.Server) http.Handler {
	api := registryapi.New(s.db, srv, s.log)
	api.Written = func(ctx context.Context, _ uint64) { s.refresh(ctx, srv) }
	srv.Links = append(srv.Links, registryapi.Link)
	s.mu.Lock()
	s.api = api
	s.mu.Unlock()
	return api
}

// Follow serves each new version of the database's testbed until stop
// closes.
func (s *dbServing) Follow(ctx context.Context, srv *registry.Server, stop <-chan struct{}) {
	t := time.NewTicker(dbPollInterval)
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case <-ctx.Done():
			return
		case <-t.C:
		}
		s.refresh(ctx, srv)
	}
}

// refresh serves the database's version when it is not the one served. A
// version that does not read keeps the last one served.
func (s *dbServing) refresh(ctx context.Context, srv *registry.Server) {
	s.mu.Lock()
	defer s.mu.Unlock()
	v, err := s.db.Version(ctx)
	if err == nil && v == s.have {
		return
	}
	if err == nil && s.api != nil {
		// The feed reads the database itself: its readers need not wait
		// for the testbed to be read again.
		s.api.Notify()
	}
	var f *registry.File
	if err == nil {
		// What changed since the version served, put over it: a write
		// costs what it wrote, not a read of the whole testbed. After an
		// import (the feed cannot say what changed), everything.
		if c, cerr := s.db.Changes(ctx, s.have); cerr == nil {
			f, v = c.Apply(srv.File()), c.Version
		} else if !errors.Is(cerr, registrydb.ErrFeedGone) {
			err = cerr
		}
	}
	if err == nil && f == nil {
		f, v, err = s.db.Testbed(ctx)
	}
	if err != nil {
		if !s.failing {
			s.log.Warn("registry database: still serving the last version read", "version", s.have, "err", err)
		}
		s.failing = true
		return
	}
	s.failing = false
	srv.SetFile(f)
	servers, nodes, hosts := f.Count()
	s.log.Info("registry database: serving a new version", "version", v, "nodes", nodes, "servers", servers, "hosts", hosts)
	s.have = v
}

// registryImport replaces the database's testbed with a file's or a live
// registry's.
func registryImport(ctx context.Context, env Env, dbURL, from string) error {
	var f *registry.File
	var notes []string
	var err error
	if strings.HasPrefix(from, "http://") || strings.HasPrefix(from, "https://") {
		f, notes, err = registrydb.FetchFile(ctx, from, registry.Options{Logger: env.Logger})
	} else {
		f, err = registry.LoadFile(from)
	}
	if err != nil {
		return err
	}
	for _, n := range notes {
		fmt.Fprintf(env.Stderr, "import: %s\n", n)
	}
	db, err := registrydb.Open(ctx, dbURL, env.Logger)
	if err != nil {
		return err
	}
	defer db.Close()
	v, err := db.Replace(ctx, f, actor(), from)
	if err != nil {
		return err
	}
	servers, nodes, hosts := f.Count()
	fmt.Fprintf(env.Stderr, "imported %d nodes, %d servers, %d hosts and %d islands from %s into %s (version %d)\n", nodes, servers, hosts, len(f.Islands), from, db, v)
	return nil
}

// registryExport writes the database's testbed as a testbed file.
func registryExport(ctx context.Context, env Env, dbURL, out string) error {
	db, err := registrydb.Open(ctx, dbURL, env.Logger)
	if err != nil {
		return err
	}
	defer db.Close()
	f, _, err := db.Testbed(ctx)
	if err != nil {
		return err
	}
	return writeTestbedFile(env, f, out)
}

// actor names who writes from the command line, for the audit log:
// "cli:<user>" (the user sudo ran as, when it did).
func actor() string {
	name := os.Getenv("SUDO_USER")
	if name == "" {
		if u, err := user.Current(); err == nil {
			name = u.Username
		} else {
			name = strconv.Itoa(os.Getuid())
		}
	}
	return "cli:" + name
}

// registryLog prints the newest limit entries of the audit log.
func registryLog(ctx context.Context, env Env, dbURL string, limit int, asJSON bool) error {
	db, err := registrydb.Open(ctx, dbURL, env.Logger)
	if err != nil {
		return err
	}
	defer db.Close()
	entries, err := db.Log(ctx, limit)
	if err != nil {
		return err
	}
	if asJSON {
		if entries == nil {
			entries = []registrydb.AuditEntry{}
		}
		return printJSON(env, entries)
	}
	for _, e := range entries {
		fmt.Fprintf(env.Stdout, "%d  %s  %s  %s %s\n", e.Seq, e.At.UTC().Format(time.RFC3339), e.Actor, e.Action, e.Object)
		if e.Before != "" {
			fmt.Fprintf(env.Stdout, "    before %s\n", e.Before)
		}
		if e.After != "" {
			fmt.Fprintf(env.Stdout, "    after  %s\n", e.After)
		}
	}
	return nil
}

// registryInit starts an empty testbed in the database.
func registryInit(ctx context.Context, env Env, dbURL, prefix string) error {
	p, err := addressing.ParsePrefix48(prefix)
	if err != nil {
		return usagef("--prefix %q: want an IPv6 /48 (e.g. fdf5:5351:1dfd::/48)", prefix)
	}
	db, err := registrydb.Open(ctx, dbURL, env.Logger)
	if err != nil {
		return err
	}
	defer db.Close()
	v, err := db.Init(ctx, actor(), p)
	if err != nil {
		return err
	}
	fmt.Fprintf(env.Stderr, "started an empty testbed on %s in %s (version %d)\n", p, db, v)
	return nil
}

// registryBackup writes an online, consistent SQLite copy of the database.
func registryBackup(ctx context.Context, env Env, dbURL, path string) error {
	db, err := registrydb.Open(ctx, dbURL, env.Logger)
	if err != nil {
		return err
	}
	defer db.Close()
	if err := db.Backup(ctx, path); err != nil {
		return err
	}
	fmt.Fprintf(env.Stderr, "backed up %s to %s (serve it with --db sqlite:%s)\n", db, path, path)
	return nil
}
