package registrydb

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"

	"github.com/confine-project/mgmtnet/addressing"
	"github.com/confine-project/mgmtnet/mesh"
	"github.com/confine-project/mgmtnet/mesh/registry"
)

// Kinds of members the database holds.
const (
	KindServer = "server"
	KindNode   = "node"
	KindHost   = "host"
)

// ErrNotFound is wrapped by the errors about a member or island that does
// not exist.
var ErrNotFound = errors.New("not found")

// ErrExists is wrapped by the error of an add whose member or island
// exists already.
var ErrExists = errors.New("exists already")

// ErrRejected is wrapped by the error of a write that a client would
// reject; the message gives the client's reason.
var ErrRejected = errors.New("rejected")

// kindOf maps a kind name to the plan's.
func kindOf(kind string) (addressing.Kind, error) {
	switch kind {
	case KindServer:
		return addressing.KindServer, nil
	case KindNode:
		return addressing.KindNode, nil
	case KindHost:
		return addressing.KindHost, nil
	}
	return addressing.KindInvalid, fmt.Errorf("member kind %q: want server, node or host", kind)
}

// tincNameOf is a member's tinc name by its kind and id.
func tincNameOf(kind string, id uint64) (string, error) {
	k, err := kindOf(kind)
	if err != nil {
		return "", err
	}
	return addressing.TincName(k, id)
}

// Member returns one member.
func (d *DB) Member(ctx context.Context, kind string, id uint64) (registry.FileMember, error) {
	tx, err := d.sql.BeginTx(ctx, &sql.TxOptions{ReadOnly: true, Isolation: d.isolation()})
	if err != nil {
		return registry.FileMember{}, fmt.Errorf("read %s %d from %s: %w", kind, id, d.url, err)
	}
	defer tx.Rollback()
	if _, _, err := d.headIn(ctx, tx); err != nil {
		return registry.FileMember{}, err
	}
	m, err := d.memberIn(ctx, tx, kind, id)
	if err != nil {
		return registry.FileMember{}, err
	}
	if m == nil {
		return registry.FileMember{}, fmt.Errorf("%s %d: %w", kind, id, ErrNotFound)
	}
	return *m, tx.Commit()
}

// memberIn reads one member in tx; nil when there is none.
func (d *DB) memberIn(ctx context.Context, tx *sql.Tx, kind string, id uint64) (*registry.FileMember, error) {
	ms, err := d.membersIn(ctx, tx, "kind = ? AND id = ?", []any{kind, int64(id)})
	if err != nil || len(ms) == 0 {
		return nil, err
	}
	return &ms[0].Member, nil
}

// Check validates a member as clients validate what the registry serves
// (mesh.Build, against the testbed's plan): a write that a client would
// reject is refused with the client's reason, wrapping ErrRejected.
// Warnings are what a client would warn about (a dropped address, an
// unusable property). A member without a key, or with the native backend,
// is no error: clients skip it until it has one.
func Check(f *registry.File, kind string, m *registry.FileMember) (warnings []string, err error) {
	k, err := kindOf(kind)
	if err != nil {
		return nil, err
	}
	plan, err := addressing.New(f.MgmtPrefix)
	if err != nil {
		return nil, fmt.Errorf("the testbed's management prefix: %w", err)
	}
	if m.Island != 0 && !hasIsland(f, m.Island) {
		return nil, fmt.Errorf("%w: %s %d: island %d does not exist", ErrRejected, kind, m.ID, m.Island)
	}
	if m.Tinc != nil {
		for _, a := range m.Tinc.Addresses {
			if a.Island != 0 && !hasIsland(f, a.Island) {
				return nil, fmt.Errorf("%w: %s %d: address %s: island %d does not exist", ErrRejected, kind, m.ID, a.Addr, a.Island)
			}
		}
	}
	res := mesh.Build(plan, []mesh.Candidate{f.Candidate(k, m)}, mesh.BuildOptions{})
	if len(res.Rejected) > 0 {
		var reasons []string
		for _, p := range res.Rejected {
			reasons = append(reasons, p.String())
		}
		return nil, fmt.Errorf("%w: %s", ErrRejected, strings.Join(reasons, "; "))
	}
	for _, w := range res.Warnings {
		warnings = append(warnings, w.String())
	}
	return warnings, nil
}

func hasIsland(f *registry.File, id uint64) bool {
	for _, is := range f.Islands {
		if is.ID == id {
			return true
		}
	}
	return false
}

// PutMember adds a member (create) or replaces one that exists (not
// create), after Check, in one transaction with its audit record (actor,
// "<kind> add" or "<kind> set", the member before and after). A member
// with a key gets its tinc name from its kind and id. It returns the new
// version and Check's warnings.
func (d *DB) PutMember(ctx context.Context, actor, kind string, m registry.FileMember, create bool) (uint64, []string, error) {
	return d.write(ctx, actor, &memberRef{kind, m.ID}, func(tx *sql.Tx, f *registry.File, old *registry.FileMember, v uint64) (AuditEntry, []string, error) {
		k, err := kindOf(kind)
		if err != nil {
			return AuditEntry{}, nil, err
		}
		switch {
		case create && old != nil:
			return AuditEntry{}, nil, fmt.Errorf("%s %d: %w", kind, m.ID, ErrExists)
		case !create && old == nil:
			return AuditEntry{}, nil, fmt.Errorf("%s %d: %w", kind, m.ID, ErrNotFound)
		}
		if m.Tinc != nil {
			name, err := addressing.TincName(k, m.ID)
			if err != nil {
				return AuditEntry{}, nil, fmt.Errorf("%w: %v", ErrRejected, err)
			}
			m.Tinc.Name = name
		}
		warnings, err := Check(f, kind, &m)
		if err != nil {
			return AuditEntry{}, nil, err
		}
		e := AuditEntry{Action: kind + " add", Object: fmt.Sprintf("%s %d", kind, m.ID), After: mustJSON(m)}
		if old != nil {
			e.Action, e.Before = kind+" set", mustJSON(old)
		}
		if err := d.replaceMember(ctx, tx, kind, &m, v); err != nil {
			return AuditEntry{}, nil, err
		}
		return e, warnings, nil
	})
}

// DeleteMember removes a member, with its audit record. The feed gives
// its removal to readers of older versions.
func (d *DB) DeleteMember(ctx context.Context, actor, kind string, id uint64) (uint64, error) {
	v, _, err := d.write(ctx, actor, &memberRef{kind, id}, func(tx *sql.Tx, f *registry.File, old *registry.FileMember, v uint64) (AuditEntry, []string, error) {
		if _, err := kindOf(kind); err != nil {
			return AuditEntry{}, nil, err
		}
		if old == nil {
			return AuditEntry{}, nil, fmt.Errorf("%s %d: %w", kind, id, ErrNotFound)
		}
		if _, err := d.exec(ctx, tx, `DELETE FROM members WHERE kind = ? AND id = ?`, kind, int64(id)); err != nil {
			return AuditEntry{}, nil, err
		}
		if _, err := d.exec(ctx, tx, `DELETE FROM removed WHERE kind = ? AND id = ?`, kind, int64(id)); err != nil {
			return AuditEntry{}, nil, err
		}
		if _, err := d.exec(ctx, tx, `INSERT INTO removed (kind, id, version) VALUES (?, ?, ?)`, kind, int64(id), int64(v)); err != nil {
			return AuditEntry{}, nil, err
		}
		return AuditEntry{Action: kind + " rm", Object: fmt.Sprintf("%s %d", kind, id), Before: mustJSON(old)}, nil, nil
	})
	return v, err
}

// PutIsland adds an island (create) or renames one, with its audit record.
func (d *DB) PutIsland(ctx context.Context, actor string, is registry.FileIsland, create bool) (uint64, error) {
	v, _, err := d.write(ctx, actor, nil, func(tx *sql.Tx, f *registry.File, _ *registry.FileMember, _ uint64) (AuditEntry, []string, error) {
		if is.ID == 0 {
			return AuditEntry{}, nil, fmt.Errorf("%w: island id 0: want 1 or more", ErrRejected)
		}
		var old *registry.FileIsland
		for i := range f.Islands {
			if f.Islands[i].ID == is.ID {
				old = &f.Islands[i]
			}
		}
		switch {
		case create && old != nil:
			return AuditEntry{}, nil, fmt.Errorf("island %d: %w", is.ID, ErrExists)
		case !create && old == nil:
			return AuditEntry{}, nil, fmt.Errorf("island %d: %w", is.ID, ErrNotFound)
		}
		e := AuditEntry{Action: "island add", Object: fmt.Sprintf("island %d", is.ID), After: mustJSON(is)}
		var err error
		if old != nil {
			e.Action, e.Before = "island set", mustJSON(old)
			_, err = d.exec(ctx, tx, `UPDATE islands SET name = ?, description = ? WHERE id = ?`, is.Name, is.Description, int64(is.ID))
		} else {
			_, err = d.exec(ctx, tx, `INSERT INTO islands (id, name, description) VALUES (?, ?, ?)`, int64(is.ID), is.Name, is.Description)
		}
		return e, nil, err
	})
	return v, err
}

// DeleteIsland removes an island that no member or address names.
func (d *DB) DeleteIsland(ctx context.Context, actor string, id uint64) (uint64, error) {
	v, _, err := d.write(ctx, actor, nil, func(tx *sql.Tx, f *registry.File, _ *registry.FileMember, _ uint64) (AuditEntry, []string, error) {
		var old *registry.FileIsland
		for i := range f.Islands {
			if f.Islands[i].ID == id {
				old = &f.Islands[i]
			}
		}
		if old == nil {
			return AuditEntry{}, nil, fmt.Errorf("island %d: %w", id, ErrNotFound)
		}
		var (
			name   string
			member int64
		)
		err := tx.QueryRowContext(ctx, d.rebind(`SELECT name, id FROM members WHERE island = ? OR (kind, id) IN (SELECT kind, id FROM addresses WHERE island = ?) ORDER BY kind, id LIMIT 1`), int64(id), int64(id)).Scan(&name, &member)
		switch {
		case err == nil:
			return AuditEntry{}, nil, fmt.Errorf("%w: island %d is in use (by %q, id %d)", ErrRejected, id, name, member)
		case !errors.Is(err, sql.ErrNoRows):
			return AuditEntry{}, nil, err
		}
		if _, err := d.exec(ctx, tx, `DELETE FROM islands WHERE id = ?`, int64(id)); err != nil {
			return AuditEntry{}, nil, err
		}
		return AuditEntry{Action: "island rm", Object: fmt.Sprintf("island %d", id), Before: mustJSON(old)}, nil, nil
	})
	return v, err
}

// memberRef names one member.
type memberRef struct {
	kind string
	id   uint64
}

// write runs one change of the testbed. In the write's transaction (so
// that the check and the write see the same testbed) it reads what a
// write needs, not the whole testbed: the testbed's prefix, dialect and
// islands (f, without members) and, when sel names one, that member as
// it is (old, nil for none). change writes and describes itself; it
// gets the version it makes, which the write then sets and records with
// the audit entry, all in one transaction.
func (d *DB) write(ctx context.Context, actor string, sel *memberRef, change func(tx *sql.Tx, f *registry.File, old *registry.FileMember, version uint64) (AuditEntry, []string, error)) (uint64, []string, error) {
	var v uint64
	warnings, err := d.inTx(ctx, actor, func(tx *sql.Tx) (AuditEntry, []string, error) {
		f, h, err := d.headIn(ctx, tx)
		if err != nil {
			return AuditEntry{}, nil, err
		}
		var old *registry.FileMember
		if sel != nil {
			if old, err = d.memberIn(ctx, tx, sel.kind, sel.id); err != nil {
				return AuditEntry{}, nil, err
			}
		}
		v = h.version + 1
		e, warnings, err := change(tx, f, old, v)
		if err != nil {
			return AuditEntry{}, nil, err
		}
		if _, err := d.exec(ctx, tx, `UPDATE testbed SET version = ? WHERE id = 1`, int64(v)); err != nil {
			return AuditEntry{}, nil, err
		}
		return e, warnings, nil
	})
	return v, warnings, err
}

// inTx runs change in one write transaction with its audit entry, by
// actor.
func (d *DB) inTx(ctx context.Context, actor string, change func(*sql.Tx) (AuditEntry, []string, error)) ([]string, error) {
	tx, err := d.sql.BeginTx(ctx, &sql.TxOptions{Isolation: d.writeIsolation()})
	if err != nil {
		return nil, fmt.Errorf("write to %s: %w", d.url, err)
	}
	defer tx.Rollback()
	e, warnings, err := change(tx)
	if err != nil {
		return nil, err
	}
	e.Actor = actor
	if err := d.audit(ctx, tx, e); err != nil {
		return nil, err
	}
	if err := tx.Commit(); err != nil {
		return nil, fmt.Errorf("write to %s: %w", d.url, err)
	}
	return warnings, nil
}

// writeIsolation is serializable on PostgreSQL: two instances writing at
// once cannot both pass a check that only one of their writes would pass
// (the loser's commit fails and is not applied). SQLite takes its write
// lock at BEGIN (_txlock=immediate).
func (d *DB) writeIsolation() sql.IsolationLevel {
	if d.dialect == Postgres {
		return sql.LevelSerializable
	}
	return sql.LevelDefault
}
