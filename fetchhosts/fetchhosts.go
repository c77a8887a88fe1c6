package fetchhosts

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"time"

	"github.com/confine-project/mgmtnet/mesh"
	"github.com/confine-project/mgmtnet/mesh/registry"
	"github.com/confine-project/mgmtnet/source"
	"github.com/confine-project/mgmtnet/tinc"
	"github.com/confine-project/mgmtnet/tincgen"
)

// Config is one run.
type Config struct {
	// Registry is the registry's base URI; Client its client's options.
	Registry string
	Client   registry.Options
	// HostsDir is the tinc hosts directory written (its parent holds
	// tinc.conf).
	HostsDir string
	// Island lists gateways' addresses in this island first.
	Island uint64
	// Prefix is the declared management /48 (invalid: the registry's).
	Prefix netip.Prefix
	// State remembers the registry's ETags and a SIGHUP still owed between
	// runs; default .mgmtnet-fetch-hosts.json beside HostsDir.
	State string
	// Full ignores State's ETags: everything is fetched and compared.
	Full bool
	// DryRun writes nothing; Summary.Diff says what would change.
	DryRun bool
	// Guard limits the host files one run may remove.
	Guard mesh.Guard
	// Reload sends tincd (PidFile) a SIGHUP when something changed.
	Reload  bool
	PidFile string
	// Progress, when set, gets a line now and then on a long run.
	Progress func(format string, args ...any)
	Logger   *slog.Logger
}

// Summary is what a run did; "mgmtnet fetch-hosts --json" prints it.
type Summary struct {
	Registry    string         `json:"registry"`
	HostsDir    string         `json:"hosts_dir"`
	NotModified bool           `json:"not_modified"`
	Version     string         `json:"version,omitempty"`
	Members     map[string]int `json:"members"`
	Rejected    []string       `json:"rejected"`
	Skipped     []string       `json:"skipped"`
	Warnings    []string       `json:"warnings"`
	Written     []string       `json:"written"`
	Unchanged   int            `json:"unchanged"`
	Removed     []string       `json:"removed"`
	DryRun      bool           `json:"dry_run"`
	Reloaded    bool           `json:"reloaded"`
	Seconds     float64        `json:"seconds"`
	// Diff is the unified diff of a DryRun.
	Diff string `json:"-"`
}

// DefaultState is the state file of a hosts directory.
func DefaultState(hostsDir string) string {
	return filepath.Join(filepath.Dir(filepath.Clean(hostsDir)), ".mgmtnet-fetch-hosts.json")
}

// state is what fetch-hosts remembers between runs.
type state struct {
	BaseURI    string            `json:"base_uri"`
	HostsDir   string            `json:"hosts_dir"`
	Island     uint64            `json:"island"`
	Prefix     string            `json:"prefix"`
	Validators map[string]string `json:"validators"`
	Version    string            `json:"version"`
	// ReloadPending is set before host files are written for a --reload
	// run and cleared once tincd got its SIGHUP, so that a run killed (or
	// whose signal failed) between the two still reloads tincd next time,
	// although the files are then unchanged.
	ReloadPending bool `json:"reload_pending,omitempty"`
}

// Run fetches, validates and writes once. A member that fails validation
// is in Summary.Rejected; the others are written. An unusable registry
// URI is an error wrapping registry.ErrBadURI.
func Run(ctx context.Context, cfg Config) (Summary, error) {
	start := time.Now()
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	say := cfg.Progress
	if say == nil {
		say = func(string, ...any) {}
	}
	if cfg.State == "" {
		cfg.State = DefaultState(cfg.HostsDir)
	}
	base := cfg.Registry
	absDir, err := filepath.Abs(cfg.HostsDir)
	if err != nil {
		return Summary{}, fmt.Errorf("hosts directory %s: %w", cfg.HostsDir, err)
	}
	src, err := source.New(source.Config{URL: base, Client: cfg.Client, Prefix: cfg.Prefix, Logger: cfg.Logger})
	if err != nil {
		return Summary{}, err
	}
	app := &tinc.Applier{Dir: filepath.Dir(absDir), Hosts: absDir, Ctl: tinc.PidFile(cfg.PidFile)}
	// The state applies only to the same registry, directory and options,
	// and only while the directory still exists.
	st, stErr := loadState(cfg.State)
	if stErr == nil && !cfg.Full && !cfg.DryRun && st.BaseURI == base && st.HostsDir == absDir &&
		st.Island == cfg.Island && st.Prefix == cfg.Prefix.String() && dirExists(absDir) {
		src.SetValidators(st.Validators)
	}
	pending := stErr == nil && st.HostsDir == absDir && st.ReloadPending
	save := func(validators map[string]string, version string, pending bool) {
		err := saveState(cfg.State, state{BaseURI: base, HostsDir: absDir, Island: cfg.Island,
			Prefix: cfg.Prefix.String(), Validators: validators, Version: version, ReloadPending: pending})
		if err != nil {
			cfg.Logger.Warn("cannot write the fetch-hosts state; the next run will fetch everything", "file", cfg.State, "err", err)
		}
	}
	// tinc.Reload checks tinc.conf, then signals; no tincd running is an
	// error here (fetch-hosts was asked to reload one), where the
	// applier's Deliver would leave a stopped tincd to read the files
	// when it starts.
	reload := func() error { return tinc.Reload(app.Dir, app.Ctl) }
	snap, err := src.Fetch(ctx)
	if err != nil {
		return Summary{}, err
	}
	sum := Summary{Registry: base, HostsDir: absDir, DryRun: cfg.DryRun, Members: map[string]int{},
		Rejected: []string{}, Skipped: []string{}, Warnings: []string{}, Written: []string{}, Removed: []string{}}
	if snap.NotModified {
		sum.NotModified, sum.Version = true, st.Version
		if cfg.Reload && pending {
			if err := reload(); err != nil {
				return sum, fmt.Errorf("%w (a reload is still pending from an earlier run)", err)
			}
			sum.Reloaded = true
			save(st.Validators, st.Version, false)
		}
		sum.Seconds = time.Since(start).Seconds()
		return sum, nil
	}
	tb := snap.Testbed
	sum.Warnings = append(sum.Warnings, snap.Notes...)
	for _, p := range snap.Rejected {
		sum.Rejected = append(sum.Rejected, p.String())
	}
	for _, p := range snap.Skipped {
		sum.Skipped = append(sum.Skipped, p.String())
	}
	for _, p := range snap.Warnings {
		sum.Warnings = append(sum.Warnings, p.String())
	}
	for k, n := range tb.Count() {
		sum.Members[k.String()+"s"] = n
	}
	sum.Version = tb.Version()

	// Rendered one at a time as the sync compares and writes them.
	var files tincgen.Source = tincgen.NewHostSource(tb, tincgen.HostOptions{Island: cfg.Island})
	say("comparing and writing %d host files in %s", tb.Len(), absDir)
	// This host's own host file (tinc.conf's Name) is written when it is
	// missing (a new gateway gets it from the registry), but never
	// overwritten or removed: node-boot or the gateway daemon owns it.
	own := tincgen.ConfName(filepath.Join(filepath.Dir(absDir), "tinc.conf"))
	if files.Has(own) {
		want, err := files.Render(own)
		if err != nil {
			return sum, err
		}
		if have, err := tincgen.ReadHostFile(filepath.Join(absDir, own)); err == nil {
			files = tincgen.Without(files, own)
			if !bytes.Equal(have, want) {
				sum.Warnings = append(sum.Warnings, fmt.Sprintf("this host's own host file %s differs from the registry's; left as it is", own))
			}
		}
	}
	rep, err := app.Sync(files, tincgen.SyncOptions{
		Guard: cfg.Guard, DryRun: cfg.DryRun, Logger: cfg.Logger,
		Owned: func(name string) bool { return name != own && tincgen.OwnedName(name) },
		BeforeWrite: func() error {
			if !cfg.Reload {
				return nil
			}
			pending = true
			return saveState(cfg.State, state{BaseURI: base, HostsDir: absDir, Island: cfg.Island,
				Prefix: cfg.Prefix.String(), ReloadPending: true})
		},
	})
	if err != nil {
		if errors.Is(err, tincgen.ErrMassDeletion) {
			return sum, fmt.Errorf("%w; the registry returned %d members (%d rejected): if this is intended, run again with --force", err, tb.Len(), len(sum.Rejected))
		}
		return sum, err
	}
	sum.Written = append(sum.Written, rep.Written...)
	sum.Removed = append(sum.Removed, rep.Removed...)
	sum.Unchanged = len(rep.Unchanged)
	if cfg.DryRun {
		sum.Diff = rep.Diff
	} else {
		if cfg.Reload && (rep.Changed() || pending) {
			if err := reload(); err != nil {
				save(snap.Validators, sum.Version, true)
				return sum, err
			}
			sum.Reloaded, pending = true, false
		}
		save(snap.Validators, sum.Version, pending)
	}
	sum.Seconds = time.Since(start).Seconds()
	return sum, nil
}

func loadState(path string) (state, error) {
	var c state
	b, err := os.ReadFile(path)
	if err != nil {
		return c, err
	}
	if err := json.Unmarshal(b, &c); err != nil {
		return state{}, fmt.Errorf("state %s: %w", path, err)
	}
	return c, nil
}

// saveState writes the state atomically.
func saveState(path string, c state) error {
	b, err := json.MarshalIndent(c, "", "  ")
	if err != nil {
		return err
	}
	return tincgen.WriteFileAtomic(path, append(b, '\n'), 0o644)
}

func dirExists(p string) bool {
	st, err := os.Stat(p)
	return err == nil && st.IsDir()
}
