//go:build !linux

package authdns

import (
	"errors"
	"net"
)

// rawSupported says whether serveUDPRaw works here: only on Linux.
const rawSupported = false

type rawSocket struct{}

func openRaw(*net.UDPConn) (*rawSocket, error) {
	return nil, errors.New("blocking UDP reads are for Linux")
}

func (*rawSocket) close()                {}
func (s *Server) serveUDPRaw(*rawSocket) {}
