package authdns

import (
	"net"
	"net/netip"
	"sync"
	"time"
)

// limitListener caps the TCP connections served at once: over the cap, a
// connection is closed as soon as it is accepted (rather than left in the
// kernel's queue, where a flood of them would hold a secondary's transfer
// back), and counted.
type limitListener struct {
	net.Listener
	slots chan struct{}
	m     *metrics
}

func (l *limitListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		select {
		case l.slots <- struct{}{}:
			l.m.tcpConns.Inc()
			return &limitConn{Conn: c, l: l}, nil
		default:
			l.m.tcpDropped.Inc()
			if tc, ok := c.(*net.TCPConn); ok {
				tc.SetLinger(0) //nolint:errcheck // a reset frees the socket at once
			}
			c.Close()
		}
	}
}

// limitConn gives its slot back when closed.
type limitConn struct {
	net.Conn
	l    *limitListener
	once sync.Once
}

func (c *limitConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(func() {
		<-c.l.slots
		c.l.m.tcpConns.Dec()
	})
	return err
}

// rateLimiter is response-rate limiting for UDP clients outside the
// management network: at most limit answers per second to one client
// network (IPv4 /24, IPv6 /56: one site), so that the server cannot be
// used to flood a victim whose address is forged in the queries. Of the
// answers over the limit, every slip-th is sent truncated and empty (a real
// client then retries over TCP, where addresses cannot be forged); the
// others are dropped.
//
// It counts answers per network in a table of the current second, which
// is replaced each second: its size is bounded by the clients of one
// second.
type rateLimiter struct {
	limit, slip int
	mu          sync.Mutex
	second      int64
	counts      map[netip.Prefix]int
}

func newRateLimiter(limit, slip int) *rateLimiter {
	return &rateLimiter{limit: limit, slip: slip, counts: map[netip.Prefix]int{}}
}

// rateAction is what to do with one answer.
type rateAction uint8

const (
	rateSend rateAction = iota
	rateDrop
	rateSlip
)

// take counts one answer to client at now and says what to do with it.
func (r *rateLimiter) take(client netip.Addr, now time.Time) rateAction {
	bits := 56
	if client.Is4() {
		bits = 24
	}
	network, _ := client.Prefix(bits)
	sec := now.Unix()
	r.mu.Lock()
	if sec != r.second {
		r.second = sec
		if len(r.counts) > 1<<16 {
			r.counts = map[netip.Prefix]int{} // a flood of forged networks: give its memory back
		} else {
			clear(r.counts)
		}
	}
	r.counts[network]++
	n := r.counts[network]
	r.mu.Unlock()
	over := n - r.limit
	switch {
	case over <= 0:
		return rateSend
	case r.slip > 0 && over%r.slip == 0:
		return rateSlip
	}
	return rateDrop
}
