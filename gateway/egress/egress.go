// Package egress is the gateway's side of Internet egress for slivers
// (design.md, "Internet egress for slivers"). In one nftables table of its
// own, inet "mgmtnet", it:
//
//   - masquerades the egress prefix (100.64.0.0/16) to the WAN;
//   - forwards IPv4 from the tinc interface to the WAN only for sources
//     inside the egress prefix, and back only replies;
//   - drops, and counts, spoofed sources from tinc, connections started
//     from the WAN, and tinc traffic to or from any interface but the WAN,
//     so the gateway is never an open relay into its other networks;
//   - clamps the TCP MSS of forwarded SYNs in both directions to the
//     route's MTU (tinc's is 1400).
//
// It judges IPv4 only: IPv6, which carries the management network, passes
// untouched, as does all traffic that does not involve the tinc interface.
// Its base chains have policy accept, and an accept in them only means
// that this table does not object: the machine's own firewall (another
// table, iptables) must let egress through as well.
//
// What it does not do:
//   - route: the gateway needs the egress prefix routed into the tinc
//     interface ("ip route add 100.64.0.0/16 dev confine"), best from
//     tinc-up, because the kernel drops that route with the link;
//   - switch IPv4 forwarding on (SetForwarding does, for the daemon);
//   - decide whether to offer egress: the gateway daemon's health probes
//     do, and announce it through tinc.
package egress

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"

	"github.com/google/nftables"

	"github.com/confine-project/mgmtnet/internal/nft"
)

// TableName is the nftables table (family inet) that gateway egress owns
// entirely: Apply replaces what is in it and deletes it, and touches
// nothing outside it. (A node's egress has its own table, so a machine
// that is both never mixes them.)
const TableName = "mgmtnet"

// The named counters of the table. Counters reports packets under these
// names; they keep counting across every Apply that keeps egress on.
const (
	// CounterMasqueraded counts connections masqueraded to the WAN (a
	// NAT chain sees only the first packet of a connection).
	CounterMasqueraded = "masqueraded"
	// CounterForwarded counts packets forwarded from tinc to the WAN.
	CounterForwarded = "forwarded"
	// CounterReturned counts reply packets forwarded from the WAN to tinc.
	CounterReturned = "returned"
	// CounterSpoofed counts packets dropped because they came from tinc
	// with a source outside the egress prefix.
	CounterSpoofed = "spoofed"
	// CounterWANInitiated counts packets dropped because they came from
	// the WAN for tinc and belong to no connection started from tinc.
	CounterWANInitiated = "wan_initiated"
	// CounterMisrouted counts packets dropped because they went between
	// tinc and an interface other than the WAN (or back into tinc).
	CounterMisrouted = "misrouted"
)

// The chains of the table.
const (
	chainForward     = "gw_forward"
	chainFromTinc    = "gw_from_tinc"
	chainToTinc      = "gw_to_tinc"
	chainPostrouting = "gw_postrouting"
)

// Gateway is the desired egress state of a gateway. The zero value, and
// any value with Enabled false, asks for nothing: applying it deletes the
// table (--cleanup).
type Gateway struct {
	// TincIface is the tinc (tun) interface, e.g. "confine".
	TincIface string
	// WANIface is the upstream interface to masquerade to. It is required:
	// a gateway with several uplinks should say which one carries egress,
	// and "any interface but tinc" would also masquerade slivers into the
	// gateway's private networks.
	WANIface string
	// EgressPrefix holds every node's egress address, e.g. 100.64.0.0/16
	// (addressing.Plan Egress).
	EgressPrefix netip.Prefix
	// Enabled turns egress on.
	Enabled bool
}

// Validate reports what is wrong with g, if anything. A disabled Gateway
// is always valid.
func (g Gateway) Validate() error {
	if !g.Enabled {
		return nil
	}
	var errs []error
	if err := nft.ValidIfname(g.TincIface); err != nil {
		errs = append(errs, fmt.Errorf("tinc interface: %w", err))
	}
	if err := nft.ValidIfname(g.WANIface); err != nil {
		errs = append(errs, fmt.Errorf("WAN interface: %w", err))
	} else if g.WANIface == g.TincIface {
		errs = append(errs, fmt.Errorf("WAN interface %s is the tinc interface", g.WANIface))
	}
	if p := g.EgressPrefix; !p.IsValid() || !p.Addr().Is4() || p.Bits() == 0 {
		errs = append(errs, fmt.Errorf("egress prefix %v: want an IPv4 prefix longer than /0 (e.g. 100.64.0.0/16)", p))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("gateway egress: %w", err)
	}
	return nil
}

// table returns the nftables table g asks for (absent when disabled). g
// must be valid.
func (g Gateway) table() nft.Table {
	t := nft.Table{Name: TableName}
	if !g.Enabled {
		return t
	}
	prefix, tinc, wan := g.EgressPrefix.Masked(), g.TincIface, g.WANIface
	clamp := nft.NewRule(nft.TCPSYN(), nft.ClampMSSToRouteMTU())
	t.Counters = []string{CounterForwarded, CounterMasqueraded, CounterMisrouted, CounterReturned, CounterSpoofed, CounterWANInitiated}
	t.Chains = []nft.Chain{
		{
			// Only IPv4 that involves tinc goes further; the rest of the
			// machine's traffic, and all IPv6, is not ours to judge.
			Name: chainForward,
			Hook: &nft.Hook{Type: nftables.ChainTypeFilter, Num: *nftables.ChainHookForward, Priority: *nftables.ChainPriorityFilter},
			Rules: []nft.Rule{
				nft.NewRule(nft.NFProtoIPv4(), nft.IIFName(tinc), nft.Jump(chainFromTinc)),
				nft.NewRule(nft.NFProtoIPv4(), nft.OIFName(tinc), nft.Jump(chainToTinc)),
			},
		},
		{
			// From a node: only its egress address, only to the WAN.
			Name: chainFromTinc,
			Rules: []nft.Rule{
				nft.NewRule(nft.SAddrNot(prefix), nft.CounterName(CounterSpoofed), nft.Drop()),
				clamp,
				nft.NewRule(nft.OIFName(wan), nft.CounterName(CounterForwarded), nft.Accept()),
				nft.NewRule(nft.CounterName(CounterMisrouted), nft.Drop()),
			},
		},
		{
			// To a node: only replies from the WAN. The clamp comes first:
			// a SYN-ACK is already "established".
			Name: chainToTinc,
			Rules: []nft.Rule{
				clamp,
				nft.NewRule(nft.IIFName(wan), nft.CtEstablishedRelated(), nft.CounterName(CounterReturned), nft.Accept()),
				nft.NewRule(nft.IIFName(wan), nft.CounterName(CounterWANInitiated), nft.Drop()),
				nft.NewRule(nft.CounterName(CounterMisrouted), nft.Drop()),
			},
		},
		{
			Name: chainPostrouting,
			Hook: &nft.Hook{Type: nftables.ChainTypeNAT, Num: *nftables.ChainHookPostrouting, Priority: *nftables.ChainPriorityNATSource},
			Rules: []nft.Rule{
				nft.NewRule(nft.NFProtoIPv4(), nft.OIFName(wan), nft.SAddr(prefix), nft.CounterName(CounterMasqueraded), nft.Masquerade()),
			},
		},
	}
	return t
}

// Render returns the nftables table g asks for, as "nft list table"
// prints it. --check prints it; the golden tests pin it.
func (g Gateway) Render() (string, error) {
	if err := g.Validate(); err != nil {
		return "", err
	}
	if !g.Enabled {
		return "# gateway egress: none\n", nil
	}
	return g.table().String(), nil
}

// Applier makes the kernel's gateway egress state match a Gateway, and
// reads its counters. It touches nothing but the table TableName.
type Applier struct {
	conn nft.Conn
	log  *slog.Logger
}

// NewApplier returns an Applier that works through conn (for the host,
// nftables.New()). A nil log discards.
func NewApplier(conn nft.Conn, log *slog.Logger) *Applier {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Applier{conn: conn, log: log}
}

// Apply makes the table match want (calls must not overlap: one
// goroutine owns the gateway's egress). It observes the table first and
// changes nothing when it already matches, so applying the same value
// twice sends nothing to the kernel. Otherwise it replaces the table's
// content in one atomic batch (counters keep their values), or deletes the
// table when want is disabled. An invalid want changes nothing.
func (a *Applier) Apply(ctx context.Context, want Gateway) error {
	if err := want.Validate(); err != nil {
		return err
	}
	changed, err := nft.Apply(ctx, a.conn, want.table())
	if err != nil {
		return fmt.Errorf("gateway egress: %w", err)
	}
	if changed {
		if want.Enabled {
			a.log.Info("gateway egress: nftables table updated", "table", "inet "+TableName,
				"tinc", want.TincIface, "wan", want.WANIface, "prefix", want.EgressPrefix)
		} else {
			a.log.Info("gateway egress: nftables table removed", "table", "inet "+TableName)
		}
	}
	return nil
}

// Counter is the value of one of the table's named counters.
type Counter struct {
	Packets, Bytes uint64
}

// CounterValues returns the packets and bytes of the table's counters,
// by name (Counter* constants). It is empty when the table does not
// exist.
func (a *Applier) CounterValues(ctx context.Context) (map[string]Counter, error) {
	c, err := nft.ReadCounters(ctx, a.conn, TableName)
	if err != nil {
		return nil, fmt.Errorf("gateway egress: %w", err)
	}
	out := make(map[string]Counter, len(c))
	for name, v := range c {
		out[name] = Counter{Packets: v.Packets, Bytes: v.Bytes}
	}
	return out, nil
}

// Counters returns the packets of the table's counters, by name (Counter*
// constants): what the daemon's status and metrics show. It is empty when
// the table does not exist.
func (a *Applier) Counters(ctx context.Context) (map[string]uint64, error) {
	c, err := a.CounterValues(ctx)
	if err != nil {
		return nil, err
	}
	out := make(map[string]uint64, len(c))
	for name, v := range c {
		out[name] = v.Packets
	}
	return out, nil
}

// SetForwarding switches IPv4 forwarding on or off for one interface by
// writing /proc/sys/net/ipv4/conf/<iface>/forwarding, in the network
// namespace of the calling thread. IPv4 forwards a packet when the
// interface it arrived on forwards, so egress needs it on the tinc
// interface (traffic out) and on the WAN (replies back). Unlike writing
// net.ipv4.ip_forward, it leaves the machine's other interfaces as they
// are.
func SetForwarding(iface string, on bool) error {
	if err := nft.ValidIfname(iface); err != nil {
		return fmt.Errorf("set IPv4 forwarding: %w", err)
	}
	path := filepath.Join("/proc/sys/net/ipv4/conf", iface, "forwarding")
	v := "0\n"
	if on {
		v = "1\n"
	}
	// O_WRONLY without O_CREATE: a missing interface is an error, not a
	// new file.
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		return fmt.Errorf("set IPv4 forwarding on %s: %w", iface, err)
	}
	_, err = f.WriteString(v)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("set IPv4 forwarding on %s: write %s: %w", iface, path, err)
	}
	return nil
}
