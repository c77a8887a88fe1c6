package authdns

import (
	"encoding/binary"
	"errors"
	"io"
	"net"
	"net/netip"

	"github.com/miekg/dns"
	"golang.org/x/net/ipv4"
	"golang.org/x/net/ipv6"
)

// udpBatch is how many datagrams serveUDP reads with one recvmmsg and
// answers with one sendmmsg.
const udpBatch = 32

// maxForwards bounds the queries serveUDP forwards at once; more are
// answered SERVFAIL.
const maxForwards = 1024

// batchConn reads and writes datagrams in batches: recvmmsg and sendmmsg
// on Linux, one at a time elsewhere.
type batchConn interface {
	ReadBatch(ms []ipv4.Message, flags int) (int, error)
	WriteBatch(ms []ipv4.Message, flags int) (int, error)
}

// serveUDP answers the queries of a UDP socket bound to one address, in
// batches, until the socket is closed. Several may serve one socket.
//
// It replaces dns.Server for UDP on such sockets. dns.Server makes a
// system call per datagram each way, starts a goroutine per datagram, and
// reads and writes every datagram with IP_PKTINFO control messages (which
// only a wildcard socket needs); on a small gateway that made it no
// faster than dnsmasq. Here a loaded server answers up to udpBatch
// queries per pair of system calls, and udpWorkers goroutines per socket
// (one socket per CPU, see bind) do the work, as in wireguard-go.
// Queries to forward are the exception: they run in a goroutine of their
// own (up to maxForwards), so that a slow upstream never stalls the
// socket.
func (s *Server) serveUDP(conn *net.UDPConn) {
	var bc batchConn = ipv6.NewPacketConn(conn)
	if conn.LocalAddr().(*net.UDPAddr).AddrPort().Addr().Unmap().Is4() {
		bc = ipv4.NewPacketConn(conn)
	}
	in := make([]ipv4.Message, udpBatch)
	out := make([]ipv4.Message, udpBatch)
	for i := range in {
		in[i].Buffers = [][]byte{make([]byte, readBufSize)}
		out[i].Buffers = [][]byte{make([]byte, s.cfg.UDPSize)}
	}
	w := &batchWriter{conn: conn, out: out}
	for {
		n, err := bc.ReadBatch(in, 0)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			s.log.Debug("read dns queries", "addr", conn.LocalAddr().String(), "err", err)
			continue
		}
		w.n = 0
		for i := range in[:n] {
			from, ok := in[i].Addr.(*net.UDPAddr)
			if !ok {
				continue
			}
			w.from, w.addr = from.AddrPort(), from
			s.handle(w, in[i].Buffers[0][:in[i].N])
		}
		for sent := 0; sent < w.n; {
			k, err := bc.WriteBatch(out[sent:w.n], 0)
			if err != nil {
				// A datagram the kernel refuses (a vanished route) must not
				// block those after it.
				s.log.Debug("write dns answers", "addr", conn.LocalAddr().String(), "err", err)
				k = max(k, 1)
			}
			sent += k
		}
	}
}

// handle answers one datagram as dns.Server does: the header is checked by
// dns.DefaultMsgAcceptFunc before the body is unpacked, a body that does
// not unpack gets FORMERR with the header alone, responses and runts get
// nothing.
func (s *Server) handle(w datagramWriter, b []byte) {
	if len(b) < 12 {
		return
	}
	dh := dns.Header{
		Id: binary.BigEndian.Uint16(b), Bits: binary.BigEndian.Uint16(b[2:]),
		Qdcount: binary.BigEndian.Uint16(b[4:]), Ancount: binary.BigEndian.Uint16(b[6:]),
		Nscount: binary.BigEndian.Uint16(b[8:]), Arcount: binary.BigEndian.Uint16(b[10:]),
	}
	action := dns.DefaultMsgAcceptFunc(dh)
	if action == dns.MsgIgnore {
		return
	}
	if action == dns.MsgAccept {
		req := new(dns.Msg)
		if err := req.Unpack(b); err == nil {
			var ts tsigState
			if t := req.IsTsig(); t != nil && s.keys != nil {
				// As dns.Server does: verify over the bytes received, and
				// keep the request's MAC, which the answer's covers.
				ts = tsigState{keys: s.keys, status: dns.TsigVerifyWithProvider(b, s.keys, "", false), mac: t.MAC}
			}
			w.setTsig(ts)
			s.ServeDNS(w, req)
			return
		}
	}
	rcode := dns.RcodeFormatError
	if action == dns.MsgRejectNotImplemented {
		rcode = dns.RcodeNotImplemented
	}
	m := &dns.Msg{MsgHdr: dns.MsgHdr{Id: dh.Id, Response: true, Opcode: int(dh.Bits>>11) & 0xf, Rcode: rcode}}
	if out, err := m.Pack(); err == nil {
		w.Write(out) //nolint:errcheck // a lost answer is the client's to retry
	}
	s.m.query(0, rcode)
}

// datagramWriter is the writer of a datagram handle answers: it also
// keeps the request's TSIG state.
type datagramWriter interface {
	dns.ResponseWriter
	setTsig(tsigState)
}

// batchWriter is the dns.ResponseWriter of the datagram serveUDP is
// answering: Write queues the answer for the batch's sendmmsg.
type batchWriter struct {
	conn *net.UDPConn
	out  []ipv4.Message
	n    int // answers queued in out
	from netip.AddrPort
	addr *net.UDPAddr
	tsig tsigState // of the datagram being answered
}

var _ dns.ResponseWriter = (*batchWriter)(nil)

// tsigState is the TSIG of a request read by serveUDP: whether it
// verified, and its MAC, which the signed answer's covers.
type tsigState struct {
	keys   *keyRing
	status error
	mac    string
}

// writeMsg packs m, signing it when it carries a TSIG record, and writes
// it to w.
func (t *tsigState) writeMsg(w io.Writer, m *dns.Msg) error {
	var b []byte
	var err error
	if t.keys != nil && m.IsTsig() != nil {
		b, _, err = dns.TsigGenerateWithProvider(m, t.keys, t.mac, false)
	} else {
		b, err = m.Pack()
	}
	if err != nil {
		return err
	}
	_, err = w.Write(b)
	return err
}

// addrPort is remote's allocation-free way to the client's address.
func (w *batchWriter) addrPort() (netip.AddrPort, bool) { return w.from, false }
func (w *batchWriter) setTsig(t tsigState)              { w.tsig = t }

// detach returns a writer for the current client that stays usable after
// the batch: a forwarded query answers through it.
func (w *batchWriter) detach() dns.ResponseWriter { return &udpWriter{conn: w.conn, from: w.from} }

func (w *batchWriter) LocalAddr() net.Addr  { return w.conn.LocalAddr() }
func (w *batchWriter) RemoteAddr() net.Addr { return w.addr }

func (w *batchWriter) Write(b []byte) (int, error) {
	if w.n == len(w.out) || len(b) > cap(w.out[w.n].Buffers[0]) {
		return w.conn.WriteToUDPAddrPort(b, w.from) // not expected: one answer per query, at most UDPSize
	}
	m := &w.out[w.n]
	m.Buffers[0] = m.Buffers[0][:len(b)]
	copy(m.Buffers[0], b)
	m.Addr = w.addr
	w.n++
	return len(b), nil
}

func (w *batchWriter) WriteMsg(m *dns.Msg) error { return w.tsig.writeMsg(w, m) }
func (w *batchWriter) Close() error              { return nil }
func (w *batchWriter) TsigStatus() error         { return w.tsig.status }
func (w *batchWriter) TsigTimersOnly(bool)       {}
func (w *batchWriter) Hijack()                   {}

// udpWriter answers one client of a UDP socket directly.
type udpWriter struct {
	conn *net.UDPConn
	from netip.AddrPort
}

var _ dns.ResponseWriter = (*udpWriter)(nil)

func (w *udpWriter) addrPort() (netip.AddrPort, bool) { return w.from, false }
func (w *udpWriter) LocalAddr() net.Addr              { return w.conn.LocalAddr() }
func (w *udpWriter) RemoteAddr() net.Addr             { return net.UDPAddrFromAddrPort(w.from) }
func (w *udpWriter) Write(b []byte) (int, error)      { return w.conn.WriteToUDPAddrPort(b, w.from) }
func (w *udpWriter) WriteMsg(m *dns.Msg) error        { return writeMsg(w, m) }
func (w *udpWriter) Close() error                     { return nil }
func (w *udpWriter) TsigStatus() error                { return nil }
func (w *udpWriter) TsigTimersOnly(bool)              {}
func (w *udpWriter) Hijack()                          {}

func writeMsg(w dns.ResponseWriter, m *dns.Msg) error {
	b, err := m.Pack()
	if err != nil {
		return err
	}
	_, err = w.Write(b)
	return err
}
