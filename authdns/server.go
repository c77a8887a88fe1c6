package authdns

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
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
	// maxUDPSockets bounds the SO_REUSEPORT sockets of one address.
	maxUDPSockets = 16
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
	// SerialFile, if set, keeps the SOA serial across restarts (see
	// Server.SetTestbed): it is read by New and written, atomically, on
	// every new serial. A file that cannot be read or written is logged,
	// and serving goes on.
	SerialFile string
}

// Server is an authoritative DNS server for the zones of the current
// testbed. Its zone is swapped atomically by SetTestbed; queries in
// flight finish on the zone they started with.
type Server struct {
	cfg  Config   // normalized
	keys *keyRing // nil without TSIG keys
	rrl  *rateLimiter
	// serials persists the serial; saved is what it held at start.
	serials serialStore
	saved   savedSerial
	// setMu serializes SetTestbed (the serial depends on the last zone);
	// now is the clock of the serials (time.Now; tests replace it).
	setMu   sync.Mutex
	now     func() time.Time
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
	udpConns []*net.UDPConn // UDP sockets served by serveUDP (where serveUDPRaw is not used)
	forwards chan struct{}  // a slot per forwarded query in flight, from serveUDP
	addrs    []net.Addr
	serving  sync.WaitGroup // serve loops: of each dns.Server, and serveUDP
	rawSocks []*rawSocket   // UDP sockets served by serveUDPRaw
	raw      sync.WaitGroup // serveUDPRaw loops, which must end before their sockets close
	stopping atomic.Bool    // tells serveUDPRaw to end
	bg       sync.WaitGroup // NOTIFY senders, and queries serveUDP forwards
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
	s := &Server{cfg: cfg, now: time.Now, listen: append([]string(nil), opts.Listen...), log: log, m: m,
		forwards: make(chan struct{}, maxForwards), keys: newKeyRing(cfg.TSIG), serials: serialStore{path: opts.SerialFile}}
	if cfg.RateLimit > 0 {
		s.rrl = newRateLimiter(cfg.RateLimit, cfg.RateLimitSlip)
	}
	if s.saved, err = s.serials.load(); err != nil {
		log.Warn("dns serial file unreadable; the serial starts from the clock", "err", err)
	}
	for _, ns := range cfg.NS {
		if dns.IsSubDomain(cfg.Zone, ns.Name) && len(ns.Addrs) == 0 && ns.Member == "" {
			log.Warn("dns name server inside the zone has no address: secondaries' zone checks fail (no glue)", "ns", ns.Name)
		}
	}
	s.replies.New = func() any { return &reply{buf: make([]byte, replyBufSize)} }
	s.ctx, s.cancel = context.WithCancel(context.Background())
	return s, nil
}

// Start binds UDP and TCP sockets for every listen address and starts
// serving on them: on Linux, an address other than a wildcard gets one UDP
// socket per CPU (SO_REUSEPORT), each read and answered in batches
// (recvmmsg, sendmmsg).
// It returns once every socket serves, or with the first bind error
// ("address already in use") after closing what it bound. ctx bounds the
// start only; Shutdown or Close stops the server.
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
	var ls []*listener
	closeAll := func() {
		for _, l := range ls {
			l.close()
		}
	}
	for _, addr := range s.listen {
		l, err := bind(ctx, addr, udpSockets())
		if err != nil {
			closeAll()
			return fmt.Errorf("start dns server: %w", err)
		}
		ls = append(ls, l)
	}
	idle := func() time.Duration { return s.cfg.TCPIdleTimeout }
	slots := make(chan struct{}, s.cfg.MaxTCPConns) // shared by every listen address
	for i, l := range ls {
		tcp := &dns.Server{Listener: &limitListener{Listener: l.tcp, slots: slots, m: s.m}, Handler: s, IdleTimeout: idle}
		servers := []*dns.Server{tcp}
		if l.wildcard() {
			servers = append(servers, &dns.Server{PacketConn: l.udp[0], Handler: s, UDPSize: readBufSize})
		}
		if s.keys != nil {
			for _, srv := range servers {
				srv.TsigProvider = s.keys
			}
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
	for _, l := range ls {
		if !l.wildcard() {
			for _, c := range l.udp {
				// Each blocking reader holds a P while it waits: keep one
				// for the rest of the process (serveUDPRaw).
				if rawSupported && len(s.rawSocks) < runtime.GOMAXPROCS(0)-1 {
					sock, err := openRaw(c)
					if err == nil {
						s.rawSocks = append(s.rawSocks, sock)
						s.raw.Go(func() { s.serveUDPRaw(sock) })
						continue
					}
					s.log.Warn("dns: blocking UDP reads unavailable, using the runtime's poller", "addr", c.LocalAddr().String(), "err", err)
				}
				s.udpConns = append(s.udpConns, c)
				for range udpWorkers() {
					s.serving.Go(func() { s.serveUDP(c) })
				}
			}
		}
		s.addrs = append(s.addrs, l.udp[0].LocalAddr(), l.tcp.Addr())
		s.log.Info("dns server listening", "addr", l.udp[0].LocalAddr().String(), "proto", "udp+tcp", "udp_sockets", len(l.udp))
	}
	s.started = true
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

// listener holds the sockets of one listen address.
type listener struct {
	// udp is one socket, or on Linux one per CPU sharing the port with
	// SO_REUSEPORT, so that the kernel spreads clients over them and
	// every CPU can answer.
	udp []*net.UDPConn
	tcp net.Listener
}

func (l *listener) close() {
	for _, c := range l.udp {
		c.Close()
	}
	l.tcp.Close()
}

// wildcard reports whether the listener is bound to the unspecified
// address, where an answer must be sent from the address the query came
// to (IP_PKTINFO): dns.Server does that.
func (l *listener) wildcard() bool {
	return l.udp[0].LocalAddr().(*net.UDPAddr).AddrPort().Addr().Unmap().IsUnspecified()
}

// udpSockets is how many UDP sockets share a listen address bound to one
// address: one per CPU the process may run on, up to maxUDPSockets.
func udpSockets() int {
	if !reusePortSupported {
		return 1
	}
	return min(cpus(), maxUDPSockets)
}

// cpus is how many CPUs the process may run on: GOMAXPROCS, or fewer when
// it was raised above the CPUs (see serveUDPRaw).
func cpus() int { return min(runtime.GOMAXPROCS(0), runtime.NumCPU()) }

// udpWorkers is how many goroutines answer one UDP socket: with two CPUs
// or more, two, so that one reads and answers a batch while the other is
// in sendmmsg; with one, one, since two could only take turns. (Reads of
// one socket are serialized by the runtime: more workers would only wait.)
func udpWorkers() int { return min(2, cpus()) }

// bind opens the sockets of one listen address. With port 0 it looks for
// a port free for both UDP and TCP.
//
// The first UDP socket is a plain one, so that a port taken by anyone
// fails here with "address already in use": with SO_REUSEPORT, a second
// mgmtnet on the same address would instead silently get half of the
// queries. Only then is it swapped for the SO_REUSEPORT group.
func bind(ctx context.Context, addr string, sockets int) (*listener, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, fmt.Errorf("listen address %q: %w", addr, err)
	}
	var lc net.ListenConfig
	attempts := 1
	if port == "0" {
		attempts = bindAttempts
	}
	for i := 0; ; i++ {
		pc, err := lc.ListenPacket(ctx, "udp", addr)
		if err != nil {
			return nil, fmt.Errorf("listen udp %s: %w", addr, err)
		}
		udp := pc.(*net.UDPConn)
		bound := udp.LocalAddr().(*net.UDPAddr).AddrPort()
		tcpAddr := net.JoinHostPort(host, strconv.Itoa(int(bound.Port())))
		ln, err := lc.Listen(ctx, "tcp", tcpAddr)
		if err != nil {
			udp.Close()
			if i+1 < attempts && errors.Is(err, syscall.EADDRINUSE) {
				continue
			}
			return nil, fmt.Errorf("listen tcp %s: %w", tcpAddr, err)
		}
		l := &listener{udp: []*net.UDPConn{udp}, tcp: ln}
		if sockets <= 1 || bound.Addr().Unmap().IsUnspecified() {
			return l, nil
		}
		udp.Close()
		l.udp = l.udp[:0]
		for range sockets {
			c, err := listenReusePort(ctx, bound.String())
			if err != nil {
				l.close()
				return nil, fmt.Errorf("listen udp %s with SO_REUSEPORT: %w", bound, err)
			}
			l.udp = append(l.udp, c)
		}
		return l, nil
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

// SetTestbed builds the zone of tb and swaps it in. When the snapshot's
// version changed, the zone gets a new SOA serial, the difference from the
// last zone is kept for IXFR, and NOTIFY goes to Config.Notify for both
// zones, in the background; the outcome is logged and counted. On error
// the zone served does not change.
//
// The serial follows the snapshot version but is not its digest: a
// secondary takes a serial as newer only when it is greater in RFC 1982
// arithmetic, which a hash is half of the time. It is the time of the
// change in Unix seconds, or the last serial plus one when that is not
// greater (several changes in one second, or a clock set back). With
// ServerOptions.SerialFile the last serial survives a restart: the first
// zone after it keeps that serial when it is the same zone, and otherwise
// gets one greater, whatever the clock says, so secondaries never see the
// serial go backwards.
func (s *Server) SetTestbed(tb *mesh.Testbed) error {
	if tb == nil {
		return errors.New("dns zone: no testbed")
	}
	s.setMu.Lock()
	defer s.setMu.Unlock()
	old := s.zone.Load()
	digest := s.digest(tb)
	serial := uint32(s.now().Unix())
	switch {
	case old != nil && old.tb.Version() == tb.Version():
		serial = old.serial
	case old != nil:
		if !serialGreater(serial, old.serial) {
			serial = old.serial + 1
		}
	case s.saved.valid && s.saved.digest == digest:
		serial = s.saved.serial
	case s.saved.valid:
		if !serialGreater(serial, s.saved.serial) {
			serial = s.saved.serial + 1
		}
	}
	z, err := newZone(s.cfg, tb, serial)
	if err != nil {
		return err
	}
	if old != nil && old.serial != z.serial {
		z.journal = nextJournal(old, z)
	}
	s.zone.Store(z)
	s.m.setZone(z)
	if old != nil && old.serial == z.serial {
		return nil
	}
	if !s.saved.valid || s.saved.serial != serial || s.saved.digest != digest {
		s.saved = savedSerial{serial: serial, digest: digest, valid: true}
		if err := s.serials.save(s.saved); err != nil {
			s.log.Warn("dns serial not saved; after a restart the serial starts from the clock", "err", err)
		}
	}
	s.log.Info("dns zone loaded", "zone", z.Origin(), "reverse", z.ReverseOrigin(), "serial", z.serial,
		"names", z.Len(), "skipped_names", len(z.skipped), "journal", len(z.journal))
	for _, sk := range z.skipped {
		s.log.Debug("registry name not served", "member", sk.Member, "name", sk.Name, "reason", sk.Reason.String())
	}
	s.notify(z)
	return nil
}

// digest identifies what the zones hold: the snapshot and the
// configuration they are made with.
func (s *Server) digest(tb *mesh.Testbed) string {
	h := sha256.New()
	fmt.Fprintf(h, "%s\n%s\n%v\n%v\n%v\n", tb.Version(), s.cfg.Zone, s.cfg.TTL, s.cfg.NS, s.cfg.SOA)
	return hex.EncodeToString(h.Sum(nil))
}

// serialGreater reports whether a is greater than b in serial number
// arithmetic (RFC 1982).
func serialGreater(a, b uint32) bool { return a != b && int32(a-b) > 0 }

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
	if s.keys != nil {
		c.TsigProvider = s.keys // signs the NOTIFY and checks the answer's signature
	}
	serial := a.soa[0].(*dns.SOA).Serial
	var err error
	for attempt := 1; attempt <= notifyAttempts; attempt++ {
		if s.notifyGen.Load() != gen {
			s.log.Debug("dns notify superseded by a newer zone", "zone", a.name, "serial", serial, "target", target.String())
			return
		}
		if s.keys != nil {
			m.Extra = nil
			sign(m, s.keys.first, s.now())
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
	raws := s.rawSocks
	s.mu.Unlock()
	// Blocking readers use their sockets' descriptors directly: the
	// descriptors are closed only once the readers are done (within
	// rawTimeout) and so are forwarded answers, which use them too, lest
	// their numbers go to other files meanwhile.
	s.stopping.Store(true)
	s.raw.Wait()

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
		for _, r := range raws {
			r.close()
		}
	case <-ctx.Done():
		// A forwarded answer may still be written to a raw socket: its
		// descriptor is left open rather than risk a write to a file that
		// reuses its number.
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
