package gateway

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"math/rand/v2"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"runtime/debug"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	sddaemon "github.com/coreos/go-systemd/v22/daemon"
	"github.com/fsnotify/fsnotify"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/confine-project/mgmtnet/addressing"
	"github.com/confine-project/mgmtnet/mesh"
	mdns "github.com/confine-project/mgmtnet/mesh/dns"
	"github.com/confine-project/mgmtnet/mesh/registry"
	"github.com/confine-project/mgmtnet/tincgen"
)

// Event is what the daemon's loop just did; Options.OnEvent receives it
// (tests wait on these instead of sleeping).
type Event string

// Events reported to Options.OnEvent.
const (
	EventSynced        Event = "synced"         // a reconcile succeeded
	EventSyncFailed    Event = "sync-failed"    // a reconcile failed
	EventRepaired      Event = "repaired"       // host files checked after a file event
	EventReloaded      Event = "reloaded"       // the config was reloaded
	EventReloadFailed  Event = "reload-failed"  // the new config is invalid; the old one runs
	EventTincdStarted  Event = "tincd-started"  // tincd (re)started after an exit
	EventEgressChanged Event = "egress-changed" // egress announced or withdrawn
)

// Options are the daemon's collaborators. Nil ones get the real thing.
type Options struct {
	// ConfigPath is the config file, watched and re-read on reload.
	ConfigPath string
	Logger     *slog.Logger
	// Tincd defaults to NewManagedTincd or NewUnmanagedTincd by config.
	Tincd Tincd
	// Link defaults to NetlinkLink (managed mode only).
	Link Link
	// Egress defaults to NewNftEgress (nftables and netlink).
	Egress EgressKernel
	// Notify sends an sd_notify state; default the real one.
	Notify func(state string)
	// Reload requests a config reload (wire SIGHUP here).
	Reload <-chan os.Signal
	// OnEvent, if set, is called from the daemon's goroutine.
	OnEvent func(Event)
	// Force lets a sync remove more than guard.max_remove_fraction of the
	// host files (an operator's deliberate bulk decommission, with --once
	// --force). The daemon itself never forces.
	Force bool
}

// Daemon is the gateway daemon. Run owns its state; other goroutines
// reach it only through Status and Poll.
type Daemon struct {
	cfg    Config
	opts   Options
	log    *slog.Logger
	tincd  Tincd
	link   Link
	client *registry.Client
	m      *metrics

	statusReq chan chan Status
	pollReq   chan chan Status

	// Owned by the loop.
	tb           *mesh.Testbed
	prefix       netip.Prefix
	validators   map[string]string
	rejected     []string
	warnings     []string // what Build dropped from members it kept
	lastSync     time.Time
	fromCache    bool
	files        FileCounts
	hups         int
	restarts     int
	syncs        int
	lastErr      string
	regErr       string
	configErr    string
	peerLog      string // unmanaged tincd's log file, read for peers; fixed at New
	ready        bool
	fullDue      bool
	restartWait  time.Duration
	tincdStarted time.Time // when startTincd last succeeded
	touched      bool      // apply wrote or removed host files (see takeTouched)
	incremental  bool      // the next apply may sync only what changed since d.tb
	keys         *mesh.KeyCache
	// hupPending and restartPending survive a failed signal: the files are
	// written, so the next reconcile must still deliver it (a revoked
	// member must not keep its access because one SIGHUP failed).
	hupPending, restartPending bool
	published                  atomic.Pointer[Status]

	// Egress (egressd.go).
	health                 *health
	stopProbes             func()
	probeC                 chan ProbeResult
	probesOK, probesFailed int
	egressCounters         map[string]uint64
	egressErr              string
	egress                 EgressKernel
	egressApplied          bool
	// ownSubnets are the Subnet lines of this gateway's own host file as
	// last applied (nil: none applied yet); a change restarts tincd.
	ownSubnets *string
	nodeEgress bool // the last applied files carried the nodes' egress /32s

	dns    *mdns.Server // nil when not serving
	dnsErr string

	// refused counts the Subnet announcements tincd refused; written by
	// tincd's log reader, read by status.
	refused refusals
	// expected are the refusals expectRefusals foresees, by "member
	// prefix"; read by tincd's log reader.
	expected atomic.Pointer[map[string]bool]

	// The UDP watchdog (udpwatch.go): its targets, rebuilt when the
	// snapshot changes; the peers it finds dead; the repairs.
	udpT       atomic.Pointer[udpTargets]
	udpTB      *mesh.Testbed
	udpDeadC   chan []string
	udpRepairs int
	// The assignment of the last snapshot asked about (assign.go).
	assignTB      *mesh.Testbed
	assignSt      AssignmentStatus
	assignRefused map[string]bool
	udpLast       []UDPRepair
	lastHUP       time.Time
}

// New returns a daemon for a validated cfg.
func New(cfg Config, opts Options) (*Daemon, error) {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Notify == nil {
		opts.Notify = func(s string) { sddaemon.SdNotify(false, s) }
	}
	d := &Daemon{cfg: cfg, opts: opts, log: opts.Logger, tincd: opts.Tincd, link: opts.Link, m: newMetrics(),
		statusReq: make(chan chan Status), pollReq: make(chan chan Status), probeC: make(chan ProbeResult),
		egress: opts.Egress, udpDeadC: make(chan []string, 1)}
	if !cfg.Tinc.Manage {
		d.peerLog = cfg.Tinc.LogFile
	}
	if d.tincd == nil {
		if cfg.Tinc.Manage {
			d.tincd = NewManagedTincd(cfg.Tinc.Tincd, cfg.Tinc.Dir, cfg.PidFile(), d.refusal)
		} else {
			d.tincd = NewUnmanagedTincd(cfg.PidFile())
		}
	}
	if d.link == nil {
		d.link = NetlinkLink{}
	}
	if d.egress == nil {
		d.egress = NewNftEgress()
	}
	if err := d.newClient(); err != nil {
		return nil, err
	}
	return d, nil
}

func (d *Daemon) newClient() error {
	// registry.timeout bounds one whole fetch, retries and body reads
	// included (a registry that drips its answer cannot hold the loop
	// longer), and is at most MaxRegistryTimeout, well before systemd's
	// watchdog. Each stall within it is bounded by the client's default.
	c, err := registry.New(d.cfg.Registry.URL, registry.Options{CAFile: d.cfg.Registry.CA, Insecure: d.cfg.Registry.Insecure,
		FetchTimeout: d.cfg.Registry.Timeout.D(), Logger: d.log})
	if err != nil {
		return fmt.Errorf("registry client: %w", err)
	}
	d.client = c
	return nil
}

// Status returns the status the loop last published. It never waits for
// the loop, so a slow registry fetch does not stall "mgmtnet status".
func (d *Daemon) Status(ctx context.Context) (Status, error) {
	if p := d.published.Load(); p != nil {
		s := *p
		s.Peers = d.livePeers()
		if s.Egress.Counters != nil {
			// The kernel's counters now, not as of the last poll (the
			// seam is set once in New; reading counters does not race
			// with the loop's Apply).
			if c, err := d.egress.Counters(ctx); err == nil {
				s.Egress.Counters = c
			}
		}
		if s.LastSync != nil {
			age := time.Since(*s.LastSync).Seconds()
			s.SyncAgeSeconds = &age
		}
		return s, nil
	}
	return d.ask(ctx, d.statusReq)
}

// publish stores a copy of the status for Status; called by the loop.
func (d *Daemon) publish() {
	s := d.status()
	d.published.Store(&s)
	n := 0
	for _, p := range d.tincd.Peers() {
		if p.Connected {
			n++
		}
	}
	d.m.peersConnected.Set(float64(n))
}

// Poll asks the loop to reconcile now and returns the status after.
func (d *Daemon) Poll(ctx context.Context) (Status, error) {
	return d.ask(ctx, d.pollReq)
}

func (d *Daemon) ask(ctx context.Context, ch chan chan Status) (Status, error) {
	r := make(chan Status, 1)
	select {
	case ch <- r:
	case <-ctx.Done():
		return Status{}, ctx.Err()
	}
	select {
	case s := <-r:
		return s, nil
	case <-ctx.Done():
		return Status{}, ctx.Err()
	}
}

func (d *Daemon) event(e Event) {
	if d.opts.OnEvent != nil {
		d.opts.OnEvent(e)
	}
}

// Once reconciles once (reloading tincd if something changed) and saves
// the snapshot.
func (d *Daemon) Once(ctx context.Context) error {
	return d.reconcile(ctx, true)
}

// Check fetches once and writes the unified diff of what a reconcile would
// change to w. It changes nothing.
func (d *Daemon) Check(ctx context.Context, w io.Writer) (changed bool, err error) {
	b := d.newBuilder()
	snap, err := d.client.FetchInto(ctx, nil, b)
	if err != nil {
		return false, fmt.Errorf("fetch members from %s: %w", d.cfg.Registry.URL, err)
	}
	res, _, err := d.build(snap.Prefix, b)
	if err != nil {
		return false, err
	}
	for _, p := range snap.Problems {
		fmt.Fprintf(w, "# rejected %s\n", p)
	}
	for _, p := range res.Rejected {
		fmt.Fprintf(w, "# rejected %s\n", p)
	}
	files, own, err := d.desired(res.Testbed)
	if err != nil {
		return false, err
	}
	rep, err := tincgen.SyncSource(d.cfg.HostsDir(), files, d.syncOptions(own, true))
	if err != nil && !errors.Is(err, tincgen.ErrMassDeletion) {
		return false, err
	}
	io.WriteString(w, rep.Diff)
	return rep.Changed(), err
}

// newBuilder returns a mesh.Builder for a fetch or the cache to stream
// candidates into.
func (d *Daemon) newBuilder() *mesh.Builder {
	if d.keys == nil {
		d.keys = mesh.NewKeyCache()
	}
	b := mesh.NewBuilder(mesh.BuildOptions{Keys: d.keys, Policy: d.cfg.policy()})
	if d.tb != nil {
		b.Grow(d.tb.Len()) // the next snapshot is about as large
	}
	return b
}

// build validates the candidates of b against the configured or chosen
// prefix.
func (d *Daemon) build(regPrefix netip.Prefix, b *mesh.Builder) (mesh.Result, netip.Prefix, error) {
	prefix, note := b.ChoosePrefix(regPrefix, addressing.DefaultMgmtPrefix())
	if p := d.cfg.declaredPrefix(); p.IsValid() {
		prefix, note = p, ""
	}
	if note != "" {
		d.log.Warn(note)
	}
	plan, err := addressing.NewFromConfig(addressing.Config{Mgmt: prefix, Egress: d.cfg.egressPrefix()})
	if err != nil {
		return mesh.Result{}, prefix, fmt.Errorf("management prefix %s: %w", prefix, err)
	}
	return b.Build(plan), prefix, nil
}

// desired renders the host files of tb, this gateway's own included: the
// daemon owns the tinc directory, and the registry says which Subnets this
// gateway may announce (a change of them restarts tincd, since tinc 1.0
// cannot reload its own Subnets on a HUP). The own file is never removed,
// even when the registry stops listing this gateway. (fetch-hosts, a
// one-shot tool on machines it does not own, writes it only when missing.)
//
// The files are rendered one at a time as the sync compares and writes
// them (tincgen.HostSource), never all at once.
func (d *Daemon) desired(tb *mesh.Testbed) (tincgen.Source, string, error) {
	return tincgen.NewHostSource(tb, d.hostOptions(tb)), d.cfg.Identity.TincName, nil
}

func (d *Daemon) syncOptions(own string, dry bool) tincgen.SyncOptions {
	o := tincgen.SyncOptions{DryRun: dry, MaxRemoveFraction: d.cfg.Guard.MaxRemoveFraction, Force: d.opts.Force,
		Owned:  func(name string) bool { return name != own && tincgen.OwnedName(name) },
		Logger: d.log}
	if d.cfg.Tinc.TunnelServer {
		// TunnelServer implies StrictSubnets: tincd re-reads every
		// file's Subnets on SIGHUP, so a change of Subnets alone (another
		// gateway's relay routes, a node's egress /32) need not close
		// that peer's connection.
		o.KeepTime = func(name string) bool { return name != own }
	}
	return o
}

// reconcile fetches and applies. full compares every file even on 304.
func (d *Daemon) reconcile(ctx context.Context, full bool) error {
	full = full || d.fullDue
	d.syncs++
	d.m.syncs.Inc()
	fetched := d.validators
	err := d.reconcile1(ctx, full)
	if full || !maps.Equal(fetched, d.validators) {
		// A changed snapshot, or a full comparison, went through the whole
		// registry answer, the decoded candidates, the rendered files or
		// every file on disk; none of it is live any more. Hand the memory
		// back now rather than keep the peak resident for months (the
		// gateway's RSS target is for 66 000 members).
		debug.FreeOSMemory()
	}
	if err != nil {
		d.lastErr = err.Error()
		d.m.syncErrors.Inc()
		d.log.Error("reconcile failed; keeping the last good state", "err", err)
		d.event(EventSyncFailed)
	} else {
		d.lastErr = ""
		d.fullDue = false
		d.applyEgressKernel(ctx)
		d.event(EventSynced)
	}
	d.notifyStatus()
	return err
}

func (d *Daemon) reconcile1(ctx context.Context, full bool) error {
	b := d.newBuilder()
	snap, err := d.client.FetchInto(ctx, d.validators, b)
	if err != nil {
		d.regErr = err.Error()
		return fmt.Errorf("fetch members from %s: %w", d.cfg.Registry.URL, err)
	}
	d.regErr = ""
	if snap.NotModified {
		// The registry confirmed what we run on, also when that came from
		// the cache.
		d.fromCache = false
		d.m.snapshotFromCache.Set(0)
		if full && d.tb != nil {
			return d.apply(ctx, d.tb, false)
		}
		d.lastSync = time.Now()
		d.m.lastSync.SetToCurrentTime()
		return d.signalPending(ctx)
	}
	res, prefix, err := d.build(snap.Prefix, b)
	if err != nil {
		return err
	}
	var rejected []string
	for _, p := range snap.Problems {
		rejected = append(rejected, p.String())
	}
	for _, p := range res.Rejected {
		rejected = append(rejected, p.String())
	}
	var warnings []string
	for _, p := range res.Warnings {
		warnings = append(warnings, p.String())
		if !slices.Contains(d.warnings, p.String()) {
			// Once per snapshot that brings it: a registry field that
			// the grant policy refuses, an unusable tinc address.
			d.log.Warn("registry member kept without a part of it", "problem", p.String())
		}
	}
	d.incremental = !full
	if err := d.apply(ctx, res.Testbed, false); err != nil {
		if errors.Is(err, tincgen.ErrMassDeletion) {
			return fmt.Errorf("%w: the registry returned %d members (%d rejected); keeping the old snapshot", err, res.Testbed.Len(), len(rejected))
		}
		return err
	}
	d.prefix, d.validators, d.rejected, d.warnings = prefix, snap.Validators, rejected, warnings
	d.fromCache = false
	d.m.snapshotFromCache.Set(0)
	d.m.rejected.Set(float64(len(rejected)))
	if err := saveSnapshot(d.cfg.SnapshotFile(), snapshot{Saved: time.Now().UTC(), RegistryURL: d.cfg.Registry.URL,
		Prefix: prefix.String(), Validators: snap.Validators}, res.Testbed); err != nil {
		d.log.Warn("cannot save the last-known-good snapshot", "err", err)
	}
	return nil
}

// apply writes tb's host files and reloads or restarts tincd. On success
// tb becomes the applied snapshot.
func (d *Daemon) apply(ctx context.Context, tb *mesh.Testbed, repair bool) error {
	files, own, err := d.desired(tb)
	if err != nil {
		return err
	}
	opts := d.syncOptions(own, false)
	nodeEgress := tincgen.OffersEgress(tb, d.hostOptions(tb).Egress)
	if d.incremental && d.tb != nil && !repair && nodeEgress == d.nodeEgress {
		// Only the members that changed since the applied snapshot: their
		// files are compared and written, the others are not even read. The
		// periodic full resync and the repairs compare everything.
		ch := mesh.Diff(d.tb, tb)
		// This gateway's own file also depends on its egress announcement.
		opts.Only = map[string]bool{own: true}
		for _, l := range [][]string{ch.Added, ch.Changed, ch.Removed} {
			for _, n := range l {
				opts.Only[n] = true
			}
		}
		if d.cfg.Tinc.TunnelServer && len(ch.Added)+len(ch.Changed)+len(ch.Removed) > 0 {
			// The other gateways' files carry their members' relay
			// Subnets, and the assignment may move members onto or off
			// this gateway.
			for _, t := range []*mesh.Testbed{d.tb, tb} {
				for _, g := range t.Gateways() {
					opts.Only[g.TincName] = true
				}
			}
			for _, n := range d.heldChanges(d.tb, tb) {
				opts.Only[n] = true
			}
		}
	}
	d.incremental = false
	rep, err := tincgen.SyncSource(d.cfg.HostsDir(), files, opts)
	if err != nil {
		return fmt.Errorf("sync %s: %w", d.cfg.HostsDir(), err)
	}
	if rep.Changed() {
		d.touched = true
	}
	d.files.Written += len(rep.Written)
	d.files.Unchanged += len(rep.Unchanged)
	d.files.Removed += len(rep.Removed)
	d.m.written.Add(float64(len(rep.Written)))
	d.m.unchanged.Add(float64(len(rep.Unchanged)))
	d.m.removed.Add(float64(len(rep.Removed)))
	d.tb = tb
	d.nodeEgress = nodeEgress
	d.dnsSetTestbed(tb)
	if !repair {
		d.lastSync = time.Now()
		d.m.lastSync.SetToCurrentTime()
		for k, n := range tb.Count() {
			d.m.members.WithLabelValues(k.String()).Set(float64(n))
		}
	}
	if len(rep.Written)+len(rep.Removed) > 0 {
		d.log.Info("host files synced", "written", len(rep.Written), "removed", len(rep.Removed),
			"unchanged", len(rep.Unchanged), "version", tb.Version())
	}
	if files.Has(own) {
		b, err := files.Render(own)
		if err != nil {
			return fmt.Errorf("render host files: %w", err)
		}
		subs := subnetLines(b)
		if d.ownSubnets != nil && *d.ownSubnets != subs {
			if d.cfg.Tinc.TunnelServer {
				// TunnelServer implies StrictSubnets, and then tinc 1.0
				// re-reads every host file on SIGHUP, its own included, and
				// announces or withdraws what changed (net.c).
				d.log.Info("this gateway's own Subnets changed; reloading tincd", "name", own, "subnets", subs)
				d.hupPending = true
			} else {
				d.log.Info("this gateway's own Subnets changed; restarting tincd", "name", own, "subnets", subs)
				d.restartPending = true
			}
		}
		d.ownSubnets = &subs
	} else if d.ownSubnets == nil {
		// Not in the registry (yet): its own file, if any, stays as it
		// is; appearing later gives it Subnets to announce (a restart).
		empty := ""
		d.ownSubnets = &empty
	}
	if rep.Changed() {
		d.hupPending = true
	}
	if d.cfg.Tinc.TunnelServer {
		d.expectRefusals(tb)
	}
	if err := d.applyConf(tb); err != nil {
		return err
	}
	return d.signalPending(ctx)
}

// applyConf keeps tinc.conf as the tunnel-server topology needs it
// (tincgen.GatewayConf): TunnelServer, DecrementTTL, MaxTimeout, and a
// ConnectTo for every gateway of tb whose tinc name sorts after this
// one's, so that each pair of gateways has exactly one link, dialled by
// the same side every time. The file is rewritten only when what it says
// differs; a change of ConnectTo needs a SIGHUP, turning TunnelServer on
// a restart.
func (d *Daemon) applyConf(tb *mesh.Testbed) error {
	if !d.cfg.Tinc.TunnelServer {
		return nil
	}
	path := filepath.Join(d.cfg.Tinc.Dir, "tinc.conf")
	b, err := tincgen.ReadRegularFile(path)
	if err != nil {
		return fmt.Errorf("tinc.conf: %w", err)
	}
	c, err := tincgen.ParseConf(b)
	if err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	own := d.cfg.Identity.TincName
	if c.Name != own {
		return fmt.Errorf("%s: Name = %s, but identity.tinc_name is %s", path, c.Name, own)
	}
	var dial []string
	for _, g := range tb.Gateways() {
		if g.TincName > own {
			dial = append(dial, g.TincName)
		}
	}
	want := tincgen.GatewayConf(c, dial)
	if bytes.Equal(tincgen.RenderConf(c), tincgen.RenderConf(want)) {
		return nil
	}
	if err := tincgen.WriteFileAtomic(path, tincgen.RenderConf(want), 0o644); err != nil {
		return fmt.Errorf("write tinc.conf: %w", err)
	}
	d.log.Info("tinc.conf updated for the tunnel-server topology", "connect_to", strings.Join(dial, " "))
	switch {
	case c.IsTunnelServer():
		d.hupPending = true
	case !d.tincd.State().Managed:
		// tincd reads TunnelServer only at start, and mgmtnet does not
		// run this one: the HUP applies the rest.
		d.log.Warn("tinc.conf now sets TunnelServer: restart tincd by hand for it to take effect (tinc.manage is false)", "conf", path)
		d.hupPending = true
	default:
		d.restartPending = true
	}
	return nil
}

// expectRefusals records the Subnets that other gateways announce and
// this gateway holds at another weight (tincgen.PeerServiceWeight): tincd
// refuses those announcements by design, so they are not an attack.
func (d *Daemon) expectRefusals(tb *mesh.Testbed) {
	m := map[string]bool{}
	for _, g := range tb.Gateways() {
		if g.TincName == d.cfg.Identity.TincName {
			continue
		}
		if g.Egress.Offered {
			m[g.TincName+" "+tincgen.EgressDefault.String()] = true
		}
		if g.DNS.Addr.IsValid() {
			m[g.TincName+" "+netip.PrefixFrom(g.DNS.Addr, 128).String()] = true
		}
	}
	d.expected.Store(&m)
}

// refusal records a Subnet announcement tincd refused. It runs on tincd's
// log reader goroutine.
func (d *Daemon) refusal(r Refusal) {
	if s, err := tincgen.ParseSubnet(r.Subnet); err == nil {
		if m := d.expected.Load(); m != nil && (*m)[r.Member+" "+s.Prefix.String()] {
			d.log.Debug("tincd refused a gateway's Subnet held at another weight, as designed", "member", r.Member, "subnet", r.Subnet)
			return
		}
	}
	d.refused.add(r, time.Now())
	d.m.unauthorized.WithLabelValues(r.Member).Inc()
	d.log.Warn("tincd refused a Subnet that the registry does not grant", "member", r.Member, "subnet", r.Subnet, "from", r.From)
}

// signalPending delivers a restart or SIGHUP that host file changes call
// for, also one that failed before. A tincd that does not run needs none:
// it reads the files when it starts.
func (d *Daemon) signalPending(ctx context.Context) error {
	if !d.restartPending && !d.hupPending {
		return nil
	}
	if !d.tincd.State().Running {
		d.restartPending, d.hupPending = false, false
		return nil
	}
	if d.restartPending {
		err := d.tincd.Restart(ctx)
		if errors.Is(err, ErrUnmanaged) {
			d.restartPending = false
			return fmt.Errorf("this gateway's own Subnets changed: restart tincd to apply them (tinc 1.0 does not reload its own Subnets; mgmtnet does not manage this tincd)")
		}
		if err != nil {
			return fmt.Errorf("restart tincd: %w", err)
		}
		d.lastHUP = time.Now()
		d.restartPending, d.hupPending = false, false
		d.restarts++
		d.m.restarts.Inc()
		d.configureLink(ctx)
		return nil
	}
	if err := d.reload(); err != nil {
		return err
	}
	d.hupPending = false
	return nil
}

// subnetLines returns the Subnet lines of a host file, sorted and joined:
// what tincd announces for its own name.
func subnetLines(b []byte) string {
	h, err := tincgen.ParseHost(b)
	if err != nil {
		return "unparsable: " + err.Error()
	}
	var l []string
	for _, s := range h.Subnets {
		l = append(l, s.String())
	}
	slices.Sort(l)
	return strings.Join(l, " ")
}

// reload checks tinc.conf (tincd exits on SIGHUP when it cannot read it)
// and sends one SIGHUP.
func (d *Daemon) reload() error {
	conf := filepath.Join(d.cfg.Tinc.Dir, "tinc.conf")
	b, err := tincgen.ReadRegularFile(conf)
	if err != nil {
		return fmt.Errorf("reload tincd: not signalling, tincd would exit: %w", err)
	}
	if _, err := tincgen.ParseConf(b); err != nil {
		return fmt.Errorf("reload tincd: not signalling, tincd would exit: %s: %w", conf, err)
	}
	if err := d.tincd.Reload(); err != nil {
		return err
	}
	d.lastHUP = time.Now()
	d.hups++
	d.m.tincdHUP()
	return nil
}

func (m *metrics) tincdHUP() { m.hups.Inc() }

// configureLink sets up the tun link in managed mode, once tincd runs.
func (d *Daemon) configureLink(ctx context.Context) {
	if !d.cfg.Tinc.Manage || d.tb == nil {
		return
	}
	me, ok := d.tb.Lookup(d.cfg.Identity.TincName)
	if !ok {
		d.log.Warn("not configuring the tun link: this gateway is not in the snapshot", "name", d.cfg.Identity.TincName)
		return
	}
	name := d.tincIface()
	addr := netip.PrefixFrom(me.Addr, d.tb.Plan().Mgmt().Bits())
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := d.link.Configure(cctx, name, addr, 1400); err != nil {
		d.log.Error("configure the tun link", "link", name, "err", err)
	}
	// A restarted tincd made a new link: the egress route went with the
	// old one.
	d.applyEgressKernel(ctx)
}

// tincIface is tincd's interface: tinc.conf's Interface, else "tun0" (the
// kernel's name for a tincd started with -c and no net name, as the
// managed one is) when managed, else the net name (tinc 1.0's default for
// "tincd -n NET").
func (d *Daemon) tincIface() string {
	name := d.cfg.Tinc.Net
	if d.cfg.Tinc.Manage {
		name = "tun0"
	}
	if b, err := tincgen.ReadRegularFile(filepath.Join(d.cfg.Tinc.Dir, "tinc.conf")); err == nil {
		if c, err := tincgen.ParseConf(b); err == nil {
			for _, o := range c.Options {
				if o.Key == "Interface" && o.Value != "" {
					name = o.Value
				}
			}
		}
	}
	return name
}

// loadCache applies the last-known-good snapshot from disk.
func (d *Daemon) loadCache(ctx context.Context) error {
	b := d.newBuilder()
	s, err := loadSnapshot(d.cfg.SnapshotFile(), b)
	if err != nil {
		return err
	}
	p, _ := netip.ParsePrefix(s.Prefix)
	res, prefix, err := d.build(p, b)
	if err != nil {
		return err
	}
	if err := d.apply(ctx, res.Testbed, false); err != nil {
		return err
	}
	d.prefix, d.validators = prefix, s.Validators
	d.rejected = d.rejected[:0]
	for _, p := range res.Rejected {
		d.rejected = append(d.rejected, p.String())
	}
	d.m.rejected.Set(float64(len(d.rejected)))
	d.fromCache = true
	d.m.snapshotFromCache.Set(1)
	d.log.Warn(fmt.Sprintf("registry unreachable; running on the last-known-good snapshot of %s", s.Saved.Format(time.RFC3339)))
	return nil
}

func (d *Daemon) notifyStatus() {
	v := ""
	if d.tb != nil {
		v = d.tb.Version()
	}
	msg := "STATUS=synced version " + v
	if d.lastErr != "" {
		msg = "STATUS=error: " + d.lastErr
	}
	d.opts.Notify(msg)
}

func (d *Daemon) markReady() {
	if !d.ready && d.tb != nil {
		d.ready = true
		d.opts.Notify("READY=1")
	}
}

// status builds the Status; called by the loop.
func (d *Daemon) status() Status {
	s := Status{FromCache: d.fromCache, Rejected: append([]string{}, d.rejected...), Warnings: append([]string{}, d.warnings...), Files: d.files,
		Hups: d.hups, Restarts: d.restarts, Syncs: d.syncs, LastError: d.lastErr, ConfigError: d.configErr,
		Registry: RegistryStatus{URL: d.cfg.Registry.URL, ETags: map[string]string{}, LastError: d.regErr},
		Tincd:    d.tincd.State()}
	if s.LastError == "" {
		s.LastError = d.configErr
	}
	for k, v := range d.validators {
		s.Registry.ETags[k] = v
	}
	if d.tb != nil {
		s.Version = d.tb.Version()
		c := d.tb.Count()
		s.Members = MemberCounts{Nodes: c[addressing.KindNode], Servers: c[addressing.KindServer] + c[addressing.KindGateway],
			Hosts: c[addressing.KindHost]}
	}
	if !d.lastSync.IsZero() {
		t := d.lastSync.UTC().Truncate(time.Second)
		age := time.Since(d.lastSync).Seconds()
		s.LastSync, s.SyncAgeSeconds = &t, &age
	}
	s.Egress = d.egressStatus()
	s.DNS = d.dnsStatus()
	s.RefusedSubnets = d.refused.list()
	s.Assignment, _ = d.assignment(d.tb)
	s.UDPWatchdog = UDPWatchdogStatus{Enabled: d.cfg.Tinc.Manage && d.cfg.Tinc.UDPWatchdog.Interval > 0, Repairs: d.udpRepairs, Last: append([]UDPRepair(nil), d.udpLast...)}
	return s
}

// livePeers returns tincd's peers now: from the managed tincd's log lines,
// or from the tail of an unmanaged tincd's log file (tinc.logfile). It is
// called outside the loop, at each status request, so it reads only
// fields that never change after New.
func (d *Daemon) livePeers() []Peer {
	if p := d.tincd.Peers(); p != nil {
		return p
	}
	if d.peerLog != "" {
		return peersFromLog(d.peerLog, 1<<20).list()
	}
	return []Peer{}
}

// reloadConfig re-reads the config file. An invalid one keeps the old
// config and is logged once.
func (d *Daemon) reloadConfig(ctx context.Context) {
	if d.opts.ConfigPath == "" {
		return
	}
	n, err := LoadConfig(d.opts.ConfigPath)
	if err != nil {
		msg := "reload config: " + err.Error() + "; the old config keeps running"
		if msg != d.configErr {
			d.log.Error("invalid config; the old config keeps running", "err", err)
		}
		d.configErr = msg
		d.event(EventReloadFailed)
		return
	}
	d.configErr = ""
	if keys := d.cfg.restartOnly(n); len(keys) > 0 {
		d.log.Warn("config changes that need a restart are not applied", "keys", keys)
		n.Identity, n.Tinc, n.StateDir, n.StatusSocket, n.StatusSocketGroup, n.MetricsListen =
			d.cfg.Identity, d.cfg.Tinc, d.cfg.StateDir, d.cfg.StatusSocket, d.cfg.StatusSocketGroup, d.cfg.MetricsListen
	}
	refetch := n.Registry != d.cfg.Registry || n.Prefix != d.cfg.Prefix || n.Island != d.cfg.Island ||
		n.Egress.Prefix != d.cfg.Egress.Prefix
	if n.equal(d.cfg) {
		d.event(EventReloaded)
		return
	}
	old := d.cfg
	d.cfg = n
	if n.Registry != old.Registry {
		if err := d.newClient(); err != nil {
			d.cfg = old
			d.configErr = "reload config: " + err.Error()
			d.log.Error("invalid config; the old config keeps running", "err", err)
			d.event(EventReloadFailed)
			return
		}
	}
	d.log.Info("config reloaded", "file", d.opts.ConfigPath)
	if refetch {
		d.validators = nil
		d.reconcile(ctx, true)
	}
	if !reflect.DeepEqual(n.DNS, old.DNS) {
		d.stopDNS()
		d.dnsErr = ""
		if err := d.startDNS(ctx); err != nil {
			d.dnsErr = err.Error()
			d.log.Error("dns: not serving", "err", err)
		}
		if d.tb != nil && !refetch {
			if err := d.apply(ctx, d.tb, true); err != nil {
				d.lastErr = err.Error()
			}
		}
	}
	if !reflect.DeepEqual(n.Egress, old.Egress) {
		d.startProbes(ctx)
		if d.tb != nil && !refetch {
			if err := d.apply(ctx, d.tb, true); err != nil {
				d.lastErr = err.Error()
				d.log.Error("apply the new egress config", "err", err)
			}
		}
		d.applyEgressKernel(ctx)
	}
	d.event(EventReloaded)
}

func jitter(d time.Duration) time.Duration {
	return time.Duration(float64(d) * (0.9 + 0.2*rand.Float64()))
}

// Run runs the daemon until ctx ends, then stops a managed tincd and
// returns nil.
func (d *Daemon) Run(ctx context.Context) error {
	hosts := d.cfg.HostsDir()
	if err := os.MkdirAll(hosts, 0o755); err != nil {
		return fmt.Errorf("hosts directory: %w", err)
	}
	w, err := fsnotify.NewWatcher()
	if err != nil {
		return fmt.Errorf("watch files: %w", err)
	}
	defer w.Close()
	if err := w.Add(hosts); err != nil {
		return fmt.Errorf("watch %s: %w", hosts, err)
	}
	var confDir, confBase string
	if d.opts.ConfigPath != "" {
		abs, _ := filepath.Abs(d.opts.ConfigPath)
		confDir, confBase = filepath.Dir(abs), filepath.Base(abs)
		if err := w.Add(confDir); err != nil {
			d.log.Warn("cannot watch the config file; reload with SIGHUP", "err", err)
		}
	}
	// A status socket that cannot be served ends the daemon at start, as
	// a DNS bind error does: the operator sees it at once (systemd shows
	// the error naming the path) rather than a "mgmtnet status" that
	// cannot connect later.
	stopStatus, err := d.serveStatus(ctx, d.cfg)
	if err != nil {
		return err
	}
	defer stopStatus()
	if d.cfg.MetricsListen != "" {
		ln, err := net.Listen("tcp", d.cfg.MetricsListen)
		if err != nil {
			return fmt.Errorf("metrics: %w", err)
		}
		mux := http.NewServeMux()
		mux.Handle("/metrics", promhttp.HandlerFor(d.m.reg, promhttp.HandlerOpts{}))
		srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
		go srv.Serve(ln)
		defer srv.Close()
	}

	var repairC, reloadC <-chan time.Time
	const debounce = 200 * time.Millisecond
	// suspect collects the host files that file events named since the last
	// repair. Our own writes make events too: after each sync they are
	// drained (ignoreOwnEvents), and a repair compares only the named files
	// (tampered) before it rewrites anything.
	suspect := map[string]bool{}
	ignoreOwnEvents := func() {
		quiet := time.NewTimer(100 * time.Millisecond)
		defer quiet.Stop()
		for {
			select {
			case ev, ok := <-w.Events:
				if !ok {
					return
				}
				if filepath.Dir(ev.Name) == confDir && filepath.Base(ev.Name) == confBase {
					reloadC = time.After(debounce)
				}
				quiet.Reset(100 * time.Millisecond)
			case <-quiet.C:
				return
			}
		}
	}
	// First sync, or the cache.
	backoff := time.Second
	next := jitter(d.cfg.Poll.Interval.D())
	if err := d.reconcile(ctx, true); err != nil && d.tb == nil {
		if cerr := d.loadCache(ctx); cerr != nil {
			d.log.Error("no snapshot to fall back on", "err", cerr)
		}
	}
	if d.lastErr != "" {
		next = backoff
	}
	if d.takeTouched() {
		ignoreOwnEvents()
	}
	// One probe round before tincd starts, so that tincd starts with the
	// egress announcement the upstream allows, rather than restarting to
	// change it seconds after every connection came up.
	d.firstProbe(ctx)
	if d.tb != nil && d.cfg.Tinc.Manage {
		d.startTincd(ctx)
	}
	d.startProbes(ctx)
	defer func() {
		if d.stopProbes != nil {
			d.stopProbes()
		}
	}()
	if wd := d.cfg.Tinc.UDPWatchdog; d.cfg.Tinc.Manage && wd.Interval > 0 {
		wctx, stop := context.WithCancel(ctx)
		defer stop()
		go runUDPWatch(wctx, newUDPWatch(wd.Interval.D(), wd.Misses), d.udpT.Load, func() []string {
			var out []string
			for _, p := range d.tincd.Peers() {
				if p.Connected {
					out = append(out, p.Name)
				}
			}
			return out
		}, d.udpDeadC, d.log.Debug)
	}
	// The DNS server binds its own sockets: a bind error ends the daemon
	// at start, where the operator sees it, rather than later.
	if err := d.startDNS(ctx); err != nil {
		return fmt.Errorf("dns: %w", err)
	}
	defer d.stopDNS()
	d.markReady()

	poll := time.NewTimer(next)
	defer poll.Stop()
	full := time.NewTicker(d.cfg.Poll.FullResync.D())
	defer full.Stop()
	var watchdog <-chan time.Time
	if iv, err := sddaemon.SdWatchdogEnabled(false); err == nil && iv > 0 {
		t := time.NewTicker(iv / 2)
		defer t.Stop()
		watchdog = t.C
	}
	var restartC <-chan time.Time

	resetPoll := func() {
		if d.lastErr != "" || d.regErr != "" {
			backoff = min(backoff*2, d.cfg.Poll.Interval.D())
			poll.Reset(backoff)
		} else {
			backoff = time.Second
			poll.Reset(jitter(d.cfg.Poll.Interval.D()))
		}
	}
	for {
		if d.cfg.Tinc.Manage && d.tb != nil && restartC == nil && !d.tincd.State().Running {
			if d.startTincd(ctx) {
				d.event(EventTincdStarted)
			} else {
				d.restartWait = min(max(d.restartWait*2, time.Second), 30*time.Second)
				restartC = time.After(d.restartWait)
			}
		}
		if d.tb != d.udpTB {
			d.udpTB = d.tb
			d.udpT.Store(d.udpTargetsOf())
		}
		d.publish()
		select {
		case names := <-d.udpDeadC:
			d.repairUDP(names)
		case <-ctx.Done():
			sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			err := d.tincd.Stop(sctx)
			cancel()
			if err != nil {
				d.log.Error("stop tincd", "err", err)
			}
			return nil
		case <-poll.C:
			d.reconcile(ctx, false)
			if d.takeTouched() {
				ignoreOwnEvents()
			}
			if d.tb != nil {
				d.markReady()
			}
			resetPoll()
		case <-full.C:
			d.fullDue = true
			d.reconcile(ctx, true)
			if d.takeTouched() {
				ignoreOwnEvents()
			}
			resetPoll()
		case r := <-d.pollReq:
			d.reconcile(ctx, false)
			if d.takeTouched() {
				ignoreOwnEvents()
			}
			d.markReady()
			resetPoll()
			r <- d.status()
		case r := <-d.statusReq:
			d.readEgressCounters(ctx)
			r <- d.status()
		case r := <-d.probeC:
			d.observeProbe(ctx, r)
			if d.takeTouched() {
				ignoreOwnEvents()
			}
		case <-d.opts.Reload:
			d.reloadConfig(ctx)
		case ev, ok := <-w.Events:
			if !ok {
				return errors.New("file watcher closed")
			}
			dir, base := filepath.Dir(ev.Name), filepath.Base(ev.Name)
			switch {
			case dir == confDir && base == confBase:
				reloadC = time.After(debounce)
			case filepath.Clean(dir) == filepath.Clean(hosts) && tincgen.ValidName(base):
				suspect[base] = true
				repairC = time.After(debounce)
			}
		case err := <-w.Errors:
			// Events may have been lost (a queue overflow while we wrote
			// 66 000 files, say): compare every file at the next poll.
			d.log.Warn("file watcher; every host file will be compared at the next poll", "err", err)
			d.fullDue = true
		case <-reloadC:
			reloadC = nil
			d.reloadConfig(ctx)
		case <-repairC:
			repairC = nil
			names := suspect
			suspect = map[string]bool{}
			if d.tb != nil && d.tampered(names) {
				if err := d.apply(ctx, d.tb, true); err != nil {
					d.lastErr = err.Error()
					d.fullDue = true // compare everything at the next poll
					d.log.Error("repair host files", "err", err)
				}
				if d.takeTouched() {
					ignoreOwnEvents()
				}
			}
			d.event(EventRepaired)
		case ev := <-d.tincd.Events():
			if ev.Exited {
				if time.Since(d.tincdStarted) > time.Minute {
					d.restartWait = 0 // it ran well for a while: not a crash loop
				}
				d.restartWait = min(max(d.restartWait*2, time.Second), 30*time.Second)
				d.log.Error("tincd exited; restarting it", "err", ev.Err, "in", d.restartWait)
				restartC = time.After(d.restartWait)
				continue
			}
			d.log.Debug("tincd", "line", ev.Line)

		case <-restartC:
			restartC = nil
			if d.tincd.State().Running {
				d.restartWait = 0 // restarted meanwhile (own Subnets changed)
				continue
			}
			if d.startTincd(ctx) {
				d.restarts++
				d.m.restarts.Inc()
				d.event(EventTincdStarted)
			} else {
				d.restartWait = min(d.restartWait*2, 30*time.Second)
				restartC = time.After(d.restartWait)
			}
		case <-watchdog:
			d.opts.Notify("WATCHDOG=1")
		}
	}
}

// startTincd starts a managed tincd and configures its link.
func (d *Daemon) startTincd(ctx context.Context) bool {
	if err := d.tincd.Start(ctx); err != nil {
		d.lastErr = err.Error()
		d.log.Error("start tincd", "err", err)
		return false
	}
	d.tincdStarted = time.Now()
	d.lastHUP = d.tincdStarted // tincd counts host file changes from its start
	d.configureLink(ctx)
	return true
}

// Cleanup removes what the daemon owns: the snapshot and the status
// socket, and stops a managed tincd. It never deletes host files, nor
// anything but a socket at the status socket's path.
func Cleanup(ctx context.Context, cfg Config, log *slog.Logger) error {
	errs := cleanupFiles(cfg)
	if cfg.Tinc.Manage {
		// tincd is a child of the daemon; a daemon that is gone left
		// it to init. Stop it through its pid file.
		if err := stopByPidFile(ctx, cfg.PidFile()); err != nil {
			errs = append(errs, err)
		}
	}
	// Every nftables rule and route of ours, whether egress is configured
	// now or was before.
	if err := NewNftEgress().Apply(ctx, EgressRules{}); err != nil {
		errs = append(errs, fmt.Errorf("cleanup egress rules: %w", err))
	}
	return errors.Join(errs...)
}

// cleanupFiles is Cleanup's part in the file system: the snapshot, and
// the status socket only if a socket is there.
func cleanupFiles(cfg Config) []error {
	var errs []error
	if err := os.Remove(cfg.SnapshotFile()); err != nil && !errors.Is(err, os.ErrNotExist) {
		errs = append(errs, fmt.Errorf("cleanup: %w", err))
	}
	if err := removeStaleSocket(cfg.StatusSocket); err != nil {
		errs = append(errs, fmt.Errorf("cleanup: %w", err))
	}
	return errs
}

// takeTouched reports, and forgets, whether host files were written or
// removed since the last call: the loop then ignores the file events that
// its own writes caused.
func (d *Daemon) takeTouched() bool {
	t := d.touched
	d.touched = false
	return t
}

// tampered reports whether any of the named host files differs from what
// the applied snapshot says it must be (present with these bytes, or, for
// a file we own that is not in the snapshot, absent). Only then does a
// repair rewrite anything; events caused by our own writes find nothing.
func (d *Daemon) tampered(names map[string]bool) bool {
	if len(names) > 1000 {
		return true // many events at once: let apply compare everything
	}
	o := d.hostOptions(d.tb)
	for name := range names {
		// Never a blocking open: a FIFO here would hang the loop.
		b, err := tincgen.ReadHostFile(filepath.Join(d.cfg.HostsDir(), name))
		special := errors.Is(err, tincgen.ErrNotRegular)
		m, listed := d.tb.Lookup(name)
		// A member assigned to other gateways has no file here.
		listed = listed && tincgen.Holds(d.tb, o, m)
		if !listed {
			if (err == nil || special) && tincgen.OwnedName(name) && name != d.cfg.Identity.TincName {
				return true // a stale file of ours appeared
			}
			continue
		}
		if err != nil {
			return true // deleted, unreadable, or not a regular file
		}
		want, werr := tincgen.MemberFile(d.tb, m, o, d.nodeEgress)
		if werr != nil || !bytes.Equal(b, want) {
			return true
		}
	}
	return false
}
