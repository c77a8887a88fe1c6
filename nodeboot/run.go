package nodeboot

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/confine-project/mgmtnet/addressing"
	"github.com/confine-project/mgmtnet/mesh"
	"github.com/confine-project/mgmtnet/mesh/registry"
	"github.com/confine-project/mgmtnet/source"
	"github.com/confine-project/mgmtnet/tinc"
	"github.com/confine-project/mgmtnet/tincgen"
)

// Defaults of Options: a node at first boot usually cannot reach the
// registry before tinc is up, so it gives up quickly (each attempt waits at
// most StallTimeout for progress) and uses the firmware's gateway files.
// DefaultTimeout bounds the whole fetch: it leaves a registry that answers
// time to send the list of a large testbed, but not to drip it forever.
const (
	DefaultTimeout     = 60 * time.Second
	StallTimeout       = 10 * time.Second
	DefaultRetries     = 2
	DefaultGatewaysDir = "/etc/confine/tinc-gateways"
	DefaultTincDir     = "/etc/tinc/confine"
)

// Options configure Run.
type Options struct {
	// TincDir is the tinc directory of the net. Default DefaultTincDir.
	TincDir string
	// GatewaysDir holds the firmware's extra gateway host files.
	GatewaysDir string
	// Registry is the registry's base URI; "" means none (use the
	// firmware's gateway files). CAFile and Insecure are as in
	// registry.Options.
	Registry string
	CAFile   string
	Insecure bool
	// EnrolToken, when set, is a one-time invite ("mgmtnet registry
	// invite"): Run registers the node's public key with the registry
	// before it asks for the gateways. A failed enrolment is reported and
	// the boot goes on (the invite stays unspent for the next boot).
	EnrolToken string
	// RegistryIsDefault says that Registry is the firmware's default
	// (Config.FirmwareRegistryURI), named so in the report.
	RegistryIsDefault bool
	// Timeout bounds the whole registry fetch, every request, retry and
	// body read (default DefaultTimeout); each attempt's wait for
	// progress is at most StallTimeout. Retries is the number of retries (0 means
	// DefaultRetries, negative none); RetryWait is the first backoff
	// (default 500ms).
	Timeout   time.Duration
	Retries   int
	RetryWait time.Duration
	// DryRun computes and reports everything and changes nothing: no key,
	// no file, no signal.
	DryRun bool
	// Tincd is the net's tincd; nil means do not touch tincd (--no-start).
	Tincd tinc.Controller
	// KeyBits is the size of a new RSA key (default
	// tincgen.DefaultKeyBits); Random its entropy (nil: crypto/rand).
	KeyBits int
	Random  io.Reader
	// Logger receives warnings (rejected registry members, skipped
	// files) and debug logs. Nil discards.
	Logger *slog.Logger
	// Egress applies the slivers' egress routing (NewEgressApplier); nil
	// leaves the kernel alone (tests, --no-start).
	Egress EgressApplier
}

// Gateway sources of a Result.
const (
	SourceRegistry = "registry"
	SourceFirmware = "firmware"
)

// What Run did with tincd (Result.Tincd).
const (
	TincdUntouched = "untouched" // no Tincd (--no-start)
	TincdLeftAlone = "left alone"
	TincdStarted   = "started"
	TincdReloaded  = "reloaded"
	TincdRestarted = "restarted"
)

// Result is what Run did (or, with DryRun, would do).
type Result struct {
	Node         string `json:"node"`
	Address      string `json:"address"`
	Subnet       string `json:"subnet"`
	TincDir      string `json:"tinc_dir"`
	KeyGenerated bool   `json:"key_generated"`
	// Enrolled reports that the node's key was registered with an invite.
	Enrolled bool `json:"enrolled,omitempty"`
	Egress   bool `json:"egress"`
	// Registry is the base URI used ("" for none); RegistryError why it
	// was not used. Source is SourceRegistry or SourceFirmware.
	Registry      string   `json:"registry,omitempty"`
	RegistryError string   `json:"registry_error,omitempty"`
	Source        string   `json:"gateway_source"`
	Island        uint64   `json:"island,omitempty"`
	Gateways      []string `json:"gateways"` // in ConnectTo order
	Written       []string `json:"written"`
	Chmod         []string `json:"chmod"`
	Unchanged     []string `json:"unchanged"`
	Notes         []string `json:"notes"`
	// Tincd is one of the Tincd* constants ("would ..." with DryRun)
	// and Pid the pid of the tincd running at the end (0 for none).
	Tincd  string `json:"tincd"`
	Pid    int    `json:"pid,omitempty"`
	DryRun bool   `json:"dry_run"`
	Diff   string `json:"diff,omitempty"`
	// Lines are the human-readable report, one action per line.
	Lines []string `json:"-"`
}

func (r *Result) say(format string, args ...any) {
	r.Lines = append(r.Lines, fmt.Sprintf(format, args...))
}

// Run is the boot hook: key, gateways, files, tincd. It returns what it
// did so far also with an error.
func Run(ctx context.Context, cfg Config, opts Options) (*Result, error) {
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if opts.TincDir == "" {
		opts.TincDir = DefaultTincDir
	}
	if opts.KeyBits == 0 {
		opts.KeyBits = tincgen.DefaultKeyBits
	}
	plan, err := cfg.Plan()
	if err != nil {
		return nil, err
	}
	addr, _ := plan.NodeAddr(cfg.NodeID)
	subnet, _ := plan.NodeSubnet(cfg.NodeID)
	res := &Result{Node: cfg.TincName(), Address: addr.String(), Subnet: subnet.String(), TincDir: opts.TincDir,
		DryRun: opts.DryRun, Gateways: []string{}, Written: []string{}, Chmod: []string{}, Unchanged: []string{}, Notes: []string{}}

	// 1. The key.
	pub, generated, err := EnsureKey(opts.TincDir, opts.KeyBits, opts.Random, opts.DryRun)
	if err != nil {
		return res, err
	}
	res.KeyGenerated = generated
	if generated {
		keyPath := filepath.Join(opts.TincDir, KeyFile)
		if opts.DryRun {
			res.say("would generate a new RSA key in %s", keyPath)
		} else {
			res.say("generated a new RSA key in %s", keyPath)
		}
	}

	// 1b. Enrolment with an invite.
	if opts.EnrolToken != "" {
		enrol(ctx, cfg, opts, pub, res, log)
	}

	// 2. The gateways: the registry's, else the firmware's.
	gws, err := gateways(ctx, cfg, opts, res, log)
	if err != nil {
		return res, err
	}

	// 3. Desired files, and apply.
	egressOn, why := wantEgress(cfg, gws)
	res.Egress = egressOn
	if egressOn {
		res.say("egress on (%s)", why)
	}
	egress, err := nodeEgress(cfg, egressOn)
	if err != nil {
		return res, err
	}
	// The node's own host file as the image or the firmware left it, kept
	// when it means the same as ours. A file that cannot be read is
	// treated as missing here; Apply reports why.
	ownHost, _ := tincgen.ReadRegularFile(filepath.Join(opts.TincDir, HostsDir, cfg.TincName()))
	desired, err := DesiredFiles(cfg, pub, gws, DesiredOptions{Egress: egressOn, EgressUp: egressUp(), OwnHost: ownHost})
	if err != nil {
		return res, err
	}
	if c, ok := desired.Lookup(ConfFile); ok {
		if conf, err := tincgen.ParseConf(c.Data); err == nil {
			res.Gateways = append(res.Gateways, conf.ConnectTo...)
		}
	}
	oldName := tincgen.ConfName(filepath.Join(opts.TincDir, ConfFile))
	oldConf, _ := tincgen.ReadRegularFile(filepath.Join(opts.TincDir, ConfFile))
	rep, err := Apply(opts.TincDir, desired, opts.DryRun)
	res.Written = append(res.Written, rep.Written...)
	res.Chmod = append(res.Chmod, rep.Chmod...)
	res.Unchanged = append(res.Unchanged, rep.Unchanged...)
	res.Diff = rep.Diff
	verb := "wrote"
	if opts.DryRun {
		verb = "would write"
	}
	for _, n := range rep.Written {
		res.say("%s %s", verb, n)
	}
	for _, n := range rep.Chmod {
		if opts.DryRun {
			res.say("would fix the mode of %s", n)
		} else {
			res.say("fixed the mode of %s", n)
		}
	}
	if err != nil {
		return res, err
	}
	if len(rep.Unchanged) > 0 {
		res.say("unchanged: %s", strings.Join(rep.Unchanged, ", "))
	}

	// 4. tincd.
	restart := slices.Contains(rep.Written, HostsDir+"/"+cfg.TincName()) || oldName != cfg.TincName() ||
		slices.Contains(rep.Written, ConfFile) && interfaceChanged(oldConf, desired)
	if err := tincd(ctx, opts, res, rep.Changed(), restart); err != nil {
		return res, err
	}
	return res, applyEgress(ctx, opts, res, egress)
}

// gateways returns the node's gateways: the registry's when it answers and
// lists at least one, else the firmware's. It reports on res.
func gateways(ctx context.Context, cfg Config, opts Options, res *Result, log *slog.Logger) ([]Gateway, error) {
	note := func(s string) {
		res.Notes = append(res.Notes, s)
		log.Warn(s)
	}
	var why string
	if opts.Registry == "" {
		why = "no registry configured"
	} else {
		res.Registry = opts.Registry
		if opts.RegistryIsDefault {
			res.say("the UCI file names no registry (registry.base_uri): asking the firmware's default, %s", opts.Registry)
		}
		gws, island, reason, err := fromRegistry(ctx, cfg, opts, log, note)
		if err != nil {
			return nil, err
		}
		if reason == "" {
			res.Source, res.Island = SourceRegistry, island
			names := make([]string, len(gws))
			for i, g := range gws {
				names[i] = g.Name
			}
			in := ""
			if island != 0 {
				in = fmt.Sprintf(" (this node is in island %d)", island)
			}
			res.say("registry %s answered: gateways %s%s", opts.Registry, strings.Join(names, ", "), in)
			return gws, nil
		}
		res.RegistryError = reason
		why = fmt.Sprintf("registry %s %s", opts.Registry, reason)
	}
	res.Source = SourceFirmware
	gws, notes, err := FirmwareGateways(cfg, opts.TincDir, opts.GatewaysDir)
	for _, n := range notes {
		note(n)
		res.say("%s", n)
	}
	if err != nil {
		return nil, err
	}
	if len(gws) == 0 {
		return nil, fmt.Errorf("%s, and the firmware shipped no gateway file (%s, %s): %w", why,
			filepath.Join(opts.TincDir, HostsDir, cfg.TincGateway), opts.GatewaysDir, ErrNoGateway)
	}
	names := make([]string, len(gws))
	for i, g := range gws {
		names[i] = g.Name
	}
	res.say("%s; using the firmware's gateway files: %s", why, strings.Join(connectOrder(names, cfg.TincGateway), ", "))
	return gws, nil
}

// fromRegistry fetches the gateways from the registry. A registry that
// cannot be used gives a reason ("unreachable (connection refused)"), not
// an error: the caller falls back to the firmware's files.
func fromRegistry(ctx context.Context, cfg Config, opts Options, log *slog.Logger, note func(string)) (gws []Gateway, island uint64, reason string, err error) {
	timeout := opts.Timeout
	if timeout <= 0 {
		timeout = DefaultTimeout
	}
	retries := opts.Retries
	if retries == 0 {
		retries = DefaultRetries
	}
	wait := opts.RetryWait
	if wait <= 0 {
		wait = 500 * time.Millisecond
	}
	// The one snapshot source, with the node's own prefix as the fallback
	// when the registry declares none.
	// The node's own island, also when it is no member yet (no key).
	watch := func(c *mesh.Candidate) {
		if c.Kind == addressing.KindNode && c.ID == uint64(cfg.NodeID) {
			island = c.Island
		}
	}
	src, err := source.New(source.Config{URL: opts.Registry, Fallback: cfg.Prefix, Logger: log, Watch: watch,
		Client: registry.Options{CAFile: opts.CAFile, Insecure: opts.Insecure, Timeout: min(timeout, StallTimeout), FetchTimeout: timeout,
			Retries: retries, RetryWaitMin: wait, RetryWaitMax: 4 * wait}})
	if err != nil {
		return nil, 0, fmt.Sprintf("unusable (%v)", err), nil
	}
	snap, err := src.Fetch(ctx)
	if err != nil {
		if ctx.Err() != nil {
			return nil, 0, "", ctx.Err()
		}
		return nil, 0, failure(err), nil
	}
	for _, n := range snap.Notes {
		note(n)
	}
	for _, n := range prefixNotes(cfg, snap.Prefix) {
		note(n)
	}
	for _, p := range snap.Rejected {
		note("rejected " + p.String())
	}
	for _, p := range snap.Warnings {
		note("warning: " + p.String())
	}
	gws, notes := SnapshotGateways(cfg, snap.Testbed, island)
	for _, n := range notes {
		note(n)
	}
	if len(gws) == 0 {
		return nil, 0, "lists no gateway", nil
	}
	return gws, island, "", nil
}

// failure describes why a fetch failed, short: "unreachable (connect:
// connection refused)", "unreachable (timeout)", or "failed (<error>)"
// for an answer we could not use (TLS, HTTP status, JSON).
func failure(err error) string {
	var dnsErr *net.DNSError
	var opErr *net.OpError
	var netErr net.Error
	switch {
	case errors.As(err, &dnsErr):
		return fmt.Sprintf("unreachable (cannot resolve %s)", dnsErr.Name)
	case errors.As(err, &opErr) && opErr.Op == "dial":
		return fmt.Sprintf("unreachable (%v)", opErr.Err)
	case errors.Is(err, context.DeadlineExceeded) && strings.Contains(err.Error(), "whole fetch") && !strings.Contains(err.Error(), "without an answer"):
		// The fetch's own deadline: the registry answered, too slowly.
		return fmt.Sprintf("too slow (%v)", err)
	case errors.As(err, &netErr) && netErr.Timeout(), errors.Is(err, os.ErrDeadlineExceeded):
		return "unreachable (timeout)"
	}
	return fmt.Sprintf("failed (%v)", err)
}

// tincd starts tincd when it is not running, else restarts it (restart) or
// sends one SIGHUP when something changed, else leaves it alone.
func tincd(ctx context.Context, opts Options, res *Result, changed, restart bool) error {
	if opts.Tincd == nil {
		res.Tincd = TincdUntouched
		if !changed {
			res.say("nothing changed; tincd not touched (--no-start)")
		} else {
			res.say("tincd not touched (--no-start)")
		}
		return nil
	}
	st := opts.Tincd.State()
	running, pid := st.Running, st.Pid
	if opts.DryRun {
		switch {
		case !running:
			res.Tincd = "would start"
			res.say("would start tincd (not running)")
		case !changed:
			res.Tincd, res.Pid = TincdLeftAlone, pid
			res.say("nothing changed; tincd (pid %d) left alone", pid)
		case restart:
			res.Tincd, res.Pid = "would restart", pid
			res.say("would restart tincd (pid %d): its own host file, name, Interface or TunnelServer changes", pid)
		default:
			res.Tincd, res.Pid = "would reload", pid
			res.say("would send SIGHUP to tincd (pid %d)", pid)
		}
		return nil
	}
	// The one applier: it starts a stopped tincd, restarts for the changes
	// decided above (its own host file, a new Name, Interface or
	// TunnelServer; confine.md §4), and checks tinc.conf before a SIGHUP.
	a := &tinc.Applier{Dir: opts.TincDir, Ctl: opts.Tincd, StartStopped: true}
	switch {
	case restart:
		a.Need(tinc.ActionRestart)
	case changed:
		a.Need(tinc.ActionReload)
	}
	done, started, err := a.Deliver(ctx)
	if err != nil {
		if running {
			return fmt.Errorf("tincd (pid %d): %w", pid, err)
		}
		return err
	}
	newPid := opts.Tincd.State().Pid
	switch {
	case started:
		res.Tincd, res.Pid = TincdStarted, newPid
		res.say("started tincd (pid %d)", newPid)
	case done == tinc.ActionRestart:
		res.Tincd, res.Pid = TincdRestarted, newPid
		res.say("restarted tincd (pid %d, was %d): its own host file, name, Interface or TunnelServer changed", newPid, pid)
	case done == tinc.ActionReload:
		res.Tincd, res.Pid = TincdReloaded, pid
		res.say("sent SIGHUP to tincd (pid %d)", pid)
	default:
		res.Tincd, res.Pid = TincdLeftAlone, pid
		res.say("nothing changed; tincd (pid %d) left alone", pid)
	}
	return nil
}

// enrol registers the node's public key with the registry's invite,
// reporting on res; a failure is a note, not an error.
func enrol(ctx context.Context, cfg Config, opts Options, pub []byte, res *Result, log *slog.Logger) {
	fail := func(why string) {
		n := "enrolment with the invite failed: " + why + "; booting on (the invite stays unspent unless the registry says otherwise)"
		res.Notes = append(res.Notes, n)
		res.say("%s", n)
		log.Warn(n)
	}
	switch {
	case opts.Registry == "":
		fail("no registry configured")
		return
	case opts.DryRun:
		res.say("would register this node's public key with the registry's invite")
		return
	}
	c, err := registry.New(opts.Registry, registry.Options{CAFile: opts.CAFile, Insecure: opts.Insecure, Timeout: StallTimeout, Logger: log})
	if err != nil {
		fail(err.Error())
		return
	}
	if err := c.Enrol(ctx, "nodes", uint64(cfg.NodeID), opts.EnrolToken, string(pub)); err != nil {
		var refused *registry.EnrolRefused
		if errors.As(err, &refused) {
			n := fmt.Sprintf("the registry refused the invite: %s (status %d); booting on", refused.Detail, refused.Status)
			res.Notes = append(res.Notes, n)
			res.say("%s", n)
			log.Warn(n)
			return
		}
		fail(failure(err))
		return
	}
	res.Enrolled = true
	res.say("registered this node's public key with the registry (the invite is spent)")
}
