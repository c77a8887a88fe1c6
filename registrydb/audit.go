package registrydb

import (
	"context"
	"database/sql"
	"fmt"
	"time"
)

// AuditEntry is one write as the audit log records it.
type AuditEntry struct {
	Seq    int64     `json:"seq"`
	At     time.Time `json:"at"`
	Actor  string    `json:"actor"`
	Action string    `json:"action"` // "import", ...
	Object string    `json:"object"` // "testbed", ...
	Before string    `json:"before"` // JSON; "" for nothing
	After  string    `json:"after"`  // JSON; "" for nothing
}

// audit records a write in tx, the write's own transaction: a write and its
// record commit together or not at all.
func (d *DB) audit(ctx context.Context, tx *sql.Tx, e AuditEntry) error {
	if e.At.IsZero() {
		e.At = time.Now()
	}
	_, err := d.exec(ctx, tx, `INSERT INTO audit (at, actor, action, object, before, after) VALUES (?, ?, ?, ?, ?, ?)`,
		e.At.UTC().Format(time.RFC3339Nano), e.Actor, e.Action, e.Object, e.Before, e.After)
	if err != nil {
		return fmt.Errorf("audit log: %w", err)
	}
	return nil
}

// Log returns the newest limit entries of the audit log, newest first
// (all of them for limit <= 0).
func (d *DB) Log(ctx context.Context, limit int) ([]AuditEntry, error) {
	tx, err := d.sql.BeginTx(ctx, &sql.TxOptions{ReadOnly: true})
	if err != nil {
		return nil, fmt.Errorf("read the audit log of %s: %w", d.url, err)
	}
	defer tx.Rollback()
	return d.logIn(ctx, tx, limit)
}

// logIn is Log in tx.
func (d *DB) logIn(ctx context.Context, tx *sql.Tx, limit int) ([]AuditEntry, error) {
	q := `SELECT seq, at, actor, action, object, before, after FROM audit ORDER BY seq DESC`
	var args []any
	if limit > 0 {
		q += ` LIMIT ?`
		args = append(args, limit)
	}
	rows, err := tx.QueryContext(ctx, d.rebind(q), args...)
	if err != nil {
		return nil, fmt.Errorf("read the audit log of %s: %w", d.url, err)
	}
	defer rows.Close()
	var out []AuditEntry
	for rows.Next() {
		var e AuditEntry
		var at string
		if err := rows.Scan(&e.Seq, &at, &e.Actor, &e.Action, &e.Object, &e.Before, &e.After); err != nil {
			return nil, fmt.Errorf("read the audit log of %s: %w", d.url, err)
		}
		if e.At, err = time.Parse(time.RFC3339Nano, at); err != nil {
			return nil, fmt.Errorf("read the audit log of %s: entry %d: time %q: %w", d.url, e.Seq, at, err)
		}
		out = append(out, e)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read the audit log of %s: %w", d.url, err)
	}
	return out, nil
}
