package source

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net/netip"
	"time"

	"github.com/confine-project/mgmtnet/addressing"
	"github.com/confine-project/mgmtnet/mesh"
	"github.com/confine-project/mgmtnet/mesh/registry"
)

// Config is where snapshots come from and what they must pass.
type Config struct {
	// URL is the registry's base URI.
	URL string
	// Client are the registry client's options (TLS, timeouts, retries,
	// progress). Its Logger defaults to Logger.
	Client registry.Options
	// Prefix is the declared management /48; invalid: the registry's,
	// checked against the members' addresses (mesh.ChoosePrefix).
	Prefix netip.Prefix
	// Fallback is the /48 used when the registry declares none and no
	// member has an address; invalid: addressing.DefaultMgmtPrefix.
	Fallback netip.Prefix
	// Egress is the egress IPv4 prefix of the plan; invalid: the default.
	Egress netip.Prefix
	// Policy is the grant policy applied to every member.
	Policy mesh.Policy
	// Guard refuses a snapshot that removes too many members of the one
	// in use.
	Guard mesh.Guard
	// Cache is the last-known-good file; empty: none is kept.
	Cache string
	// Feed follows the registry's change feed where the registry links
	// one (registry.RelChanges): after the first whole read, Fetch asks
	// only what changed and rebuilds the snapshot in use with it. Against
	// a registry without one (the 2015 controller) Fetch polls with
	// ETags as before.
	Feed bool
	// Watch, when set, sees every candidate of a fetch as it is decoded,
	// before validation (node-boot reads its own island from it, also
	// when it is not a member yet). It must not keep the pointer.
	Watch  func(*mesh.Candidate)
	Logger *slog.Logger
}

// Snapshot is one answer of the registry, validated.
type Snapshot struct {
	// NotModified: the registry confirmed the snapshot in use; the rest
	// is empty.
	NotModified bool
	Testbed     *mesh.Testbed
	Prefix      netip.Prefix
	// Validators are the ETags that a Commit makes the next fetch send.
	Validators map[string]string
	// Rejected are members that failed validation, in the registry's
	// answer or in mesh.Build; Skipped are deliberately not in the VPN;
	// Warnings were kept with a part dropped.
	Rejected, Skipped, Warnings []mesh.Problem
	// Notes say how the prefix was chosen, when the registry's declared
	// one did not hold the members' addresses.
	Notes []string
	// regPrefix is the prefix the registry declared, for rebuilds from
	// the feed.
	regPrefix netip.Prefix
	// FromCache is set for the last-known-good copy; Saved is when it was
	// saved.
	FromCache bool
	Saved     time.Time
	// Feed is the registry's change feed ("" for none, or Config.Feed
	// unset) and FeedVersion the version this snapshot holds at least;
	// FromFeed is set for a snapshot rebuilt from the feed's changes.
	Feed        string
	FeedVersion uint64
	FromFeed    bool
}

// Source yields the snapshots of one registry. It is not safe for
// concurrent use: one loop owns it.
type Source struct {
	cfg    Config
	log    *slog.Logger
	client *registry.Client
	keys   *mesh.KeyCache

	validators map[string]string
	current    *mesh.Testbed // the snapshot in use (Commit), for the guard

	// The change feed of the snapshot in use (see Config.Feed): its URL
	// and version, the prefix the registry declared, and the members that
	// are not in the testbed (rejected, skipped), which a rebuild from
	// the feed carries over unless the feed changes them.
	feed        string
	feedVersion uint64
	regPrefix   netip.Prefix
	rejected    []mesh.Problem
	skipped     []mesh.Problem
}

// New returns a Source for cfg. An unusable URL is an error wrapping
// registry.ErrBadURI.
func New(cfg Config) (*Source, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Client.Logger == nil {
		cfg.Client.Logger = cfg.Logger
	}
	cfg.Client.Feed = cfg.Feed
	c, err := registry.New(cfg.URL, cfg.Client)
	if err != nil {
		return nil, fmt.Errorf("registry client: %w", err)
	}
	return &Source{cfg: cfg, log: cfg.Logger, client: c, keys: mesh.NewKeyCache()}, nil
}

// URL is the registry's base URI.
func (s *Source) URL() string { return s.cfg.URL }

// Guard is the mass-deletion guard in force.
func (s *Source) Guard() mesh.Guard { return s.cfg.Guard }

// Validators are the ETags of the snapshot in use.
func (s *Source) Validators() map[string]string { return maps.Clone(s.validators) }

// SetValidators makes the next Fetch conditional on these ETags (a
// one-shot command's memory of its last run); nil fetches everything.
func (s *Source) SetValidators(v map[string]string) { s.validators = maps.Clone(v) }

// Current is the snapshot in use: the last one committed.
func (s *Source) Current() *mesh.Testbed { return s.current }

// Fetch asks the registry for what changed since the snapshot in use and
// validates the answer. It changes nothing: Commit does, once the
// caller's appliers took the snapshot. A snapshot that would remove more
// members of the one in use than the Guard allows is an error wrapping
// mesh.ErrMassDeletion.
func (s *Source) Fetch(ctx context.Context) (Snapshot, error) {
	if s.feed != "" && s.current != nil {
		snap, err := s.fetchFeed(ctx)
		switch {
		case err == nil:
			return snap, nil
		case errors.Is(err, registry.ErrFeedGone), errors.Is(err, errFeedConflict):
			s.log.Info("reading the whole registry again", "reason", err)
			s.feed = ""
		default:
			return Snapshot{}, err
		}
	}
	return s.fetchAll(ctx)
}

// errFeedConflict is why a snapshot is not rebuilt from the feed: members
// were rejected for colliding with others, and only a whole read can tell
// whether a change of one ended the collision.
var errFeedConflict = errors.New("members collide with each other, and a change may have ended it")

// FeedVersion is the change feed's version of the snapshot in use, and
// its URL ("" when it follows none).
func (s *Source) FeedVersion() (string, uint64) { return s.feed, s.feedVersion }

// WaitChange waits until the registry's change feed at feed has something
// after version since, for at most the client's long-poll wait: it
// returns true when there is, false when the wait ended with nothing. It
// may run beside Fetch (it touches none of the Source's state).
func (s *Source) WaitChange(ctx context.Context, feed string, since uint64) (bool, error) {
	r, err := s.client.Changes(ctx, feed, since, s.client.LongPollWait())
	if err != nil {
		if errors.Is(err, registry.ErrFeedGone) {
			return true, nil // Fetch reads everything again
		}
		return false, fmt.Errorf("follow the change feed of %s: %w", s.cfg.URL, err)
	}
	return r.Version != since, nil
}

// fetchFeed rebuilds the snapshot in use with what the feed says changed:
// every member it does not name as it is, the ones it puts as given. The
// result is what a whole read would give.
func (s *Source) fetchFeed(ctx context.Context) (Snapshot, error) {
	r, err := s.client.Changes(ctx, s.feed, s.feedVersion, 0)
	if err != nil {
		if errors.Is(err, registry.ErrFeedGone) {
			return Snapshot{}, err
		}
		return Snapshot{}, fmt.Errorf("follow the change feed of %s: %w", s.cfg.URL, err)
	}
	if r.Version == s.feedVersion && len(r.Put)+len(r.Removed)+len(r.Problems) == 0 {
		return Snapshot{NotModified: true, Validators: s.Validators(), Feed: s.feed, FeedVersion: r.Version}, nil
	}
	for _, p := range s.rejected {
		if p.Conflict {
			return Snapshot{}, errFeedConflict
		}
	}
	touched := map[registry.MemberRef]bool{}
	for _, c := range r.Put {
		touched[registry.MemberRef{Kind: c.Kind, ID: c.ID}] = true
	}
	for _, m := range r.Removed {
		touched[m] = true
	}
	for _, p := range r.Problems {
		touched[registry.MemberRef{Kind: p.Kind, ID: p.ID}] = true
	}
	b := s.builder()
	for c := range s.current.Candidates() {
		if !touched[registry.MemberRef{Kind: c.Kind, ID: c.ID}] {
			b.Add(&c)
		}
	}
	for i := range r.Put {
		if s.cfg.Watch != nil {
			s.cfg.Watch(&r.Put[i])
		}
		b.Add(&r.Put[i])
	}
	carried := func(ps []mesh.Problem) []mesh.Problem {
		var out []mesh.Problem
		for _, p := range ps {
			if !touched[registry.MemberRef{Kind: p.Kind, ID: p.ID}] {
				out = append(out, p)
			}
		}
		return out
	}
	snap, err := s.build(s.regPrefix, b, append(carried(s.rejected), r.Problems...))
	if err != nil {
		return Snapshot{}, err
	}
	snap.Skipped = append(snap.Skipped, carried(s.skipped)...)
	// No ETags: those of the last whole read no longer describe the
	// snapshot, and a registry back at that content would answer 304 for
	// a snapshot that is not it.
	snap.Validators, snap.Feed, snap.FeedVersion, snap.FromFeed = nil, s.feed, r.Version, true
	if err := s.guard(snap); err != nil {
		return Snapshot{}, err
	}
	return snap, nil
}

// guard refuses a snapshot that removes more members of the one in use
// than the Guard allows.
func (s *Source) guard(snap Snapshot) error {
	if s.current == nil {
		return nil
	}
	removed := len(mesh.Diff(s.current, snap.Testbed).Removed)
	if err := s.cfg.Guard.Check("members", s.current.Len(), removed); err != nil {
		return fmt.Errorf("registry %s: snapshot %s: %w (%d rejected); keeping the one in use", s.cfg.URL, snap.Testbed.Version(), err, len(snap.Rejected))
	}
	return nil
}

// fetchAll reads the whole registry (conditionally on the ETags of the
// snapshot in use).
func (s *Source) fetchAll(ctx context.Context) (Snapshot, error) {
	// The candidates are validated as they stream in (mesh.Builder): the
	// registry's answer is never held whole, only the members.
	b := s.builder()
	var sink registry.Sink = b
	if s.cfg.Watch != nil {
		sink = watched{b, s.cfg.Watch}
	}
	r, err := s.client.FetchInto(ctx, s.validators, sink)
	if err != nil {
		return Snapshot{}, fmt.Errorf("fetch members from %s: %w", s.cfg.URL, err)
	}
	if r.NotModified {
		return Snapshot{NotModified: true, Validators: s.Validators(), Feed: r.Feed, FeedVersion: r.FeedVersion}, nil
	}
	snap, err := s.build(r.Prefix, b, r.Problems)
	if err != nil {
		return Snapshot{}, err
	}
	snap.Validators, snap.Feed, snap.FeedVersion = r.Validators, r.Feed, r.FeedVersion
	snap.regPrefix = r.Prefix
	if err := s.guard(snap); err != nil {
		return Snapshot{}, err
	}
	return snap, nil
}

// builder returns a mesh.Builder for a fetch or the cache to stream
// candidates into, sized for a snapshot like the one in use.
func (s *Source) builder() *mesh.Builder {
	b := mesh.NewBuilder(mesh.BuildOptions{Keys: s.keys, Policy: s.cfg.Policy})
	if s.current != nil {
		b.Grow(s.current.Len())
	}
	return b
}

// watched is a registry.Sink that shows each candidate to a watcher
// before the Builder takes it.
type watched struct {
	*mesh.Builder
	watch func(*mesh.Candidate)
}

func (w watched) Add(c *mesh.Candidate) {
	w.watch(c)
	w.Builder.Add(c)
}

// build validates the candidates of b against the declared or the chosen
// prefix.
func (s *Source) build(regPrefix netip.Prefix, b *mesh.Builder, problems []mesh.Problem) (Snapshot, error) {
	fallback := s.cfg.Fallback
	if !fallback.IsValid() {
		fallback = addressing.DefaultMgmtPrefix()
	}
	prefix, note := b.ChoosePrefix(regPrefix, fallback)
	if s.cfg.Prefix.IsValid() {
		prefix, note = s.cfg.Prefix, ""
	}
	var snap Snapshot
	if note != "" {
		snap.Notes = append(snap.Notes, note)
	}
	egress := s.cfg.Egress
	if !egress.IsValid() {
		egress = addressing.DefaultEgressPrefix()
	}
	plan, err := addressing.NewFromConfig(addressing.Config{Mgmt: prefix, Egress: egress})
	if err != nil {
		return Snapshot{}, fmt.Errorf("registry %s: management prefix %s: %w", s.cfg.URL, prefix, err)
	}
	res := b.Build(plan)
	snap.Testbed, snap.Prefix = res.Testbed, prefix
	snap.Rejected = append(append(snap.Rejected, problems...), res.Rejected...)
	snap.Skipped, snap.Warnings = res.Skipped, res.Warnings
	return snap, nil
}

// Commit makes snap the snapshot in use: the next Fetch is conditional on
// its ETags and guarded against it. A fetched snapshot is saved as the
// last-known-good copy (a failure to save is logged: the snapshot is in
// use all the same).
func (s *Source) Commit(snap Snapshot) {
	switch {
	case !snap.NotModified, snap.Feed != "" && s.current != nil:
		// A 304 with the feed's version confirms the snapshot in use (the
		// last-known-good copy, say) at that version.
		s.feed, s.feedVersion = snap.Feed, snap.FeedVersion
	}
	if snap.NotModified {
		return
	}
	if !snap.FromFeed {
		s.regPrefix = snap.regPrefix
	}
	s.rejected, s.skipped = snap.Rejected, snap.Skipped
	s.current, s.validators = snap.Testbed, maps.Clone(snap.Validators)
	if s.cfg.Cache == "" || snap.FromCache {
		return
	}
	err := saveSnapshot(s.cfg.Cache, snapshot{Saved: time.Now().UTC(), RegistryURL: s.cfg.URL,
		Prefix: snap.Prefix.String(), Validators: snap.Validators}, snap.Testbed)
	if err != nil {
		s.log.Warn("cannot save the last-known-good snapshot", "err", err)
	}
}

// Use makes tb the snapshot in use without ETags (a Source made anew for
// a changed config keeps guarding what runs).
func (s *Source) Use(tb *mesh.Testbed) { s.current, s.validators, s.feed = tb, nil, "" }

// Forget drops the ETags and the feed, so that the next Fetch gets
// everything (a changed registry, prefix or plan, a periodic full resync).
func (s *Source) Forget() { s.validators, s.feed = nil, "" }

// ErrNoCache is Load's error when no last-known-good copy is kept.
var ErrNoCache = errors.New("no last-known-good snapshot is kept")

// Load reads the last-known-good copy and validates it as Fetch does.
// Committing it makes its ETags those of the next Fetch, so a registry
// that comes back unchanged answers 304.
func (s *Source) Load() (Snapshot, error) {
	if s.cfg.Cache == "" {
		return Snapshot{}, ErrNoCache
	}
	b := s.builder()
	c, err := loadSnapshot(s.cfg.Cache, b)
	if err != nil {
		return Snapshot{}, err
	}
	p, _ := netip.ParsePrefix(c.Prefix)
	snap, err := s.build(p, b, nil)
	if err != nil {
		return Snapshot{}, err
	}
	snap.Validators, snap.FromCache, snap.Saved, snap.regPrefix = c.Validators, true, c.Saved, p
	return snap, nil
}

// Backoff is the one retry policy of a loop that polls the registry:
// after a failure it waits Min, then twice as long each time, at most
// Max, with equal jitter (half fixed, half random) so that gateways do
// not hammer a registry that comes back in lockstep; after a success,
// the poll interval with ±10% jitter.
type Backoff struct {
	Min, Max time.Duration
	next     time.Duration
}

// Next returns the wait before the next poll after a poll that failed or
// not, for a poll interval.
func (b *Backoff) Next(failed bool, interval time.Duration) time.Duration {
	if !failed {
		b.next = 0
		return jitter(interval, 0.1)
	}
	if b.next == 0 {
		b.next = b.Min
	}
	d := min(b.next, b.Max, interval)
	b.next = min(b.next*2, b.Max)
	return d/2 + randN(d/2+1)
}
