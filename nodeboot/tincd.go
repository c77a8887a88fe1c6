package nodeboot

import "context"

// Tincd is the tincd of the node's net, as node-boot needs it. The real
// implementation is *vpn.Tincd; tests use a fake that records calls.
type Tincd interface {
	// Running returns the pid of the running tincd, or an error wrapping
	// vpn.ErrNotRunning when there is none.
	Running() (pid int, err error)
	// Start starts tincd (which daemonizes itself) and returns its pid
	// once its pid file names a running tincd.
	Start(ctx context.Context) (pid int, err error)
	// Reload sends the running tincd one SIGHUP. The caller checks
	// tinc.conf first: tincd exits on SIGHUP when it cannot read it.
	Reload() error
	// Restart stops the running tincd, waits for it to exit and starts it
	// again; tinc 1.0 picks up a change of its own Subnets or Name only
	// this way.
	Restart(ctx context.Context) (pid int, err error)
}
