package registrydb

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
)

// migrations are the schema, one step per version: migrations[i] takes
// the schema from version i to i+1. A step is never edited once released;
// a change is a new step. The SQL is the common subset of SQLite and
// PostgreSQL, but for %SERIAL%, an auto-numbered primary key (dialectSQL).
var migrations = [][]string{
	// 1: the testbed.
	{
		`CREATE TABLE testbed (
			id INTEGER PRIMARY KEY CHECK (id = 1),
			mgmt_prefix TEXT NOT NULL,
			dialect TEXT NOT NULL DEFAULT 'v1',
			version BIGINT NOT NULL
		)`,
		`CREATE TABLE islands (
			id BIGINT PRIMARY KEY,
			name TEXT NOT NULL,
			description TEXT NOT NULL DEFAULT ''
		)`,
		// kind is "server", "node" or "host". tinc_name is NULL for a
		// member without a registered key (the controller's "tinc":
		// null).
		`CREATE TABLE members (
			kind TEXT NOT NULL CHECK (kind IN ('server', 'node', 'host')),
			id BIGINT NOT NULL,
			name TEXT NOT NULL,
			island BIGINT REFERENCES islands (id),
			mgmt_addr TEXT NOT NULL DEFAULT '',
			backend TEXT NOT NULL DEFAULT '',
			tinc_name TEXT,
			pubkey TEXT,
			PRIMARY KEY (kind, id)
		)`,
		`CREATE TABLE addresses (
			kind TEXT NOT NULL,
			id BIGINT NOT NULL,
			pos INTEGER NOT NULL,
			addr TEXT NOT NULL,
			port INTEGER NOT NULL DEFAULT 0,
			island BIGINT REFERENCES islands (id),
			PRIMARY KEY (kind, id, pos),
			FOREIGN KEY (kind, id) REFERENCES members (kind, id) ON DELETE CASCADE
		)`,
		`CREATE TABLE properties (
			kind TEXT NOT NULL,
			id BIGINT NOT NULL,
			key TEXT NOT NULL,
			value TEXT NOT NULL,
			PRIMARY KEY (kind, id, key),
			FOREIGN KEY (kind, id) REFERENCES members (kind, id) ON DELETE CASCADE
		)`,
	},
	// 2: the audit log: who changed what, when, and what it was before
	// and after (JSON; "" for nothing).
	{
		`CREATE TABLE audit (
			seq %SERIAL%,
			at TEXT NOT NULL,
			actor TEXT NOT NULL,
			action TEXT NOT NULL,
			object TEXT NOT NULL,
			before TEXT NOT NULL DEFAULT '',
			after TEXT NOT NULL DEFAULT ''
		)`,
	},
	// 3: API tokens, by the SHA-256 of their key (the key itself is shown
	// once, at creation). scope lists "node 31", "host 7", comma-separated.
	{
		`CREATE TABLE tokens (
			id %SERIAL%,
			hash TEXT NOT NULL UNIQUE,
			name TEXT NOT NULL DEFAULT '',
			role TEXT NOT NULL CHECK (role IN ('operator', 'node-admin', 'host-owner')),
			scope TEXT NOT NULL DEFAULT '',
			created TEXT NOT NULL,
			revoked TEXT NOT NULL DEFAULT ''
		)`,
	},
	// 4: one-time enrolment invites, by the SHA-256 of their key.
	{
		`CREATE TABLE invites (
			id %SERIAL%,
			hash TEXT NOT NULL UNIQUE,
			kind TEXT NOT NULL,
			member BIGINT NOT NULL,
			created TEXT NOT NULL,
			expires TEXT NOT NULL,
			spent TEXT NOT NULL DEFAULT ''
		)`,
	},
	// 5: the change feed. changed is the version that last wrote a
	// member; removed holds the members removed since, with the version
	// that removed them; feed_floor is the oldest version the feed
	// answers from (an import, which replaces everything, raises it).
	{
		`ALTER TABLE members ADD COLUMN changed BIGINT NOT NULL DEFAULT 0`,
		`CREATE INDEX members_changed ON members (changed)`,
		`CREATE TABLE removed (
			kind TEXT NOT NULL,
			id BIGINT NOT NULL,
			version BIGINT NOT NULL,
			PRIMARY KEY (kind, id)
		)`,
		`CREATE INDEX removed_version ON removed (version)`,
		`ALTER TABLE testbed ADD COLUMN feed_floor BIGINT NOT NULL DEFAULT 0`,
		`UPDATE testbed SET feed_floor = version`,
	},
	// 6: users who trade a password for a token (POST /api-token-auth/),
	// by Django's PBKDF2 hash format; the tokens they get name them.
	{
		`CREATE TABLE users (
			id %SERIAL%,
			name TEXT NOT NULL UNIQUE,
			hash TEXT NOT NULL,
			role TEXT NOT NULL CHECK (role IN ('operator', 'node-admin', 'host-owner')),
			scope TEXT NOT NULL DEFAULT '',
			created TEXT NOT NULL
		)`,
		`ALTER TABLE tokens ADD COLUMN user_name TEXT NOT NULL DEFAULT ''`,
	},
}

// dialectSQL puts the dialect's auto-numbered primary key in for %SERIAL%.
func (d *DB) dialectSQL(stmt string) string {
	serial := "INTEGER PRIMARY KEY AUTOINCREMENT"
	if d.dialect == Postgres {
		serial = "BIGSERIAL PRIMARY KEY"
	}
	return strings.ReplaceAll(stmt, "%SERIAL%", serial)
}

// SchemaVersion is the schema this binary writes and reads.
var SchemaVersion = len(migrations)

// ErrSchemaTooNew is wrapped by Open's error for a database that a newer
// mgmtnet has migrated.
var ErrSchemaTooNew = errors.New("registry database schema is newer than this mgmtnet")

// migrate brings the schema to SchemaVersion, each step in a transaction
// of its own, and refuses a newer schema. Two instances starting at once
// on one PostgreSQL database migrate one after the other (an advisory
// lock); SQLite's write lock does the same.
func (d *DB) migrate(ctx context.Context) error {
	conn, err := d.sql.Conn(ctx)
	if err != nil {
		return fmt.Errorf("migrate %s: %w", d.url, err)
	}
	defer conn.Close()
	if d.dialect == Postgres {
		// Any fixed key: "mgmtnet registry" in ASCII.
		const lockKey int64 = 0x6d676d746e6574
		if _, err := conn.ExecContext(ctx, "SELECT pg_advisory_lock($1)", lockKey); err != nil {
			return fmt.Errorf("migrate %s: lock: %w", d.url, err)
		}
		defer conn.ExecContext(context.WithoutCancel(ctx), "SELECT pg_advisory_unlock($1)", lockKey)
	}
	if _, err := conn.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)`); err != nil {
		return fmt.Errorf("migrate %s: %w", d.url, err)
	}
	var have int
	err = conn.QueryRowContext(ctx, `SELECT version FROM schema_version`).Scan(&have)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		if _, err := conn.ExecContext(ctx, `INSERT INTO schema_version (version) VALUES (0)`); err != nil {
			return fmt.Errorf("migrate %s: %w", d.url, err)
		}
	case err != nil:
		return fmt.Errorf("migrate %s: read schema version: %w", d.url, err)
	}
	if have > SchemaVersion {
		return fmt.Errorf("%w: %s has schema version %d, this mgmtnet knows up to %d; run a newer mgmtnet", ErrSchemaTooNew, d.url, have, SchemaVersion)
	}
	for v := have; v < SchemaVersion; v++ {
		tx, err := conn.BeginTx(ctx, nil)
		if err != nil {
			return fmt.Errorf("migrate %s to schema %d: %w", d.url, v+1, err)
		}
		for _, stmt := range migrations[v] {
			if _, err := tx.ExecContext(ctx, d.dialectSQL(stmt)); err != nil {
				tx.Rollback()
				return fmt.Errorf("migrate %s to schema %d: %w", d.url, v+1, err)
			}
		}
		if _, err := tx.ExecContext(ctx, d.rebind(`UPDATE schema_version SET version = ?`), v+1); err != nil {
			tx.Rollback()
			return fmt.Errorf("migrate %s to schema %d: %w", d.url, v+1, err)
		}
		if err := tx.Commit(); err != nil {
			return fmt.Errorf("migrate %s to schema %d: %w", d.url, v+1, err)
		}
		if have > 0 {
			// An upgrade is news; a new database's schema is not.
			d.log.Info("registry database migrated", "db", d.url, "schema", v+1)
		} else {
			d.log.Debug("registry database schema created", "db", d.url, "schema", v+1)
		}
	}
	return nil
}
