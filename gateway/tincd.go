package gateway

import (
	"context"
	"fmt"
	"net/netip"
	"sync"
	"syscall"

	"github.com/confine-project/mgmtnet/tinc"
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

// NewManagedTincd returns a Tincd that runs "tincd -c dir -D
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
	return p.Signal(syscall.SIGHUP)
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
