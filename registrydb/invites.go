package registrydb

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/confine-project/mgmtnet/mesh/registry"
)

// Errors of Enrol, each for a different reason an invite does not work.
var (
	ErrInviteUnknown = errors.New("unknown invite token (a typo, or another registry's)")
	ErrInviteSpent   = errors.New("the invite token was used already")
	ErrInviteExpired = errors.New("the invite token has expired")
)

// CreateInvite makes a one-time invite for the member (which must exist:
// an operator adds it first), valid for ttl, and returns its key, shown
// this once; the database keeps only its hash.
func (d *DB) CreateInvite(ctx context.Context, actor, kind string, id uint64, ttl time.Duration) (string, error) {
	if kind != KindNode && kind != KindHost {
		return "", fmt.Errorf("%w: invites are for nodes and hosts, not %ss", ErrRejected, kind)
	}
	if ttl <= 0 {
		return "", fmt.Errorf("%w: an invite's lifetime must be positive, got %v", ErrRejected, ttl)
	}
	var b [tokenKeyBytes]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("make an invite key: %w", err)
	}
	key := hex.EncodeToString(b[:])
	_, err := d.inTx(ctx, actor, func(tx *sql.Tx) (AuditEntry, []string, error) {
		if _, _, err := d.headIn(ctx, tx); err != nil {
			return AuditEntry{}, nil, err
		}
		m, err := d.memberIn(ctx, tx, kind, id)
		if err != nil {
			return AuditEntry{}, nil, err
		}
		if m == nil {
			return AuditEntry{}, nil, fmt.Errorf("%s %d: %w (add it first: mgmtnet registry %s add %d)", kind, id, ErrNotFound, kind, id)
		}
		now := time.Now().UTC()
		exp := now.Add(ttl)
		var inv int64
		q := `INSERT INTO invites (hash, kind, member, created, expires) VALUES (?, ?, ?, ?, ?) RETURNING id`
		if err := tx.QueryRowContext(ctx, d.rebind(q), hashKey(key), kind, int64(id), now.Format(time.RFC3339Nano), exp.Format(time.RFC3339Nano)).Scan(&inv); err != nil {
			return AuditEntry{}, nil, err
		}
		after := mustJSON(map[string]any{"invite": inv, "member": fmt.Sprintf("%s %d", kind, id), "expires": exp.Format(time.RFC3339)})
		return AuditEntry{Action: "invite create", Object: fmt.Sprintf("%s %d", kind, id), After: after}, nil, nil
	})
	if err != nil {
		return "", err
	}
	return key, nil
}

// Enrol spends an invite: the member it was made for gets pubkey, checked
// as any write (a key that a client would reject is refused, and the
// invite stays unspent). It returns the member and the new version.
func (d *DB) Enrol(ctx context.Context, kind string, id uint64, key, pubkey string) (registry.FileMember, uint64, error) {
	key = strings.TrimSpace(key)
	var m registry.FileMember
	v, _, err := d.write(ctx, fmt.Sprintf("invite for %s %d", kind, id), &memberRef{kind, id}, func(tx *sql.Tx, f *registry.File, old *registry.FileMember, v uint64) (AuditEntry, []string, error) {
		var (
			inv                    int64
			ikind                  string
			member                 int64
			expires, spent, actual string
		)
		err := tx.QueryRowContext(ctx, d.rebind(`SELECT id, kind, member, expires, spent, hash FROM invites WHERE hash = ?`), hashKey(key)).
			Scan(&inv, &ikind, &member, &expires, &spent, &actual)
		if errors.Is(err, sql.ErrNoRows) || ikind != kind || uint64(member) != id {
			return AuditEntry{}, nil, ErrInviteUnknown
		}
		if err != nil {
			return AuditEntry{}, nil, err
		}
		if spent != "" {
			return AuditEntry{}, nil, fmt.Errorf("%w (at %s)", ErrInviteSpent, spent)
		}
		exp, err := time.Parse(time.RFC3339Nano, expires)
		if err != nil {
			return AuditEntry{}, nil, err
		}
		if time.Now().After(exp) {
			return AuditEntry{}, nil, fmt.Errorf("%w (at %s)", ErrInviteExpired, exp.UTC().Format(time.RFC3339))
		}
		if old == nil {
			return AuditEntry{}, nil, fmt.Errorf("%s %d: %w", kind, id, ErrNotFound)
		}
		m = *old
		before := mustJSON(m)
		name, _ := tincNameOf(kind, id)
		t := &registry.FileTinc{Name: name, PubKey: pubkey}
		if m.Tinc != nil {
			t.Addresses = m.Tinc.Addresses
		}
		m.Tinc = t
		if _, err := Check(f, kind, &m); err != nil {
			return AuditEntry{}, nil, err
		}
		if err := d.replaceMember(ctx, tx, kind, &m, v); err != nil {
			return AuditEntry{}, nil, err
		}
		if _, err := d.exec(ctx, tx, `UPDATE invites SET spent = ? WHERE id = ?`, time.Now().UTC().Format(time.RFC3339Nano), inv); err != nil {
			return AuditEntry{}, nil, err
		}
		return AuditEntry{Action: kind + " enrol", Object: fmt.Sprintf("%s %d", kind, id), Before: before, After: mustJSON(m)}, nil, nil
	})
	if err != nil {
		return registry.FileMember{}, 0, err
	}
	return m, v, nil
}

// EnrolInvite is Enrol for whichever member the invite was made for: the
// invite names it (mgmtnet join knows only its key). An invite for another
// kind than kind (when not "") is refused as unknown, and stays unspent.
// It returns the member's kind, the member and the new version.
func (d *DB) EnrolInvite(ctx context.Context, kind, key, pubkey string) (string, registry.FileMember, uint64, error) {
	want := kind
	var member int64
	err := d.sql.QueryRowContext(ctx, d.rebind(`SELECT kind, member FROM invites WHERE hash = ?`), hashKey(strings.TrimSpace(key))).Scan(&kind, &member)
	if errors.Is(err, sql.ErrNoRows) || err == nil && want != "" && kind != want {
		return "", registry.FileMember{}, 0, ErrInviteUnknown
	}
	if err != nil {
		return "", registry.FileMember{}, 0, fmt.Errorf("read invites from %s: %w", d.url, err)
	}
	m, v, err := d.Enrol(ctx, kind, uint64(member), key, pubkey)
	return kind, m, v, err
}
