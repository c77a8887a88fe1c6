package authdns

import (
	"errors"
	"fmt"
	"math"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/miekg/dns"

	"github.com/confine-project/mgmtnet/addressing"
)

// Defaults of Config.
const (
	// DefaultTTL is the TTL of every positive answer. Members come and go
	// at the pace of registry polls (a minute or more), so five minutes
	// keeps caches useful without serving a removed node for long.
	DefaultTTL = 5 * time.Minute
	// DefaultRefresh, DefaultRetry and DefaultExpire are the SOA timers of
	// secondaries. Secondaries are also sent NOTIFY on every change, so
	// the refresh is only a safety net.
	DefaultRefresh = 15 * time.Minute
	DefaultRetry   = 5 * time.Minute
	DefaultExpire  = 14 * 24 * time.Hour
	// DefaultNegativeTTL is the SOA minimum: how long resolvers cache
	// NXDOMAIN and NODATA (RFC 2308). It is short so that a node that has
	// just joined resolves within a minute.
	DefaultNegativeTTL = time.Minute
	// DefaultForwardTimeout bounds one exchange with an upstream resolver
	// or one NOTIFY attempt.
	DefaultForwardTimeout = 2 * time.Second
	// DefaultUDPSize is the largest UDP answer the server sends to an
	// EDNS client (and advertises in its OPT record): the DNS Flag Day
	// 2020 value, which avoids IP fragmentation on any path, tinc's MTU of
	// 1400 included.
	DefaultUDPSize = 1232
	// DefaultNSLabel is the label of the default name server, "ns.<zone>".
	DefaultNSLabel = "ns"
	// DefaultMaxTCPConns is the default cap on TCP connections: secondaries
	// and the occasional truncated answer need a handful; thousands held
	// open are an attack on the server's memory.
	DefaultMaxTCPConns = 256
	// DefaultTCPIdleTimeout closes an idle TCP connection (RFC 7766 asks
	// for seconds, not minutes).
	DefaultTCPIdleTimeout = 10 * time.Second
	// DefaultRateLimitSlip: every second answer over the rate limit is
	// sent truncated (BIND's and Knot's default).
	DefaultRateLimitSlip = 2
	// DefaultMboxLabel is the label of the default SOA mailbox,
	// "hostmaster.<zone>" (RFC 2142).
	DefaultMboxLabel = "hostmaster"
)

// maxTTL is the largest TTL or SOA timer: RFC 2181 §8 limits TTLs to 2^31-1
// seconds.
const maxTTL = time.Duration(math.MaxInt32) * time.Second

// NameServer is one NS record of both zones.
type NameServer struct {
	// Name is the name server's fully qualified name.
	Name string
	// Addrs are its addresses, served as AAAA and A records of Name. They
	// are allowed, and needed by resolvers that follow the NS records,
	// only when Name is inside the forward zone; a name outside the zone
	// is served elsewhere.
	Addrs []netip.Addr
	// Member, when set, is the tinc name of a member whose management
	// address is served as Name's AAAA record too, in every zone where
	// the member is present: a gateway's own address, known only from
	// the registry. Only for names inside the forward zone.
	Member string
}

// SOA holds the fields of both zones' SOA records other than the serial,
// which the Server sets (the time of the change, growing; see
// Server.SetTestbed), and the primary name server, which is the first of
// Config.NS. A zero field takes its default.
type SOA struct {
	// Mbox is the responsible person's mailbox in SOA form:
	// "hostmaster.mgmt.example.net." for hostmaster@mgmt.example.net.
	// Default "hostmaster.<zone>".
	Mbox string
	// Refresh, Retry and Expire tell secondaries when to check the
	// serial, when to try again after a failure, and when to stop
	// answering without a primary. Defaults DefaultRefresh, DefaultRetry,
	// DefaultExpire.
	Refresh, Retry, Expire time.Duration
	// Minimum is the negative-caching TTL (RFC 2308). Default
	// DefaultNegativeTTL.
	Minimum time.Duration
}

// Config describes what the server answers and to whom. The zero value
// is not valid: Zone is required. Every other field has a default, which
// Validate does not apply; NewZone and New do.
type Config struct {
	// Zone is the forward zone, e.g. "mgmt.community-lab.net.". A missing
	// final dot is added; names are compared case-insensitively.
	Zone string
	// TTL of positive answers, in whole seconds. Default DefaultTTL.
	TTL time.Duration
	// NS are the name servers of both zones, the first being the SOA's
	// primary. Default: one, "ns.<zone>", with no address.
	NS []NameServer
	// SOA holds the SOA timers and mailbox.
	SOA SOA
	// Allow are the client prefixes answered at all; others are REFUSED.
	// Default: the testbed's management /48, 127.0.0.0/8 and ::1/128.
	// IPv4-mapped client addresses are matched as IPv4.
	Allow []netip.Prefix
	// AllowTransfer are the client prefixes allowed zone transfers (AXFR,
	// IXFR); they need not be in Allow. Default 127.0.0.0/8 and ::1/128,
	// or anywhere when TSIG keys are set (the key is then required).
	AllowTransfer []netip.Prefix
	// Forward are upstream resolvers for names outside both zones. When
	// empty, such queries are REFUSED; when set, recursive queries (RD
	// set) from allowed clients are forwarded to them in order until one
	// answers, over the transport the client used.
	Forward []netip.AddrPort
	// ForwardTimeout bounds one exchange with an upstream resolver and
	// one NOTIFY attempt. Default DefaultForwardTimeout.
	ForwardTimeout time.Duration
	// Notify are secondaries sent a DNS NOTIFY (RFC 1996) for both zones
	// whenever the serial changes.
	Notify []netip.AddrPort
	// UDPSize is the largest UDP answer to an EDNS client, 512..4096.
	// Default DefaultUDPSize.
	UDPSize int
	// TSIG are the keys that sign zone transfers and NOTIFY (RFC 8945).
	// When set, a transfer (AXFR, IXFR) is served only to a request
	// signed with one of them, from AllowTransfer, which then defaults to
	// anywhere; NOTIFY is signed with the first. Any query signed with a
	// key is answered signed, and one whose signature fails gets NOTAUTH.
	TSIG []TSIGKey
	// MaxTCPConns caps the TCP connections served at once; one more is
	// closed as soon as it is accepted. Default DefaultMaxTCPConns.
	MaxTCPConns int
	// TCPIdleTimeout closes a TCP connection that sends no query for that
	// long (RFC 7766 §6.2.3). Default DefaultTCPIdleTimeout.
	TCPIdleTimeout time.Duration
	// RateLimit, when positive, is the most UDP answers per second sent
	// to one client network (an IPv4 /24, an IPv6 /56) outside the
	// management prefix and loopback: response-rate limiting against
	// reflection. Of the answers over the limit, every RateLimitSlip-th
	// is sent truncated and empty (so a real client retries over TCP),
	// the others are dropped. Default 0: no limit.
	RateLimit int
	// RateLimitSlip: see RateLimit; 0 takes DefaultRateLimitSlip, 1
	// truncates every answer over the limit, and a negative value drops
	// them all.
	RateLimitSlip int
}

// Validate checks c and reports every problem it finds, each naming the
// field and the value at fault.
func (c Config) Validate() error {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }

	zone, err := canonicalName(c.Zone)
	switch {
	case c.Zone == "":
		bad("zone is empty; want a domain name such as mgmt.community-lab.net.")
	case err != nil:
		bad("zone: %w", err)
	case zone == ".":
		bad("zone %q: the root cannot be the management zone", c.Zone)
	case dns.IsSubDomain("arpa.", zone):
		bad("zone %q: under arpa.; the reverse zone is made from the management prefix", c.Zone)
	}
	checkDuration := func(what string, d time.Duration) {
		if d < 0 || d > maxTTL {
			bad("%s %v: want 1s..%v", what, d, maxTTL)
		} else if d%time.Second != 0 {
			bad("%s %v: want whole seconds", what, d)
		}
	}
	checkDuration("ttl", c.TTL)
	checkDuration("soa refresh", c.SOA.Refresh)
	checkDuration("soa retry", c.SOA.Retry)
	checkDuration("soa expire", c.SOA.Expire)
	checkDuration("soa minimum", c.SOA.Minimum)
	if c.SOA.Mbox != "" {
		if _, err := canonicalName(c.SOA.Mbox); err != nil {
			bad("soa mbox: %w (for hostmaster@example.net write hostmaster.example.net.)", err)
		}
	}
	seen := map[string]bool{}
	for _, ns := range c.NS {
		name, err := canonicalName(ns.Name)
		if err != nil {
			bad("ns: %w", err)
			continue
		}
		if seen[name] {
			bad("ns %s: listed twice", name)
		}
		seen[name] = true
		if zone == "" || zone == "." {
			continue
		}
		inZone := dns.IsSubDomain(zone, name)
		switch {
		case name == zone:
			bad("ns %s: the zone apex cannot be a name server name here; use a name below it such as ns.%s", name, zone)
		case inZone && planName(topLabel(name, zone)):
			bad("ns %s: %q is a name of the addressing plan", name, topLabel(name, zone))
		case !inZone && (len(ns.Addrs) > 0 || ns.Member != ""):
			bad("ns %s: addresses are served only for names inside %s", name, zone)
		}
		for _, a := range ns.Addrs {
			if !a.IsValid() || a.Zone() != "" {
				bad("ns %s: address %v: want a plain IPv4 or IPv6 address", name, a)
			}
		}
	}
	checkPrefixes := func(what string, ps []netip.Prefix) {
		for _, p := range ps {
			if !p.IsValid() {
				bad("%s: invalid prefix %v", what, p)
			}
		}
	}
	checkPrefixes("allow", c.Allow)
	checkPrefixes("allow transfer", c.AllowTransfer)
	checkServers := func(what string, as []netip.AddrPort) {
		for _, a := range as {
			if !a.Addr().IsValid() || a.Port() == 0 {
				bad("%s %v: want an address and a port", what, a)
			} else if a.Addr().IsUnspecified() {
				bad("%s %v: the unspecified address cannot be a server", what, a)
			}
		}
	}
	checkServers("forward", c.Forward)
	checkServers("notify", c.Notify)
	if c.ForwardTimeout < 0 {
		bad("forward timeout %v: want a positive duration", c.ForwardTimeout)
	}
	names := map[string]bool{}
	for _, k := range c.TSIG {
		ck, err := k.canonical()
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if names[ck.Name] {
			bad("tsig key %s: listed twice", ck.Name)
		}
		names[ck.Name] = true
	}
	if c.MaxTCPConns < 0 {
		bad("max tcp connections %d: want a positive number", c.MaxTCPConns)
	}
	if c.TCPIdleTimeout < 0 {
		bad("tcp idle timeout %v: want a positive duration", c.TCPIdleTimeout)
	}
	if c.RateLimit < 0 {
		bad("rate limit %d: want answers per second, or 0 for none", c.RateLimit)
	}
	if c.UDPSize != 0 && (c.UDPSize < dns.MinMsgSize || c.UDPSize > dns.DefaultMsgSize) {
		bad("udp size %d: want %d..%d", c.UDPSize, dns.MinMsgSize, dns.DefaultMsgSize)
	}
	return errors.Join(errs...)
}

// normalized validates c and returns it with every default applied and
// every name in canonical form (lower case, fully qualified).
func (c Config) normalized() (Config, error) {
	if err := c.Validate(); err != nil {
		return Config{}, fmt.Errorf("dns config: %w", err)
	}
	c.Zone, _ = canonicalName(c.Zone)
	if c.TTL == 0 {
		c.TTL = DefaultTTL
	}
	if c.SOA.Mbox == "" {
		c.SOA.Mbox = DefaultMboxLabel + "." + c.Zone
	}
	c.SOA.Mbox, _ = canonicalName(c.SOA.Mbox)
	c.SOA.Refresh = orDefault(c.SOA.Refresh, DefaultRefresh)
	c.SOA.Retry = orDefault(c.SOA.Retry, DefaultRetry)
	c.SOA.Expire = orDefault(c.SOA.Expire, DefaultExpire)
	c.SOA.Minimum = orDefault(c.SOA.Minimum, DefaultNegativeTTL)
	ns := make([]NameServer, 0, max(len(c.NS), 1))
	for _, n := range c.NS {
		name, _ := canonicalName(n.Name)
		ns = append(ns, NameServer{Name: name, Addrs: append([]netip.Addr(nil), n.Addrs...), Member: n.Member})
	}
	if len(ns) == 0 {
		ns = append(ns, NameServer{Name: DefaultNSLabel + "." + c.Zone})
	}
	c.NS = ns
	c.Allow = maskAll(c.Allow)
	keys := make([]TSIGKey, 0, len(c.TSIG))
	for _, k := range c.TSIG {
		ck, _ := k.canonical()
		keys = append(keys, ck)
	}
	c.TSIG = keys
	switch {
	case len(c.AllowTransfer) > 0:
	case len(c.TSIG) > 0:
		// The key is the credential; the address need not be.
		c.AllowTransfer = []netip.Prefix{netip.MustParsePrefix("0.0.0.0/0"), netip.MustParsePrefix("::/0")}
	default:
		c.AllowTransfer = loopback()
	}
	if c.MaxTCPConns == 0 {
		c.MaxTCPConns = DefaultMaxTCPConns
	}
	c.TCPIdleTimeout = orDefault(c.TCPIdleTimeout, DefaultTCPIdleTimeout)
	if c.RateLimitSlip == 0 {
		c.RateLimitSlip = DefaultRateLimitSlip
	}
	c.AllowTransfer = maskAll(c.AllowTransfer)
	c.Forward = append([]netip.AddrPort(nil), c.Forward...)
	c.Notify = append([]netip.AddrPort(nil), c.Notify...)
	c.ForwardTimeout = orDefault(c.ForwardTimeout, DefaultForwardTimeout)
	if c.UDPSize == 0 {
		c.UDPSize = DefaultUDPSize
	}
	return c, nil
}

func orDefault(d, def time.Duration) time.Duration {
	if d == 0 {
		return def
	}
	return d
}

// loopback returns 127.0.0.0/8 and ::1/128.
func loopback() []netip.Prefix {
	return []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8"), netip.MustParsePrefix("::1/128")}
}

func maskAll(ps []netip.Prefix) []netip.Prefix {
	out := make([]netip.Prefix, 0, len(ps))
	for _, p := range ps {
		out = append(out, p.Masked())
	}
	return out
}

// canonicalName checks that s is a domain name we can serve (no escapes,
// labels of letters, digits, hyphens and underscores) and returns it lower
// case and fully qualified.
func canonicalName(s string) (string, error) {
	if s == "" {
		return "", errors.New("empty domain name")
	}
	if _, ok := dns.IsDomainName(s); !ok {
		return "", fmt.Errorf("%q is not a domain name", s)
	}
	name := dns.CanonicalName(s)
	if name == "." {
		return name, nil
	}
	for _, l := range strings.Split(strings.TrimSuffix(name, "."), ".") {
		if l == "" || len(l) > 63 || strings.Trim(l, "abcdefghijklmnopqrstuvwxyz0123456789-_") != "" {
			return "", fmt.Errorf("%q is not a domain name: label %q: want letters, digits, hyphens or underscores", s, l)
		}
	}
	return name, nil
}

// topLabel returns the label of name right below zone ("ns" for
// "a.ns.mgmt.example." in "mgmt.example."). name must be below zone.
func topLabel(name, zone string) string {
	rel := strings.TrimSuffix(name[:len(name)-len(zone)], ".")
	if i := strings.LastIndexByte(rel, '.'); i >= 0 {
		return rel[i+1:]
	}
	return rel
}

// planName reports whether label is a name the addressing plan gives out
// (node-31, server-2, host-7, gateway-3), whether or not such a member
// exists today.
func planName(label string) bool {
	_, err := addressing.ParseDNSLabel(label)
	return err == nil
}

// ParseServerAddr parses the address of a DNS server as users write it:
// "192.0.2.53", "192.0.2.53:5353", "2001:db8::53" or "[2001:db8::53]:5353".
// A missing port is defaultPort.
func ParseServerAddr(s string, defaultPort uint16) (netip.AddrPort, error) {
	if ap, err := netip.ParseAddrPort(s); err == nil {
		if ap.Port() == 0 {
			return netip.AddrPort{}, fmt.Errorf("dns server %q: port 0", s)
		}
		return ap, nil
	}
	bare := s
	if strings.HasPrefix(s, "[") && strings.HasSuffix(s, "]") {
		bare = s[1 : len(s)-1]
	}
	if a, err := netip.ParseAddr(bare); err == nil {
		return netip.AddrPortFrom(a, defaultPort), nil
	}
	if host, port, err := net.SplitHostPort(s); err == nil {
		if _, err := netip.ParseAddr(host); err != nil {
			return netip.AddrPort{}, fmt.Errorf("dns server %q: %q is not an IP address (names are not resolved)", s, host)
		}
		if _, err := strconv.ParseUint(port, 10, 16); err != nil {
			return netip.AddrPort{}, fmt.Errorf("dns server %q: port %q: want 1..65535", s, port)
		}
	}
	return netip.AddrPort{}, fmt.Errorf("dns server %q: want an IP address with an optional port, e.g. 192.0.2.53 or [2001:db8::53]:5353", s)
}
