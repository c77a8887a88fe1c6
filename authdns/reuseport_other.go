//go:build !linux

package authdns

import (
	"context"
	"errors"
	"net"
)

const reusePortSupported = false

func listenReusePort(context.Context, string) (*net.UDPConn, error) {
	return nil, errors.New("SO_REUSEPORT is used on Linux only")
}
