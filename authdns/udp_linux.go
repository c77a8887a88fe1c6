package authdns

import (
	"encoding/binary"
	"errors"
	"net"
	"net/netip"
	"runtime"
	"time"
	"unsafe"

	"github.com/miekg/dns"
	"golang.org/x/sys/unix"
)

// rawSupported says whether serveUDPRaw works here.
const rawSupported = true

// rawTimeout bounds one blocking recvmmsg, so that a worker sees
// Shutdown within it.
const rawTimeout = 100 * time.Millisecond

// yieldEvery is how often serveUDPRaw yields, well under the runtime's
// 10 ms preemption slice (2 ms was measured too: the same at high loads,
// worse at low ones).
const yieldEvery = 5 * time.Millisecond

// mmsghdr is struct mmsghdr of <sys/socket.h>; Go lays it out as C does
// on every Linux architecture (the length is padded to the alignment of
// the msghdr's pointers).
type mmsghdr struct {
	hdr unix.Msghdr
	len uint32
}

// rawSlot is one datagram of a batch: its buffer and its peer.
type rawSlot struct {
	buf  []byte
	iov  unix.Iovec
	name unix.RawSockaddrInet6 // large enough for IPv4 and IPv6 peers
}

// rawBatch is a batch of datagrams for recvmmsg or sendmmsg.
type rawBatch struct {
	hdrs  []mmsghdr
	slots []rawSlot
}

func newRawBatch(n, size int) *rawBatch {
	b := &rawBatch{hdrs: make([]mmsghdr, n), slots: make([]rawSlot, n)}
	for i := range b.slots {
		b.slots[i].buf = make([]byte, size)
	}
	return b
}

// arm points header i at slot i, with room for length bytes.
func (b *rawBatch) arm(i, length int, namelen uint32) {
	s, h := &b.slots[i], &b.hdrs[i]
	s.iov.Base = &s.buf[0]
	s.iov.SetLen(length)
	h.hdr.Name = (*byte)(unsafe.Pointer(&s.name))
	h.hdr.Namelen = namelen
	h.hdr.Iov = &s.iov
	h.hdr.SetIovlen(1)
	h.hdr.Control, h.hdr.Controllen, h.hdr.Flags = nil, 0, 0
	h.len = 0
}

// rawSocket is a UDP socket served by serveUDPRaw: a descriptor of its
// own, blocking, outside the Go runtime's poller.
type rawSocket struct {
	fd    int
	local net.Addr
}

// openRaw takes conn's socket over for serveUDPRaw: it duplicates the
// descriptor and closes conn, which takes the socket out of the runtime's
// epoll set (else every datagram would also wake the poller's thread, for
// nothing), then makes it blocking, with a receive timeout of rawTimeout
// so that Shutdown is seen. On error conn is left as it was.
func openRaw(conn *net.UDPConn) (*rawSocket, error) {
	rc, err := conn.SyscallConn()
	if err != nil {
		return nil, err
	}
	nfd := -1
	var derr error
	if err := rc.Control(func(f uintptr) { nfd, derr = unix.FcntlInt(f, unix.F_DUPFD_CLOEXEC, 0) }); err != nil {
		return nil, err
	}
	if derr != nil {
		return nil, derr
	}
	tv := unix.NsecToTimeval(rawTimeout.Nanoseconds())
	if err := unix.SetsockoptTimeval(nfd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
		unix.Close(nfd)
		return nil, err
	}
	r := &rawSocket{fd: nfd, local: conn.LocalAddr()}
	conn.Close()
	if err := unix.SetNonblock(nfd, false); err != nil {
		unix.Close(nfd)
		return nil, err
	}
	return r, nil
}

func (r *rawSocket) close() { unix.Close(r.fd) }

// sendTo sends one datagram to a peer.
func (r *rawSocket) sendTo(b []byte, to netip.AddrPort) error {
	var sa unix.Sockaddr
	if a := to.Addr().Unmap(); a.Is4() {
		sa = &unix.SockaddrInet4{Port: int(to.Port()), Addr: a.As4()}
	} else {
		sa = &unix.SockaddrInet6{Port: int(to.Port()), Addr: a.As16()}
	}
	return unix.Sendto(r.fd, b, 0, sa)
}

// serveUDPRaw answers the queries of a UDP socket bound to one address
// as serveUDP does, but with blocking recvmmsg and sendmmsg on a socket
// outside the Go runtime's poller (openRaw).
//
// With the poller, every batch that empties the socket parks the
// goroutine in epoll, leaves the P idle and wakes the runtime's monitor
// thread when work comes back; and a socket in the poller's epoll set
// also wakes the poller's thread for every datagram. At a steady few
// thousand queries a second (each batch a query or two) those thread
// switches cost more CPU than answering. Here the thread sleeps in
// recvmmsg and wakes with the datagrams, as a C server's does. The
// runtime sees a goroutine in a system call: it may stop the world
// meanwhile, and takes the P back only after 10 ms when another P is
// idle, which is why the process keeps a P more than it has blocking
// readers (Start, and cli's dnsProcs). (RawSyscall, which hides the call
// from the runtime, was tried: a goroutine the runtime cannot stop then
// holds a P, and the rest of the process crawled.)
func (s *Server) serveUDPRaw(sock *rawSocket) {
	fd := uintptr(sock.fd)
	in := newRawBatch(udpBatch, readBufSize)
	out := newRawBatch(udpBatch, s.cfg.UDPSize)
	w := &rawWriter{sock: sock, out: out}
	const namelen = uint32(unsafe.Sizeof(unix.RawSockaddrInet6{}))
	yielded := time.Now()
	for !s.stopping.Load() {
		// The runtime takes a goroutine that has not been rescheduled for
		// 10 ms as long-running, and then takes its P away at each system
		// call, waking its monitor thread again and again (at 600 queries
		// a second, twice per query: 103 µs of CPU per query, 53 µs with
		// this). Yielding now and then resets that; more often than
		// yieldEvery, each yield's wake-up of an idle thread costs more.
		if now := time.Now(); now.Sub(yielded) > yieldEvery {
			runtime.Gosched()
			yielded = now
		}
		for i := range in.slots {
			in.arm(i, readBufSize, namelen)
		}
		n, _, errno := unix.Syscall6(unix.SYS_RECVMMSG, fd, uintptr(unsafe.Pointer(&in.hdrs[0])), uintptr(len(in.hdrs)),
			unix.MSG_WAITFORONE, 0, 0)
		if errno != 0 {
			switch errno {
			case unix.EINTR, unix.EAGAIN: // a signal; the receive timeout
				continue
			}
			s.log.Debug("read dns queries", "addr", sock.local.String(), "err", errors.New(errno.Error()))
			continue
		}
		w.n = 0
		for i := range int(n) {
			from, ok := sockaddrPort(&in.slots[i].name, in.hdrs[i].hdr.Namelen)
			if !ok {
				continue
			}
			w.from, w.name, w.namelen = from, &in.slots[i].name, in.hdrs[i].hdr.Namelen
			s.handle(w, in.slots[i].buf[:in.hdrs[i].len])
		}
		for sent := 0; sent < w.n; {
			k, _, errno := unix.Syscall6(unix.SYS_SENDMMSG, fd, uintptr(unsafe.Pointer(&out.hdrs[sent])), uintptr(w.n-sent), 0, 0, 0)
			if errno != 0 {
				if errno == unix.EINTR {
					continue
				}
				// A datagram the kernel refuses (a vanished route) must not
				// block those after it.
				s.log.Debug("write dns answers", "addr", sock.local.String(), "err", errors.New(errno.Error()))
				k = 1
			}
			sent += max(int(k), 1)
		}
	}
}

// sockaddrPort decodes a peer address written by recvmmsg.
func sockaddrPort(sa *unix.RawSockaddrInet6, n uint32) (netip.AddrPort, bool) {
	switch sa.Family {
	case unix.AF_INET6:
		if n < uint32(unsafe.Sizeof(unix.RawSockaddrInet6{})) {
			return netip.AddrPort{}, false
		}
		port := binary.BigEndian.Uint16((*[2]byte)(unsafe.Pointer(&sa.Port))[:])
		return netip.AddrPortFrom(netip.AddrFrom16(sa.Addr), port), true
	case unix.AF_INET:
		v4 := (*unix.RawSockaddrInet4)(unsafe.Pointer(sa))
		if n < uint32(unsafe.Sizeof(unix.RawSockaddrInet4{})) {
			return netip.AddrPort{}, false
		}
		port := binary.BigEndian.Uint16((*[2]byte)(unsafe.Pointer(&v4.Port))[:])
		return netip.AddrPortFrom(netip.AddrFrom4(v4.Addr), port), true
	}
	return netip.AddrPort{}, false
}

// rawWriter is the dns.ResponseWriter of the datagram serveUDPRaw is
// answering: Write queues the answer, to the peer's address as received,
// for the batch's sendmmsg.
type rawWriter struct {
	sock    *rawSocket
	out     *rawBatch
	n       int
	from    netip.AddrPort
	name    *unix.RawSockaddrInet6
	namelen uint32
	tsig    tsigState
}

var _ dns.ResponseWriter = (*rawWriter)(nil)

func (w *rawWriter) addrPort() (netip.AddrPort, bool) { return w.from, false }
func (w *rawWriter) setTsig(t tsigState)              { w.tsig = t }

func (w *rawWriter) detach() dns.ResponseWriter { return &rawUDPWriter{sock: w.sock, from: w.from} }

func (w *rawWriter) LocalAddr() net.Addr  { return w.sock.local }
func (w *rawWriter) RemoteAddr() net.Addr { return net.UDPAddrFromAddrPort(w.from) }

func (w *rawWriter) Write(b []byte) (int, error) {
	if w.n == len(w.out.slots) || len(b) > len(w.out.slots[w.n].buf) {
		return len(b), w.sock.sendTo(b, w.from) // not expected: one answer per query, at most UDPSize
	}
	s := &w.out.slots[w.n]
	copy(s.buf, b)
	s.name = *w.name
	w.out.arm(w.n, len(b), w.namelen)
	w.n++
	return len(b), nil
}

func (w *rawWriter) WriteMsg(m *dns.Msg) error { return w.tsig.writeMsg(w, m) }
func (w *rawWriter) Close() error              { return nil }
func (w *rawWriter) TsigStatus() error         { return w.tsig.status }
func (w *rawWriter) TsigTimersOnly(bool)       {}
func (w *rawWriter) Hijack()                   {}

// rawUDPWriter answers one client of a raw socket directly: a forwarded
// query, answered after its batch.
type rawUDPWriter struct {
	sock *rawSocket
	from netip.AddrPort
}

var _ dns.ResponseWriter = (*rawUDPWriter)(nil)

func (w *rawUDPWriter) addrPort() (netip.AddrPort, bool) { return w.from, false }
func (w *rawUDPWriter) LocalAddr() net.Addr              { return w.sock.local }
func (w *rawUDPWriter) RemoteAddr() net.Addr             { return net.UDPAddrFromAddrPort(w.from) }
func (w *rawUDPWriter) Write(b []byte) (int, error)      { return len(b), w.sock.sendTo(b, w.from) }
func (w *rawUDPWriter) WriteMsg(m *dns.Msg) error        { return writeMsg(w, m) }
func (w *rawUDPWriter) Close() error                     { return nil }
func (w *rawUDPWriter) TsigStatus() error                { return nil }
func (w *rawUDPWriter) TsigTimersOnly(bool)              {}
func (w *rawUDPWriter) Hijack()                          {}
