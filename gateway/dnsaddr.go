package gateway

// The DNS service address on lo (gateway/loopback): held while the DNS
// server serves, removed when it stops (daemon stop, a reload that
// changes or disables it) and by Cleanup.

import (
	"context"
	"log/slog"
	"net/netip"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/confine-project/mgmtnet/gateway/loopback"
)

// newServiceAddrs returns the applier of the service address on lo: nl
// (nil: this namespace's netlink), owning from the start the configured
// dns.service_address, which a daemon killed before it could remove it
// left there.
func newServiceAddrs(cfg Config, nl loopback.Netlink, log *slog.Logger) *loopback.Applier {
	if nl == nil {
		nl = &netlink.Handle{} // the zero Handle: a socket per request, in this namespace
	}
	var ours []netip.Addr
	if a, ok := cfg.DNS.serviceAddr(); ok {
		ours = append(ours, a)
	}
	return loopback.NewApplier(nl, log, ours...)
}

// setServiceAddrs makes lo hold exactly addrs of the service addresses of
// ours (none: remove them).
func (d *Daemon) setServiceAddrs(ctx context.Context, addrs ...netip.Addr) error {
	return d.dns.svcAddrs.Apply(ctx, loopback.NewService(addrs...))
}

// dropServiceAddrs removes the service addresses of ours from lo, also
// when the daemon's context has ended (it runs as the daemon stops); an
// error is logged.
func (d *Daemon) dropServiceAddrs() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := d.setServiceAddrs(ctx); err != nil {
		d.log.Error("dns: remove the service address", "err", err)
	}
}

// cleanupServiceAddr is Cleanup's part on lo: the configured
// dns.service_address, whether DNS is enabled now or not, and no other
// address.
func cleanupServiceAddr(ctx context.Context, cfg Config, log *slog.Logger) error {
	return newServiceAddrs(cfg, nil, log).Apply(ctx, loopback.Service{})
}
