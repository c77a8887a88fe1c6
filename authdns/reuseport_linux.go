package authdns

import (
	"context"
	"net"
	"syscall"

	"golang.org/x/sys/unix"
)

// reusePortSupported says whether listenReusePort works here.
const reusePortSupported = true

// listenReusePort opens a UDP socket with SO_REUSEPORT: several such
// sockets of one user share an address, and the kernel spreads clients
// over them by a hash of their address and port.
func listenReusePort(ctx context.Context, addr string) (*net.UDPConn, error) {
	lc := net.ListenConfig{Control: func(_, _ string, c syscall.RawConn) error {
		var err error
		if cerr := c.Control(func(fd uintptr) {
			err = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEPORT, 1)
		}); cerr != nil {
			return cerr
		}
		return err
	}}
	pc, err := lc.ListenPacket(ctx, "udp", addr)
	if err != nil {
		return nil, err
	}
	return pc.(*net.UDPConn), nil
}
