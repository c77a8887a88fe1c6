package gateway

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"os"
	"strings"
	"sync/atomic"
	"time"

	"golang.org/x/net/icmp"
	"golang.org/x/net/ipv4"
)

// Probe methods of egress.probe.method.
const (
	ProbeTCP  = "tcp"  // connect to host:port
	ProbeHTTP = "http" // GET a URL; any answer below 500 is healthy
	ProbeICMP = "icmp" // ICMP echo to an IPv4 address (needs CAP_NET_RAW)
)

// ProbeResult is one round of upstream probes.
type ProbeResult struct {
	At      time.Time     `json:"at"`
	OK      bool          `json:"ok"`
	Target  string        `json:"target,omitempty"` // the target that answered
	RTT     time.Duration `json:"rtt_ns,omitempty"`
	Failure string        `json:"failure,omitempty"` // why every target failed
}

// targetProber probes its targets in order with one method.
type targetProber struct {
	method  string
	targets []string
	timeout time.Duration
	client  *http.Client
	seq     atomic.Uint32
}

func newProber(p ProbeConfig) *targetProber {
	tp := &targetProber{method: p.Method, targets: p.Targets, timeout: p.Timeout.D()}
	if p.Method == ProbeHTTP {
		tp.client = &http.Client{
			Timeout: tp.timeout,
			// Every probe opens a new connection: a kept-alive one could
			// outlive the upstream it should test.
			Transport:     &http.Transport{DisableKeepAlives: true, Proxy: nil},
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		}
	}
	return tp
}

func (p *targetProber) probe(ctx context.Context) ProbeResult {
	var fails []string
	for _, t := range p.targets {
		start := time.Now()
		err := p.one(ctx, t)
		if err == nil {
			return ProbeResult{At: start, OK: true, Target: t, RTT: time.Since(start)}
		}
		fails = append(fails, err.Error())
		if ctx.Err() != nil {
			break
		}
	}
	return ProbeResult{At: time.Now(), Failure: strings.Join(fails, "; ")}
}

func (p *targetProber) one(ctx context.Context, target string) error {
	ctx, cancel := context.WithTimeout(ctx, p.timeout)
	defer cancel()
	switch p.method {
	case ProbeTCP:
		var d net.Dialer
		c, err := d.DialContext(ctx, "tcp", target)
		if err != nil {
			return fmt.Errorf("tcp %s: %w", target, err)
		}
		return c.Close()
	case ProbeHTTP:
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, target, nil)
		if err != nil {
			return fmt.Errorf("http %s: %w", target, err)
		}
		resp, err := p.client.Do(req)
		if err != nil {
			return fmt.Errorf("http %s: %w", target, err)
		}
		resp.Body.Close()
		if resp.StatusCode >= 500 {
			return fmt.Errorf("http %s: status %s", target, resp.Status)
		}
		return nil
	case ProbeICMP:
		return p.ping(ctx, target)
	}
	return fmt.Errorf("probe method %q unknown", p.method)
}

// ping sends one ICMP echo request and waits for its reply.
func (p *targetProber) ping(ctx context.Context, target string) error {
	dst, err := netip.ParseAddr(target)
	if err != nil || !dst.Is4() {
		return fmt.Errorf("icmp %s: not an IPv4 address", target)
	}
	c, err := icmp.ListenPacket("ip4:icmp", "0.0.0.0")
	if err != nil {
		return fmt.Errorf("icmp %s: %w", target, err)
	}
	defer c.Close()
	if dl, ok := ctx.Deadline(); ok {
		c.SetDeadline(dl)
	}
	id, seq := os.Getpid()&0xffff, int(p.seq.Add(1)&0xffff)
	msg := icmp.Message{Type: ipv4.ICMPTypeEcho, Body: &icmp.Echo{ID: id, Seq: seq, Data: []byte("mgmtnet-probe")}}
	b, err := msg.Marshal(nil)
	if err != nil {
		return fmt.Errorf("icmp %s: %w", target, err)
	}
	if _, err := c.WriteTo(b, &net.IPAddr{IP: dst.AsSlice()}); err != nil {
		return fmt.Errorf("icmp %s: %w", target, err)
	}
	buf := make([]byte, 1500)
	for {
		n, from, err := c.ReadFrom(buf)
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				return fmt.Errorf("icmp %s: no echo reply within %s", target, p.timeout)
			}
			return fmt.Errorf("icmp %s: %w", target, err)
		}
		if a, ok := from.(*net.IPAddr); !ok || !a.IP.Equal(dst.AsSlice()) {
			continue
		}
		m, err := icmp.ParseMessage(1, buf[:n])
		if err != nil || m.Type != ipv4.ICMPTypeEchoReply {
			continue
		}
		if e, ok := m.Body.(*icmp.Echo); ok && e.ID == id && e.Seq == seq {
			return nil
		}
	}
}

// EgressState is where a gateway's egress offer stands.
type EgressState string

// The egress states.
const (
	// EgressOff: this gateway does not offer egress (not configured).
	EgressOff EgressState = "off"
	// EgressProbing: configured, no probe has succeeded yet; not announced.
	EgressProbing EgressState = "probing"
	// EgressAnnounced: 0.0.0.0/0 is announced.
	EgressAnnounced EgressState = "announced"
	// EgressWithdrawn: the upstream failed; the announcement is withdrawn
	// until the probes succeed for the whole hold-down.
	EgressWithdrawn EgressState = "withdrawn"
)

// health is the egress state machine, driven by probe results. It is pure:
// the clock comes in with each result.
//
//   - probing: the first success announces (a gateway that just started
//     has no flapping to damp), so a gateway never attracts traffic before
//     its upstream has answered once;
//   - announced: failures consecutive failures withdraw;
//   - withdrawn: any failure restarts the hold-down; announced again once
//     the probes have succeeded without a break for holdDown.
type health struct {
	state        EgressState
	failures     int // consecutive failures to withdraw
	holdDown     time.Duration
	consecutive  int       // current run of failures
	healthySince time.Time // start of the current run of successes (withdrawn)
	last         ProbeResult
	changed      time.Time
}

func newHealth(failures int, holdDown time.Duration) *health {
	return &health{state: EgressProbing, failures: max(failures, 1), holdDown: holdDown}
}

// observe takes one probe result and reports whether the announcement
// changes (announced <-> not announced).
func (h *health) observe(r ProbeResult) bool {
	h.last = r
	was := h.state == EgressAnnounced
	switch h.state {
	case EgressProbing:
		if r.OK {
			h.state = EgressAnnounced
		}
	case EgressAnnounced:
		if r.OK {
			h.consecutive = 0
			break
		}
		h.consecutive++
		if h.consecutive >= h.failures {
			h.state, h.consecutive, h.healthySince = EgressWithdrawn, 0, time.Time{}
		}
	case EgressWithdrawn:
		if !r.OK {
			h.healthySince = time.Time{}
			break
		}
		if h.healthySince.IsZero() {
			h.healthySince = r.At
		}
		if r.At.Sub(h.healthySince) >= h.holdDown {
			h.state = EgressAnnounced
		}
	}
	if now := h.state == EgressAnnounced; now != was {
		h.changed = r.At
		return true
	}
	return false
}

// announced reports whether 0.0.0.0/0 is to be announced.
func (h *health) announced() bool { return h.state == EgressAnnounced }
