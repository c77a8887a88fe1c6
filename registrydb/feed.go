package registrydb

import (
	"cmp"
	"context"
	"database/sql"
	"errors"
	"fmt"

	"slices"

	"github.com/confine-project/mgmtnet/mesh/registry"
)

// ErrFeedGone is wrapped by Changes' error for a version the feed cannot
// answer from: older than its floor (an import replaced everything since)
// or newer than the database's (another database, or one restored from an
// older backup). The reader reads everything again.
var ErrFeedGone = errors.New("the change feed cannot answer from that version")

// MemberKey names a member by kind and id.
type MemberKey struct {
	Kind string
	ID   uint64
}

// Changes is what changed in the testbed after a version: every member
// written since, as it is now, and every member removed since (and not
// added again), read in one transaction, as of Version.
type Changes struct {
	// Version is the testbed's version now; Since the one asked about.
	Version, Since uint64
	// Head is the testbed without members: its prefix, dialect and
	// islands, which a client needs to read the members as the server
	// renders them.
	Head    *registry.File
	Put     []KindMember
	Removed []MemberKey
}

// Changes returns what changed after version since. Since must be at
// least the feed's floor and at most the current version, or the error
// wraps ErrFeedGone (and says the current version). Two members with the
// same version are one write's; a member written several times since is
// given once, as it is now.
func (d *DB) Changes(ctx context.Context, since uint64) (*Changes, error) {
	tx, err := d.sql.BeginTx(ctx, &sql.TxOptions{ReadOnly: true, Isolation: d.isolation()})
	if err != nil {
		return nil, fmt.Errorf("read changes from %s: %w", d.url, err)
	}
	defer tx.Rollback()
	f, h, err := d.headIn(ctx, tx)
	if err != nil {
		return nil, err
	}
	if since < h.floor || since > h.version {
		return nil, fmt.Errorf("%w: version %d, when the database %s is at %d and answers from %d", ErrFeedGone, since, d.url, h.version, h.floor)
	}
	c := &Changes{Version: h.version, Since: since, Head: f}
	if since == h.version {
		return c, tx.Commit()
	}
	if c.Put, err = d.membersIn(ctx, tx, "changed > ?", []any{int64(since)}); err != nil {
		return nil, err
	}
	rows, err := tx.QueryContext(ctx, d.rebind(`SELECT kind, id FROM removed WHERE version > ? ORDER BY kind, id`), int64(since))
	if err != nil {
		return nil, fmt.Errorf("read changes from %s: %w", d.url, err)
	}
	for rows.Next() {
		var (
			k  MemberKey
			id int64
		)
		if err := rows.Scan(&k.Kind, &id); err != nil {
			rows.Close()
			return nil, fmt.Errorf("read changes from %s: %w", d.url, err)
		}
		k.ID = uint64(id)
		c.Removed = append(c.Removed, k)
	}
	if err := rows.Close(); err != nil {
		return nil, fmt.Errorf("read changes from %s: %w", d.url, err)
	}
	return c, tx.Commit()
}

// Apply returns f, the testbed at version c.Since, with c put over it: the
// testbed at c.Version (its head, and its members in id order). f is not
// modified; the members c does not name are shared with it.
func (c *Changes) Apply(f *registry.File) *registry.File {
	out := &registry.File{MgmtPrefix: c.Head.MgmtPrefix, Dialect: c.Head.Dialect, Islands: c.Head.Islands}
	drop := map[MemberKey]bool{}
	for _, r := range c.Removed {
		drop[r] = true
	}
	put := map[string][]registry.FileMember{}
	for _, p := range c.Put {
		drop[MemberKey{p.Kind, p.Member.ID}] = true
		put[p.Kind] = append(put[p.Kind], p.Member)
	}
	for _, g := range []struct {
		kind string
		in   []registry.FileMember
		out  *[]registry.FileMember
	}{{KindServer, f.Servers, &out.Servers}, {KindNode, f.Nodes, &out.Nodes}, {KindHost, f.Hosts, &out.Hosts}} {
		ms := make([]registry.FileMember, 0, len(g.in)+len(put[g.kind]))
		for _, m := range g.in {
			if !drop[MemberKey{g.kind, m.ID}] {
				ms = append(ms, m)
			}
		}
		ms = append(ms, put[g.kind]...)
		slices.SortFunc(ms, func(a, b registry.FileMember) int { return cmp.Compare(a.ID, b.ID) })
		*g.out = ms
	}
	return out
}
