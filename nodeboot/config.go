// Package nodeboot is the node's boot hook (confine.md §5): from the
// firmware's UCI file it makes sure the node has an RSA key, writes its own
// tinc host file, tinc.conf (one ConnectTo per gateway), tinc-up and
// tinc-down and the gateways' host files, then starts tincd or makes the
// running one pick up what changed.
//
// It is an orchestrator, one layer above the leaf adapters: it reads the
// UCI file (internal/uci), the addressing plan (addressing), the registry
// through package source (fetched by mesh/registry, validated by
// mesh.Build), renders files with tincgen and drives tincd through a
// tinc.Controller, whose real implementation is tinc.Daemonized.
// The work is split the usual way: LoadConfig validates the input once,
// DesiredFiles computes the desired files purely, Apply writes the ones that
// differ, and Run puts it together and decides start, SIGHUP or restart.
//
// It never deletes a file in the tinc directory, never overwrites an
// existing private key, keeps the node's own host file when it means the
// same as the one it would write (the image's or the firmware's form), and
// does not poll the registry afterwards (nothing in mgmtnet polls on a
// node; run node-boot again).
package nodeboot

import (
	"errors"
	"fmt"
	"net/netip"
	"net/url"
	"os"
	"strings"

	"github.com/confine-project/mgmtnet/addressing"
	"github.com/confine-project/mgmtnet/internal/uci"
	"github.com/confine-project/mgmtnet/tincgen"
	"github.com/confine-project/mgmtnet/vpn"
)

// DefaultUCIFile is where the firmware keeps its CONFINE configuration.
const DefaultUCIFile = "/etc/config/confine"

// DefaultTincGateway is the gateway a node connects to when the UCI file
// names none: the main server.
const DefaultTincGateway = "server"

// Config is what node-boot reads from the firmware's UCI file, validated.
// Strings are as the file gives them; addresses and ids are parsed.
type Config struct {
	// File is the UCI file's name, for messages.
	File string
	// NodeID is node.id (the firmware's 4 hex digits), in 1..0xfff0.
	NodeID uint16
	// TincGateway is node.tinc_gateway: the gateway tinc name listed first
	// in ConnectTo. Default DefaultTincGateway.
	TincGateway string
	// PrivIPv4 is node.priv_ipv4_prefix24 as a /24; the zero Prefix when
	// absent (the plan then uses its default 192.168.157.0/24).
	PrivIPv4 netip.Prefix
	// MACPrefix16 is node.mac_prefix16; HasMACPrefix reports whether the
	// file sets it.
	MACPrefix16  [2]byte
	HasMACPrefix bool
	// LocalIfname and State are node.local_ifname and node.state, kept
	// for other firmware tools; node-boot does not use them.
	LocalIfname string
	State       string
	// RegistryURI is registry.base_uri ("" when absent) and RegistryCert
	// registry.cert, the pinned certificate to verify TLS against.
	RegistryURI  string
	RegistryCert string
	// ServerProto and ServerBasePath are server.tcp_proto and
	// server.base_path, which firmware before late 2014 built its
	// registry URI from ("" when absent).
	ServerProto    string
	ServerBasePath string
	// Prefix is testbed.mgmt_ipv6_prefix48, default Community-Lab's
	// fdf5:5351:1dfd::/48.
	Prefix netip.Prefix
	// Egress is mgmtnet.egress: whether the slivers' Internet traffic
	// goes through the testbed's egress gateways (EgressAuto, the
	// default: when the registry lists a gateway that offers egress).
	Egress EgressMode
	// EgressPrefix is mgmtnet.egress_prefix (default 100.64.0.0/16).
	EgressPrefix netip.Prefix
	// Community is mgmtnet.community: destinations that stay on the
	// community network, never through the VPN (default RFC 1918).
	Community []netip.Prefix
	// EnrolToken is mgmtnet.enrol_token: a one-time invite to register
	// the node's key with (Options.EnrolToken).
	EnrolToken string
}

// EgressMode is the node's egress setting.
type EgressMode string

// The egress modes.
const (
	EgressAuto EgressMode = "auto"
	EgressOn   EgressMode = "on"
	EgressOff  EgressMode = "off"
)

// TincName returns the node's tinc name, "node_<decimal id>".
func (c Config) TincName() string { return nodeName(c.NodeID) }

func nodeName(id uint16) string { return fmt.Sprintf("node_%d", id) }

// Plan returns the addressing plan of the node's testbed.
func (c Config) Plan() (addressing.Plan, error) {
	return addressing.NewFromConfig(addressing.Config{Mgmt: c.Prefix, PrivateIPv4: c.PrivIPv4, Egress: c.EgressPrefix})
}

// LoadConfig reads and validates a UCI file (see ConfigFromUCI).
func LoadConfig(path string) (Config, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return Config{}, fmt.Errorf("read node config: %w", err)
	}
	return ConfigFromUCI(path, b)
}

// ConfigFromUCI parses and validates the firmware's UCI file; name is used
// in messages. It reads the sections node, registry and testbed (by name
// or, failing that, the first of that type). Errors name the file and the
// line: the syntax error's, or for a bad value the line of its section
// (the UCI parser does not keep option lines), and quote the value.
//
// Options it does not know are ignored, unlike our own config files: the
// file belongs to the firmware, which keeps many more options in it.
func ConfigFromUCI(name string, data []byte) (Config, error) {
	f, err := uci.Parse(name, data)
	if err != nil {
		return Config{}, err
	}
	c := Config{File: name, TincGateway: DefaultTincGateway, Prefix: addressing.DefaultMgmtPrefix(),
		Egress: EgressAuto, EgressPrefix: addressing.DefaultEgressPrefix(), Community: vpn.DefaultCommunity()}
	bad := func(s *uci.Section, format string, args ...any) error {
		return fmt.Errorf("%s:%d: %s", name, s.Line, fmt.Sprintf(format, args...))
	}

	node := f.Section("node")
	if node == nil {
		return Config{}, fmt.Errorf("%s: no node section (want \"config node node\" with option id)", name)
	}
	id, ok := node.Get("id")
	if !ok {
		return Config{}, bad(node, "node section has no option id (the node id as 4 hex digits, e.g. 001f)")
	}
	n, err := addressing.ParseFirmwareNodeID(id)
	if err != nil {
		var re *addressing.RangeError
		if errors.As(err, &re) {
			return Config{}, bad(node, "node id %q: out of range: allowed 0001..fff0", id)
		}
		return Config{}, bad(node, "node id %q: want exactly 4 hex digits (e.g. 001f)", id)
	}
	c.NodeID = n
	if v, ok := node.Get("tinc_gateway"); ok {
		if !tincgen.ValidName(v) {
			return Config{}, bad(node, "node tinc_gateway %q: not a tinc name (only A-Z, a-z, 0-9 and _)", v)
		}
		c.TincGateway = v
	}
	if v, ok := node.Get("priv_ipv4_prefix24"); ok {
		a, err := netip.ParseAddr(v + ".0")
		if err != nil || !a.Is4() || strings.Count(v, ".") != 2 {
			return Config{}, bad(node, "node priv_ipv4_prefix24 %q: want three octets (e.g. 192.168.157)", v)
		}
		c.PrivIPv4 = netip.PrefixFrom(a, 24)
	}
	if v, ok := node.Get("mac_prefix16"); ok {
		m, err := addressing.ParseMACPrefix16(v)
		if err != nil {
			return Config{}, bad(node, "node mac_prefix16 %q: want two hex bytes (e.g. 06:ab)", v)
		}
		c.MACPrefix16, c.HasMACPrefix = m, true
	}
	c.LocalIfname, _ = node.Get("local_ifname")
	c.State, _ = node.Get("state")

	if reg := f.Section("registry"); reg != nil {
		if v, ok := reg.Get("base_uri"); ok && v != "" {
			if err := CheckRegistryURI(v); err != nil {
				return Config{}, bad(reg, "registry base_uri %q: %v", v, err)
			}
			c.RegistryURI = v
		}
		c.RegistryCert, _ = reg.Get("cert")
	}

	if srv := f.Section("server"); srv != nil {
		if v, ok := srv.Get("tcp_proto"); ok && v != "" {
			if v != "http" && v != "https" {
				return Config{}, bad(srv, "server tcp_proto %q: want http or https", v)
			}
			c.ServerProto = v
		}
		if v, ok := srv.Get("base_path"); ok && v != "" {
			if !strings.HasPrefix(v, "/") || strings.ContainsAny(v, " ?#[]@") {
				return Config{}, bad(srv, "server base_path %q: want an absolute path (e.g. /api)", v)
			}
			c.ServerBasePath = v
		}
	}
	if tb := f.Section("testbed"); tb != nil {
		if v, ok := tb.Get("mgmt_ipv6_prefix48"); ok {
			p, err := addressing.ParsePrefix48(v)
			if err == nil {
				_, err = addressing.New(p)
			}
			// The UCI form is three words; "fdf5:5351" would silently
			// mean fdf5:5351:0::/48.
			bare := !strings.Contains(v, "/") && !strings.Contains(v, "::")
			if err != nil || (bare && strings.Count(v, ":") != 2) || p != p.Masked() {
				return Config{}, bad(tb, "testbed mgmt_ipv6_prefix48 %q: want an IPv6 /48 (e.g. fdf5:5351:1dfd)", v)
			}
			c.Prefix = p
		}
	}
	if m := f.Section("mgmtnet"); m != nil {
		if v, ok := m.Get("egress"); ok {
			switch strings.ToLower(v) {
			case "auto", "":
				c.Egress = EgressAuto
			case "on", "1", "yes", "true":
				c.Egress = EgressOn
			case "off", "0", "no", "false":
				c.Egress = EgressOff
			default:
				return Config{}, bad(m, "mgmtnet egress %q: want auto, on or off", v)
			}
		}
		if v, ok := m.Get("egress_prefix"); ok {
			p, err := netip.ParsePrefix(v)
			if err == nil {
				_, err = addressing.NewFromConfig(addressing.Config{Egress: p})
			}
			if err != nil {
				return Config{}, bad(m, "mgmtnet egress_prefix %q: %v", v, err)
			}
			c.EgressPrefix = p.Masked()
		}
		c.EnrolToken, _ = m.Get("enrol_token")
		if l := m.Lists["community"]; len(l) > 0 {
			c.Community = nil
			for _, v := range l {
				p, err := netip.ParsePrefix(v)
				if err != nil || !p.Addr().Is4() {
					return Config{}, bad(m, "mgmtnet community %q: want an IPv4 prefix (e.g. 10.0.0.0/8)", v)
				}
				c.Community = append(c.Community, p.Masked())
			}
		}
	}
	if _, err := c.Plan(); err != nil {
		return Config{}, fmt.Errorf("%s: %w", name, err)
	}
	return c, nil
}

// FirmwareRegistryURI is the registry the node firmware asks when its UCI
// file has no registry.base_uri: the server's management address, as
// http://[<prefix48>::2]/api/ (confine-dist since late 2014), or with the
// scheme and path of server.tcp_proto and server.base_path where the UCI
// file sets them (earlier firmware read those; controllers write
// base_path '/api'). It is reached over the tinc overlay, whose keys
// authenticate the path.
func (c Config) FirmwareRegistryURI() string {
	plan, err := c.Plan()
	if err != nil {
		return ""
	}
	a, err := plan.Address(addressing.Entity{Kind: addressing.KindServer, ID: addressing.MainServerID})
	if err != nil {
		return ""
	}
	proto, path := "http", "/api"
	if c.ServerProto != "" {
		proto = c.ServerProto
	}
	if c.ServerBasePath != "" {
		path = c.ServerBasePath
	}
	return proto + "://[" + a.String() + "]" + strings.TrimSuffix(path, "/") + "/"
}

// CheckRegistryURI reports whether s is usable as a registry base URI: an
// absolute http or https URI with a host and no credentials.
func CheckRegistryURI(s string) error {
	u, err := url.Parse(s)
	switch {
	case err != nil:
		return errors.New("not a URI")
	case u.Scheme != "http" && u.Scheme != "https":
		return errors.New("want an absolute http:// or https:// URI")
	case u.Host == "":
		return errors.New("no host")
	case u.User != nil:
		return errors.New("credentials in the URI are not supported")
	}
	return nil
}
