package registrydb

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"
)

// Backup writes an online, consistent copy of the database to path, a new
// SQLite file, whatever the database is: the testbed with its version, and
// the audit log, all read in one transaction while writers go on. The copy
// is written under a temporary name and renamed into place, so path is
// either absent or whole; an existing path is not replaced. Serve it with
// "--db sqlite:PATH", or import it into another database.
func (d *DB) Backup(ctx context.Context, path string) error {
	if _, err := os.Lstat(path); err == nil {
		return fmt.Errorf("backup to %s: %w (not replacing it)", path, fs.ErrExist)
	} else if !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("backup to %s: %w", path, err)
	}
	tx, err := d.sql.BeginTx(ctx, &sql.TxOptions{ReadOnly: true, Isolation: d.isolation()})
	if err != nil {
		return fmt.Errorf("backup %s: %w", d.url, err)
	}
	defer tx.Rollback()
	f, version, err := d.testbedIn(ctx, tx)
	if err != nil {
		return fmt.Errorf("backup %s: %w", d.url, err)
	}
	entries, err := d.logIn(ctx, tx, 0)
	if err != nil {
		return err
	}
	tmp := filepath.Join(filepath.Dir(path), "."+filepath.Base(path)+".tmp-"+fmt.Sprint(time.Now().UnixNano()))
	defer os.Remove(tmp)
	out, err := Open(ctx, "sqlite:"+tmp, d.log)
	if err != nil {
		return fmt.Errorf("backup to %s: %w", path, err)
	}
	defer out.Close()
	// One connection: leaving WAL mode at the end needs the only one.
	out.sql.SetMaxOpenConns(1)
	otx, err := out.sql.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("backup to %s: %w", path, err)
	}
	defer otx.Rollback()
	// The copy's feed starts at its version: what changed before is not
	// copied.
	if _, err := out.exec(ctx, otx, `INSERT INTO testbed (id, mgmt_prefix, dialect, version, feed_floor) VALUES (1, ?, ?, ?, ?)`, f.MgmtPrefix.String(), f.Dialect, int64(version), int64(version)); err != nil {
		return fmt.Errorf("backup to %s: %w", path, err)
	}
	if err := out.insertTestbed(ctx, otx, f, version); err != nil {
		return fmt.Errorf("backup to %s: %w", path, err)
	}
	for i := len(entries) - 1; i >= 0; i-- {
		e := entries[i]
		if _, err := out.exec(ctx, otx, `INSERT INTO audit (seq, at, actor, action, object, before, after) VALUES (?, ?, ?, ?, ?, ?, ?)`,
			e.Seq, e.At.UTC().Format(time.RFC3339Nano), e.Actor, e.Action, e.Object, e.Before, e.After); err != nil {
			return fmt.Errorf("backup to %s: %w", path, err)
		}
	}
	if err := otx.Commit(); err != nil {
		return fmt.Errorf("backup to %s: %w", path, err)
	}
	// One file: fold the write-ahead log in before the rename.
	if _, err := out.sql.ExecContext(ctx, `PRAGMA wal_checkpoint(TRUNCATE)`); err != nil {
		return fmt.Errorf("backup to %s: %w", path, err)
	}
	if _, err := out.sql.ExecContext(ctx, `PRAGMA journal_mode = DELETE`); err != nil {
		return fmt.Errorf("backup to %s: %w", path, err)
	}
	if err := out.Close(); err != nil {
		return fmt.Errorf("backup to %s: %w", path, err)
	}
	if err := os.Link(tmp, path); err != nil {
		return fmt.Errorf("backup to %s: %w", path, err)
	}
	return nil
}
