package gateway

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"github.com/confine-project/mgmtnet/mesh"
	"github.com/confine-project/mgmtnet/tinc"
	"github.com/confine-project/mgmtnet/tincgen"
	"github.com/confine-project/mgmtnet/vpn"
)

// Tincd is the gateway's tincd as its supervision needs it: a
// tinc.Controller, plus tincd's log and peers. The real implementations
// are NewManagedTincd (tincd runs as our child, tinc.manage: true) and
// NewUnmanagedTincd (someone else runs it; we only signal it).
type Tincd interface {
	tinc.Controller
	// Events delivers tincd's log lines and unexpected exits; nil when
	// there are none (unmanaged). Log lines may be dropped when the loop is
	// busy (tincd must never block on its log); exits never are.
	Events() <-chan TincdEvent
	// Peers returns the meta connections tincd's log reported, or nil when
	// this Tincd cannot know (unmanaged).
	Peers() []Peer
}

// TincdEvent is a log line of tincd, or its exit.
type TincdEvent struct {
	// Line is one log line; empty for an exit.
	Line string
	// Exited is set when tincd exited without being asked to; Err says
	// how.
	Exited bool
	Err    error
}

// managedTincd runs tincd -D as a child and reports its exits.
type managedTincd struct {
	fg     tinc.Foreground
	events chan TincdEvent

	// peers is updated from every log line in the reader goroutine, so a
	// connection event is never lost even when Events drops lines.
	pmu   sync.Mutex
	peers peers

	mu   sync.Mutex
	proc *tinc.Process
}

var _ Tincd = (*managedTincd)(nil)

// NewManagedTincd returns a Tincd that runs "tincd -c dir -D -d 1
// --pidfile=pidFile" itself. refused, when not nil, is called from tincd's
// log reader for every Subnet announcement tincd refused, so that none is
// missed however busy the daemon's loop is.
func NewManagedTincd(binary, dir, pidFile string, refused func(Refusal)) Tincd {
	m := &managedTincd{events: make(chan TincdEvent, 4096), peers: peers{}}
	m.fg = tinc.Foreground{Binary: binary, ConfDir: dir, PidFile: pidFile, Line: func(l string) {
		m.pmu.Lock()
		m.peers.line(l)
		m.pmu.Unlock()
		if r, ok := parseRefusal(l); ok && refused != nil {
			refused(r)
		}
		select {
		case m.events <- TincdEvent{Line: l}:
		default: // never block tincd on its log; the loop is busy
		}
	}}
	return m
}

func (m *managedTincd) Start(context.Context) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.proc != nil && m.proc.Running() {
		return fmt.Errorf("start tincd: already running (pid %d)", m.proc.Pid())
	}
	p, err := m.fg.Start()
	if err != nil {
		return err
	}
	m.pmu.Lock()
	m.peers = peers{} // a new tincd has no connections yet
	m.pmu.Unlock()
	m.proc = p
	go func() {
		<-p.Done()
		m.mu.Lock()
		mine := m.proc == p
		m.mu.Unlock()
		if mine {
			m.events <- TincdEvent{Exited: true, Err: p.Err()}
		}
	}()
	return nil
}

func (m *managedTincd) Reload() error {
	m.mu.Lock()
	p := m.proc
	m.mu.Unlock()
	if p == nil {
		return fmt.Errorf("reload tincd: %w", tinc.ErrNotRunning)
	}
	if err := p.Signal(syscall.SIGHUP); err != nil {
		return fmt.Errorf("reload tincd: %w", err)
	}
	return nil
}

func (m *managedTincd) Restart(ctx context.Context) error {
	if err := m.Stop(ctx); err != nil {
		return err
	}
	return m.Start(ctx)
}

func (m *managedTincd) Stop(ctx context.Context) error {
	m.mu.Lock()
	p := m.proc
	m.proc = nil // its exit is expected now
	m.mu.Unlock()
	if p == nil {
		return nil
	}
	return p.Stop(ctx, tinc.DefaultKillAfter)
}

func (m *managedTincd) State() tinc.State {
	m.mu.Lock()
	defer m.mu.Unlock()
	s := tinc.State{Managed: true}
	if m.proc != nil && m.proc.Running() {
		s.Pid, s.Running = m.proc.Pid(), true
	}
	return s
}

func (m *managedTincd) Events() <-chan TincdEvent { return m.events }

// unmanagedTincd signals a tincd someone else runs, through its pid file.
type unmanagedTincd struct{ tinc.PidFile }

var _ Tincd = unmanagedTincd{}

// NewUnmanagedTincd returns a Tincd that only signals the tincd named by
// pidFile and never starts or stops it.
func NewUnmanagedTincd(pidFile string) Tincd { return unmanagedTincd{tinc.PidFile(pidFile)} }

func (unmanagedTincd) Events() <-chan TincdEvent { return nil }
func (unmanagedTincd) Peers() []Peer             { return nil }

// Peers returns the peers tincd's log reported since it started.
func (m *managedTincd) Peers() []Peer {
	m.pmu.Lock()
	defer m.pmu.Unlock()
	return m.peers.list()
}

// Link configures the tun link tincd created.
type Link interface {
	Configure(ctx context.Context, name string, addr netip.Prefix, mtu int) error
}

// NetlinkLink is the real Link (vishvananda/netlink, the current network
// namespace).
type NetlinkLink struct{}

var _ Link = NetlinkLink{}

// Configure sets the address and MTU of name and brings it up.
func (NetlinkLink) Configure(ctx context.Context, name string, addr netip.Prefix, mtu int) error {
	return vpn.ConfigureLink(ctx, name, addr, mtu)
}

// The tincd component: supervision of the managed tincd, delivery of
// what the host files need (the tinc applier), the tun link, and the
// Subnet refusals tincd logs.

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
	d.tincd.expected.Store(&m)
}

// refusal records a Subnet announcement tincd refused. It runs on tincd's
// log reader goroutine.
func (d *Daemon) refusal(r Refusal) {
	if s, err := tincgen.ParseSubnet(r.Subnet); err == nil {
		if m := d.tincd.expected.Load(); m != nil && (*m)[r.Member+" "+s.Prefix.String()] {
			d.log.Debug("tincd refused a gateway's Subnet held at another weight, as designed", "member", r.Member, "subnet", r.Subnet)
			return
		}
	}
	d.tincd.refused.add(r, time.Now())
	d.m.unauthorized.WithLabelValues(r.Member).Inc()
	d.log.Warn("tincd refused a Subnet that the registry does not grant", "member", r.Member, "subnet", r.Subnet, "from", r.From)
}

// signalPending delivers the restart or SIGHUP that changes call for (the
// tinc applier keeps one that failed pending). A tincd that does not run
// needs none: it reads the files when it starts.
func (d *Daemon) signalPending(ctx context.Context) error {
	done, _, err := d.tincd.app.Deliver(ctx)
	if errors.Is(err, tinc.ErrUnmanaged) {
		return fmt.Errorf("tincd needs a restart to apply this gateway's own Subnets (without TunnelServer) or TunnelServer itself: restart it by hand: %w", err)
	}
	if err != nil {
		return err
	}
	switch done {
	case tinc.ActionRestart:
		d.tincd.lastHUP = time.Now()
		d.tincd.restarts++
		d.m.restarts.Inc()
		d.configureLink(ctx)
	case tinc.ActionReload:
		d.tincd.lastHUP = time.Now()
		d.tincd.hups++
		d.m.tincdHUP()
	}
	return nil
}

// reload checks tinc.conf and sends one SIGHUP now (the UDP watchdog's
// repair), outside what the applier has pending.
func (d *Daemon) reload() error {
	if err := tinc.Reload(d.cfg.Tinc.Dir, d.tincd.ctl); err != nil {
		return err
	}
	d.tincd.lastHUP = time.Now()
	d.tincd.hups++
	d.m.tincdHUP()
	return nil
}

func (m *metrics) tincdHUP() { m.hups.Inc() }

// configureLink sets up the tun link in managed mode, once tincd runs.
func (d *Daemon) configureLink(ctx context.Context) {
	if !d.cfg.Tinc.Manage || d.hosts.tb == nil {
		return
	}
	me, ok := d.hosts.tb.Lookup(d.cfg.Identity.TincName)
	if !ok {
		d.log.Warn("not configuring the tun link: this gateway is not in the snapshot", "name", d.cfg.Identity.TincName)
		return
	}
	name := d.tincIface()
	addr := netip.PrefixFrom(me.Addr, d.hosts.tb.Plan().Mgmt().Bits())
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := d.tincd.link.Configure(cctx, name, addr, 1400); err != nil {
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

// startTincd starts a managed tincd and configures its link.
func (d *Daemon) startTincd(ctx context.Context) bool {
	if err := d.tincd.ctl.Start(ctx); err != nil {
		d.lastErr = err.Error()
		d.log.Error("start tincd", "err", err)
		return false
	}
	d.tincd.started = time.Now()
	d.tincd.lastHUP = d.tincd.started // tincd counts host file changes from its start
	d.configureLink(ctx)
	return true
}

// maxRestartWait bounds the wait between restarts of a tincd that keeps
// exiting.
const maxRestartWait = 30 * time.Second

// superviseTincd starts a managed tincd that should run and does not
// (none waiting to restart), backing off while it fails to start.
func (d *Daemon) superviseTincd(ctx context.Context) {
	if !d.cfg.Tinc.Manage || d.hosts.tb == nil || d.tincd.restartC != nil || d.tincd.ctl.State().Running {
		return
	}
	if d.startTincd(ctx) {
		d.event(EventTincdStarted)
		return
	}
	d.tincd.restartWait = min(max(d.tincd.restartWait*2, time.Second), maxRestartWait)
	d.tincd.restartC = time.After(d.tincd.restartWait)
}

// tincdEvent handles a log line or an exit of tincd: an exit schedules a
// restart, sooner when tincd had run well for a while.
func (d *Daemon) tincdEvent(ev TincdEvent) {
	if !ev.Exited {
		d.log.Debug("tincd", "line", ev.Line)
		return
	}
	if time.Since(d.tincd.started) > time.Minute {
		d.tincd.restartWait = 0 // it ran well for a while: not a crash loop
	}
	d.tincd.restartWait = min(max(d.tincd.restartWait*2, time.Second), maxRestartWait)
	d.log.Error("tincd exited; restarting it", "err", ev.Err, "in", d.tincd.restartWait)
	d.tincd.restartC = time.After(d.tincd.restartWait)
}

// tincdRestartDue restarts tincd once its wait is over.
func (d *Daemon) tincdRestartDue(ctx context.Context) {
	d.tincd.restartC = nil
	if d.tincd.ctl.State().Running {
		d.tincd.restartWait = 0 // restarted meanwhile (own Subnets changed)
		return
	}
	if d.startTincd(ctx) {
		d.tincd.restarts++
		d.m.restarts.Inc()
		d.event(EventTincdStarted)
		return
	}
	d.tincd.restartWait = min(d.tincd.restartWait*2, maxRestartWait)
	d.tincd.restartC = time.After(d.tincd.restartWait)
}

// stopTincd stops a managed tincd as the daemon ends (the stop policy:
// SIGTERM, then SIGKILL).
func (d *Daemon) stopTincd() {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := d.tincd.ctl.Stop(ctx); err != nil {
		d.log.Error("stop tincd", "err", err)
	}
}
