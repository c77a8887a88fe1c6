package gateway

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"reflect"
	"sync/atomic"
	"time"

	sddaemon "github.com/coreos/go-systemd/v22/daemon"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/confine-project/mgmtnet/addressing"
	"github.com/confine-project/mgmtnet/authdns"
	"github.com/confine-project/mgmtnet/gateway/loopback"
	"github.com/confine-project/mgmtnet/mesh"
	"github.com/confine-project/mgmtnet/mesh/registry"
	"github.com/confine-project/mgmtnet/source"
	"github.com/confine-project/mgmtnet/tinc"
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
	// Egress defaults to NewNftEgress (nftables, netlink and /proc).
	Egress EgressKernel
	// Loopback holds the DNS service address on lo; default this
	// namespace's netlink.
	Loopback loopback.Netlink
	// Notify sends an sd_notify state; default the real one.
	Notify func(state string)
	// Reload requests a config reload (wire SIGHUP here).
	Reload <-chan os.Signal
	// OnEvent, if set, is called from the daemon's goroutine.
	OnEvent func(Event)
	// Client are the registry client's base options (retries, stall
	// timeout); the config's TLS and registry.timeout go on top.
	Client registry.Options
	// Force lets a sync remove more than guard.max_remove_fraction of the
	// host files (an operator's deliberate bulk decommission, with --once
	// --force). The daemon itself never forces.
	Force bool
}

// Daemon is the gateway daemon. Run owns its state; other goroutines
// read the status it publishes (Status) or ask it to reconcile (Poll).
type Daemon struct {
	cfg  Config
	opts Options
	log  *slog.Logger
	m    *metrics

	statusReq chan chan Status
	pollReq   chan chan Status
	published atomic.Pointer[Status]

	// Owned by the loop.
	lastErr   string
	configErr string
	ready     bool

	// The components. Each file holds one, with its state here.
	hosts  hostSync        // hostsync.go: source → host files and tinc.conf
	tincd  tincdSupervisor // tincd.go: tincd, its SIGHUPs and restarts, the tun link
	egress egressState     // egressd.go: upstream health, the announcement, kernel rules
	dns    dnsState        // dns.go: the DNS server on the same snapshot
	feed   feedState       // feed.go: the registry's change feed
	udp    udpState        // udpwatch.go: the UDP watchdog
}

// hostSync is the host sync component's state (hostsync.go).
type hostSync struct {
	// src is where snapshots come from: fetch, validate, guard,
	// last-known-good cache.
	src         *source.Source
	tb          *mesh.Testbed // the snapshot applied
	prefix      netip.Prefix
	validators  map[string]string
	rejected    []string
	warnings    []string // what Build dropped from members it kept
	lastSync    time.Time
	fromCache   bool
	files       FileCounts
	syncs       int
	regErr      string
	fullDue     bool
	touched     bool // apply wrote or removed host files (see takeTouched)
	incremental bool // the next apply may sync only what changed since tb
	// ownSubnets are the Subnet lines of this gateway's own host file as
	// last applied (nil: none applied yet); a change reloads or restarts
	// tincd.
	ownSubnets *string
	nodeEgress bool // the last applied files carried the nodes' egress /32s
	// The assignment of the last snapshot asked about (assign.go).
	assignTB      *mesh.Testbed
	assignSt      AssignmentStatus
	assignRefused map[string]bool
}

// tincdSupervisor is the tincd component's state (tincd.go).
type tincdSupervisor struct {
	ctl  Tincd
	link Link
	// app delivers what the host files need (SIGHUP or restart), keeping
	// it pending until delivered.
	app         *tinc.Applier
	peerLog     string // unmanaged tincd's log file, read for peers; fixed at New
	restartWait time.Duration
	restartC    <-chan time.Time // a restart after an exit is due
	started     time.Time        // when startTincd last succeeded
	hups        int
	restarts    int
	lastHUP     time.Time
	// refused counts the Subnet announcements tincd refused; written by
	// tincd's log reader, read by status.
	refused refusals
	// expected are the refusals expectRefusals foresees, by "member
	// prefix"; read by tincd's log reader.
	expected atomic.Pointer[map[string]bool]
}

// egressState is the egress component's state (egressd.go).
type egressState struct {
	health                 *health
	stopProbes             func()
	probeC                 chan ProbeResult
	probesOK, probesFailed int
	counters               map[string]uint64
	err                    string
	kernel                 EgressKernel
	applied                bool
}

// dnsState is the DNS component's state (dns.go).
type dnsState struct {
	srv      *authdns.Server // nil when not serving
	err      string
	svcAddrs *loopback.Applier // the service address on lo (dnsaddr.go)
	reg      *dnsRegisterer    // the DNS server's metrics (dnsmetrics.go)
}

// udpState is the UDP watchdog's state (udpwatch.go): its targets,
// rebuilt when the snapshot changes; the peers it finds dead; the
// repairs.
type udpState struct {
	targets atomic.Pointer[udpTargets]
	tb      *mesh.Testbed
	deadC   chan []string
	repairs int
	last    []UDPRepair
}

// New returns a daemon for a validated cfg.
func New(cfg Config, opts Options) (*Daemon, error) {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Notify == nil {
		opts.Notify = func(s string) { sddaemon.SdNotify(false, s) }
	}
	d := &Daemon{cfg: cfg, opts: opts, log: opts.Logger, m: newMetrics(),
		statusReq: make(chan chan Status), pollReq: make(chan chan Status),
		feed: feedState{poke: make(chan struct{}, 1), moved: make(chan struct{}, 1)}}
	d.tincd.ctl, d.tincd.link = opts.Tincd, opts.Link
	d.egress.kernel, d.egress.probeC = opts.Egress, make(chan ProbeResult)
	d.udp.deadC = make(chan []string, 1)
	if !cfg.Tinc.Manage {
		d.tincd.peerLog = cfg.Tinc.LogFile
	}
	if d.tincd.ctl == nil {
		if cfg.Tinc.Manage {
			d.tincd.ctl = NewManagedTincd(cfg.Tinc.Tincd, cfg.Tinc.Dir, cfg.PidFile(), d.refusal)
		} else {
			d.tincd.ctl = NewUnmanagedTincd(cfg.PidFile())
		}
	}
	if d.tincd.link == nil {
		d.tincd.link = NetlinkLink{}
	}
	if d.egress.kernel == nil {
		d.egress.kernel = NewNftEgress(d.log)
	}
	d.dns.svcAddrs = newServiceAddrs(cfg, opts.Loopback, d.log.With("part", "dns"))
	d.tincd.app = &tinc.Applier{Dir: cfg.Tinc.Dir, Ctl: d.tincd.ctl}
	if err := d.newSource(); err != nil {
		return nil, err
	}
	return d, nil
}

// newSource makes the snapshot source of the config. registry.timeout
// bounds one whole fetch, retries and body reads included (a registry
// that drips its answer cannot hold the loop longer), and is at most
// MaxRegistryTimeout, well before systemd's watchdog. Each stall within
// it is bounded by the client's default. A snapshot already in use stays
// the one the guard compares with.
func (d *Daemon) newSource() error {
	co := d.opts.Client
	co.CAFile, co.Insecure, co.FetchTimeout = d.cfg.Registry.CA, d.cfg.Registry.Insecure, d.cfg.Registry.Timeout.D()
	src, err := source.New(source.Config{URL: d.cfg.Registry.URL, Client: co,
		Prefix: d.cfg.declaredPrefix(), Egress: d.cfg.egressPrefix(), Policy: d.cfg.policy(),
		Guard: d.cfg.guard(d.opts.Force), Cache: d.cfg.SnapshotFile(), Feed: d.cfg.Registry.Feed, Logger: d.log})
	if err != nil {
		return err
	}
	if d.hosts.src != nil && d.hosts.src.Current() != nil {
		src.Use(d.hosts.src.Current())
	}
	d.hosts.src = src
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
			if c, err := d.egress.kernel.Counters(ctx); err == nil {
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
	for _, p := range d.tincd.ctl.Peers() {
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

// Once reconciles once (sending tincd one SIGHUP, or restarting it, if
// something changed) and Commits the snapshot (saved as last-known-good).
func (d *Daemon) Once(ctx context.Context) error {
	return d.reconcile(ctx, true)
}

func (d *Daemon) notifyStatus() {
	v := ""
	if d.hosts.tb != nil {
		v = d.hosts.tb.Version()
	}
	msg := "STATUS=synced version " + v
	if d.lastErr != "" {
		msg = "STATUS=error: " + d.lastErr
	}
	d.opts.Notify(msg)
}

func (d *Daemon) markReady() {
	if !d.ready && d.hosts.tb != nil {
		d.ready = true
		d.opts.Notify("READY=1")
	}
}

// status builds the Status; called by the loop.
func (d *Daemon) status() Status {
	s := Status{FromCache: d.hosts.fromCache, Rejected: append([]string{}, d.hosts.rejected...), Warnings: append([]string{}, d.hosts.warnings...), Files: d.hosts.files,
		Hups: d.tincd.hups, Restarts: d.tincd.restarts, Syncs: d.hosts.syncs, LastError: d.lastErr, ConfigError: d.configErr,
		Registry: RegistryStatus{URL: d.cfg.Registry.URL, ETags: map[string]string{}, LastError: d.hosts.regErr},
		Tincd:    d.tincd.ctl.State()}
	if s.LastError == "" {
		s.LastError = d.configErr
	}
	for k, v := range d.hosts.validators {
		s.Registry.ETags[k] = v
	}
	if d.hosts.tb != nil {
		s.Version = d.hosts.tb.Version()
		c := d.hosts.tb.Count()
		s.Members = MemberCounts{Nodes: c[addressing.KindNode], Servers: c[addressing.KindServer] + c[addressing.KindGateway],
			Hosts: c[addressing.KindHost]}
	}
	if !d.hosts.lastSync.IsZero() {
		t := d.hosts.lastSync.UTC().Truncate(time.Second)
		age := time.Since(d.hosts.lastSync).Seconds()
		s.LastSync, s.SyncAgeSeconds = &t, &age
	}
	s.Egress = d.egressStatus()
	s.DNS = d.dnsStatus()
	s.RefusedSubnets = d.tincd.refused.list()
	s.Assignment, _ = d.assignment(d.hosts.tb)
	s.UDPWatchdog = UDPWatchdogStatus{Enabled: d.cfg.Tinc.Manage && d.cfg.Tinc.UDPWatchdog.Interval > 0, Repairs: d.udp.repairs, Last: append([]UDPRepair(nil), d.udp.last...)}
	return s
}

// livePeers returns tincd's peers now: from the managed tincd's log lines,
// or from the tail of an unmanaged tincd's log file (tinc.logfile). It is
// called outside the loop, at each status request, so it reads only
// fields that never change after New.
func (d *Daemon) livePeers() []Peer {
	if p := d.tincd.ctl.Peers(); p != nil {
		return p
	}
	if d.tincd.peerLog != "" {
		return peersFromLog(d.tincd.peerLog, 1<<20).list()
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
		n.Egress.Prefix != d.cfg.Egress.Prefix || !reflect.DeepEqual(n.policy(), d.cfg.policy()) || n.Guard != d.cfg.Guard
	if n.equal(d.cfg) {
		d.event(EventReloaded)
		return
	}
	old := d.cfg
	d.cfg = n
	if refetch {
		if err := d.newSource(); err != nil {
			d.cfg = old
			d.configErr = "reload config: " + err.Error()
			d.log.Error("invalid config; the old config keeps running", "err", err)
			d.event(EventReloadFailed)
			return
		}
	}
	d.log.Info("config reloaded", "file", d.opts.ConfigPath)
	if refetch {
		d.hosts.validators = nil
		d.hosts.src.Forget()
		d.reconcile(ctx, true)
	}
	if !reflect.DeepEqual(n.DNS, old.DNS) {
		d.stopDNS()
		d.dns.err = ""
		if err := d.startDNS(ctx); err != nil {
			d.dns.err = err.Error()
			d.log.Error("dns: not serving", "err", err)
		}
		if d.hosts.tb != nil && !refetch {
			if err := d.apply(ctx, d.hosts.tb, true); err != nil {
				d.lastErr = err.Error()
			}
		}
	}
	if !reflect.DeepEqual(n.Egress, old.Egress) {
		d.startProbes(ctx)
		if d.hosts.tb != nil && !refetch {
			if err := d.apply(ctx, d.hosts.tb, true); err != nil {
				d.lastErr = err.Error()
				d.log.Error("apply the new egress config", "err", err)
			}
		}
		d.applyEgressKernel(ctx)
	}
	d.event(EventReloaded)
}

// Run runs the daemon until ctx ends, then stops a managed tincd and
// returns nil. It starts the components (host sync's first snapshot, or
// the last-known-good one; egress probes; tincd; the UDP watchdog; DNS)
// and then is one loop: each select arm hands its event to the component
// that owns it.
func (d *Daemon) Run(ctx context.Context) error {
	fw, err := newFileWatch(d.cfg.HostsDir(), d.opts.ConfigPath, d.log)
	if err != nil {
		return err
	}
	defer fw.close()
	stopEndpoints, err := d.serveEndpoints(ctx)
	if err != nil {
		return err
	}
	defer stopEndpoints()

	// First sync, or the cache.
	if err := d.reconcile(ctx, true); err != nil && d.hosts.tb == nil {
		if cerr := d.loadCache(ctx); cerr != nil {
			d.log.Error("no snapshot to fall back on", "err", cerr)
		}
	}
	// The one retry policy (source.Backoff): 1 s after a failure,
	// doubling up to the poll interval.
	backoff := source.Backoff{Min: time.Second, Max: time.Hour}
	poll := time.NewTimer(backoff.Next(d.lastErr != "", d.cfg.Poll.Interval.D()))
	defer poll.Stop()
	d.afterWrite(fw)
	// One probe round before tincd starts, so that tincd starts with the
	// egress announcement the upstream allows, rather than changing it (a
	// SIGHUP, a restart without TunnelServer) seconds after every
	// connection came up.
	d.firstProbe(ctx)
	if d.hosts.tb != nil && d.cfg.Tinc.Manage {
		d.startTincd(ctx)
	}
	d.startProbes(ctx)
	defer func() {
		if d.egress.stopProbes != nil {
			d.egress.stopProbes()
		}
	}()
	stopUDP := d.startUDPWatch(ctx)
	defer stopUDP()
	// The DNS server binds its own sockets: a bind error ends the daemon
	// at start, where the operator sees it, rather than later.
	if err := d.startDNS(ctx); err != nil {
		return fmt.Errorf("dns: %w", err)
	}
	defer d.stopDNS()
	d.markReady()

	full := time.NewTicker(d.cfg.Poll.FullResync.D())
	defer full.Stop()
	// The change feed's follower pokes the loop when the registry has a
	// change (feed.go).
	fctx, fcancel := context.WithCancel(ctx)
	feedDone := make(chan struct{})
	go func() {
		defer close(feedDone)
		d.followFeed(fctx)
	}()
	defer func() {
		fcancel()
		<-feedDone
	}()
	var watchdog <-chan time.Time
	if iv, err := sddaemon.SdWatchdogEnabled(false); err == nil && iv > 0 {
		t := time.NewTicker(iv / 2)
		defer t.Stop()
		watchdog = t.C
	}
	// sync reconciles (full: compare every file), ignores the file events
	// of its own writes, and schedules the next poll.
	sync := func(full bool) {
		if full {
			d.hosts.fullDue = true
		}
		d.reconcile(ctx, full)
		d.afterWrite(fw)
		if d.hosts.tb != nil {
			d.markReady()
		}
		poll.Reset(backoff.Next(d.lastErr != "" || d.hosts.regErr != "", d.cfg.Poll.Interval.D()))
	}
	for {
		d.superviseTincd(ctx)
		d.udpRetarget()
		d.publish()
		select {
		case <-ctx.Done():
			d.stopTincd()
			return nil
		case <-poll.C:
			sync(false)
		case <-d.feed.poke:
			sync(false)
		case <-full.C:
			sync(true)
		case r := <-d.pollReq:
			sync(false)
			r <- d.status()
		case r := <-d.statusReq:
			d.readEgressCounters(ctx)
			r <- d.status()
		case r := <-d.egress.probeC:
			d.observeProbe(ctx, r)
			d.afterWrite(fw)
		case <-d.opts.Reload:
			d.reloadConfig(ctx)
		case ev, ok := <-fw.w.Events:
			if !ok {
				return errors.New("file watcher closed")
			}
			fw.event(ev)
		case err := <-fw.w.Errors:
			// Events may have been lost (a queue overflow while we wrote
			// 66 000 files, say): compare every file at the next poll.
			d.log.Warn("file watcher; every host file will be compared at the next poll", "err", err)
			d.hosts.fullDue = true
		case <-fw.reloadC:
			fw.reloadC = nil
			d.reloadConfig(ctx)
		case <-fw.repairC:
			d.repair(ctx, fw.takeSuspects())
			d.afterWrite(fw)
		case ev := <-d.tincd.ctl.Events():
			d.tincdEvent(ev)
		case <-d.tincd.restartC:
			d.tincdRestartDue(ctx)
		case names := <-d.udp.deadC:
			d.repairUDP(names)
		case <-watchdog:
			d.opts.Notify("WATCHDOG=1")
		}
	}
}

// serveEndpoints serves the status socket and the metrics. A status
// socket that cannot be served ends the daemon at start, as a DNS bind
// error does: the operator sees it at once (systemd shows the error naming
// the path) rather than a "mgmtnet status" that cannot connect later.
func (d *Daemon) serveEndpoints(ctx context.Context) (stop func(), err error) {
	stopStatus, err := d.serveStatus(ctx, d.cfg)
	if err != nil {
		return nil, err
	}
	if d.cfg.MetricsListen == "" {
		return stopStatus, nil
	}
	ln, err := net.Listen("tcp", d.cfg.MetricsListen)
	if err != nil {
		stopStatus()
		return nil, fmt.Errorf("metrics: %w", err)
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(d.m.reg, promhttp.HandlerOpts{}))
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go srv.Serve(ln)
	return func() { srv.Close(); stopStatus() }, nil
}

// afterWrite drains the file events that the daemon's own writes caused,
// when it wrote or removed host files since the last call.
func (d *Daemon) afterWrite(fw *fileWatch) {
	if d.takeTouched() {
		fw.drainOwn()
	}
}

// Cleanup removes what the daemon owns: the snapshot and the status
// socket, the egress rules and route, and the DNS service address on lo,
// and stops a managed tincd. It never deletes host files, nor anything but
// a socket at the status socket's path. On lo it removes only the
// configured dns.service_address (as a /128), whether DNS is enabled or
// not: that address is mgmtnet's (gateway/loopback); no other address on
// lo is touched, so one that an earlier config named stays.
func Cleanup(ctx context.Context, cfg Config, log *slog.Logger) error {
	errs := cleanupFiles(cfg)
	if cfg.Tinc.Manage {
		// tincd is a child of the daemon; a daemon that is gone left
		// it to init. Stop it through its pid file.
		if err := tinc.StopByPidFile(ctx, cfg.PidFile(), 0); err != nil {
			errs = append(errs, err)
		}
	}
	// Every nftables rule and route of ours, whether egress is configured
	// now or was before.
	if err := NewNftEgress(log).Apply(ctx, EgressRules{}); err != nil {
		errs = append(errs, fmt.Errorf("cleanup egress rules: %w", err))
	}
	if err := cleanupServiceAddr(ctx, cfg, log); err != nil {
		errs = append(errs, fmt.Errorf("cleanup dns service address: %w", err))
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
