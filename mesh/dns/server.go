package dns

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/miekg/dns"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/confine-project/mgmtnet/mesh"
)

// Tunables of the server that are not configuration.
const (
	// readBufSize is the UDP read buffer: a query larger than this is
	// cut short and fails to parse (real queries are under 512 bytes).
	readBufSize = dns.DefaultMsgSize
	// notifyAttempts is how many times a NOTIFY is sent before giving up
	// on a secondary (RFC 1996 §3.6 asks for retries).
	notifyAttempts = 3
	// closeTimeout bounds Close's wait for answers in flight.
	closeTimeout = 5 * time.Second
	// bindAttempts is how many random ports are tried for a listen
	// address with port 0, which needs the same free port for UDP and
	// TCP.
	bindAttempts = 16
)

// ServerOptions are the collaborators of a Server and where it listens.
type ServerOptions struct {
	// Listen are host:port addresses; each gets a UDP and a TCP socket.
	// Port 0 picks one free port for both (see Server.Addrs).
	Listen []string
	// Logger receives the server's logs. Nil discards them.
	Logger *slog.Logger
	// Registerer, if not nil, gets the server's Prometheus metrics.
	Registerer prometheus.Registerer
}

// Server is an authoritative DNS server for the zones of the current
// testbed. Its zone is swapped atomically by SetTestbed; queries in
// flight finish on the zone they started with.
type Server struct {
	cfg     Config // normalized
	listen  []string
	log     *slog.Logger
	m       *metrics
	zone    atomic.Pointer[Zone]
	replies sync.Pool

	// ctx ends outgoing work (forwarded queries, NOTIFY) at Shutdown.
	ctx    context.Context
	cancel context.CancelFunc
	// notifyGen counts zone swaps that notify; a NOTIFY of an older one
	// stops retrying.
	notifyGen atomic.Uint64

	mu       sync.Mutex
	started  bool
	closed   bool
	servers  []*dns.Server  // TCP, and UDP on wildcard addresses
	udpConns []*net.UDPConn // UDP sockets served by serveUDP
	addrs    []net.Addr
	serving  sync.WaitGroup // one per dns.Server's serve loop
	bg       sync.WaitGroup // NOTIFY senders
}

// New returns a server for cfg. It validates cfg and registers the
// metrics, but binds nothing: Start does. Until the first SetTestbed it
// answers SERVFAIL for names of its zones.
func New(cfg Config, opts ServerOptions) (*Server, error) {
	cfg, err := cfg.normalized()
	if err != nil {
		return nil, err
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	m, err := newMetrics(opts.Registerer)
	if err != nil {
		return nil, err
	}
	s := &Server{cfg: cfg, listen: append([]string(nil), opts.Listen...), log: log, m: m}
	s.replies.New = func() any { return &reply{buf: make([]byte, replyBufSize)} }
	s.ctx, s.cancel = context.WithCancel(context.Background())
	return s, nil
}

// Start binds a UDP and a TCP socket for every listen address and starts
// serving on them. It returns once every socket serves, or with the
// first bind error ("address already in use") after closing what it
// bound. ctx bounds the start only; Shutdown or Close stops the server.
func (s *Server) Start(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case s.closed:
		return errors.New("start dns server: already shut down")
	case s.started:
		return errors.New("start dns server: already started")
	case len(s.listen) == 0:
		return errors.New("start dns server: no listen address")
	}
	var pcs []net.PacketConn
	var lns []net.Listener
	closeAll := func() {
		for _, pc := range pcs {
			pc.Close()
		}
		for _, ln := range lns {
			ln.Close()
		}
	}
	for _, addr := range s.listen {
		pc, ln, err := bind(ctx, addr)
		if err != nil {
			closeAll()
			return fmt.Errorf("start dns server: %w", err)
		}
		pcs, lns = append(pcs, pc), append(lns, ln)
	}
	for i := range pcs {
		servers := []*dns.Server{{Listener: lns[i], Handler: s}}
		udp := pcs[i].(*net.UDPConn)
		if wildcard(udp) {
			servers = append(servers, &dns.Server{PacketConn: udp, Handler: s, UDPSize: readBufSize})
		}
		for _, srv := range servers {
			if err := s.activate(srv); err != nil {
				for _, started := range s.servers {
					started.Shutdown() //nolint:errcheck // the start error says more
				}
				s.servers = nil
				closeAll()
				s.serving.Wait()
				return fmt.Errorf("start dns server on %s: %w", s.listen[i], err)
			}
		}
	}
	for _, pc := range pcs {
		if udp := pc.(*net.UDPConn); !wildcard(udp) {
			conns := []*net.UDPConn{udp}
			for range reusePortSockets() - 1 {
				c, err := listenReusePort(ctx, udp.LocalAddr().String())
				if err != nil {
					s.log.Warn("more udp sockets", "err", err)
					break
				}
				conns = append(conns, c)
			}
			for _, c := range conns {
				s.udpConns = append(s.udpConns, c)
				s.serveUDP(c, udpWorkers())
			}
		}
	}
	s.started = true
	for i := range pcs {
		s.addrs = append(s.addrs, pcs[i].LocalAddr(), lns[i].Addr())
		s.log.Info("dns server listening", "addr", pcs[i].LocalAddr().String(), "proto", "udp+tcp")
	}
	return nil
}

// activate starts one dns.Server and waits until it serves, so that a
// Shutdown right after Start finds it started. A serve loop that ends
// later for another reason than Shutdown is logged.
func (s *Server) activate(srv *dns.Server) error {
	started := make(chan struct{})
	srv.NotifyStartedFunc = func() { close(started) }
	failed := make(chan error, 1)
	s.serving.Add(1)
	go func() {
		defer s.serving.Done()
		err := srv.ActivateAndServe()
		select {
		case <-started:
			if err != nil && s.ctx.Err() == nil {
				s.log.Error("dns server stopped", "err", err)
			}
		default:
			if err == nil {
				err = errors.New("stopped before serving")
			}
			failed <- err
		}
	}()
	select {
	case <-started:
		s.servers = append(s.servers, srv)
		return nil
	case err := <-failed:
		return err
	}
}

// wildcard reports whether a socket is bound to the unspecified address,
// which needs IP_PKTINFO to answer from the address it was asked on.
func wildcard(c *net.UDPConn) bool {
	return c.LocalAddr().(*net.UDPAddr).AddrPort().Addr().IsUnspecified()
}

// udpWorkers is how many goroutines answer one UDP socket: enough to use
// every CPU, and a few more so that one slow write does not idle a CPU.
func udpWorkers() int {
	if n, _ := strconv.Atoi(os.Getenv("WORKERS")); n > 0 {
		return n
	}
	return 2 * runtime.GOMAXPROCS(0)
}

// bind opens the UDP and TCP sockets of one listen address. With port 0
// it looks for a port free for both.
func bind(ctx context.Context, addr string) (net.PacketConn, net.Listener, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, nil, fmt.Errorf("listen address %q: %w", addr, err)
	}
	var lc net.ListenConfig
	attempts := 1
	if port == "0" {
		attempts = bindAttempts
	}
	for i := 0; ; i++ {
		pc, err := listenReusePort(ctx, addr)
		if err != nil {
			return nil, nil, fmt.Errorf("listen udp %s: %w", addr, err)
		}
		tcpAddr := net.JoinHostPort(host, strconv.Itoa(pc.LocalAddr().(*net.UDPAddr).Port))
		ln, err := lc.Listen(ctx, "tcp", tcpAddr)
		if err == nil {
			return pc, ln, nil
		}
		pc.Close()
		if i+1 >= attempts || !errors.Is(err, syscall.EADDRINUSE) {
			return nil, nil, fmt.Errorf("listen tcp %s: %w", tcpAddr, err)
		}
	}
}

// Addrs returns the addresses the server listens on, UDP and TCP for
// each listen address, once Start returned.
func (s *Server) Addrs() []net.Addr {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]net.Addr(nil), s.addrs...)
}

// Zone returns the zone being served; nil before the first SetTestbed.
func (s *Server) Zone() *Zone { return s.zone.Load() }

// SetTestbed builds the zone of tb and swaps it in. When the serial
// changed it sends NOTIFY for both zones to Config.Notify, in the
// background; the outcome is logged and counted. On error the zone
// served does not change.
func (s *Server) SetTestbed(tb *mesh.Testbed) error {
	z, err := NewZone(s.cfg, tb)
	if err != nil {
		return err
	}
	old := s.zone.Swap(z)
	s.m.setZone(z)
	if old != nil && old.serial == z.serial {
		return nil
	}
	s.log.Info("dns zone loaded", "zone", z.Origin(), "reverse", z.ReverseOrigin(), "serial", z.serial,
		"names", z.Len(), "skipped_names", len(z.skipped))
	for _, sk := range z.skipped {
		s.log.Debug("registry name not served", "member", sk.Member, "name", sk.Name, "reason", sk.Reason.String())
	}
	s.notify(z)
	return nil
}

// notify sends NOTIFY for both zones of z to every secondary.
func (s *Server) notify(z *Zone) {
	if len(s.cfg.Notify) == 0 {
		return
	}
	gen := s.notifyGen.Add(1)
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return
	}
	for _, target := range s.cfg.Notify {
		for _, a := range []*apex{&z.fwd, &z.rev} {
			s.bg.Add(1)
			go func() {
				defer s.bg.Done()
				s.sendNotify(gen, a, target)
			}()
		}
	}
}

// sendNotify sends one zone's NOTIFY to one secondary, with its SOA in the
// answer section (RFC 1996 §3.7), retrying with a growing pause until the
// secondary acknowledges it, a newer zone supersedes it, or the server
// shuts down.
func (s *Server) sendNotify(gen uint64, a *apex, target netip.AddrPort) {
	m := new(dns.Msg)
	m.SetNotify(a.name)
	m.Answer = a.soa
	c := &dns.Client{Net: "udp", Timeout: s.cfg.ForwardTimeout}
	serial := a.soa[0].(*dns.SOA).Serial
	var err error
	for attempt := 1; attempt <= notifyAttempts; attempt++ {
		if s.notifyGen.Load() != gen {
			s.log.Debug("dns notify superseded by a newer zone", "zone", a.name, "serial", serial, "target", target.String())
			return
		}
		var resp *dns.Msg
		resp, _, err = c.ExchangeContext(s.ctx, m, target.String())
		if err == nil && resp.Rcode != dns.RcodeSuccess {
			err = fmt.Errorf("answered %s", dns.RcodeToString[resp.Rcode])
		}
		if err == nil {
			s.m.notifyOK.Inc()
			s.log.Debug("dns notify acknowledged", "zone", a.name, "serial", serial, "target", target.String())
			return
		}
		if attempt == notifyAttempts {
			break
		}
		t := time.NewTimer(time.Duration(attempt) * time.Second)
		select {
		case <-s.ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
	if s.ctx.Err() != nil {
		return
	}
	s.m.notifyErr.Inc()
	s.log.Warn("dns notify failed", "zone", a.name, "serial", serial, "target", target.String(), "attempts", notifyAttempts, "err", err)
}

// Shutdown stops serving: it closes the sockets, cancels forwarded
// queries and NOTIFY retries, and waits for answers in flight until ctx
// ends. The server cannot be started again.
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	servers := s.servers
	s.servers = nil
	for _, c := range s.udpConns {
		c.Close()
	}
	s.mu.Unlock()

	s.cancel()
	var errs []error
	for _, srv := range servers {
		if err := srv.ShutdownContext(ctx); err != nil {
			errs = append(errs, err)
		}
	}
	done := make(chan struct{})
	go func() {
		s.serving.Wait()
		s.bg.Wait()
		close(done)
	}()
	select {
	case <-done:
	case <-ctx.Done():
		errs = append(errs, ctx.Err())
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("shut down dns server: %w", err)
	}
	return nil
}

// Close is Shutdown with a few seconds for answers in flight.
func (s *Server) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), closeTimeout)
	defer cancel()
	return s.Shutdown(ctx)
}
