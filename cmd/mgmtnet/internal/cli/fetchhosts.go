package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/confine-project/mgmtnet/addressing"
	"github.com/confine-project/mgmtnet/fetchhosts"
	"github.com/confine-project/mgmtnet/mesh"
	"github.com/confine-project/mgmtnet/mesh/registry"
	"github.com/confine-project/mgmtnet/tinc"
)

const fetchHostsSynopsis = `  mgmtnet fetch-hosts BASE_URI [--hosts-dir DIR] [--island ID] [--ca FILE] [--insecure]
                      [--dry-run] [--force] [--max-remove-fraction F] [--reload]
                      [--json] [--timeout D] [--cache FILE] [--full] [--prefix P/48]
                      [--net NAME] [--pidfile FILE] [--quiet]

Fetches every tinc member (nodes, servers, hosts) from the testbed registry's
REST API and writes one tinc host file per member into the hosts directory.
Only files whose bytes change are written (atomically); unchanged files keep
their mtime, so a following tincd SIGHUP bounces only the peers that changed.
Host files of members no longer in the registry are removed (node_*, host_*,
server* names only; other files are left alone), but never more than half of
them unless --force (--max-remove-fraction sets another limit). A member
that fails validation is reported and skipped; the others are written. The registry's ETags are remembered in --cache, so a
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
	maxRemove                                          float64
}

func runFetchHosts(ctx context.Context, env Env, args []string) error {
	fs := newFlagSet("fetch-hosts", fetchHostsSynopsis, env.Stderr)
	var f fetchHostsFlags
	fs.StringVar(&f.hostsDir, "hosts-dir", "/etc/tinc/confine/hosts", "tinc hosts `directory` to write")
	fs.StringVar(&f.island, "island", "", "island `ID`: gateways' addresses in this island are listed first")
	fs.StringVar(&f.ca, "ca", "", "PEM `file` of the CA (or the registry's own certificate) to verify TLS against")
	fs.BoolVar(&f.insecure, "insecure", false, "do not verify the registry's TLS certificate")
	fs.BoolVar(&f.dryRun, "dry-run", false, "print a unified diff of what would change and write nothing")
	fs.BoolVar(&f.force, "force", false, "allow removing more than --max-remove-fraction of the existing host files")
	fs.Float64Var(&f.maxRemove, "max-remove-fraction", mesh.DefaultMaxRemoveFraction, "largest `fraction` of the existing host files one run may remove without --force")
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
		f.cache = fetchhosts.DefaultState(f.hostsDir)
	}
	if !(f.maxRemove > 0 && f.maxRemove <= 1) {
		return usagef("--max-remove-fraction %v: want a fraction in (0, 1]", f.maxRemove)
	}
	if f.pidFile == "" {
		f.pidFile = tinc.DefaultPidFile(f.net)
	}
	return fetchHosts(ctx, env, pos[0], island, declared, f)
}

func fetchHosts(ctx context.Context, env Env, base string, island uint64, declared netip.Prefix, f fetchHostsFlags) error {
	progress := newProgress(env.Stderr, f.quiet || f.json)
	sum, err := fetchhosts.Run(ctx, fetchhosts.Config{Registry: base, HostsDir: f.hostsDir, Island: island, Prefix: declared,
		Client: registry.Options{CAFile: f.ca, Insecure: f.insecure, FetchTimeout: f.timeout, Progress: progress.update},
		State:  f.cache, Full: f.full, DryRun: f.dryRun, Guard: mesh.Guard{Force: f.force, MaxRemoveFraction: f.maxRemove},
		Reload: f.reload, PidFile: f.pidFile, Progress: progress.say, Logger: env.Logger})
	if err != nil {
		if errors.Is(err, registry.ErrBadURI) {
			return usageError{err}
		}
		return err
	}
	if !f.json {
		for _, r := range sum.Rejected {
			fmt.Fprintf(env.Stderr, "rejected %s\n", r)
		}
		for _, w := range sum.Warnings {
			fmt.Fprintf(env.Stderr, "warning: %s\n", w)
		}
	}
	if f.dryRun {
		io.WriteString(env.Stdout, sum.Diff)
	}
	return printFetchSummary(env, f.json, sum)
}

func printFetchSummary(env Env, asJSON bool, s fetchhosts.Summary) error {
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
