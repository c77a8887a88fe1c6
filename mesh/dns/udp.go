package dns

import (
	"encoding/binary"
	"errors"
	"net"
	"net/netip"

	"github.com/miekg/dns"
)

// serveUDP answers queries on a UDP socket bound to one address with
// workers goroutines, each reading, answering and writing in a loop.
//
// It replaces dns.Server for UDP on such sockets, because dns.Server
// starts a goroutine per packet and reads and writes every packet with
// IP_PKTINFO control messages (so that a wildcard socket answers from the
// address it was asked on), which on a socket bound to one address is
// pure cost. Together they made the server no faster than dnsmasq. A
// wildcard socket still gets dns.Server.
//
// It returns when the socket is closed.
func (s *Server) serveUDP(conn *net.UDPConn, workers int) {
	for range workers {
		if useBatch() {
			s.serving.Go(func() { s.batchWorker(conn) })
			continue
		}
		s.serving.Go(func() { s.udpWorker(conn) })
	}
}

func (s *Server) udpWorker(conn *net.UDPConn) {
	buf := make([]byte, readBufSize)
	for {
		n, from, err := conn.ReadFromUDPAddrPort(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			s.log.Debug("read dns query", "err", err)
			continue
		}
		s.handle(&udpWriter{conn: conn, from: from}, buf[:n])
	}
}

// handleUDP answers one datagram the way dns.Server does: the header is
// checked by dns.DefaultMsgAcceptFunc before the body is unpacked, a
// body that does not unpack gets FORMERR with the header alone, and
// responses and runts are dropped.
func (s *Server) handle(w dns.ResponseWriter, b []byte) {
	if len(b) < 12 {
		return
	}
	dh := dns.Header{
		Id: binary.BigEndian.Uint16(b), Bits: binary.BigEndian.Uint16(b[2:]),
		Qdcount: binary.BigEndian.Uint16(b[4:]), Ancount: binary.BigEndian.Uint16(b[6:]),
		Nscount: binary.BigEndian.Uint16(b[8:]), Arcount: binary.BigEndian.Uint16(b[10:]),
	}
	req := new(dns.Msg)
	switch action := dns.DefaultMsgAcceptFunc(dh); action {
	case dns.MsgAccept:
		if err := req.Unpack(b); err == nil {
			s.ServeDNS(w, req)
			return
		}
		fallthrough
	case dns.MsgReject, dns.MsgRejectNotImplemented:
		rcode := dns.RcodeFormatError
		if action == dns.MsgRejectNotImplemented {
			rcode = dns.RcodeNotImplemented
		}
		m := &dns.Msg{MsgHdr: dns.MsgHdr{Id: dh.Id, Response: true, Opcode: int(dh.Bits>>11) & 0xf, Rcode: rcode}}
		if out, err := m.Pack(); err == nil {
			w.Write(out) //nolint:errcheck // nothing to do about a lost answer
		}
		s.m.query(0, rcode)
	}
}

// udpWriter is the dns.ResponseWriter of one datagram of serveUDP.
type udpWriter struct {
	conn *net.UDPConn
	from netip.AddrPort
}

var _ dns.ResponseWriter = (*udpWriter)(nil)

// addrPort is remote's allocation-free way to the client's address.
func (w *udpWriter) addrPort() (netip.AddrPort, bool) { return w.from, false }

func (w *udpWriter) LocalAddr() net.Addr  { return w.conn.LocalAddr() }
func (w *udpWriter) RemoteAddr() net.Addr { return net.UDPAddrFromAddrPort(w.from) }
func (w *udpWriter) Write(b []byte) (int, error) {
	return w.conn.WriteToUDPAddrPort(b, w.from)
}
func (w *udpWriter) WriteMsg(m *dns.Msg) error {
	b, err := m.Pack()
	if err != nil {
		return err
	}
	_, err = w.Write(b)
	return err
}
func (w *udpWriter) Close() error        { return nil }
func (w *udpWriter) TsigStatus() error   { return nil }
func (w *udpWriter) TsigTimersOnly(bool) {}
func (w *udpWriter) Hijack()             {}
