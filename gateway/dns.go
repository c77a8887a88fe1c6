package gateway

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"path/filepath"
	"strings"
	"time"

	"github.com/confine-project/mgmtnet/authdns"
	"github.com/confine-project/mgmtnet/mesh"
	"github.com/confine-project/mgmtnet/tincgen"
)

// DNSConfig is the gateway's DNS service for the management network
// (README "DNS"): authdns answering from the same snapshot that drives
// tinc, its zone swapped on every validated snapshot (also when writing
// the host files then fails).
type DNSConfig struct {
	Enabled bool   `yaml:"enabled"`
	Zone    string `yaml:"zone"` // e.g. mgmt.community-lab.net.
	// Listen are host:port addresses; default "[::]:53" (the allow-list,
	// not the socket, decides who gets answers).
	Listen []string `yaml:"listen"`
	// ServiceAddress is a well-known management address several gateways
	// share: each announces it into the mesh (Subnet = <addr>/128#weight,
	// on its own host file) and holds it on the loopback, so tinc routes a
	// client to the reachable gateway with the best weight.
	ServiceAddress string `yaml:"service_address"`
	ServiceWeight  int    `yaml:"service_weight"` // default 10
	// Allow, AllowTransfer, Forward, Notify: see authdns.Config.
	Allow         []string `yaml:"allow"`
	AllowTransfer []string `yaml:"allow_transfer"`
	Forward       []string `yaml:"forward"`
	Notify        []string `yaml:"notify"`
	// TSIGKeyFile is a key file in BIND's syntax (tsig-keygen's output):
	// transfers then need a signature, and NOTIFY is signed. See
	// authdns.LoadKeyFile.
	TSIGKeyFile string `yaml:"tsig_key_file"`
	// MaxTCPConnections, TCPIdleTimeout, RateLimit, RateLimitSlip: see
	// authdns.Config (MaxTCPConns...).
	MaxTCPConnections int      `yaml:"max_tcp_connections"`
	TCPIdleTimeout    Duration `yaml:"tcp_idle_timeout"`
	RateLimit         int      `yaml:"rate_limit"`
	RateLimitSlip     int      `yaml:"rate_limit_slip"`
}

// dnsConfig converts the YAML into authdns.Config, validated; it reads
// the TSIG key file. The name server ns.ZONE has the service address, if
// any, and the gateway's own management address (of member self) as its
// addresses, so that the zone has glue for it.
func (c DNSConfig) dnsConfig(self string) (authdns.Config, error) {
	out := authdns.Config{Zone: c.Zone, MaxTCPConns: c.MaxTCPConnections, TCPIdleTimeout: time.Duration(c.TCPIdleTimeout),
		RateLimit: c.RateLimit, RateLimitSlip: c.RateLimitSlip}
	prefixes := func(key string, l []string) ([]netip.Prefix, error) {
		var ps []netip.Prefix
		for _, s := range l {
			p, err := netip.ParsePrefix(s)
			if err != nil {
				a, aerr := netip.ParseAddr(s)
				if aerr != nil {
					return nil, fmt.Errorf("dns.%s %q: want a prefix or an address", key, s)
				}
				p = netip.PrefixFrom(a, a.BitLen())
			}
			ps = append(ps, p)
		}
		return ps, nil
	}
	servers := func(key string, l []string) ([]netip.AddrPort, error) {
		var as []netip.AddrPort
		for _, s := range l {
			a, err := authdns.ParseServerAddr(s, 53)
			if err != nil {
				return nil, fmt.Errorf("dns.%s %q: %w", key, s, err)
			}
			as = append(as, a)
		}
		return as, nil
	}
	var err error
	if out.Allow, err = prefixes("allow", c.Allow); err != nil {
		return out, err
	}
	if out.AllowTransfer, err = prefixes("allow_transfer", c.AllowTransfer); err != nil {
		return out, err
	}
	if out.Forward, err = servers("forward", c.Forward); err != nil {
		return out, err
	}
	if out.Notify, err = servers("notify", c.Notify); err != nil {
		return out, err
	}
	ns := authdns.NameServer{Name: authdns.DefaultNSLabel + "." + strings.TrimSuffix(c.Zone, ".") + ".", Member: self}
	if a, ok := c.serviceAddr(); ok {
		ns.Addrs = []netip.Addr{a}
	}
	out.NS = []authdns.NameServer{ns}
	if c.TSIGKeyFile != "" {
		keys, err := authdns.LoadKeyFile(c.TSIGKeyFile)
		if err != nil {
			return out, fmt.Errorf("dns.tsig_key_file: %w", err)
		}
		out.TSIG = keys
	}
	if err := out.Validate(); err != nil {
		return out, fmt.Errorf("dns: %w", err)
	}
	return out, nil
}

func (c DNSConfig) serviceAddr() (netip.Addr, bool) {
	a, err := netip.ParseAddr(c.ServiceAddress)
	return a, err == nil
}

func (c DNSConfig) listen() []string {
	if len(c.Listen) == 0 {
		return []string{"[::]:53"}
	}
	return c.Listen
}

func (c DNSConfig) validate() error {
	if !c.Enabled {
		return nil
	}
	if c.Zone == "" {
		return errors.New("dns.zone: required when dns.enabled is true (e.g. mgmt.community-lab.net.)")
	}
	for _, l := range c.Listen {
		if _, _, err := net.SplitHostPort(l); err != nil {
			return fmt.Errorf("dns.listen %q: want host:port: %w", l, err)
		}
	}
	if c.ServiceAddress != "" {
		a, err := netip.ParseAddr(c.ServiceAddress)
		if err != nil || !a.Is6() || a.Is4In6() || a.Zone() != "" {
			return fmt.Errorf("dns.service_address %q: want an IPv6 address in the management /48", c.ServiceAddress)
		}
	}
	if c.ServiceWeight < 0 || c.ServiceWeight > mesh.MaxEgressWeight {
		return fmt.Errorf("dns.service_weight %d: want 0..%d", c.ServiceWeight, mesh.MaxEgressWeight)
	}
	_, err := c.dnsConfig("")
	return err
}

// serviceSubnet is the Subnet this gateway announces for the DNS service
// address, if any.
func (d *Daemon) serviceSubnet() (tincgen.Subnet, bool) {
	if !d.cfg.DNS.Enabled {
		return tincgen.Subnet{}, false
	}
	a, ok := d.cfg.DNS.serviceAddr()
	if !ok {
		return tincgen.Subnet{}, false
	}
	w := d.cfg.DNS.ServiceWeight
	if w == 0 {
		w = mesh.DefaultEgressWeight
	}
	return tincgen.Subnet{Prefix: netip.PrefixFrom(a, 128), Weight: w}, true
}

// startDNS starts the DNS server when configured and not running, and
// loads the applied snapshot into it. A bind error is returned: at start
// Run ends with it; on a config reload the daemon goes on without DNS and
// says so in its status.
func (d *Daemon) startDNS(ctx context.Context) error {
	if !d.cfg.DNS.Enabled {
		d.stopDNS()
		return nil
	}
	if d.dns.srv != nil {
		return nil
	}
	cfg, err := d.cfg.DNS.dnsConfig(d.cfg.Identity.TincName)
	if err != nil {
		return err
	}
	if a, ok := d.cfg.DNS.serviceAddr(); ok {
		if d.hosts.tb != nil {
			plan := d.hosts.tb.Plan()
			if !plan.Mgmt().Contains(a) {
				return fmt.Errorf("dns.service_address %s: not in the management network %s", a, plan.Mgmt())
			}
			if e, err := plan.Reverse(a); err == nil {
				return fmt.Errorf("dns.service_address %s: the plan gives it to %s; pick an address the plan assigns to nobody (e.g. %s)", a, e, serviceExample(plan.Mgmt()))
			}
		}
		if err := d.setServiceAddrs(ctx, a); err != nil {
			return fmt.Errorf("dns service address: %w", err)
		}
	}
	reg := &dnsRegisterer{reg: d.m.reg}
	srv, err := authdns.New(cfg, authdns.ServerOptions{Listen: d.cfg.DNS.listen(), Logger: d.log.With("part", "dns"), Registerer: reg,
		SerialFile: filepath.Join(d.cfg.StateDir, "dns.serial")})
	if err != nil {
		reg.unregisterAll()
		d.dropServiceAddrs()
		return err
	}
	if err := srv.Start(ctx); err != nil {
		reg.unregisterAll()
		d.dropServiceAddrs()
		return err
	}
	d.dns.reg = reg
	d.dns.srv = srv
	if d.hosts.tb != nil {
		if err := srv.SetTestbed(d.hosts.tb); err != nil {
			d.log.Error("dns zone", "err", err)
		}
	}
	return nil
}

// stopDNS stops the DNS server, if it runs, and removes the service
// address of ours from lo.
func (d *Daemon) stopDNS() {
	d.dropServiceAddrs()
	if d.dns.srv == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := d.dns.srv.Shutdown(ctx); err != nil {
		d.log.Warn("stop dns", "err", err)
	}
	d.dns.reg.unregisterAll()
	d.dns.srv = nil
}

// dnsSetTestbed swaps the DNS zone for a validated snapshot (before the
// host files are written, so also when writing them fails).
func (d *Daemon) dnsSetTestbed(tb *mesh.Testbed) {
	if d.dns.srv == nil {
		return
	}
	if err := d.dns.srv.SetTestbed(tb); err != nil {
		d.log.Error("dns zone: keeping the old one", "err", err)
	}
}

// DNSStatus is the DNS part of Status.
type DNSStatus struct {
	Enabled bool   `json:"enabled"`
	Zone    string `json:"zone,omitempty"`
	Serving bool   `json:"serving"`
	Service string `json:"service_address,omitempty"`
	Error   string `json:"error,omitempty"`
}

func (d *Daemon) dnsStatus() DNSStatus {
	return DNSStatus{Enabled: d.cfg.DNS.Enabled, Zone: d.cfg.DNS.Zone, Serving: d.dns.srv != nil,
		Service: d.cfg.DNS.ServiceAddress, Error: d.dns.err}
}

// serviceExample is a management address the plan assigns to nobody:
// P:0:53::53.
func serviceExample(p netip.Prefix) netip.Addr {
	a := p.Addr().As16()
	a[9], a[15] = 0x53, 0x53
	return netip.AddrFrom16(a)
}
