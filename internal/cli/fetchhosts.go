package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/confine-project/mgmtnet/addressing"
	"github.com/confine-project/mgmtnet/mesh"
	"github.com/confine-project/mgmtnet/mesh/registry"
	"github.com/confine-project/mgmtnet/tincgen"
	"github.com/confine-project/mgmtnet/vpn"
)

const fetchHostsSynopsis = `  mgmtnet fetch-hosts BASE_URI [--hosts-dir DIR] [--island ID] [--ca FILE] [--insecure]
                      [--dry-run] [--force] [--reload] [--json] [--timeout D]

Fetches every tinc member (nodes, servers, hosts) from the testbed registry's
REST API and writes one tinc host file per member into the hosts directory.
Only files whose bytes change are written (atomically); unchanged files keep
their mtime, so a following tincd SIGHUP bounces only the peers that changed.
Host files of members no longer in the registry are removed (node_*, host_*,
server* names only; other files are left alone), but never more than half of
them unless --force. A member that fails validation is reported and skipped;
the others are written. The registry's ETags are remembered in --cache, so a
run when nothing changed costs a few conditional requests and writes nothing.

Exit status: 0 success (also with rejected members), 1 error, 2 usage error.

Examples:
  mgmtnet fetch-hosts https://[fdf5:5351:1dfd::2]/api/ --ca /etc/confine/registry-server.crt --reload
  mgmtnet fetch-hosts http://127.0.0.1:8080/api/ --hosts-dir /tmp/hosts --dry-run
  mgmtnet fetch-hosts http://127.0.0.1:8080/api/ --hosts-dir /tmp/hosts --island 2 --json
`

// fetchHostsTimeout is the default --timeout of fetch-hosts: the whole
// fetch of a testbed of 66 000 members (47 MB of JSON as "mgmtnet registry
// serve" renders it) over a slow community link.
const fetchHostsTimeout = 5 * time.Minute

type fetchHostsFlags struct {
	hostsDir, ca, cache, prefix, net, pidFile, island  string
	insecure, dryRun, force, reload, json, full, quiet bool
	timeout                                            time.Duration
}

func runFetchHosts(ctx context.Context, env Env, args []string) error {
	fs := newFlagSet("fetch-hosts", fetchHostsSynopsis, env.Stderr)
	var f fetchHostsFlags
	fs.StringVar(&f.hostsDir, "hosts-dir", "/etc/tinc/confine/hosts", "tinc hosts `directory` to write")
	fs.StringVar(&f.island, "island", "", "island `ID`: gateways' addresses in this island are listed first")
	fs.StringVar(&f.ca, "ca", "", "PEM `file` of the CA (or the registry's own certificate) to verify TLS against")
	fs.BoolVar(&f.insecure, "insecure", false, "do not verify the registry's TLS certificate")
	fs.BoolVar(&f.dryRun, "dry-run", false, "print a unified diff of what would change and write nothing")
	fs.BoolVar(&f.force, "force", false, "allow removing more than half of the existing host files")
	fs.BoolVar(&f.reload, "reload", false, "send tincd a SIGHUP when something changed (after checking tinc.conf)")
	fs.BoolVar(&f.json, "json", false, "print the summary as one JSON object on stdout")
	fs.StringVar(&f.cache, "cache", "", "`file` remembering the registry's ETags between runs (default: .mgmtnet-fetch-hosts.json beside the hosts directory)")
	fs.BoolVar(&f.full, "full", false, "ignore the ETag cache: fetch everything and compare every file")
	fs.StringVar(&f.prefix, "prefix", "", "management `/48` to validate against (default: the registry's, checked against the members' addresses)")
	fs.StringVar(&f.net, "net", "confine", "tinc net `name`, for --reload")
	fs.StringVar(&f.pidFile, "pidfile", "", "tincd pid `file` for --reload (default /var/run/tinc.<net>.pid)")
	fs.DurationVar(&f.timeout, "timeout", fetchHostsTimeout, "deadline of the whole fetch: every request, retry and body read (each stall is bounded by at most 30s)")
	fs.BoolVar(&f.quiet, "quiet", false, "no progress output")
	pos, err := parseInterspersed(fs, args, env.Stdout)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return usagef("want exactly one BASE_URI (e.g. https://[fdf5:5351:1dfd::2]/api/), got %d arguments", len(pos))
	}
	if f.ca != "" && f.insecure {
		return usagef("--ca and --insecure exclude each other")
	}
	if f.timeout <= 0 {
		return usagef("--timeout %v: want a positive duration", f.timeout)
	}
	var island uint64
	if f.island != "" {
		if island, err = addressing.ParseID48("island", f.island); err != nil {
			return usagef("--island: %w", err)
		}
	}
	var declared netip.Prefix
	if f.prefix != "" {
		if declared, err = addressing.ParsePrefix48(f.prefix); err != nil {
			return usagef("--prefix: %w", err)
		}
		if _, err := addressing.New(declared); err != nil {
			return usagef("--prefix: %w", err)
		}
	}
	if f.cache == "" {
		f.cache = filepath.Join(filepath.Dir(filepath.Clean(f.hostsDir)), ".mgmtnet-fetch-hosts.json")
	}
	if f.pidFile == "" {
		f.pidFile = vpn.DefaultPidFile(f.net)
	}
	return fetchHosts(ctx, env, pos[0], island, declared, f)
}

// fetchCache is what fetch-hosts remembers between runs.
type fetchCache struct {
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

// fetchSummary is the one-line summary, and the --json output.
type fetchSummary struct {
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
}

func fetchHosts(ctx context.Context, env Env, base string, island uint64, declared netip.Prefix, f fetchHostsFlags) error {
	start := time.Now()
	progress := newProgress(env.Stderr, f.quiet || f.json)
	client, err := registry.New(base, registry.Options{
		CAFile: f.ca, Insecure: f.insecure, FetchTimeout: f.timeout, Logger: env.Logger,
		Progress: progress.update,
	})
	if err != nil {
		if errors.Is(err, registry.ErrBadURI) {
			return usageError{err}
		}
		return fmt.Errorf("registry client: %w", err)
	}
	absDir, err := filepath.Abs(f.hostsDir)
	if err != nil {
		return fmt.Errorf("hosts directory %s: %w", f.hostsDir, err)
	}
	// The cache applies only to the same registry, directory and options,
	// and only while the directory still exists.
	var validators map[string]string
	cache, cacheErr := loadFetchCache(f.cache)
	if cacheErr == nil && !f.full && !f.dryRun && cache.BaseURI == base && cache.HostsDir == absDir &&
		cache.Island == island && cache.Prefix == declared.String() && dirExists(absDir) {
		validators = cache.Validators
	}
	pending := cacheErr == nil && cache.HostsDir == absDir && cache.ReloadPending
	saveCache := func(validators map[string]string, version string, pending bool) {
		err := saveFetchCache(f.cache, fetchCache{BaseURI: base, HostsDir: absDir, Island: island,
			Prefix: declared.String(), Validators: validators, Version: version, ReloadPending: pending})
		if err != nil {
			env.Logger.Warn("cannot write the fetch-hosts cache; the next run will fetch everything", "file", f.cache, "err", err)
		}
	}
	// The candidates are validated as they stream in (mesh.Builder): the
	// registry's answer is never held whole, only the members.
	b := mesh.NewBuilder(mesh.BuildOptions{})
	snap, err := client.FetchInto(ctx, validators, b)
	if err != nil {
		return fmt.Errorf("fetch members from %s: %w", base, err)
	}
	sum := fetchSummary{Registry: base, HostsDir: absDir, DryRun: f.dryRun, Members: map[string]int{},
		Rejected: []string{}, Skipped: []string{}, Warnings: []string{}, Written: []string{}, Removed: []string{}}
	if snap.NotModified {
		sum.NotModified, sum.Version = true, cache.Version
		if f.reload && pending {
			if err := reloadTincd(absDir, f.pidFile); err != nil {
				return fmt.Errorf("%w (a reload is still pending from an earlier run)", err)
			}
			sum.Reloaded = true
			saveCache(cache.Validators, cache.Version, false)
		}
		sum.Seconds = time.Since(start).Seconds()
		return printFetchSummary(env, f.json, sum)
	}

	prefix, note := b.ChoosePrefix(snap.Prefix, addressing.DefaultMgmtPrefix())
	if declared.IsValid() {
		prefix, note = declared, ""
	}
	if note != "" {
		sum.Warnings = append(sum.Warnings, note)
	}
	plan, err := addressing.New(prefix)
	if err != nil {
		return fmt.Errorf("registry %s: management prefix: %w", base, err)
	}
	fetched := time.Now()
	progress.say("validating %d members against %s", b.Len(), plan.Mgmt())
	res := b.Build(plan)
	built := time.Now()
	for _, p := range snap.Problems {
		sum.Rejected = append(sum.Rejected, p.String())
	}
	for _, p := range res.Rejected {
		sum.Rejected = append(sum.Rejected, p.String())
	}
	for _, p := range res.Skipped {
		sum.Skipped = append(sum.Skipped, p.String())
	}
	for _, p := range res.Warnings {
		sum.Warnings = append(sum.Warnings, p.String())
	}
	for k, n := range res.Testbed.Count() {
		sum.Members[k.String()+"s"] = n
	}
	sum.Version = res.Testbed.Version()
	if !f.json {
		for _, r := range sum.Rejected {
			fmt.Fprintf(env.Stderr, "rejected %s\n", r)
		}
		for _, w := range sum.Warnings {
			fmt.Fprintf(env.Stderr, "warning: %s\n", w)
		}
	}

	// Rendered one at a time as the sync compares and writes them.
	var files tincgen.Source = tincgen.NewHostSource(res.Testbed, tincgen.HostOptions{Island: island})
	rendered := time.Now()
	progress.say("comparing and writing %d host files in %s", res.Testbed.Len(), absDir)
	// This host's own host file (tinc.conf's Name) is written when it is
	// missing (a new gateway gets it from the registry), but never
	// overwritten or removed: tinc 1.0 cannot reload its own Subnets on a
	// HUP, and node-boot or the gateway daemon owns it.
	own := tincgen.ConfName(filepath.Join(filepath.Dir(absDir), "tinc.conf"))
	if files.Has(own) {
		want, err := files.Render(own)
		if err != nil {
			return err
		}
		if have, err := tincgen.ReadHostFile(filepath.Join(absDir, own)); err == nil {
			files = tincgen.Without(files, own)
			if !bytes.Equal(have, want) {
				sum.Warnings = append(sum.Warnings, fmt.Sprintf("this host's own host file %s differs from the registry's; left as it is", own))
			}
		}
	}
	rep, err := tincgen.SyncSource(absDir, files, tincgen.SyncOptions{
		Force: f.force, DryRun: f.dryRun, Logger: env.Logger,
		Owned: func(name string) bool { return name != own && tincgen.OwnedName(name) },
		BeforeWrite: func() error {
			if !f.reload {
				return nil
			}
			pending = true
			return saveFetchCache(f.cache, fetchCache{BaseURI: base, HostsDir: absDir, Island: island,
				Prefix: declared.String(), ReloadPending: true})
		},
	})
	if err != nil {
		if errors.Is(err, tincgen.ErrMassDeletion) {
			return fmt.Errorf("%w; the registry returned %d members (%d rejected): if this is intended, run again with --force", err, res.Testbed.Len(), len(sum.Rejected))
		}
		return err
	}
	env.Logger.Debug("fetch-hosts phases", "fetch", fetched.Sub(start), "validate", built.Sub(fetched),
		"render", rendered.Sub(built), "sync", time.Since(rendered))
	sum.Written = append(sum.Written, rep.Written...)
	sum.Removed = append(sum.Removed, rep.Removed...)
	sum.Unchanged = len(rep.Unchanged)
	if f.dryRun {
		io.WriteString(env.Stdout, rep.Diff)
	} else {
		if f.reload && (rep.Changed() || pending) {
			if err := reloadTincd(absDir, f.pidFile); err != nil {
				saveCache(snap.Validators, sum.Version, true)
				return err
			}
			sum.Reloaded, pending = true, false
		}
		saveCache(snap.Validators, sum.Version, pending)
	}
	sum.Seconds = time.Since(start).Seconds()
	return printFetchSummary(env, f.json, sum)
}

// reloadTincd checks tinc.conf (tincd exits on SIGHUP when it cannot read
// it) and sends one SIGHUP.
func reloadTincd(hostsDir, pidFile string) error {
	conf := filepath.Join(filepath.Dir(hostsDir), "tinc.conf")
	b, err := tincgen.ReadRegularFile(conf)
	if err != nil {
		return fmt.Errorf("reload tincd: not signalling, tincd would exit: %w", err)
	}
	if _, err := tincgen.ParseConf(b); err != nil {
		return fmt.Errorf("reload tincd: not signalling, tincd would exit: %s: %w", conf, err)
	}
	if _, err := vpn.Signal(pidFile, syscall.SIGHUP); err != nil {
		return fmt.Errorf("reload tincd: %w", err)
	}
	return nil
}

func printFetchSummary(env Env, asJSON bool, s fetchSummary) error {
	if asJSON {
		b, err := json.Marshal(s)
		if err != nil {
			return fmt.Errorf("encode summary: %w", err)
		}
		fmt.Fprintf(env.Stdout, "%s\n", b)
		return nil
	}
	if s.NotModified {
		fmt.Fprintf(env.Stderr, "fetch-hosts: unchanged: the registry has not changed since the last run (version %s); nothing written (%.3fs)\n", s.Version, s.Seconds)
		return nil
	}
	var kinds []string
	for _, k := range []string{"nodes", "servers", "hosts", "gateways"} {
		if n := s.Members[k]; n > 0 {
			if k == "gateways" {
				k = "legacy gateways"
			}
			kinds = append(kinds, strconv.Itoa(n)+" "+k)
		}
	}
	if len(kinds) == 0 {
		kinds = []string{"no members"}
	}
	verb := "written"
	if s.DryRun {
		verb = "would write"
	}
	reloaded := ""
	if s.Reloaded {
		reloaded = "; tincd reloaded"
	}
	fmt.Fprintf(env.Stderr, "fetch-hosts: %s; %d rejected, %d skipped; %s %d, unchanged %d, removed %d%s (%.1fs)\n",
		strings.Join(kinds, ", "), len(s.Rejected), len(s.Skipped), verb, len(s.Written), s.Unchanged, len(s.Removed), reloaded, s.Seconds)
	return nil
}

func loadFetchCache(path string) (fetchCache, error) {
	var c fetchCache
	b, err := os.ReadFile(path)
	if err != nil {
		return c, err
	}
	if err := json.Unmarshal(b, &c); err != nil {
		return fetchCache{}, fmt.Errorf("cache %s: %w", path, err)
	}
	return c, nil
}

// saveFetchCache writes the cache atomically.
func saveFetchCache(path string, c fetchCache) error {
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

// progress reports on stderr what a long run is doing: nothing during the
// first second (a small testbed prints only its summary), then at most one
// line a second.
type progress struct {
	w     io.Writer
	off   bool
	start time.Time
	last  time.Time
}

func newProgress(w io.Writer, off bool) *progress {
	return &progress{w: w, off: off, start: time.Now()}
}

// update is the registry client's callback after each page.
func (p *progress) update(collection string, members int) {
	p.say("fetched %d members from %s", members, collection)
}

func (p *progress) say(format string, args ...any) {
	now := time.Now()
	if p.off || now.Sub(p.start) < time.Second || now.Sub(p.last) < time.Second {
		return
	}
	p.last = now
	fmt.Fprintf(p.w, "fetch-hosts: "+format+"\n", args...)
}
