package gateway

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"net/url"
	"os"
	"os/user"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/confine-project/mgmtnet/addressing"
	"github.com/confine-project/mgmtnet/mesh"
	"github.com/confine-project/mgmtnet/tinc"
)

// Config is the gateway daemon's configuration file (YAML, decoded
// strictly). Keys marked "reload" take effect on SIGHUP or when the file
// changes; the others need a restart.
type Config struct {
	Registry     RegistryConfig `yaml:"registry"` // reload
	Identity     IdentityConfig `yaml:"identity"` // restart
	Prefix       string         `yaml:"prefix"`   // reload
	Island       uint64         `yaml:"island"`   // reload
	Tinc         TincConfig     `yaml:"tinc"`     // restart
	Poll         PollConfig     `yaml:"poll"`     // reload
	Guard        GuardConfig    `yaml:"guard"`    // reload
	StateDir     string         `yaml:"state_dir"`
	StatusSocket string         `yaml:"status_socket"`
	// StatusSocketGroup is the group of the status socket (mode 0660): a
	// group name or a numeric gid; "" is the daemon's own group.
	StatusSocketGroup string `yaml:"status_socket_group"`
	// MetricsListen is the Prometheus endpoint's address; "" disables it.
	MetricsListen string       `yaml:"metrics_listen"`
	Egress        EgressConfig `yaml:"egress"` // reload
	DNS           DNSConfig    `yaml:"dns"`    // reload
	Policy        PolicyConfig `yaml:"policy"` // reload
}

// PolicyConfig widens what the registry may grant (mesh.Policy). By
// default only servers may be gateways and offer egress.
type PolicyConfig struct {
	// Gateways are non-server members, by tinc name, that may have tinc
	// addresses: be gateways every node connects to.
	Gateways []string `yaml:"gateways"`
}

// guard is the mass-deletion guard of the config; force is --once --force.
func (c Config) guard(force bool) mesh.Guard {
	return mesh.Guard{MaxRemoveFraction: c.Guard.MaxRemoveFraction, Force: force}
}

// policy is the grant policy this configuration sets.
func (c Config) policy() mesh.Policy {
	return mesh.Policy{Gateways: c.Policy.Gateways, Egress: c.Egress.Nodes}
}

// EgressConfig is this gateway's offer of Internet egress to the slivers
// (design.md): it announces 0.0.0.0/0 into the mesh while its upstream is
// healthy and masquerades the egress prefix to its WAN interface.
type EgressConfig struct {
	// Enabled offers egress from this gateway, whatever the registry says.
	// Without it, the gateway offers egress when its registry member has
	// the mgmtnet.egress property; the kernel rules need WAN either way.
	Enabled bool `yaml:"enabled"`
	// Weight is the tinc weight of the 0.0.0.0/0 Subnet (lower is
	// preferred); 0 means the registry's, else 10.
	Weight int `yaml:"weight"`
	// WAN is the upstream interface the egress prefix is masqueraded to.
	WAN string `yaml:"wan"`
	// Prefix is the egress IPv4 prefix nodes SNAT to, default
	// 100.64.0.0/16; it must hold every node id.
	Prefix string `yaml:"prefix"`
	// Allow are IPv4 prefixes the slivers may reach although they are
	// special-purpose (private, shared, link-local, ...), which egress
	// drops by default: e.g. an upstream proxy in 10.0.0.0/8.
	Allow []string `yaml:"allow"`
	// Deny are IPv4 prefixes egress drops on top of the special-purpose
	// ones. Deny wins over Allow.
	Deny  []string    `yaml:"deny"`
	Probe ProbeConfig `yaml:"probe"`
	// Nodes are nodes, by tinc name, whose own egress offer (their
	// registry property) this gateway accepts. Only servers may offer
	// egress otherwise: a node admin must not be able to draw every
	// sliver's Internet traffic by editing a registry field.
	Nodes []string `yaml:"nodes"`
}

// ProbeConfig is the upstream health probe.
type ProbeConfig struct {
	// Method is tcp (connect to host:port), http (GET a URL) or icmp
	// (echo to an IPv4 address).
	Method  string   `yaml:"method"`
	Targets []string `yaml:"targets"`
	// Interval between probe rounds, Timeout per target.
	Interval Duration `yaml:"interval"`
	Timeout  Duration `yaml:"timeout"`
	// Failures is how many failed rounds in a row withdraw the offer.
	Failures int `yaml:"failures"`
	// HoldDown is how long the probes must succeed without a break before
	// a withdrawn offer is announced again.
	HoldDown Duration `yaml:"hold_down"`
}

// RegistryConfig says where the registry is and how to reach it.
type RegistryConfig struct {
	URL      string `yaml:"url"`
	CA       string `yaml:"ca"`
	Insecure bool   `yaml:"insecure"`
	// Timeout bounds one whole fetch of the registry: every request,
	// retry and body read (each stall within it is bounded too, by at
	// most registry.DefaultTimeout). At most MaxRegistryTimeout.
	Timeout Duration `yaml:"timeout"`
	// Feed follows the registry's change feed where it links one
	// ("mgmtnet registry serve --db"): a write there reaches the host
	// files in well under a second, and a change costs what changed, not
	// a read of the whole registry. Against a registry without one (the
	// 2015 controller), the daemon polls with ETags either way. Default
	// true.
	Feed bool `yaml:"feed"`
}

// DefaultRegistryTimeout and MaxRegistryTimeout are the default and the
// largest registry.timeout: one fetch must end well before systemd's
// watchdog (WatchdogSec=120) would kill the daemon, as the loop that sends
// WATCHDOG=1 waits for it.
const (
	DefaultRegistryTimeout = 90 * time.Second
	MaxRegistryTimeout     = 90 * time.Second
)

// IdentityConfig names this gateway.
type IdentityConfig struct {
	TincName string `yaml:"tinc_name"`
}

// TincConfig is the tinc net the daemon keeps in sync.
type TincConfig struct {
	// TunnelServer runs the gateway in the tunnel-server topology
	// (docs/topology.md): the daemon keeps TunnelServer, DecrementTTL,
	// MaxTimeout and one ConnectTo per later gateway in tinc.conf, and
	// renders the covering and relay Subnets into the gateways' host
	// files. Default true; false keeps tinc.conf as the operator wrote it
	// and the controller's host files (every member learns every other).
	TunnelServer bool   `yaml:"tunnel_server"`
	Dir          string `yaml:"dir"`
	Net          string `yaml:"net"`
	Manage       bool   `yaml:"manage"`
	Tincd        string `yaml:"tincd"`
	PidFile      string `yaml:"pidfile"`
	LogFile      string `yaml:"logfile"`
	// UDPWatchdog finds peers whose UDP is dead while their meta
	// connection lives (tinc 1.0's stale packet key) and repairs them
	// (udpwatch.go). Managed tincd only.
	UDPWatchdog UDPWatchdogConfig `yaml:"udp_watchdog"`
	// MaxMembers is the most members (other than gateways) whose host
	// files the gateway holds, whatever the registry assigns it (tunnel
	// server only; mesh.Assignment). 0 means mesh.MaxCapacity; the
	// daemon also keeps it below what tincd's 1024 descriptors leave
	// after the links to the other gateways.
	MaxMembers int `yaml:"max_members"`
}

// UDPWatchdogConfig is tinc.udp_watchdog: every Interval the daemon pings
// each connected peer's management address through tinc; a peer that
// stays silent for Misses intervals in a row is repaired. Interval 0
// turns the watchdog off.
type UDPWatchdogConfig struct {
	Interval Duration `yaml:"interval"`
	Misses   int      `yaml:"misses"`
}

// PollConfig times the registry polls.
type PollConfig struct {
	Interval   Duration `yaml:"interval"`
	FullResync Duration `yaml:"full_resync"`
}

// GuardConfig is the mass-deletion guard.
type GuardConfig struct {
	MaxRemoveFraction float64 `yaml:"max_remove_fraction"`
}

// Duration is a time.Duration written as "30s" in YAML.
type Duration time.Duration

// UnmarshalYAML parses a Go duration string.
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	var s string
	if err := n.Decode(&s); err != nil {
		return fmt.Errorf("line %d: want a duration such as 30s: %w", n.Line, err)
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return fmt.Errorf("line %d: %w", n.Line, err)
	}
	*d = Duration(v)
	return nil
}

// MarshalYAML writes the duration as a string.
func (d Duration) MarshalYAML() (any, error) { return time.Duration(d).String(), nil }

// D returns the time.Duration.
func (d Duration) D() time.Duration { return time.Duration(d) }

// DefaultConfig returns the configuration with every default set and no
// registry URL.
func DefaultConfig() Config {
	return Config{
		Registry: RegistryConfig{Timeout: Duration(DefaultRegistryTimeout), Feed: true},
		Identity: IdentityConfig{TincName: "server"},
		Tinc: TincConfig{TunnelServer: true, Dir: "/etc/tinc/confine", Net: "confine", Tincd: "tincd",
			UDPWatchdog: UDPWatchdogConfig{Interval: Duration(time.Second), Misses: 3}},
		Poll:     PollConfig{Interval: Duration(60 * time.Second), FullResync: Duration(10 * time.Minute)},
		Guard:    GuardConfig{MaxRemoveFraction: 0.5},
		StateDir: "/var/lib/mgmtnet", StatusSocket: "/run/mgmtnet/status.sock",
		Egress: EgressConfig{Probe: ProbeConfig{Method: ProbeTCP, Interval: Duration(2 * time.Second),
			Timeout: Duration(time.Second), Failures: 2, HoldDown: Duration(30 * time.Second)}},
	}
}

// ParseConfig decodes YAML over the defaults. An unknown key is an error
// naming the key and its line. It does not call Validate.
func ParseConfig(b []byte) (Config, error) {
	c := DefaultConfig()
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(&c); err != nil && !errors.Is(err, io.EOF) {
		return Config{}, err
	}
	return c, nil
}

// LoadConfig reads, decodes and validates the configuration file.
func LoadConfig(path string) (Config, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return Config{}, fmt.Errorf("read config: %w", err)
	}
	c, err := ParseConfig(b)
	if err != nil {
		return Config{}, fmt.Errorf("config %s: %w", path, err)
	}
	if err := c.Validate(); err != nil {
		return Config{}, fmt.Errorf("config %s: %w", path, err)
	}
	return c, nil
}

// Validate checks every key and reports the first problem, naming the key.
func (c Config) Validate() error {
	if c.Registry.URL == "" {
		return errors.New("registry.url is required")
	}
	u, err := url.Parse(c.Registry.URL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Errorf("registry.url %q: want an absolute http or https URI", c.Registry.URL)
	}
	if c.Registry.CA != "" && c.Registry.Insecure {
		return errors.New("registry.ca and registry.insecure exclude each other")
	}
	if c.Registry.Timeout.D() <= 0 || c.Registry.Timeout.D() > MaxRegistryTimeout {
		return fmt.Errorf("registry.timeout %s: must be positive and at most %s (it bounds a whole fetch, which must end before the systemd watchdog)", c.Registry.Timeout.D(), MaxRegistryTimeout)
	}
	if !mesh.ValidTincName(c.Identity.TincName) {
		return fmt.Errorf("identity.tinc_name %q: want a tinc name ([A-Za-z0-9_]+)", c.Identity.TincName)
	}
	if c.Prefix != "" {
		p, err := addressing.ParsePrefix48(c.Prefix)
		if err != nil {
			return fmt.Errorf("prefix: %w", err)
		}
		if _, err := addressing.New(p); err != nil {
			return fmt.Errorf("prefix: %w", err)
		}
	}
	if c.Tinc.Dir == "" || !filepath.IsAbs(c.Tinc.Dir) {
		return fmt.Errorf("tinc.dir %q: want an absolute directory", c.Tinc.Dir)
	}
	if !mesh.ValidTincName(c.Tinc.Net) {
		return fmt.Errorf("tinc.net %q: want a net name ([A-Za-z0-9_]+)", c.Tinc.Net)
	}
	if c.Tinc.Manage && c.Tinc.Tincd == "" {
		return errors.New("tinc.tincd: required when tinc.manage is true")
	}
	if c.Tinc.MaxMembers < 0 || c.Tinc.MaxMembers > mesh.MaxCapacity {
		return fmt.Errorf("tinc.max_members %d: want 1..%d, or 0 for %d", c.Tinc.MaxMembers, mesh.MaxCapacity, mesh.MaxCapacity)
	}
	if w := c.Tinc.UDPWatchdog; w.Interval != 0 && (w.Interval.D() < 100*time.Millisecond || w.Interval.D() > time.Minute || w.Misses < 1 || w.Misses > 60) {
		return fmt.Errorf("tinc.udp_watchdog: interval %s and misses %d: want an interval from 100ms to 1m (0 turns it off) and 1 to 60 misses", w.Interval.D(), w.Misses)
	}
	if c.Poll.Interval.D() < time.Second {
		return fmt.Errorf("poll.interval %s: must be at least 1s", c.Poll.Interval.D())
	}
	if c.Poll.FullResync.D() < c.Poll.Interval.D() {
		return fmt.Errorf("poll.full_resync %s: must be at least poll.interval (%s)", c.Poll.FullResync.D(), c.Poll.Interval.D())
	}
	if f := c.Guard.MaxRemoveFraction; !(f > 0 && f <= 1) {
		return fmt.Errorf("guard.max_remove_fraction %v: want a fraction in (0, 1]", f)
	}
	if c.StateDir == "" || !filepath.IsAbs(c.StateDir) {
		return fmt.Errorf("state_dir %q: want an absolute directory", c.StateDir)
	}
	if c.StatusSocket == "" || !filepath.IsAbs(c.StatusSocket) {
		return fmt.Errorf("status_socket %q: want an absolute path", c.StatusSocket)
	}
	if _, err := c.statusSocketGID(); err != nil {
		return err
	}
	if c.MetricsListen != "" {
		if _, _, err := net.SplitHostPort(c.MetricsListen); err != nil {
			return fmt.Errorf("metrics_listen %q: want host:port: %w", c.MetricsListen, err)
		}
	}
	if err := c.Egress.validate(); err != nil {
		return err
	}
	for i, n := range c.Policy.Gateways {
		if !mesh.ValidTincName(n) {
			return fmt.Errorf("policy.gateways[%d] %q: want a tinc name ([A-Za-z0-9_]+)", i, n)
		}
	}
	return c.DNS.validate()
}

func (e EgressConfig) validate() error {
	for i, n := range e.Nodes {
		if k, _, err := addressing.ParseTincName(n); err != nil || k != addressing.KindNode {
			return fmt.Errorf("egress.nodes[%d] %q: want a node's tinc name (node_<id>)", i, n)
		}
	}
	if e.Weight < 0 || e.Weight > mesh.MaxEgressWeight {
		return fmt.Errorf("egress.weight %d: want 0..%d", e.Weight, mesh.MaxEgressWeight)
	}
	if e.Prefix != "" {
		p, err := netip.ParsePrefix(e.Prefix)
		if err != nil {
			return fmt.Errorf("egress.prefix: %w", err)
		}
		if _, err := addressing.NewFromConfig(addressing.Config{Egress: p}); err != nil {
			return fmt.Errorf("egress.prefix: %w", err)
		}
	}
	if _, err := egressPrefixes("allow", e.Allow); err != nil {
		return err
	}
	if _, err := egressPrefixes("deny", e.Deny); err != nil {
		return err
	}
	if e.WAN != "" && (len(e.WAN) > 15 || strings.ContainsAny(e.WAN, "/ \t\n")) {
		return fmt.Errorf("egress.wan %q: not an interface name", e.WAN)
	}
	if e.Enabled && e.WAN == "" {
		return errors.New("egress.wan: required when egress.enabled is true (the interface to masquerade to)")
	}
	p := e.Probe
	switch p.Method {
	case ProbeTCP, ProbeHTTP, ProbeICMP:
	default:
		return fmt.Errorf("egress.probe.method %q: want tcp, http or icmp", p.Method)
	}
	if e.Enabled && len(p.Targets) == 0 {
		return errors.New("egress.probe.targets: at least one target is required when egress is enabled (an unprobed gateway would announce egress it may not have)")
	}
	for _, t := range p.Targets {
		if err := checkProbeTarget(p.Method, t); err != nil {
			return fmt.Errorf("egress.probe.targets: %w", err)
		}
	}
	if p.Interval.D() < 100*time.Millisecond {
		return fmt.Errorf("egress.probe.interval %s: must be at least 100ms", p.Interval.D())
	}
	if p.Timeout.D() <= 0 || p.Timeout.D() > p.Interval.D() {
		return fmt.Errorf("egress.probe.timeout %s: must be positive and at most egress.probe.interval (%s)", p.Timeout.D(), p.Interval.D())
	}
	if p.Failures < 1 {
		return fmt.Errorf("egress.probe.failures %d: must be at least 1", p.Failures)
	}
	if p.HoldDown.D() < 0 {
		return fmt.Errorf("egress.probe.hold_down %s: must not be negative", p.HoldDown.D())
	}
	return nil
}

func checkProbeTarget(method, t string) error {
	switch method {
	case ProbeTCP:
		if _, port, err := net.SplitHostPort(t); err != nil || port == "" {
			return fmt.Errorf("%q: want host:port for tcp", t)
		}
	case ProbeHTTP:
		u, err := url.Parse(t)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return fmt.Errorf("%q: want an http or https URL", t)
		}
	case ProbeICMP:
		if a, err := netip.ParseAddr(t); err != nil || !a.Is4() {
			return fmt.Errorf("%q: want an IPv4 address for icmp", t)
		}
	}
	return nil
}

// statusSocketGID resolves status_socket_group: a numeric gid, a group
// name from the group database, or "" for the process's effective group.
func (c Config) statusSocketGID() (int, error) {
	g := c.StatusSocketGroup
	if g == "" {
		return os.Getegid(), nil
	}
	if n, err := strconv.ParseUint(g, 10, 31); err == nil {
		return int(n), nil
	}
	grp, err := user.LookupGroup(g)
	if err != nil {
		return 0, fmt.Errorf("status_socket_group %q: want a group name or a numeric gid: %w", g, err)
	}
	n, err := strconv.Atoi(grp.Gid)
	if err != nil {
		return 0, fmt.Errorf("status_socket_group %q: gid %q is not a number", g, grp.Gid)
	}
	return n, nil
}

// equal reports whether two configurations are the same in every key.
func (c Config) equal(o Config) bool { return reflect.DeepEqual(c, o) }

// egressPrefixes parses the list egress.<key>: IPv4 prefixes, without
// host bits. Errors name the entry as the config does, e.g.
// egress.deny[2].
func egressPrefixes(key string, list []string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for i, s := range list {
		p, err := netip.ParsePrefix(strings.TrimSpace(s))
		if err != nil || !p.Addr().Is4() {
			return nil, fmt.Errorf("egress.%s[%d]: %q is not an IPv4 prefix (e.g. 10.0.0.0/8)", key, i, s)
		}
		if p != p.Masked() {
			return nil, fmt.Errorf("egress.%s[%d]: %q has host bits set (want %s)", key, i, s, p.Masked())
		}
		out = append(out, p)
	}
	return out, nil
}

// egressLists returns egress.allow and egress.deny, parsed (Validate has
// checked them).
func (c Config) egressLists() (allow, deny []netip.Prefix) {
	allow, _ = egressPrefixes("allow", c.Egress.Allow)
	deny, _ = egressPrefixes("deny", c.Egress.Deny)
	return allow, deny
}

// egressPrefix returns egress.prefix, or the default.
func (c Config) egressPrefix() netip.Prefix {
	if p, err := netip.ParsePrefix(c.Egress.Prefix); err == nil {
		return p.Masked()
	}
	return addressing.DefaultEgressPrefix()
}

// PidFile returns the tincd pid file: tinc.pidfile, else <dir>/tinc.pid
// when managed, else tinc 1.0's default for the net.
func (c Config) PidFile() string {
	switch {
	case c.Tinc.PidFile != "":
		return c.Tinc.PidFile
	case c.Tinc.Manage:
		return filepath.Join(c.Tinc.Dir, "tinc.pid")
	}
	return tinc.DefaultPidFile(c.Tinc.Net)
}

// HostsDir returns <tinc.dir>/hosts.
func (c Config) HostsDir() string { return filepath.Join(c.Tinc.Dir, "hosts") }

// SnapshotFile returns <state_dir>/snapshot.json.
func (c Config) SnapshotFile() string { return filepath.Join(c.StateDir, "snapshot.json") }

// declaredPrefix returns the prefix override, if any.
func (c Config) declaredPrefix() netip.Prefix {
	if c.Prefix == "" {
		return netip.Prefix{}
	}
	p, _ := addressing.ParsePrefix48(c.Prefix)
	return p
}

// restartOnly returns the keys that differ between c and n and need a
// restart to apply.
func (c Config) restartOnly(n Config) []string {
	var keys []string
	if c.Identity != n.Identity {
		keys = append(keys, "identity")
	}
	if c.Tinc != n.Tinc {
		keys = append(keys, "tinc")
	}
	if c.StateDir != n.StateDir {
		keys = append(keys, "state_dir")
	}
	if c.StatusSocket != n.StatusSocket {
		keys = append(keys, "status_socket")
	}
	if c.StatusSocketGroup != n.StatusSocketGroup {
		keys = append(keys, "status_socket_group")
	}
	if c.MetricsListen != n.MetricsListen {
		keys = append(keys, "metrics_listen")
	}
	return keys
}
