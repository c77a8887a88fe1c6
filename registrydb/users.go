package registrydb

import (
	"context"
	"crypto/pbkdf2"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"database/sql"
	"encoding/base64"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Users trade a name and a password for an API token of their role, as
// the 2015 controller's users did (POST /api-token-auth/). Passwords are
// kept as Django keeps them, "pbkdf2_sha256$<iterations>$<salt>$<hash>"
// (PBKDF2-HMAC-SHA256, base64), so a hash that the old controller's
// database holds can be set as it is.

// ErrBadLogin is Login's error for an unknown user or a wrong password
// (which of the two is not said).
var ErrBadLogin = errors.New("unable to log in with the credentials given")

// passwordIterations is PBKDF2's cost for new passwords: OWASP's 2023
// figure for PBKDF2-HMAC-SHA256, about 0.3 s of one core here.
const passwordIterations = 600_000

// minPassword is the shortest password CreateUser takes.
const minPassword = 12

// User is a user as the database holds it, without the password.
type User struct {
	ID      int64     `json:"id"`
	Name    string    `json:"name"`
	Role    string    `json:"role"`
	Scope   []string  `json:"scope"`
	Created time.Time `json:"created"`
}

// HashPassword returns password's hash in Django's format.
func HashPassword(password string) (string, error) {
	var salt [16]byte
	if _, err := rand.Read(salt[:]); err != nil {
		return "", err
	}
	s := base64.RawStdEncoding.EncodeToString(salt[:])
	key, err := pbkdf2.Key(sha256.New, password, []byte(s), passwordIterations, sha256.Size)
	if err != nil {
		return "", err
	}
	return fmt.Sprintf("pbkdf2_sha256$%d$%s$%s", passwordIterations, s, base64.StdEncoding.EncodeToString(key)), nil
}

// checkPassword reports whether password matches hash (Django's format).
func checkPassword(hash, password string) bool {
	parts := strings.Split(hash, "$")
	if len(parts) != 4 || parts[0] != "pbkdf2_sha256" {
		return false
	}
	iter, err := strconv.Atoi(parts[1])
	if err != nil || iter < 1 || iter > 10_000_000 {
		return false
	}
	want, err := base64.StdEncoding.DecodeString(parts[3])
	if err != nil || len(want) == 0 {
		return false
	}
	got, err := pbkdf2.Key(sha256.New, password, []byte(parts[2]), iter, len(want))
	return err == nil && subtle.ConstantTimeCompare(got, want) == 1
}

// CreateUser adds a user with a role and scope (as a token's) and a
// password of at least minPassword characters, or hash, a hash in
// Django's format, when password is "".
func (d *DB) CreateUser(ctx context.Context, actor, name, password, hash, role string, scope []string) error {
	if name == "" || strings.ContainsAny(name, " \t\n:") {
		return fmt.Errorf("%w: user name %q: want a word without spaces or colons", ErrRejected, name)
	}
	if err := checkScope(role, scope); err != nil {
		return fmt.Errorf("%w: %v", ErrRejected, err)
	}
	switch {
	case password != "" && len(password) < minPassword:
		return fmt.Errorf("%w: a password of %d characters; want at least %d", ErrRejected, len(password), minPassword)
	case password != "":
		var err error
		if hash, err = HashPassword(password); err != nil {
			return err
		}
	case !strings.HasPrefix(hash, "pbkdf2_sha256$") || len(strings.Split(hash, "$")) != 4:
		return fmt.Errorf("%w: a password hash in Django's pbkdf2_sha256$<iterations>$<salt>$<hash> form, or a password", ErrRejected)
	}
	scope = slices.Clone(scope)
	slices.Sort(scope)
	_, err := d.inTx(ctx, actor, func(tx *sql.Tx) (AuditEntry, []string, error) {
		var n int
		if err := tx.QueryRowContext(ctx, d.rebind(`SELECT COUNT(*) FROM users WHERE name = ?`), name).Scan(&n); err != nil {
			return AuditEntry{}, nil, err
		}
		if n > 0 {
			return AuditEntry{}, nil, fmt.Errorf("user %s: %w", name, ErrExists)
		}
		now := time.Now().UTC()
		var id int64
		q := `INSERT INTO users (name, hash, role, scope, created) VALUES (?, ?, ?, ?, ?) RETURNING id`
		if err := tx.QueryRowContext(ctx, d.rebind(q), name, hash, role, strings.Join(scope, ","), now.Format(time.RFC3339Nano)).Scan(&id); err != nil {
			return AuditEntry{}, nil, err
		}
		u := User{ID: id, Name: name, Role: role, Scope: scope, Created: now}
		return AuditEntry{Action: "user add", Object: "user " + name, After: mustJSON(u)}, nil, nil
	})
	return err
}

// Users lists the users.
func (d *DB) Users(ctx context.Context) ([]User, error) {
	rows, err := d.sql.QueryContext(ctx, `SELECT id, name, role, scope, created FROM users ORDER BY name`)
	if err != nil {
		return nil, fmt.Errorf("read users from %s: %w", d.url, err)
	}
	defer rows.Close()
	var out []User
	for rows.Next() {
		var (
			u              User
			scope, created string
		)
		if err := rows.Scan(&u.ID, &u.Name, &u.Role, &scope, &created); err != nil {
			return nil, fmt.Errorf("read users from %s: %w", d.url, err)
		}
		if scope != "" {
			u.Scope = strings.Split(scope, ",")
		}
		u.Created, _ = time.Parse(time.RFC3339Nano, created)
		out = append(out, u)
	}
	return out, rows.Err()
}

// DeleteUser removes a user and revokes every token it logged in for.
func (d *DB) DeleteUser(ctx context.Context, actor, name string) error {
	_, err := d.inTx(ctx, actor, func(tx *sql.Tx) (AuditEntry, []string, error) {
		res, err := d.exec(ctx, tx, `DELETE FROM users WHERE name = ?`, name)
		if err != nil {
			return AuditEntry{}, nil, err
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return AuditEntry{}, nil, fmt.Errorf("user %s: %w", name, ErrNotFound)
		}
		res, err = d.exec(ctx, tx, `UPDATE tokens SET revoked = ? WHERE user_name = ? AND revoked = ''`, time.Now().UTC().Format(time.RFC3339Nano), name)
		if err != nil {
			return AuditEntry{}, nil, err
		}
		n, _ := res.RowsAffected()
		return AuditEntry{Action: "user rm", Object: "user " + name, Before: mustJSON(map[string]any{"name": name, "tokens_revoked": n})}, nil, nil
	})
	return err
}

// dummyHash is checked against when the user is unknown, so that an
// unknown name costs what a wrong password costs.
// It is made at the first login, not at start (0.3 s).
var dummyHash = sync.OnceValue(func() string {
	h, _ := HashPassword("not a password of anyone")
	return h
})

// Login checks a user's password and makes a new token of the user's role
// and scope, named after the user; it returns its key (shown once, as
// any token's). Each login makes a token (the database keeps no key to
// give again); DeleteUser revokes them all.
func (d *DB) Login(ctx context.Context, name, password string) (string, error) {
	var (
		hash, role, scope string
		found             = true
	)
	err := d.sql.QueryRowContext(ctx, d.rebind(`SELECT hash, role, scope FROM users WHERE name = ?`), name).Scan(&hash, &role, &scope)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		hash, found = dummyHash(), false
	case err != nil:
		return "", fmt.Errorf("read user %s from %s: %w", name, d.url, err)
	}
	if !checkPassword(hash, password) || !found {
		return "", ErrBadLogin
	}
	var sc []string
	if scope != "" {
		sc = strings.Split(scope, ",")
	}
	var key string
	_, err = d.inTx(ctx, "user:"+name, func(tx *sql.Tx) (AuditEntry, []string, error) {
		var t Token
		var err error
		key, t, err = d.insertToken(ctx, tx, "login:"+name, role, sc, name)
		return AuditEntry{Action: "user login", Object: "user " + name, After: mustJSON(t)}, nil, err
	})
	if err != nil {
		return "", err
	}
	return key, nil
}
