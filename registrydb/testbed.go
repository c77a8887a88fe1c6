package registrydb

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"slices"

	"github.com/confine-project/mgmtnet/addressing"
	"github.com/confine-project/mgmtnet/mesh/registry"
)

// ErrNoTestbed is returned by Testbed and Version for a database that
// holds no testbed yet (nothing was imported).
var ErrNoTestbed = errors.New("the registry database holds no testbed yet (import one: mgmtnet registry import --from FILE|URL, or start one: mgmtnet registry init --prefix P/48)")

// Version returns the testbed's version: it grows by one with every
// write, so a reader that holds version v has what the database holds
// exactly while Version is v.
func (d *DB) Version(ctx context.Context) (uint64, error) {
	var v int64
	err := d.sql.QueryRowContext(ctx, `SELECT version FROM testbed WHERE id = 1`).Scan(&v)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, ErrNoTestbed
	}
	if err != nil {
		return 0, fmt.Errorf("read testbed version from %s: %w", d.url, err)
	}
	return uint64(v), nil
}

// Testbed reads the whole testbed, consistently (one read transaction),
// as a validated registry.File, and its version.
func (d *DB) Testbed(ctx context.Context) (*registry.File, uint64, error) {
	tx, err := d.sql.BeginTx(ctx, &sql.TxOptions{ReadOnly: true, Isolation: d.isolation()})
	if err != nil {
		return nil, 0, fmt.Errorf("read testbed from %s: %w", d.url, err)
	}
	defer tx.Rollback()
	f, v, err := d.testbedIn(ctx, tx)
	if err != nil {
		return nil, 0, err
	}
	if err := tx.Commit(); err != nil {
		return nil, 0, fmt.Errorf("read testbed from %s: %w", d.url, err)
	}
	return f, v, nil
}

// testbedIn reads the testbed in tx.
func (d *DB) testbedIn(ctx context.Context, tx *sql.Tx) (*registry.File, uint64, error) {
	f, h, err := d.headIn(ctx, tx)
	if err != nil {
		return nil, 0, err
	}
	ms, err := d.membersIn(ctx, tx, "", nil)
	if err != nil {
		return nil, 0, err
	}
	for _, km := range ms {
		switch km.Kind {
		case KindServer:
			f.Servers = append(f.Servers, km.Member)
		case KindNode:
			f.Nodes = append(f.Nodes, km.Member)
		case KindHost:
			f.Hosts = append(f.Hosts, km.Member)
		}
	}
	if err := f.Validate(); err != nil {
		return nil, 0, fmt.Errorf("testbed in %s: %w", d.url, err)
	}
	return f, h.version, nil
}

// head is the testbed row: the version and the feed's floor (the oldest
// version that Changes answers from).
type head struct {
	version, floor uint64
}

// headIn reads the testbed's prefix, dialect and islands, without its
// members, and its version and feed floor.
func (d *DB) headIn(ctx context.Context, tx *sql.Tx) (*registry.File, head, error) {
	var err error
	f := &registry.File{}
	var (
		prefix         string
		version, floor int64
	)
	err = tx.QueryRowContext(ctx, `SELECT mgmt_prefix, dialect, version, feed_floor FROM testbed WHERE id = 1`).Scan(&prefix, &f.Dialect, &version, &floor)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, head{}, ErrNoTestbed
	}
	if err != nil {
		return nil, head{}, fmt.Errorf("read testbed from %s: %w", d.url, err)
	}
	if f.MgmtPrefix, err = netip.ParsePrefix(prefix); err != nil {
		return nil, head{}, fmt.Errorf("read testbed from %s: management prefix %q: %w", d.url, prefix, err)
	}
	rows, err := tx.QueryContext(ctx, `SELECT id, name, description FROM islands ORDER BY id`)
	if err != nil {
		return nil, head{}, fmt.Errorf("read islands from %s: %w", d.url, err)
	}
	for rows.Next() {
		var is registry.FileIsland
		var id int64
		if err := rows.Scan(&id, &is.Name, &is.Description); err != nil {
			rows.Close()
			return nil, head{}, fmt.Errorf("read islands from %s: %w", d.url, err)
		}
		is.ID = uint64(id)
		f.Islands = append(f.Islands, is)
	}
	if err := rows.Close(); err != nil {
		return nil, head{}, fmt.Errorf("read islands from %s: %w", d.url, err)
	}
	return f, head{version: uint64(version), floor: uint64(floor)}, nil
}

// KindMember is a member with its kind.
type KindMember struct {
	Kind   string
	Member registry.FileMember
}

// membersIn reads the members in tx that where (SQL over the members
// table's columns, "" for all) selects, with their addresses and
// properties, by kind and id.
func (d *DB) membersIn(ctx context.Context, tx *sql.Tx, where string, args []any) ([]KindMember, error) {
	type key struct {
		kind string
		id   uint64
	}
	members := map[key]*KindMember{}
	var out []*KindMember
	// The addresses and properties of the members selected: all of them,
	// or those of the members that where selects.
	sub, memberWhere := "", ""
	if where != "" {
		memberWhere = " WHERE " + where
		sub = " WHERE (kind, id) IN (SELECT kind, id FROM members" + memberWhere + ")"
	}
	rows, err := tx.QueryContext(ctx, d.rebind(`SELECT kind, id, name, island, mgmt_addr, backend, tinc_name, pubkey FROM members`+memberWhere+` ORDER BY kind, id`), args...)
	if err != nil {
		return nil, fmt.Errorf("read members from %s: %w", d.url, err)
	}
	for rows.Next() {
		var (
			k              key
			id             int64
			island         sql.NullInt64
			tincName, pubk sql.NullString
			km             KindMember
		)
		m := &km.Member
		if err := rows.Scan(&km.Kind, &id, &m.Name, &island, &m.MgmtAddr, &m.Backend, &tincName, &pubk); err != nil {
			rows.Close()
			return nil, fmt.Errorf("read members from %s: %w", d.url, err)
		}
		k.kind, k.id, m.ID, m.Island = km.Kind, uint64(id), uint64(id), uint64(island.Int64)
		if tincName.Valid {
			m.Tinc = &registry.FileTinc{Name: tincName.String, PubKey: pubk.String}
		}
		members[k] = &km
		out = append(out, &km)
	}
	if err := rows.Close(); err != nil {
		return nil, fmt.Errorf("read members from %s: %w", d.url, err)
	}
	if len(out) == 0 {
		return nil, nil
	}
	rows, err = tx.QueryContext(ctx, d.rebind(`SELECT kind, id, addr, port, island FROM addresses`+sub+` ORDER BY kind, id, pos`), args...)
	if err != nil {
		return nil, fmt.Errorf("read addresses from %s: %w", d.url, err)
	}
	for rows.Next() {
		var (
			k      key
			id     int64
			a      registry.FileAddress
			island sql.NullInt64
		)
		if err := rows.Scan(&k.kind, &id, &a.Addr, &a.Port, &island); err != nil {
			rows.Close()
			return nil, fmt.Errorf("read addresses from %s: %w", d.url, err)
		}
		k.id, a.Island = uint64(id), uint64(island.Int64)
		if km := members[k]; km != nil && km.Member.Tinc != nil {
			km.Member.Tinc.Addresses = append(km.Member.Tinc.Addresses, a)
		}
	}
	if err := rows.Close(); err != nil {
		return nil, fmt.Errorf("read addresses from %s: %w", d.url, err)
	}
	rows, err = tx.QueryContext(ctx, d.rebind(`SELECT kind, id, key, value FROM properties`+sub), args...)
	if err != nil {
		return nil, fmt.Errorf("read properties from %s: %w", d.url, err)
	}
	for rows.Next() {
		var (
			k      key
			id     int64
			pk, pv string
		)
		if err := rows.Scan(&k.kind, &id, &pk, &pv); err != nil {
			rows.Close()
			return nil, fmt.Errorf("read properties from %s: %w", d.url, err)
		}
		k.id = uint64(id)
		if km := members[k]; km != nil {
			if km.Member.Properties == nil {
				km.Member.Properties = map[string]string{}
			}
			km.Member.Properties[pk] = pv
		}
	}
	if err := rows.Close(); err != nil {
		return nil, fmt.Errorf("read properties from %s: %w", d.url, err)
	}
	res := make([]KindMember, len(out))
	for i, km := range out {
		res[i] = *km
	}
	return res, nil
}

// isolation is the read transaction's level: a snapshot on PostgreSQL
// (repeatable read); SQLite's transactions are serializable anyway.
func (d *DB) isolation() sql.IsolationLevel {
	if d.dialect == Postgres {
		return sql.LevelRepeatableRead
	}
	return sql.LevelDefault
}

// Replace makes f the whole testbed, in one transaction, and bumps the
// version (the import of a testbed file or of a live controller). f must
// pass Validate. The audit log records it as actor's "import" of the
// testbed from source, with the counts and versions before and after. It
// returns the new version.
func (d *DB) Replace(ctx context.Context, f *registry.File, actor, source string) (uint64, error) {
	if err := f.Validate(); err != nil {
		return 0, fmt.Errorf("import: %w", err)
	}
	tx, err := d.sql.BeginTx(ctx, nil)
	if err != nil {
		return 0, fmt.Errorf("import into %s: %w", d.url, err)
	}
	defer tx.Rollback()
	fail := func(what string, err error) (uint64, error) {
		return 0, fmt.Errorf("import into %s: %s: %w", d.url, what, err)
	}
	before, err := d.summary(ctx, tx)
	if err != nil {
		return fail("read what is there", err)
	}
	for _, t := range []string{"properties", "addresses", "members", "islands", "removed"} {
		if _, err := d.exec(ctx, tx, "DELETE FROM "+t); err != nil {
			return fail("clear "+t, err)
		}
	}
	dialect := f.Dialect
	if dialect == "" {
		dialect = registry.DialectV1
	}
	// The feed cannot say what an import changed: readers of older
	// versions read everything again (the floor).
	var v int64
	err = tx.QueryRowContext(ctx, `SELECT version FROM testbed WHERE id = 1`).Scan(&v)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		v = 1
		_, err = d.exec(ctx, tx, `INSERT INTO testbed (id, mgmt_prefix, dialect, version, feed_floor) VALUES (1, ?, ?, ?, ?)`, f.MgmtPrefix.String(), dialect, v, v)
	case err == nil:
		v++
		_, err = d.exec(ctx, tx, `UPDATE testbed SET mgmt_prefix = ?, dialect = ?, version = ?, feed_floor = ? WHERE id = 1`, f.MgmtPrefix.String(), dialect, v, v)
	}
	if err != nil {
		return fail("testbed", err)
	}
	if err := d.insertTestbed(ctx, tx, f, uint64(v)); err != nil {
		return fail("write", err)
	}
	servers, nodes, hosts := f.Count()
	after := mustJSON(testbedSummary{Version: v, Source: source, Prefix: f.MgmtPrefix.String(), Islands: len(f.Islands), Servers: servers, Nodes: nodes, Hosts: hosts})
	if err := d.audit(ctx, tx, AuditEntry{Actor: actor, Action: "import", Object: "testbed", Before: before, After: after}); err != nil {
		return fail("audit", err)
	}
	if err := tx.Commit(); err != nil {
		return fail("commit", err)
	}
	return uint64(v), nil
}

// testbedSummary is what the audit log records of a whole testbed.
type testbedSummary struct {
	Version int64  `json:"version"`
	Source  string `json:"source,omitempty"`
	Prefix  string `json:"mgmt_ipv6_prefix"`
	Islands int    `json:"islands"`
	Servers int    `json:"servers"`
	Nodes   int    `json:"nodes"`
	Hosts   int    `json:"hosts"`
}

// summary describes the testbed in tx for the audit log ("" for none).
func (d *DB) summary(ctx context.Context, tx *sql.Tx) (string, error) {
	var s testbedSummary
	err := tx.QueryRowContext(ctx, `SELECT version, mgmt_prefix FROM testbed WHERE id = 1`).Scan(&s.Version, &s.Prefix)
	if errors.Is(err, sql.ErrNoRows) {
		return "", nil
	}
	if err != nil {
		return "", err
	}
	if err := tx.QueryRowContext(ctx, `SELECT COUNT(*) FROM islands`).Scan(&s.Islands); err != nil {
		return "", err
	}
	for kind, n := range map[string]*int{"server": &s.Servers, "node": &s.Nodes, "host": &s.Hosts} {
		if err := tx.QueryRowContext(ctx, d.rebind(`SELECT COUNT(*) FROM members WHERE kind = ?`), kind).Scan(n); err != nil {
			return "", err
		}
	}
	return mustJSON(s), nil
}

// mustJSON encodes values that cannot fail to encode.
func mustJSON(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		panic(fmt.Sprintf("registrydb: encode %T: %v", v, err))
	}
	return string(b)
}

// insertTestbed writes f's islands and members into empty tables.
func (d *DB) insertTestbed(ctx context.Context, tx *sql.Tx, f *registry.File, version uint64) error {
	for _, is := range f.Islands {
		if _, err := d.exec(ctx, tx, `INSERT INTO islands (id, name, description) VALUES (?, ?, ?)`, int64(is.ID), is.Name, is.Description); err != nil {
			return fmt.Errorf("island %d: %w", is.ID, err)
		}
	}
	for kind, ms := range map[string][]registry.FileMember{KindServer: f.Servers, KindNode: f.Nodes, KindHost: f.Hosts} {
		for i := range ms {
			if err := d.insertMember(ctx, tx, kind, &ms[i], version); err != nil {
				return fmt.Errorf("%s %d: %w", kind, ms[i].ID, err)
			}
		}
	}
	return nil
}

// replaceMember writes m in place of the member of its kind and id (or as
// a new one), changed at version: the feed then gives it to readers of
// older versions (Changes).
func (d *DB) replaceMember(ctx context.Context, tx *sql.Tx, kind string, m *registry.FileMember, version uint64) error {
	if _, err := d.exec(ctx, tx, `DELETE FROM members WHERE kind = ? AND id = ?`, kind, int64(m.ID)); err != nil {
		return err
	}
	if _, err := d.exec(ctx, tx, `DELETE FROM removed WHERE kind = ? AND id = ?`, kind, int64(m.ID)); err != nil {
		return err
	}
	return d.insertMember(ctx, tx, kind, m, version)
}

// insertMember writes one member with its addresses and properties,
// changed at version.
func (d *DB) insertMember(ctx context.Context, tx *sql.Tx, kind string, m *registry.FileMember, version uint64) error {
	var island, tincName, pubkey any
	if m.Island != 0 {
		island = int64(m.Island)
	}
	if m.Tinc != nil {
		tincName, pubkey = m.Tinc.Name, m.Tinc.PubKey
	}
	if _, err := d.exec(ctx, tx, `INSERT INTO members (kind, id, name, island, mgmt_addr, backend, tinc_name, pubkey, changed) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)`,
		kind, int64(m.ID), m.Name, island, m.MgmtAddr, m.Backend, tincName, pubkey, int64(version)); err != nil {
		return err
	}
	if m.Tinc != nil {
		for i, a := range m.Tinc.Addresses {
			var ai any
			if a.Island != 0 {
				ai = int64(a.Island)
			}
			if _, err := d.exec(ctx, tx, `INSERT INTO addresses (kind, id, pos, addr, port, island) VALUES (?, ?, ?, ?, ?, ?)`,
				kind, int64(m.ID), i, a.Addr, a.Port, ai); err != nil {
				return fmt.Errorf("address %d: %w", i, err)
			}
		}
	}
	keys := make([]string, 0, len(m.Properties))
	for k := range m.Properties {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		if _, err := d.exec(ctx, tx, `INSERT INTO properties (kind, id, key, value) VALUES (?, ?, ?, ?)`, kind, int64(m.ID), k, m.Properties[k]); err != nil {
			return fmt.Errorf("property %q: %w", k, err)
		}
	}
	return nil
}

// Init creates an empty testbed with the management prefix (a /48), in a
// database that holds none: the start of a testbed that comes from no
// earlier registry. It returns the version, 1.
func (d *DB) Init(ctx context.Context, actor string, prefix netip.Prefix) (uint64, error) {
	if _, err := addressing.New(prefix); err != nil {
		return 0, fmt.Errorf("init: %w", err)
	}
	tx, err := d.sql.BeginTx(ctx, nil)
	if err != nil {
		return 0, fmt.Errorf("init %s: %w", d.url, err)
	}
	defer tx.Rollback()
	var n int
	if err := tx.QueryRowContext(ctx, `SELECT COUNT(*) FROM testbed`).Scan(&n); err != nil {
		return 0, fmt.Errorf("init %s: %w", d.url, err)
	}
	if n != 0 {
		return 0, fmt.Errorf("init %s: the database holds a testbed already (%w); import replaces it", d.url, ErrExists)
	}
	if _, err := d.exec(ctx, tx, `INSERT INTO testbed (id, mgmt_prefix, dialect, version, feed_floor) VALUES (1, ?, ?, 1, 1)`, prefix.Masked().String(), registry.DialectV1); err != nil {
		return 0, fmt.Errorf("init %s: %w", d.url, err)
	}
	after := mustJSON(testbedSummary{Version: 1, Prefix: prefix.Masked().String()})
	if err := d.audit(ctx, tx, AuditEntry{Actor: actor, Action: "init", Object: "testbed", After: after}); err != nil {
		return 0, err
	}
	if err := tx.Commit(); err != nil {
		return 0, fmt.Errorf("init %s: %w", d.url, err)
	}
	return 1, nil
}
