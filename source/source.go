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
	// FromCache is set for the last-known-good copy; Saved is when it was
	// saved.
	FromCache bool
	Saved     time.Time
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
		return Snapshot{NotModified: true, Validators: s.Validators()}, nil
	}
	snap, err := s.build(r.Prefix, b, r.Problems)
	if err != nil {
		return Snapshot{}, err
	}
	snap.Validators = r.Validators
	if s.current != nil {
		removed := len(mesh.Diff(s.current, snap.Testbed).Removed)
		if err := s.cfg.Guard.Check("members", s.current.Len(), removed); err != nil {
			return Snapshot{}, fmt.Errorf("registry %s: snapshot %s: %w (%d rejected); keeping the one in use", s.cfg.URL, snap.Testbed.Version(), err, len(snap.Rejected))
		}
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
	if snap.NotModified {
		return
	}
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
func (s *Source) Use(tb *mesh.Testbed) { s.current, s.validators = tb, nil }

// Forget drops the ETags, so that the next Fetch gets everything (a
// changed registry, prefix or plan).
func (s *Source) Forget() { s.validators = nil }

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
	snap.Validators, snap.FromCache, snap.Saved = c.Validators, true, c.Saved
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
