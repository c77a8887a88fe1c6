package dns

import (
	"errors"
	"net"
	"net/netip"
	"os"

	"github.com/miekg/dns"
	"golang.org/x/net/ipv4"
	"golang.org/x/net/ipv6"
)

const batchSize = 32

type batchConn interface {
	ReadBatch([]ipv4.Message, int) (int, error)
	WriteBatch([]ipv4.Message, int) (int, error)
}

func useBatch() bool { return os.Getenv("BATCH") != "" }

func (s *Server) batchWorker(conn *net.UDPConn) {
	var bc batchConn
	if conn.LocalAddr().(*net.UDPAddr).AddrPort().Addr().Is4() {
		bc = ipv4.NewPacketConn(conn)
	} else {
		bc = ipv6.NewPacketConn(conn)
	}
	in := make([]ipv4.Message, batchSize)
	out := make([]ipv4.Message, batchSize)
	for i := range in {
		in[i].Buffers = [][]byte{make([]byte, readBufSize)}
		out[i].Buffers = [][]byte{make([]byte, readBufSize)}
	}
	w := &batchWriter{conn: conn, out: out}
	for {
		n, err := bc.ReadBatch(in, 0)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue
		}
		w.n = 0
		for i := range n {
			ua, ok := in[i].Addr.(*net.UDPAddr)
			if !ok {
				continue
			}
			w.from, w.addr = ua.AddrPort(), ua
			s.handle(w, in[i].Buffers[0][:in[i].N])
		}
		for sent := 0; sent < w.n; {
			k, err := bc.WriteBatch(out[sent:w.n], 0)
			if err != nil {
				break
			}
			sent += k
		}
	}
}

type batchWriter struct {
	conn *net.UDPConn
	out  []ipv4.Message
	n    int
	from netip.AddrPort
	addr net.Addr
}

func (w *batchWriter) addrPort() (netip.AddrPort, bool) { return w.from, false }
func (w *batchWriter) LocalAddr() net.Addr              { return w.conn.LocalAddr() }
func (w *batchWriter) RemoteAddr() net.Addr             { return w.addr }
func (w *batchWriter) Write(b []byte) (int, error) {
	if w.n == len(w.out) {
		return w.conn.WriteToUDPAddrPort(b, w.from)
	}
	m := &w.out[w.n]
	buf := m.Buffers[0][:cap(m.Buffers[0])]
	if len(b) > len(buf) {
		return w.conn.WriteToUDPAddrPort(b, w.from)
	}
	m.Buffers[0] = buf[:copy(buf, b)]
	m.Addr = w.addr
	w.n++
	return len(b), nil
}
func (w *batchWriter) WriteMsg(m *dns.Msg) error {
	b, err := m.Pack()
	if err != nil {
		return err
	}
	_, err = w.Write(b)
	return err
}
func (w *batchWriter) Close() error        { return nil }
func (w *batchWriter) TsigStatus() error   { return nil }
func (w *batchWriter) TsigTimersOnly(bool) {}
func (w *batchWriter) Hijack()             {}
