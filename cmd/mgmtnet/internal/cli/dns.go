package cli

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/confine-project/mgmtnet/addressing"
	"github.com/confine-project/mgmtnet/authdns"
	"github.com/confine-project/mgmtnet/mesh"
	"github.com/confine-project/mgmtnet/mesh/registry"
	"github.com/confine-project/mgmtnet/source"
)

const dnsSynopsis = `  mgmtnet dns --registry URI --zone ZONE [--listen ADDR]... [--allow PREFIX]...
              [--allow-transfer PREFIX]... [--forward ADDR]... [--notify ADDR]...
              [--ns-addr ADDR]... [--tsig-key FILE] [--serial-file FILE]
              [--ttl DURATION] [--poll DURATION] [--prefix P/48]
              [--max-tcp-conns N] [--tcp-idle-timeout D] [--rate-limit N]
              [--rate-limit-slip N] [--ca FILE | --insecure] [--force]
              [--max-remove-fraction F] [--metrics-listen ADDR] [--timeout D]

Serves authoritative DNS for the management network, made from the members
in the registry:
  node-31.ZONE, server-2.ZONE, host-7.ZONE    AAAA of each member present
  <registry name>.ZONE                        the same, when the name is a
                                              usable, unique DNS label
  slice-5.node-31.ZONE                        a sliver's management address
  slice-5-iface-2.node-31.ZONE                (iface 1 has the short name)
  PTR of every member and sliver address      in the ip6.arpa zone of the /48
with SOA and NS records; the SOA serial grows with every new snapshot
(the time of the change, RFC 1982-safe for secondaries) and is kept in
--serial-file, so that it never goes backwards across restarts.

The registry is polled every --poll with ETags; the zone is swapped at once
when it changed, and the last zone keeps being served while the registry is
down or answering garbage (until the first answer, names of the zone get
SERVFAIL). A snapshot that would remove more than half of the members is
refused unless --force (--max-remove-fraction sets another limit).
Secondaries in --notify are sent a NOTIFY on every change and may transfer
the zones from --allow-transfer: AXFR, or IXFR with only the changes since
their serial (the last 64 changes are kept). With --tsig-key, a key file in
BIND's syntax (tsig-keygen NAME > FILE), transfers need a signature by the
key (from anywhere unless --allow-transfer says otherwise), NOTIFY is signed
and signed queries are answered signed.

Only clients in --allow are answered; others get REFUSED. Names outside the
zones are REFUSED too, unless --forward names upstream resolvers: recursive
queries are then forwarded. It is never an open resolver.

--listen defaults to 127.0.0.1:53 and [::1]:53; on a gateway, give its
management address (and any service address it shares with other gateways).
--ns-addr, the address of ns.ZONE (its glue), defaults to the --listen
addresses that are neither loopback nor wildcard, or to the loopback ones
when it listens on loopback only; on a wildcard it must be given.
TCP connections are capped (--max-tcp-conns) and closed when idle; with
--rate-limit, UDP clients outside the management /48 and loopback get at
most that many answers a second per /24 or /56. SIGINT or SIGTERM stops it.

Exit status: 0 stopped by a signal, 1 error, 2 usage error.

Examples:
  mgmtnet dns --registry https://[fdf5:5351:1dfd::2]/api/ --ca /etc/confine/registry-server.crt \
      --zone mgmt.community-lab.net --listen [fdf5:5351:1dfd::2]:53 --forward 9.9.9.9
  mgmtnet dns --registry http://127.0.0.1:8080/api/ --zone mgmt.example --listen 127.0.0.1:5353
  dig @127.0.0.1 -p 5353 AAAA node-31.mgmt.example
  dig @127.0.0.1 -p 5353 -x fd65:fc41:c50f:1f:1001::5
`

// dnsFetchTimeout is the default --timeout of dns: a poll of a large
// testbed over a slow link fits, and a registry that drips its answer holds
// a poll no longer (the last zone is served meanwhile).
const dnsFetchTimeout = 2 * time.Minute

// dnsDefaultListen are the listen addresses without --listen: loopback
// only, so that a bare "mgmtnet dns" exposes nothing.
var dnsDefaultListen = []string{"127.0.0.1:53", "[::1]:53"}

// dnsList is a repeatable flag.
type dnsList []string

func (l *dnsList) String() string { return strings.Join(*l, ",") }

func (l *dnsList) Set(s string) error {
	*l = append(*l, s)
	return nil
}

type dnsFlags struct {
	registry, zone, ca, prefix, metricsListen          string
	insecure, force                                    bool
	maxRemove                                          float64
	ttl, poll, timeout, tcpIdle                        time.Duration
	listen, allow, allowTransfer, forward, notify, nss dnsList
	tsigKey, serialFile                                string
	maxTCP, rateLimit, rateSlip                        int
}

func runDNS(ctx context.Context, env Env, args []string) error {
	dnsProcs()
	fs := newFlagSet("dns", dnsSynopsis, env.Stderr)
	var f dnsFlags
	fs.StringVar(&f.registry, "registry", "", "the registry's base `URI` (required), e.g. https://[fdf5:5351:1dfd::2]/api/")
	fs.StringVar(&f.zone, "zone", "", "the forward `zone` (required), e.g. mgmt.community-lab.net")
	fs.Var(&f.listen, "listen", "`ADDR` (host:port) to serve on, UDP and TCP; repeatable (default 127.0.0.1:53 and [::1]:53)")
	fs.Var(&f.allow, "allow", "client `PREFIX` to answer; repeatable (default: the management /48, 127.0.0.0/8, ::1/128)")
	fs.Var(&f.allowTransfer, "allow-transfer", "client `PREFIX` allowed zone transfers; repeatable (default: 127.0.0.0/8, ::1/128)")
	fs.Var(&f.forward, "forward", "upstream resolver `ADDR` (IP or IP:port) for names outside the zones; repeatable (default: none, such names are REFUSED)")
	fs.Var(&f.notify, "notify", "secondary `ADDR` (IP or IP:port) sent a NOTIFY on every change; repeatable")
	fs.Var(&f.nss, "ns-addr", "`address` of the name server ns.ZONE; repeatable (default: the --listen addresses that are neither loopback nor wildcard)")
	fs.StringVar(&f.tsigKey, "tsig-key", "", "TSIG key `file` in BIND's syntax (tsig-keygen NAME > FILE; not readable by others): transfers need its signature, NOTIFY is signed")
	fs.StringVar(&f.serialFile, "serial-file", defaultSerialFile(), "`file` that keeps the SOA serial across restarts; empty: none")
	fs.IntVar(&f.maxTCP, "max-tcp-conns", authdns.DefaultMaxTCPConns, "TCP connections served at once; more are closed on accept")
	fs.DurationVar(&f.tcpIdle, "tcp-idle-timeout", authdns.DefaultTCPIdleTimeout, "close a TCP connection idle this long")
	fs.IntVar(&f.rateLimit, "rate-limit", 0, "UDP answers a second per client /24 or /56 outside the management /48 and loopback (0: no limit)")
	fs.IntVar(&f.rateSlip, "rate-limit-slip", authdns.DefaultRateLimitSlip, "of the answers over --rate-limit, send every `N`th truncated (the client retries over TCP), drop the others")
	fs.DurationVar(&f.ttl, "ttl", authdns.DefaultTTL, "TTL of answers")
	fs.DurationVar(&f.poll, "poll", time.Minute, "how often to poll the registry")
	fs.DurationVar(&f.timeout, "timeout", dnsFetchTimeout, "deadline of one whole poll of the registry: every request, retry and body read (each stall is bounded by at most 30s)")
	fs.StringVar(&f.prefix, "prefix", "", "management `/48` (default: the registry's, checked against the members' addresses)")
	fs.StringVar(&f.ca, "ca", "", "PEM `file` of the CA (or the registry's own certificate) to verify TLS against")
	fs.BoolVar(&f.insecure, "insecure", false, "do not verify the registry's TLS certificate")
	fs.BoolVar(&f.force, "force", false, "accept a registry answer that removes more than --max-remove-fraction of the members")
	fs.Float64Var(&f.maxRemove, "max-remove-fraction", mesh.DefaultMaxRemoveFraction, "largest `fraction` of the members one registry answer may remove without --force")
	fs.StringVar(&f.metricsListen, "metrics-listen", "", "serve Prometheus metrics at http://`ADDR`/metrics")
	pos, err := parseInterspersed(fs, args, env.Stdout)
	if err != nil {
		return err
	}
	if len(pos) != 0 {
		return usagef("unexpected arguments %q (the registry is given with --registry)", pos)
	}
	switch {
	case f.registry == "":
		return usagef("--registry is required, e.g. --registry https://[fdf5:5351:1dfd::2]/api/")
	case f.zone == "":
		return usagef("--zone is required, e.g. --zone mgmt.community-lab.net")
	case f.ca != "" && f.insecure:
		return usagef("--ca and --insecure exclude each other")
	case f.poll <= 0:
		return usagef("--poll %v: want a positive duration", f.poll)
	case f.timeout <= 0:
		return usagef("--timeout %v: want a positive duration", f.timeout)
	case !(f.maxRemove > 0 && f.maxRemove <= 1):
		return usagef("--max-remove-fraction %v: want a fraction in (0, 1]", f.maxRemove)
	case f.maxTCP <= 0:
		return usagef("--max-tcp-conns %d: want a positive number", f.maxTCP)
	case f.tcpIdle <= 0:
		return usagef("--tcp-idle-timeout %v: want a positive duration", f.tcpIdle)
	case f.rateLimit < 0:
		return usagef("--rate-limit %d: want answers a second, or 0 for no limit", f.rateLimit)
	}
	cfg, declared, err := f.config()
	if err != nil {
		return usageError{err}
	}
	listen := []string(f.listen)
	if len(listen) == 0 {
		listen = dnsDefaultListen
	}
	for _, addr := range listen {
		if _, _, err := net.SplitHostPort(addr); err != nil {
			return usagef("--listen %s: %w (e.g. 127.0.0.1:53 or [fdf5:5351:1dfd::2]:53)", addr, err)
		}
	}
	if len(cfg.NS) == 0 {
		addrs, err := dnsGlue(listen)
		if err != nil {
			return usageError{err}
		}
		cfg.NS = []authdns.NameServer{{Name: authdns.DefaultNSLabel + "." + strings.TrimSuffix(cfg.Zone, ".") + ".", Addrs: addrs}}
	}
	if f.tsigKey != "" {
		keys, err := authdns.LoadKeyFile(f.tsigKey)
		if err != nil {
			return usageError{fmt.Errorf("--tsig-key: %w", err)}
		}
		cfg.TSIG = keys
	}
	if err := cfg.Validate(); err != nil {
		return usageError{err}
	}

	src, err := source.New(source.Config{URL: f.registry, Prefix: declared, Logger: env.Logger, Feed: true,
		Client: registry.Options{CAFile: f.ca, Insecure: f.insecure, FetchTimeout: f.timeout},
		Guard:  mesh.Guard{MaxRemoveFraction: f.maxRemove, Force: f.force}})
	if err != nil {
		if errors.Is(err, registry.ErrBadURI) {
			return usageError{err}
		}
		return err
	}
	reg := prometheus.NewRegistry()
	srv, err := authdns.New(cfg, authdns.ServerOptions{Listen: listen, Logger: env.Logger, Registerer: reg, SerialFile: f.serialFile})
	if err != nil {
		return err
	}
	if err := srv.Start(ctx); err != nil {
		return err
	}
	defer func() {
		if err := srv.Close(); err != nil {
			env.Logger.Warn("dns server shutdown", "err", err)
		}
	}()
	if f.metricsListen != "" {
		stop, err := dnsServeMetrics(ctx, f.metricsListen, reg)
		if err != nil {
			return err
		}
		defer stop()
	}
	authdns.Follow(ctx, src, srv, authdns.FollowOptions{Poll: f.poll, Logger: env.Logger, OnFirstZone: func(z *authdns.Zone) {
		var on []string
		addrs := srv.Addrs()
		for i := 0; i < len(addrs); i += 2 {
			on = append(on, addrs[i].String()+" udp+tcp")
		}
		fmt.Fprintf(env.Stderr, "mgmtnet dns: serving %s and %s (%d names, serial %d) on %s\n",
			z.Origin(), z.ReverseOrigin(), z.Len(), z.Serial(), strings.Join(on, ", "))
	}})
	env.Logger.Info("dns server stopping")
	return nil
}

// config turns the flags into the server's config, and the declared
// management prefix (invalid when --prefix is not given). Its errors are
// the user's.
func (f *dnsFlags) config() (authdns.Config, netip.Prefix, error) {
	cfg := authdns.Config{Zone: f.zone, TTL: f.ttl, MaxTCPConns: f.maxTCP, TCPIdleTimeout: f.tcpIdle,
		RateLimit: f.rateLimit, RateLimitSlip: f.rateSlip}
	var declared netip.Prefix
	if f.prefix != "" {
		p, err := addressing.ParsePrefix48(f.prefix)
		if err == nil {
			_, err = addressing.New(p)
		}
		if err != nil {
			return cfg, declared, fmt.Errorf("--prefix: %w", err)
		}
		declared = p
	}
	for _, l := range []struct {
		flag string
		in   dnsList
		out  *[]netip.Prefix
	}{{"--allow", f.allow, &cfg.Allow}, {"--allow-transfer", f.allowTransfer, &cfg.AllowTransfer}} {
		for _, s := range l.in {
			p, err := netip.ParsePrefix(s)
			if err != nil {
				a, aerr := netip.ParseAddr(s)
				if aerr != nil {
					return cfg, declared, fmt.Errorf("%s %s: want a prefix such as fdf5:5351:1dfd::/48 or an address", l.flag, s)
				}
				p = netip.PrefixFrom(a, a.BitLen())
			}
			*l.out = append(*l.out, p)
		}
	}
	for _, l := range []struct {
		flag string
		in   dnsList
		out  *[]netip.AddrPort
	}{{"--forward", f.forward, &cfg.Forward}, {"--notify", f.notify, &cfg.Notify}} {
		for _, s := range l.in {
			ap, err := authdns.ParseServerAddr(s, 53)
			if err != nil {
				return cfg, declared, fmt.Errorf("%s: %w", l.flag, err)
			}
			*l.out = append(*l.out, ap)
		}
	}
	if len(f.nss) > 0 {
		ns := authdns.NameServer{Name: authdns.DefaultNSLabel + "." + strings.TrimSuffix(f.zone, ".") + "."}
		for _, s := range f.nss {
			a, err := netip.ParseAddr(s)
			if err != nil {
				return cfg, declared, fmt.Errorf("--ns-addr %s: want an IP address", s)
			}
			ns.Addrs = append(ns.Addrs, a)
		}
		cfg.NS = []authdns.NameServer{ns}
	}
	return cfg, declared, nil
}

// dnsProcs gives the runtime a P (GOMAXPROCS) more than it has CPUs,
// unless the user set GOMAXPROCS: the DNS server's UDP readers, one per
// CPU, each hold a P while they wait in recvmmsg (authdns serveUDPRaw),
// and the rest of the process needs one to run meanwhile. The number of
// sockets and readers still follows the CPUs.
func dnsProcs() {
	if os.Getenv("GOMAXPROCS") == "" && runtime.GOMAXPROCS(0) <= runtime.NumCPU() {
		runtime.GOMAXPROCS(runtime.NumCPU() + 1)
	}
}

// dnsGlue returns the addresses of ns.ZONE without --ns-addr: the listen
// addresses clients reach from elsewhere, or, for a server on loopback
// only, the loopback addresses, which is where it is found. A wildcard
// alone says nothing about where clients reach the server: the zone would
// have a name server without an address, which secondaries reject.
func dnsGlue(listen []string) ([]netip.Addr, error) {
	if addrs := dnsServiceAddrs(listen); len(addrs) > 0 {
		return addrs, nil
	}
	var loop []netip.Addr
	for _, l := range listen {
		host, _, err := net.SplitHostPort(l)
		if err != nil {
			continue
		}
		if a, err := netip.ParseAddr(host); err == nil && a.IsLoopback() {
			loop = append(loop, a.Unmap())
		}
	}
	if len(loop) == len(listen) {
		return loop, nil
	}
	return nil, fmt.Errorf("--listen %s: the name server ns.ZONE would have no address, and secondaries reject such a zone (no glue); give --ns-addr with the address clients reach this server at", strings.Join(listen, ", "))
}

// defaultSerialFile is where the serial is kept without --serial-file:
// systemd's StateDirectory when set, else /var/lib/mgmtnet.
func defaultSerialFile() string {
	if d := os.Getenv("STATE_DIRECTORY"); d != "" {
		return filepath.Join(strings.Split(d, ":")[0], "dns.serial")
	}
	return "/var/lib/mgmtnet/dns.serial"
}

// dnsServiceAddrs returns the listen addresses that clients can reach
// from elsewhere: neither loopback nor wildcard.
func dnsServiceAddrs(listen []string) []netip.Addr {
	var out []netip.Addr
	for _, l := range listen {
		host, _, err := net.SplitHostPort(l)
		if err != nil {
			continue
		}
		a, err := netip.ParseAddr(host)
		if err != nil || a.IsLoopback() || a.IsUnspecified() || a.Zone() != "" {
			continue
		}
		out = append(out, a.Unmap())
	}
	return out
}

// dnsServeMetrics serves reg at http://addr/metrics until stop is called.
func dnsServeMetrics(ctx context.Context, addr string, reg *prometheus.Registry) (stop func(), err error) {
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("metrics: %w", err)
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	hs := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	done := make(chan struct{})
	go func() {
		defer close(done)
		hs.Serve(ln) //nolint:errcheck // ends with ErrServerClosed
	}()
	return func() {
		hs.Close()
		<-done
	}, nil
}
