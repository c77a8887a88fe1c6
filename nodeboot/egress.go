package nodeboot

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"time"

	"github.com/google/nftables"
	"github.com/vishvananda/netlink"

	"github.com/confine-project/mgmtnet/tincgen"
	"github.com/confine-project/mgmtnet/vpn"
)

// EgressApplier applies the node's egress routing; vpn.NodeEgressApplier
// is the real one.
type EgressApplier interface {
	Apply(ctx context.Context, want vpn.NodeEgress) error
}

var _ EgressApplier = (*vpn.NodeEgressApplier)(nil)

// NewEgressApplier returns the real applier, on this machine's netlink and
// nftables.
func NewEgressApplier(log *slog.Logger) (EgressApplier, error) {
	conn, err := nftables.New()
	if err != nil {
		return nil, fmt.Errorf("nftables: %w", err)
	}
	h, err := netlink.NewHandle()
	if err != nil {
		return nil, fmt.Errorf("netlink: %w", err)
	}
	return vpn.NewNodeEgressApplier(h, conn, log), nil
}

// wantEgress decides whether the node routes its slivers' Internet traffic
// through the egress gateways: mgmtnet.egress on or off, or (auto) when
// one of its gateways offers egress.
func wantEgress(cfg Config, gws []Gateway) (bool, string) {
	switch cfg.Egress {
	case EgressOn:
		return true, "on in " + cfg.File
	case EgressOff:
		return false, "off in " + cfg.File
	}
	for _, g := range gws {
		if g.Egress {
			return true, "auto: gateway " + g.Name + " offers egress"
		}
	}
	return false, "auto: no gateway offers egress"
}

// egressUp is the line tinc-up runs when egress is on: the default route
// of the egress table goes through the tinc interface, and goes away with
// it when tincd stops, so every start of tincd puts it back. The rest (ip
// rules, throw routes, nftables) does not depend on the interface and is
// node-boot's to apply.
func egressUp() string {
	return fmt.Sprintf("ip -4 route replace default dev \"$INTERFACE\" table %d proto %d\n", vpn.EgressTable, vpn.EgressProtocol)
}

// nodeEgress is the node's desired egress state (the zero value when off).
func nodeEgress(cfg Config, on bool) (vpn.NodeEgress, error) {
	if !on {
		return vpn.NodeEgress{}, nil
	}
	plan, err := cfg.Plan()
	if err != nil {
		return vpn.NodeEgress{}, err
	}
	addr, err := plan.EgressIPv4(cfg.NodeID)
	if err != nil {
		return vpn.NodeEgress{}, err
	}
	return vpn.NewNodeEgress(TincInterface, addr, []netip.Prefix{plan.SliverIPv4Prefix()}, cfg.Community)
}

// applyEgress makes the kernel's egress state match: with egress on it
// waits (up to a few seconds) for tincd's interface, since the default
// route needs it.
func applyEgress(ctx context.Context, opts Options, res *Result, want vpn.NodeEgress) error {
	if opts.Egress == nil || opts.DryRun {
		return nil
	}
	if !want.IsZero() {
		deadline := time.Now().Add(10 * time.Second)
		for {
			// Up: tinc-up has run (the kernel takes no route through a
			// link that is down).
			if l, err := netlink.LinkByName(want.TincIface); err == nil && l.Attrs().Flags&net.FlagUp != 0 {
				break
			}
			if time.Now().After(deadline) {
				res.say("egress routing not applied yet: no interface %s (tinc-up adds the route when tincd starts; run node-boot again)", want.TincIface)
				return nil
			}
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(100 * time.Millisecond):
			}
		}
	}
	if err := opts.Egress.Apply(ctx, want); err != nil {
		if want.IsZero() {
			// Nothing was asked; a kernel without nftables cannot have
			// rules of ours either.
			res.Notes = append(res.Notes, "egress cleanup: "+err.Error())
			return nil
		}
		return fmt.Errorf("egress routing: %w", err)
	}
	if !want.IsZero() {
		res.say("egress: slivers' Internet traffic (%v) goes through tinc as %s", want.Sources, want.EgressAddr)
	}
	return nil
}

// interfaceChanged reports whether tinc.conf's Interface or TunnelServer
// differs between the old file and the desired one: tincd reads both only
// at start (it makes its interface then), so that takes a restart, not a
// SIGHUP.
func interfaceChanged(old []byte, d Desired) bool {
	// tincd reads Interface and TunnelServer only when it starts.
	startOnly := func(b []byte) string {
		c, err := tincgen.ParseConf(b)
		if err != nil {
			return ""
		}
		var s []string
		for _, o := range c.Options {
			if strings.EqualFold(o.Key, "Interface") || strings.EqualFold(o.Key, "TunnelServer") {
				s = append(s, o.Key+"="+o.Value)
			}
		}
		return strings.Join(s, " ")
	}
	f, ok := d.Lookup(ConfFile)
	return ok && startOnly(old) != startOnly(f.Data)
}
