// Package registrydb is the registry's database: the testbed (islands,
// servers, nodes, hosts, their tinc keys, addresses and properties) in
// SQLite (pure Go, modernc.org/sqlite, so static CGO_ENABLED=0 builds keep
// working) or PostgreSQL (jackc/pgx, so that several registry instances
// can share one database), behind database/sql.
//
// Open runs the versioned schema migrations at start and refuses a schema
// newer than this binary knows. Every write is one transaction that also
// bumps the testbed's version, a counter that readers poll (Version) to
// learn that something changed; Testbed reads a consistent copy as a
// registry.File, which registry.Server serves.
package registrydb

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"

	_ "github.com/jackc/pgx/v5/stdlib" // database/sql driver "pgx"
)

// DefaultURL is the database of "mgmtnet registry serve" when none is
// given: SQLite, which needs nothing else.
const DefaultURL = "sqlite:/var/lib/mgmtnet/registry.db"

// Dialects of SQL the package speaks.
const (
	SQLite   = "sqlite"
	Postgres = "postgres"
)

// sqliteConns is how many connections an SQLite database gets.
const sqliteConns = 4

// ErrBadURL is wrapped by Open's errors about the database URL.
var ErrBadURL = errors.New("bad registry database URL")

// DB is an open registry database. It is safe for concurrent use.
type DB struct {
	sql     *sql.DB
	dialect string
	log     *slog.Logger
	url     string // for messages, without a password
}

// Open opens the database at url, "sqlite:PATH" (a file, created when
// missing) or "postgres://..." / "postgresql://..." (a pgx connection
// string), and migrates its schema to SchemaVersion. A nil logger
// discards.
func Open(ctx context.Context, url string, logger *slog.Logger) (*DB, error) {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	var (
		driver, dsn, dialect string
	)
	switch {
	case strings.HasPrefix(url, "sqlite:") && !sqliteBuilt:
		return nil, fmt.Errorf("%w %q: this build has no SQLite (modernc.org/sqlite does not support %s); use postgres://", ErrBadURL, url, runtime.GOARCH)
	case strings.HasPrefix(url, "sqlite:"):
		path := strings.TrimPrefix(strings.TrimPrefix(url, "sqlite:"), "//")
		if path == "" {
			return nil, fmt.Errorf("%w %q: no file (want sqlite:/path/to/registry.db)", ErrBadURL, url)
		}
		// The file is created, and its directory (the default's
		// /var/lib/mgmtnet) when missing.
		if err := os.MkdirAll(filepath.Dir(path), 0o750); err != nil {
			return nil, fmt.Errorf("open registry database %s: %w", url, err)
		}
		// WAL lets readers go on while one writer writes; the busy
		// timeout makes a second writer wait instead of failing. Write
		// transactions take the write lock at BEGIN (_txlock), so that
		// two never deadlock upgrading; read transactions are ReadOnly,
		// which the driver begins deferred: they take no write lock.
		driver, dialect = "sqlite", SQLite
		dsn = "file:" + path + "?_pragma=busy_timeout(10000)&_pragma=journal_mode(WAL)&_pragma=foreign_keys(1)&_txlock=immediate"
	case strings.HasPrefix(url, "postgres://"), strings.HasPrefix(url, "postgresql://"):
		driver, dsn, dialect = "pgx", url, Postgres
	default:
		return nil, fmt.Errorf("%w %q: want sqlite:PATH or postgres://...", ErrBadURL, url)
	}
	db, err := sql.Open(driver, dsn)
	if err != nil {
		return nil, fmt.Errorf("open registry database %s: %w", redact(url), err)
	}
	if dialect == SQLite {
		// A few connections, each with the DSN's pragmas: in WAL mode
		// readers go on beside the one writer (the change feed answers
		// while the read API reads the whole testbed), and writers take
		// turns (_txlock=immediate, busy_timeout).
		db.SetMaxOpenConns(sqliteConns)
	}
	d := &DB{sql: db, dialect: dialect, log: logger, url: redact(url)}
	if err := db.PingContext(ctx); err != nil {
		db.Close()
		return nil, fmt.Errorf("open registry database %s: %w", d.url, err)
	}
	if err := d.migrate(ctx); err != nil {
		db.Close()
		return nil, err
	}
	return d, nil
}

// Close closes the database.
func (d *DB) Close() error { return d.sql.Close() }

// Dialect is SQLite or Postgres.
func (d *DB) Dialect() string { return d.dialect }

// String names the database, without a password.
func (d *DB) String() string { return d.url }

// redact removes a password from a postgres URL.
func redact(url string) string {
	scheme, rest, ok := strings.Cut(url, "://")
	if !ok {
		return url
	}
	userinfo, host, ok := strings.Cut(rest, "@")
	if !ok {
		return url
	}
	if user, _, hasPass := strings.Cut(userinfo, ":"); hasPass {
		return scheme + "://" + user + ":xxxxx@" + host
	}
	return url
}

// rebind turns the ? placeholders of q into PostgreSQL's $1, $2, ... for
// the Postgres dialect. The queries of this package have no ? in literals.
func (d *DB) rebind(q string) string {
	if d.dialect != Postgres {
		return q
	}
	var b strings.Builder
	n := 0
	for _, r := range q {
		if r == '?' {
			n++
			b.WriteString("$" + strconv.Itoa(n))
			continue
		}
		b.WriteRune(r)
	}
	return b.String()
}

// exec runs a statement in tx with the dialect's placeholders.
func (d *DB) exec(ctx context.Context, tx *sql.Tx, q string, args ...any) (sql.Result, error) {
	return tx.ExecContext(ctx, d.rebind(q), args...)
}
