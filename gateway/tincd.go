package gateway

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"sync"
	"syscall"
	"time"

	"github.com/confine-project/mgmtnet/vpn"
)

// Tincd is the tincd of the gateway's net, as the daemon drives it. The
// real implementations are NewManagedTincd (tincd runs as our child) and
// NewUnmanagedTincd (someone else runs it; we only signal it).
type Tincd interface {
	// Start starts tincd; unmanaged, it does nothing.
	Start(ctx context.Context) error
	// Reload sends tincd one SIGHUP. The caller checks tinc.conf first.
	Reload() error
	// Restart stops tincd and starts it again: tinc 1.0 picks up a change
	// of its own Subnets only this way. Unmanaged, it is an error.
	Restart(ctx context.Context) error
	// Stop stops tincd (SIGTERM, then SIGKILL); unmanaged, it does
	// nothing.
	Stop(ctx context.Context) error
	// State reports whether tincd runs.
	State() TincdState
	// Events delivers tincd's log lines and unexpected exits; nil when
	// there are none (unmanaged). Log lines may be dropped when the loop is
	// busy (tincd must never block on its log); exits never are.
	Events() <-chan TincdEvent
	// Peers returns the meta connections tincd's log reported, or nil when
	// this Tincd cannot know (unmanaged).
	Peers() []Peer
}

// TincdState is what status reports about tincd.
type TincdState struct {
	Managed bool `json:"managed"`
	Pid     int  `json:"pid"`
	Running bool `json:"running"`
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

// ErrUnmanaged is returned by the unmanaged Tincd's Restart.
var ErrUnmanaged = errors.New("tincd is not managed by mgmtnet (tinc.manage: false): restart it by hand")

// managedTincd runs tincd -D as a child and reports its exits.
type managedTincd struct {
	fg     vpn.Foreground
	events chan TincdEvent

	// peers is updated from every log line in the reader goroutine, so a
	// connection event is never lost even when Events drops lines.
	pmu   sync.Mutex
	peers peers

	mu   sync.Mutex
	proc *vpn.Process
}

var _ Tincd = (*managedTincd)(nil)

// NewManagedTincd returns a Tincd that runs "tincd -c dir -D
// --pidfile=pidFile" itself. refused, when not nil, is called from tincd's
// log reader for every Subnet announcement tincd refused, so that none is
// missed however busy the daemon's loop is.
func NewManagedTincd(binary, dir, pidFile string, refused func(Refusal)) Tincd {
	m := &managedTincd{events: make(chan TincdEvent, 4096), peers: peers{}}
	m.fg = vpn.Foreground{Binary: binary, ConfDir: dir, PidFile: pidFile, Line: func(l string) {
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
		return fmt.Errorf("reload tincd: %w", vpn.ErrNotRunning)
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
	return p.Stop(ctx, vpn.DefaultKillAfter)
}

func (m *managedTincd) State() TincdState {
	m.mu.Lock()
	defer m.mu.Unlock()
	s := TincdState{Managed: true}
	if m.proc != nil && m.proc.Running() {
		s.Pid, s.Running = m.proc.Pid(), true
	}
	return s
}

func (m *managedTincd) Events() <-chan TincdEvent { return m.events }

// unmanagedTincd signals a tincd someone else runs, through its pid file.
type unmanagedTincd struct{ pidFile string }

var _ Tincd = (*unmanagedTincd)(nil)

// NewUnmanagedTincd returns a Tincd that only signals the tincd named by
// pidFile and never starts or stops it.
func NewUnmanagedTincd(pidFile string) Tincd { return &unmanagedTincd{pidFile: pidFile} }

func (u *unmanagedTincd) Start(context.Context) error { return nil }
func (u *unmanagedTincd) Stop(context.Context) error  { return nil }
func (u *unmanagedTincd) Restart(context.Context) error {
	return fmt.Errorf("restart tincd: %w", ErrUnmanaged)
}

func (u *unmanagedTincd) Reload() error {
	if _, err := vpn.Signal(u.pidFile, syscall.SIGHUP); err != nil {
		return fmt.Errorf("reload tincd: %w", err)
	}
	return nil
}

func (u *unmanagedTincd) State() TincdState {
	pid, err := vpn.ReadPid(u.pidFile)
	return TincdState{Pid: pid, Running: err == nil}
}

func (u *unmanagedTincd) Events() <-chan TincdEvent { return nil }
func (u *unmanagedTincd) Peers() []Peer             { return nil }

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

// stopByPidFile stops the tincd named by a pid file (SIGTERM, then SIGKILL
// after vpn.DefaultKillAfter). No tincd running is not an error.
func stopByPidFile(ctx context.Context, pidFile string) error {
	pid, err := vpn.Signal(pidFile, syscall.SIGTERM)
	if errors.Is(err, vpn.ErrNotRunning) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("stop tincd: %w", err)
	}
	deadline := time.Now().Add(vpn.DefaultKillAfter)
	for {
		if _, err := vpn.ReadPid(pidFile); err != nil {
			return nil
		}
		if time.Now().After(deadline) {
			syscall.Kill(pid, syscall.SIGKILL)
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("stop tincd (pid %d): %w", pid, ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
}
