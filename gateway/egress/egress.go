// Package egress is the gateway's side of Internet egress for slivers
// (design.md, "Internet egress for slivers"). In one nftables table of its
// own, inet "mgmtnet", it:
//
//   - masquerades the egress prefix (100.64.0.0/16) to the WAN;
//   - forwards IPv4 from the tinc interface to the WAN only for sources
//     inside the egress prefix and destinations on the public Internet:
//     the special-purpose ranges of RFC 6890 (SpecialPurpose: private,
//     shared, loopback, link-local such as a cloud's metadata service on
//     169.254.169.254, multicast, reserved) are dropped unless the
//     operator allows them (Gateway.Allow), and the operator can deny more
//     (Gateway.Deny);
//   - forwards nothing that enters from the WAN, to any interface, but
//     replies to connections from tinc, whatever the machine's forwarding
//     switches say;
//   - drops, and counts, spoofed sources from tinc, blocked destinations,
//     connections started from the WAN, and tinc traffic to or from any
//     interface but the WAN, so the gateway is never an open relay into
//     its other networks;
//   - clamps the TCP MSS of forwarded IPv4 SYNs in both directions to the
//     route's MTU (tinc's is 1400).
//
// From tinc and between the machine's other interfaces it judges IPv4
// only: IPv6 from tinc, which carries the management network, passes
// untouched, as does traffic that involves neither tinc nor the WAN. From
// the WAN it judges both families (see chainFromWAN). Its base chains have
// policy accept, and an accept in them only means that this table does not
// object: the machine's own firewall (another table, iptables) must let
// egress through as well.
//
// Applier makes the table match a Gateway. Kernel does the whole of it:
// the table, the route of the egress prefix into the tinc interface
// (Gateway.Route: the Internet's replies to the slivers go back through
// the mesh; the kernel drops that route with the link, so it is applied
// again whenever tincd makes a new one), and IPv4 forwarding on the tinc
// interface and the WAN (Gateway.ForwardingIfaces), each behind a small
// seam (nft.Conn, Netlink, Forwarding).
//
// What it does not do: decide whether to offer egress. The gateway
// daemon's health probes do, and announce it through tinc.
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
	// CounterBlockedDestination counts packets dropped because they came
	// from tinc for a destination that is not on the public Internet (the
	// blocked destinations: SpecialPurpose and Gateway.Deny, less
	// Gateway.Allow).
	CounterBlockedDestination = "blocked_destination"
	// CounterWANInitiated counts packets dropped because they came from
	// the WAN, for tinc or any other interface, and are no reply to a
	// connection started from tinc.
	CounterWANInitiated = "wan_initiated"
	// CounterMisrouted counts packets dropped because they went between
	// tinc and an interface other than the WAN (or back into tinc).
	CounterMisrouted = "misrouted"
)

// The chains and sets of the table.
const (
	chainForward     = "gw_forward"
	chainFromTinc    = "gw_from_tinc"
	chainFromWAN     = "gw_from_wan"
	chainPostrouting = "gw_postrouting"

	// SetBlocked holds the destinations that egress does not forward to.
	SetBlocked = "blocked_destinations"
)

// SpecialPurpose are the IPv4 special-purpose ranges of the IANA registry
// (RFC 6890 and its updates) that are not the public Internet: egress
// drops them by default. The documentation ranges (192.0.2.0/24,
// 198.51.100.0/24, 203.0.113.0/24) are left out on purpose: nothing
// routes them, and the virtual testbed's pretend Internet uses them.
var SpecialPurpose = []netip.Prefix{
	netip.MustParsePrefix("0.0.0.0/8"),      // "this network"
	netip.MustParsePrefix("10.0.0.0/8"),     // private (RFC 1918)
	netip.MustParsePrefix("100.64.0.0/10"),  // shared address space (RFC 6598)
	netip.MustParsePrefix("127.0.0.0/8"),    // loopback
	netip.MustParsePrefix("169.254.0.0/16"), // link-local, cloud metadata services
	netip.MustParsePrefix("172.16.0.0/12"),  // private (RFC 1918)
	netip.MustParsePrefix("192.0.0.0/24"),   // IETF protocol assignments
	netip.MustParsePrefix("192.168.0.0/16"), // private (RFC 1918)
	netip.MustParsePrefix("198.18.0.0/15"),  // benchmarking
	netip.MustParsePrefix("224.0.0.0/4"),    // multicast
	netip.MustParsePrefix("240.0.0.0/4"),    // reserved, limited broadcast
}

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
	// Allow are IPv4 prefixes exempted from the default deny of
	// SpecialPurpose, e.g. an operator's upstream proxy in 10.0.0.0/8.
	Allow []netip.Prefix
	// Deny are IPv4 prefixes denied on top of SpecialPurpose. Deny wins
	// over Allow where they overlap.
	Deny []netip.Prefix
	// Enabled turns egress on.
	Enabled bool
}

// Blocked returns the destinations g does not forward to: SpecialPurpose
// less Allow, plus Deny, as the smallest list of prefixes.
func (g Gateway) Blocked() []netip.Prefix {
	return nft.MergePrefixes(append(nft.SubtractPrefixes(SpecialPurpose, g.Allow), g.Deny...))
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
	for _, l := range []struct {
		name string
		ps   []netip.Prefix
	}{{"allow", g.Allow}, {"deny", g.Deny}} {
		for i, p := range l.ps {
			if !p.IsValid() || !p.Addr().Is4() {
				errs = append(errs, fmt.Errorf("%s[%d] %v: not an IPv4 prefix", l.name, i, p))
			}
		}
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
	t.Counters = []string{CounterBlockedDestination, CounterForwarded, CounterMasqueraded, CounterMisrouted, CounterReturned, CounterSpoofed, CounterWANInitiated}
	t.Sets = []nft.Set{{Name: SetBlocked, Prefixes: g.Blocked()}}
	t.Chains = []nft.Chain{
		{
			// IPv4 from tinc, everything from the WAN, and IPv4 into tinc
			// from anywhere else go further; the rest of the machine's
			// traffic, and IPv6 that does not come from the WAN, is not
			// ours to judge.
			Name: chainForward,
			Hook: &nft.Hook{Type: nftables.ChainTypeFilter, Num: *nftables.ChainHookForward, Priority: *nftables.ChainPriorityFilter},
			Rules: []nft.Rule{
				nft.NewRule(nft.NFProtoIPv4(), nft.IIFName(tinc), nft.Jump(chainFromTinc)),
				nft.NewRule(nft.IIFName(wan), nft.Jump(chainFromWAN)),
				nft.NewRule(nft.NFProtoIPv4(), nft.OIFName(tinc), nft.CounterName(CounterMisrouted), nft.Drop()),
			},
		},
		{
			// From a node: only its egress address, only to the WAN, only
			// to the public Internet.
			Name: chainFromTinc,
			Rules: []nft.Rule{
				nft.NewRule(nft.SAddrNot(prefix), nft.CounterName(CounterSpoofed), nft.Drop()),
				nft.NewRule(nft.OIFNameNot(wan), nft.CounterName(CounterMisrouted), nft.Drop()),
				nft.NewRule(nft.DAddrInSet(SetBlocked), nft.CounterName(CounterBlockedDestination), nft.Drop()),
				clamp,
				nft.NewRule(nft.CounterName(CounterForwarded), nft.Accept()),
			},
		},
		{
			// From the WAN, whatever the family and wherever it goes: only
			// replies into tinc. The kernel forwards what arrives on an
			// interface whose forwarding switch is on, so switching on
			// net.ipv4.conf.<wan>.forwarding (or .all) for egress's
			// replies would otherwise let the Internet through to the
			// community network and every other network of the gateway.
			//
			// IPv6 too: the management network's IPv6 from tinc is not
			// ours to judge, and gets its replies, but a gateway with
			// IPv6 forwarding on must not route the Internet into the
			// management network (or anywhere else) on its own say-so.
			// Connections into the management network come in over tinc,
			// never forwarded from the WAN. Replies are IPv4 and IPv6
			// alike; the MSS clamp is for IPv4, as on the way out.
			//
			// The clamp comes first: a SYN-ACK is already "established".
			Name: chainFromWAN,
			Rules: []nft.Rule{
				nft.NewRule(nft.NFProtoIPv4(), nft.OIFName(tinc), nft.TCPSYN(), nft.ClampMSSToRouteMTU()),
				nft.NewRule(nft.OIFName(tinc), nft.CtEstablishedRelated(), nft.CounterName(CounterReturned), nft.Accept()),
				nft.NewRule(nft.CounterName(CounterWANInitiated), nft.Drop()),
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
				"tinc", want.TincIface, "wan", want.WANIface, "prefix", want.EgressPrefix, "blocked", len(want.Blocked()))
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
