package registrydb

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"
)

// Roles of a token (issue "registry as a control plane"): an operator may
// write everything; a node admin the key and addresses of its nodes; a
// host owner its hosts.
const (
	RoleOperator  = "operator"
	RoleNodeAdmin = "node-admin"
	RoleHostOwner = "host-owner"
)

// ErrBadToken is returned by Authenticate for a key that is unknown or
// revoked (the API answers 401 to it).
var ErrBadToken = errors.New("invalid or revoked token")

// Token is an API token as the database holds it: never the key itself,
// only its SHA-256.
type Token struct {
	ID      int64     `json:"id"`
	Name    string    `json:"name"`
	Role    string    `json:"role"`
	Scope   []string  `json:"scope"` // "node 31", "host 7"; none for an operator
	Created time.Time `json:"created"`
	Revoked time.Time `json:"revoked,omitzero"`
}

// tokenKeyBytes is the size of a key: 20 random bytes, written as 40 hex
// digits, the form of the 2015 controller's keys ("Authorization: Token
// <key>").
const tokenKeyBytes = 20

// hashKey is what the database stores of a key.
func hashKey(key string) string {
	sum := sha256.Sum256([]byte(key))
	return hex.EncodeToString(sum[:])
}

// checkScope validates a role's scope: none for an operator, node or
// host ids for the others.
func checkScope(role string, scope []string) error {
	want := map[string]string{RoleNodeAdmin: KindNode, RoleHostOwner: KindHost}
	switch role {
	case RoleOperator:
		if len(scope) > 0 {
			return fmt.Errorf("an operator's token has no scope (it may write everything), got %v", scope)
		}
		return nil
	case RoleNodeAdmin, RoleHostOwner:
		if len(scope) == 0 {
			return fmt.Errorf("a %s's token needs the %ss it may write", role, want[role])
		}
		for _, s := range scope {
			kind, id, ok := strings.Cut(s, " ")
			if !ok || kind != want[role] || id == "" || strings.Trim(id, "0123456789") != "" {
				return fmt.Errorf("a %s's scope is %s ids (%q)", role, want[role], s)
			}
		}
		return nil
	}
	return fmt.Errorf("role %q: want %s, %s or %s", role, RoleOperator, RoleNodeAdmin, RoleHostOwner)
}

// CreateToken makes a token of role for scope and returns its key, which
// is shown this once: the database keeps only its hash. The audit log
// records it without the key.
func (d *DB) CreateToken(ctx context.Context, actor, name, role string, scope []string) (key string, id int64, err error) {
	if err := checkScope(role, scope); err != nil {
		return "", 0, fmt.Errorf("%w: %v", ErrRejected, err)
	}
	var t Token
	_, err = d.inTx(ctx, actor, func(tx *sql.Tx) (AuditEntry, []string, error) {
		key, t, err = d.insertToken(ctx, tx, name, role, scope, "")
		return AuditEntry{Action: "token create", Object: fmt.Sprintf("token %d", t.ID), After: mustJSON(t)}, nil, err
	})
	if err != nil {
		return "", 0, err
	}
	return key, t.ID, nil
}

// insertToken makes a token in tx, for a user's login when user is not
// "", and returns its key.
func (d *DB) insertToken(ctx context.Context, tx *sql.Tx, name, role string, scope []string, user string) (string, Token, error) {
	scope = slices.Clone(scope)
	slices.Sort(scope)
	var b [tokenKeyBytes]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", Token{}, fmt.Errorf("make a token key: %w", err)
	}
	key := hex.EncodeToString(b[:])
	now := time.Now().UTC()
	var id int64
	q := `INSERT INTO tokens (hash, name, role, scope, created, user_name) VALUES (?, ?, ?, ?, ?, ?) RETURNING id`
	if err := tx.QueryRowContext(ctx, d.rebind(q), hashKey(key), name, role, strings.Join(scope, ","), now.Format(time.RFC3339Nano), user).Scan(&id); err != nil {
		return "", Token{}, err
	}
	return key, Token{ID: id, Name: name, Role: role, Scope: scope, Created: now}, nil
}

// Tokens lists every token, revoked ones too.
func (d *DB) Tokens(ctx context.Context) ([]Token, error) {
	rows, err := d.sql.QueryContext(ctx, `SELECT id, name, role, scope, created, revoked FROM tokens ORDER BY id`)
	if err != nil {
		return nil, fmt.Errorf("read tokens from %s: %w", d.url, err)
	}
	defer rows.Close()
	var out []Token
	for rows.Next() {
		t, err := scanToken(rows)
		if err != nil {
			return nil, fmt.Errorf("read tokens from %s: %w", d.url, err)
		}
		out = append(out, t)
	}
	return out, rows.Err()
}

func scanToken(row interface{ Scan(...any) error }) (Token, error) {
	var t Token
	var scope, created, revoked string
	if err := row.Scan(&t.ID, &t.Name, &t.Role, &scope, &created, &revoked); err != nil {
		return t, err
	}
	if scope != "" {
		t.Scope = strings.Split(scope, ",")
	}
	var err error
	if t.Created, err = time.Parse(time.RFC3339Nano, created); err != nil {
		return t, fmt.Errorf("token %d: created %q: %w", t.ID, created, err)
	}
	if revoked != "" {
		if t.Revoked, err = time.Parse(time.RFC3339Nano, revoked); err != nil {
			return t, fmt.Errorf("token %d: revoked %q: %w", t.ID, revoked, err)
		}
	}
	return t, nil
}

// RevokeToken revokes a token: from then on Authenticate refuses it.
func (d *DB) RevokeToken(ctx context.Context, actor string, id int64) error {
	_, err := d.inTx(ctx, actor, func(tx *sql.Tx) (AuditEntry, []string, error) {
		t, err := scanToken(tx.QueryRowContext(ctx, d.rebind(`SELECT id, name, role, scope, created, revoked FROM tokens WHERE id = ?`), id))
		if errors.Is(err, sql.ErrNoRows) {
			return AuditEntry{}, nil, fmt.Errorf("token %d: %w", id, ErrNotFound)
		}
		if err != nil {
			return AuditEntry{}, nil, err
		}
		if !t.Revoked.IsZero() {
			return AuditEntry{}, nil, fmt.Errorf("token %d: revoked already, at %s", id, t.Revoked.Format(time.RFC3339))
		}
		before := mustJSON(t)
		t.Revoked = time.Now().UTC()
		if _, err := d.exec(ctx, tx, `UPDATE tokens SET revoked = ? WHERE id = ?`, t.Revoked.Format(time.RFC3339Nano), id); err != nil {
			return AuditEntry{}, nil, err
		}
		return AuditEntry{Action: "token revoke", Object: fmt.Sprintf("token %d", id), Before: before, After: mustJSON(t)}, nil, nil
	})
	return err
}

// Authenticate returns the token of a key, or ErrBadToken. The key is
// compared by its hash, in constant time.
func (d *DB) Authenticate(ctx context.Context, key string) (Token, error) {
	key = strings.TrimSpace(key)
	if len(key) != 2*tokenKeyBytes {
		return Token{}, ErrBadToken
	}
	h := hashKey(key)
	var stored string
	row := d.sql.QueryRowContext(ctx, d.rebind(`SELECT hash, id, name, role, scope, created, revoked FROM tokens WHERE hash = ?`), h)
	var t Token
	var scope, created, revoked string
	err := row.Scan(&stored, &t.ID, &t.Name, &t.Role, &scope, &created, &revoked)
	if errors.Is(err, sql.ErrNoRows) {
		return Token{}, ErrBadToken
	}
	if err != nil {
		return Token{}, fmt.Errorf("authenticate against %s: %w", d.url, err)
	}
	if subtle.ConstantTimeCompare([]byte(stored), []byte(h)) != 1 || revoked != "" {
		return Token{}, ErrBadToken
	}
	if scope != "" {
		t.Scope = strings.Split(scope, ",")
	}
	t.Created, _ = time.Parse(time.RFC3339Nano, created)
	return t, nil
}
