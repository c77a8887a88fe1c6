package gateway

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"golang.org/x/net/icmp"
	"golang.org/x/net/ipv6"

	"github.com/confine-project/mgmtnet/addressing"
	"github.com/confine-project/mgmtnet/mesh"
)

// The UDP watchdog. tinc 1.0 seals a peer's UDP packets with the packet
// key the peer last sent in ANS_KEY, and installs whichever ANS_KEY
// arrives last, from whichever direct peer relays it (it checks neither
// order nor origin). When the key it holds is one the peer no longer has,
// every UDP packet to that peer is dropped there ("Got unauthenticated
// packet", debug level 5 only) while the meta connection stays up; tinc
// notices only when PMTU discovery gives up (about 95 s) and then sends
// over TCP until the key expires (1 h). The watchdog pings each connected
// peer's management address through tinc every interval; a peer that
// answered before, or is a node or server (they always answer), and stays
// silent for misses intervals while connected is repaired: its host file's
// mtime moves past tincd's last reload and one SIGHUP makes tincd close
// just that meta connection (tinc 1.0 closes connections whose host file
// changed). In the tunnel-server topology the peer is then unreachable,
// which is what makes tinc 1.0 drop the key; the peer reconnects at once
// (tinc retries a lost outgoing connection immediately) and the keys are
// exchanged anew over the one path there is.

// udpHoldOff is the least time between two repairs of one peer.
const udpHoldOff = 30 * time.Second

// watchPeer is what the watchdog knows of one connected peer.
type watchPeer struct {
	since     time.Time // first seen connected
	lastReply time.Time
	sent      int // probes since the last reply (or since connected)
	repaired  time.Time
}

// udpWatch is the watchdog's state, pure: the clock comes in with every
// call.
type udpWatch struct {
	interval time.Duration
	misses   int
	peers    map[string]*watchPeer
	answered map[string]bool // peers that ever answered, across reconnects
}

func newUDPWatch(interval time.Duration, misses int) *udpWatch {
	return &udpWatch{interval: interval, misses: max(misses, 1), peers: map[string]*watchPeer{}, answered: map[string]bool{}}
}

// connected updates the set of connected peers; a peer that reconnects
// starts afresh.
func (w *udpWatch) connected(names []string, now time.Time) {
	live := make(map[string]bool, len(names))
	for _, n := range names {
		live[n] = true
		p := w.peers[n]
		if p == nil {
			p = &watchPeer{}
			w.peers[n] = p
		}
		if p.since.IsZero() {
			p.since, p.sent, p.lastReply = now, 0, time.Time{}
		}
	}
	for n, p := range w.peers {
		if live[n] {
			continue
		}
		if now.Sub(p.repaired) < udpHoldOff {
			// Keep the hold-down across the reconnect a repair causes.
			p.since, p.sent, p.lastReply = time.Time{}, 0, time.Time{}
			continue
		}
		delete(w.peers, n)
	}
}

// sent records a probe to name.
func (w *udpWatch) sent(name string) {
	if p := w.peers[name]; p != nil && !p.since.IsZero() {
		p.sent++
	}
}

// reply records an echo reply from name.
func (w *udpWatch) reply(name string, at time.Time) {
	w.answered[name] = true
	if p := w.peers[name]; p != nil {
		p.lastReply, p.sent = at, 0
	}
}

// dead returns the connected peers to repair now, and marks them
// repaired: silent for misses probes spanning misses intervals, expected
// to answer (expect, or answered before), not repaired within udpHoldOff.
func (w *udpWatch) dead(now time.Time, expect func(string) bool) []string {
	var out []string
	quiet := time.Duration(w.misses) * w.interval
	for n, p := range w.peers {
		if p.since.IsZero() || p.sent < w.misses {
			continue
		}
		last := p.since
		if p.lastReply.After(last) {
			last = p.lastReply
		}
		if now.Sub(last) < quiet || now.Sub(p.repaired) < udpHoldOff {
			continue
		}
		if !w.answered[n] && !expect(n) {
			continue
		}
		p.repaired, p.sent = now, 0
		out = append(out, n)
	}
	slices.Sort(out)
	return out
}

// udpTargets is what the watchdog probes: the applied snapshot (never
// changed once built, so shared with the watchdog's goroutine) and this
// gateway's own address.
type udpTargets struct {
	src netip.Addr
	tb  *mesh.Testbed
}

// addr is a peer's management address.
func (t *udpTargets) addr(name string) (netip.Addr, bool) {
	m, ok := t.tb.Lookup(name)
	if !ok {
		return netip.Addr{}, false
	}
	return m.Addr, true
}

// expect reports whether a peer always answers pings: nodes and servers
// do; hosts (laptops) are expected only once they have answered.
func (t *udpTargets) expect(name string) bool {
	m, ok := t.tb.Lookup(name)
	return ok && (m.Kind == addressing.KindNode || m.Kind == addressing.KindServer)
}

// runUDPWatch probes until ctx ends, and sends the peers to repair to
// dead. targets and connected are read at every round.
func runUDPWatch(ctx context.Context, w *udpWatch, targets func() *udpTargets, connected func() []string, dead chan<- []string, logf func(string, ...any)) {
	var (
		mu   sync.Mutex
		conn *icmp.PacketConn
		src  netip.Addr
		who  = map[netip.Addr]string{}
	)
	id := os.Getpid() & 0xffff
	seq := 0
	defer func() {
		if conn != nil {
			conn.Close()
		}
	}()
	tick := time.NewTicker(w.interval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		t := targets()
		if t == nil || !t.src.IsValid() {
			continue
		}
		if conn == nil || src != t.src {
			if conn != nil {
				conn.Close()
				conn = nil
			}
			c, err := listenEcho6(t.src)
			if err != nil {
				logf("udp watchdog: cannot listen for echo replies yet", "err", err)
				continue
			}
			conn, src = c, t.src
			go readEchoReplies(c, id, func(from netip.Addr, at time.Time) {
				mu.Lock()
				defer mu.Unlock()
				if n, ok := who[from]; ok {
					w.reply(n, at)
				}
			})
		}
		now := time.Now()
		mu.Lock()
		w.connected(connected(), now)
		clear(who)
		for n := range w.peers {
			a, ok := t.addr(n)
			if !ok || w.peers[n].since.IsZero() {
				continue
			}
			who[a] = n
			seq = (seq + 1) & 0xffff
			msg := icmp.Message{Type: ipv6.ICMPTypeEchoRequest, Body: &icmp.Echo{ID: id, Seq: seq, Data: []byte("mgmtnet-udp-watchdog")}}
			b, _ := msg.Marshal(nil)
			if _, err := conn.WriteTo(b, &net.IPAddr{IP: a.AsSlice()}); err == nil {
				w.sent(n)
			}
		}
		names := w.dead(now, t.expect)
		mu.Unlock()
		if len(names) > 0 {
			select {
			case dead <- names:
			default:
			}
		}
	}
}

// listenEcho6 opens a raw ICMPv6 socket on src that receives echo replies
// only.
func listenEcho6(src netip.Addr) (*icmp.PacketConn, error) {
	c, err := icmp.ListenPacket("ip6:ipv6-icmp", src.String())
	if err != nil {
		return nil, err
	}
	var f ipv6.ICMPFilter
	f.SetAll(true)
	f.Accept(ipv6.ICMPTypeEchoReply)
	if err := c.IPv6PacketConn().SetICMPFilter(&f); err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}

func readEchoReplies(c *icmp.PacketConn, id int, got func(netip.Addr, time.Time)) {
	buf := make([]byte, 1500)
	for {
		n, from, err := c.ReadFrom(buf)
		if err != nil {
			return // closed
		}
		m, err := icmp.ParseMessage(58, buf[:n])
		if err != nil || m.Type != ipv6.ICMPTypeEchoReply {
			continue
		}
		e, ok := m.Body.(*icmp.Echo)
		a, ok2 := from.(*net.IPAddr)
		if !ok || !ok2 || e.ID != id {
			continue
		}
		if addr, ok := netip.AddrFromSlice(a.IP); ok {
			got(addr.Unmap(), time.Now())
		}
	}
}

// udpTargetsOf is the watchdog's view of the applied snapshot.
func (d *Daemon) udpTargetsOf() *udpTargets {
	if d.hosts.tb == nil {
		return nil
	}
	me, ok := d.hosts.tb.Lookup(d.cfg.Identity.TincName)
	if !ok {
		return nil
	}
	return &udpTargets{src: me.Addr, tb: d.hosts.tb}
}

// repairUDP closes the meta connections of peers whose UDP is dead: their
// host files' mtime moves past tincd's last reload, then one SIGHUP.
func (d *Daemon) repairUDP(names []string) {
	// tincd closes a connection on SIGHUP when the host file's mtime (whole
	// seconds) is later than its last reload: wait out the second of the
	// last one.
	if wait := time.Until(d.tincd.lastHUP.Add(1100 * time.Millisecond)); wait > 0 {
		time.Sleep(wait)
	}
	now := time.Now().Truncate(time.Second)
	var done []string
	for _, n := range names {
		p := filepath.Join(d.cfg.HostsDir(), n)
		if err := os.Chtimes(p, now, now); err != nil {
			d.log.Error("udp watchdog: cannot touch the peer's host file", "peer", n, "err", err)
			continue
		}
		done = append(done, n)
	}
	if len(done) == 0 {
		return
	}
	if err := d.reload(); err != nil {
		d.log.Error("udp watchdog: reload tincd", "err", err)
		return
	}
	for _, n := range done {
		d.udp.repairs++
		d.m.udpRepairs.Inc()
		d.udp.last = append(d.udp.last, UDPRepair{Peer: n, At: time.Now().UTC()})
		if len(d.udp.last) > 10 {
			d.udp.last = d.udp.last[1:]
		}
		d.log.Warn("udp watchdog: the peer's meta connection lives but it has not answered through tinc; closing that connection so that tinc exchanges packet keys anew (tinc 1.0's stale packet key)",
			"peer", n, "silent_at_least", fmt.Sprint(time.Duration(d.cfg.Tinc.UDPWatchdog.Misses)*d.cfg.Tinc.UDPWatchdog.Interval.D()))
	}
}

// UDPRepair is one repair by the UDP watchdog.
type UDPRepair struct {
	Peer string    `json:"peer"`
	At   time.Time `json:"at"`
}

// UDPWatchdogStatus is the watchdog in status.
type UDPWatchdogStatus struct {
	Enabled bool        `json:"enabled"`
	Repairs int         `json:"repairs"`
	Last    []UDPRepair `json:"last,omitempty"`
}

// startUDPWatch runs the UDP watchdog (managed tincd only) until ctx ends
// or stop is called.
func (d *Daemon) startUDPWatch(ctx context.Context) (stop func()) {
	wd := d.cfg.Tinc.UDPWatchdog
	if !d.cfg.Tinc.Manage || wd.Interval <= 0 {
		return func() {}
	}
	wctx, cancel := context.WithCancel(ctx)
	go runUDPWatch(wctx, newUDPWatch(wd.Interval.D(), wd.Misses), d.udp.targets.Load, func() []string {
		var out []string
		for _, p := range d.tincd.ctl.Peers() {
			if p.Connected {
				out = append(out, p.Name)
			}
		}
		return out
	}, d.udp.deadC, d.log.Debug)
	return cancel
}

// udpRetarget gives the watchdog the targets of a new snapshot.
func (d *Daemon) udpRetarget() {
	if d.hosts.tb != d.udp.tb {
		d.udp.tb = d.hosts.tb
		d.udp.targets.Store(d.udpTargetsOf())
	}
}
