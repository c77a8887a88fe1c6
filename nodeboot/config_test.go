package nodeboot

import (
	"github.com/confine-project/mgmtnet/vpn"

	"net/netip"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/confine-project/mgmtnet/addressing"
)

// firmwareUCI is the firmware's example of confine.md §5.
const firmwareUCI = `config node node
    option id '001f'                      # hex, 4 digits
    option priv_ipv4_prefix24 '192.168.157'
    option mac_prefix16 '06:ab'
    option local_ifname 'eth0'
    option tinc_gateway 'server'
    option state 'prepared'
config registry registry
    option base_uri 'https://[fdf5:5351:1dfd::2]/api/'
    option cert '/etc/confine/registry-server.crt'
config testbed testbed
    option mgmt_ipv6_prefix48 'fdf5:5351:1dfd'
`

func TestConfigFromUCI(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want Config
	}{
		{"firmware example", firmwareUCI, Config{
			File: "/etc/config/confine", NodeID: 31, TincGateway: "server",
			PrivIPv4:    netip.MustParsePrefix("192.168.157.0/24"),
			MACPrefix16: [2]byte{0x06, 0xab}, HasMACPrefix: true, LocalIfname: "eth0", State: "prepared",
			RegistryURI: "https://[fdf5:5351:1dfd::2]/api/", RegistryCert: "/etc/confine/registry-server.crt",
			Prefix: netip.MustParsePrefix("fdf5:5351:1dfd::/48"),
		}},
		{"minimal: defaults", "config node node\n option id 00AB\n", Config{
			File: "/etc/config/confine", NodeID: 0xab, TincGateway: "server", Prefix: addressing.DefaultMgmtPrefix(),
		}},
		{"anonymous sections, other gateway, other prefix", "config node\n option id 'fff0'\n option tinc_gateway gw_2\n" +
			"option unknown_thing x\nconfig testbed\n option mgmt_ipv6_prefix48 'fd65:fc41:c50f::/48'\n", Config{
			File: "/etc/config/confine", NodeID: 0xfff0, TincGateway: "gw_2", Prefix: netip.MustParsePrefix("fd65:fc41:c50f::/48"),
		}},
	}
	tests = append(tests, struct {
		name string
		in   string
		want Config
	}{"egress options", "config node node\n option id 001f\nconfig mgmtnet mgmtnet\n option egress on\n" +
		" option egress_prefix 100.65.0.0/16\n list community 10.0.0.0/8\n list community 172.16.0.0/12\n", Config{
		File: "/etc/config/confine", NodeID: 31, TincGateway: "server", Prefix: addressing.DefaultMgmtPrefix(),
		Egress: EgressOn, EgressPrefix: netip.MustParsePrefix("100.65.0.0/16"),
		Community: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("172.16.0.0/12")},
	}})
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.want.Egress == "" {
				tt.want.Egress, tt.want.EgressPrefix, tt.want.Community = EgressAuto, addressing.DefaultEgressPrefix(), vpn.DefaultCommunity()
			}
			got, err := ConfigFromUCI("/etc/config/confine", []byte(tt.in))
			if err != nil {
				t.Fatal(err)
			}
			if d := cmp.Diff(tt.want, got, cmpopts.EquateComparable(netip.Prefix{})); d != "" {
				t.Errorf("config (-want +got):\n%s", d)
			}
		})
	}
}

func TestConfigFromUCIErrors(t *testing.T) {
	const f = "/etc/config/confine"
	tests := []struct {
		name, in, want string
	}{
		{"bad id", "config node node\n option id 'zz'\n", f + `:1: node id "zz": want exactly 4 hex digits (e.g. 001f)`},
		{"decimal id", "# comment\n\nconfig node node\n option id '31'\n", f + `:3: node id "31": want exactly 4 hex digits (e.g. 001f)`},
		{"id zero", "config node node\n option id '0000'\n", f + `:1: node id "0000": out of range: allowed 0001..fff0`},
		{"id too large", "config node node\n option id 'fff1'\n", f + `:1: node id "fff1": out of range`},
		{"missing id", "config node node\n option state x\n", f + `:1: node section has no option id`},
		{"no node section", "config registry registry\n", f + `: no node section`},
		{"bad egress", "config node node\n option id 001f\nconfig mgmtnet m\n option egress maybe\n", f + `:3: mgmtnet egress "maybe": want auto, on or off`},
		{"small egress prefix", "config node node\n option id 001f\nconfig mgmtnet m\n option egress_prefix 100.64.0.0/24\n", f + `:3: mgmtnet egress_prefix "100.64.0.0/24"`},
		{"bad community", "config node node\n option id 001f\nconfig mgmtnet m\n list community fd00::/8\n", f + `:3: mgmtnet community "fd00::/8": want an IPv4 prefix`},
		{"bad prefix", firmwareUCI[:strings.Index(firmwareUCI, "config testbed")] + "config testbed testbed\n option mgmt_ipv6_prefix48 'fdf5:5351'\n",
			f + `:11: testbed mgmt_ipv6_prefix48 "fdf5:5351": want an IPv6 /48`},
		{"ipv4 prefix", "config node node\n option id 001f\nconfig testbed testbed\n option mgmt_ipv6_prefix48 10.0.0.0/8\n",
			f + `:3: testbed mgmt_ipv6_prefix48 "10.0.0.0/8": want an IPv6 /48`},
		{"bad base_uri", "config node node\n option id 001f\nconfig registry registry\n option base_uri 'fdf5:5351:1dfd::2/api'\n",
			f + `:3: registry base_uri "fdf5:5351:1dfd::2/api": `},
		{"ftp base_uri", "config node node\n option id 001f\nconfig registry registry\n option base_uri 'ftp://x/api/'\n",
			f + `:3: registry base_uri "ftp://x/api/": want an absolute http:// or https:// URI`},
		{"bad gateway name", "config node node\n option id 001f\n option tinc_gateway 'gw-2'\n", f + `:1: node tinc_gateway "gw-2": not a tinc name`},
		{"bad mac", "config node node\n option id 001f\n option mac_prefix16 '6:ab'\n", f + `:1: node mac_prefix16 "6:ab"`},
		{"bad priv", "config node node\n option id 001f\n option priv_ipv4_prefix24 '192.168.157.0'\n", f + `:1: node priv_ipv4_prefix24 "192.168.157.0"`},
		{"syntax", "config node node\n option id '001f\n", f + `:2: unterminated single quote`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ConfigFromUCI(f, []byte(tt.in))
			if err == nil || !strings.HasPrefix(err.Error(), tt.want) {
				t.Errorf("error = %v\nwant prefix %s", err, tt.want)
			}
		})
	}
}

func FuzzConfigFromUCI(f *testing.F) {
	f.Add(firmwareUCI)
	f.Add("config node\n option id 0001\nconfig testbed\n option mgmt_ipv6_prefix48 '::'\n")
	f.Add("config node node\n option id '00ff'\n option tinc_gateway \"a\\\"b\"\nconfig registry r\n option base_uri http://[::1]:8080/api\n")
	f.Fuzz(func(t *testing.T, s string) {
		c, err := ConfigFromUCI("fuzz", []byte(s))
		if err != nil {
			if !strings.HasPrefix(err.Error(), "fuzz") {
				t.Errorf("error does not name the file: %v", err)
			}
			return
		}
		if c.NodeID < addressing.MinNode || c.NodeID > addressing.MaxNode {
			t.Errorf("accepted node id %d", c.NodeID)
		}
		if !c.Prefix.Addr().Is6() || c.Prefix.Bits() != 48 || c.Prefix != c.Prefix.Masked() {
			t.Errorf("accepted prefix %s", c.Prefix)
		}
		if _, err := c.Plan(); err != nil {
			t.Errorf("accepted config has no plan: %v", err)
		}
		if _, err := DesiredFiles(c, []byte(placeholderKey), []Gateway{{Name: "gw", Host: []byte("Address = 1.2.3.4\n")}}, DesiredOptions{}); c.TincName() != "gw" && err != nil {
			t.Errorf("accepted config has no desired files: %v", err)
		}
	})
}

func TestFirmwareRegistryURI(t *testing.T) {
	c, err := ConfigFromUCI("confine", []byte("config node node\n\toption id '001f'\nconfig testbed testbed\n\toption mgmt_ipv6_prefix48 'fd65:fc41:c50f'\n"))
	if err != nil {
		t.Fatal(err)
	}
	if got := c.FirmwareRegistryURI(); got != "http://[fd65:fc41:c50f::2]/api/" || c.RegistryURI != "" {
		t.Errorf("FirmwareRegistryURI %q, RegistryURI %q", got, c.RegistryURI)
	}
}

// Firmware before late 2014 built the URI from server.tcp_proto and
// server.base_path.
func TestFirmwareRegistryURIOfOldImages(t *testing.T) {
	for uci, want := range map[string]string{
		"config server server\n\toption base_path '/api'\n":                              "http://[fdf5:5351:1dfd::2]/api/",
		"config server server\n\toption tcp_proto 'https'\n\toption base_path '/api/'\n": "https://[fdf5:5351:1dfd::2]/api/",
		"config server server\n\toption base_path '/registry'\n":                         "http://[fdf5:5351:1dfd::2]/registry/",
	} {
		c, err := ConfigFromUCI("confine", []byte("config node node\n\toption id '001f'\n"+uci))
		if err != nil {
			t.Fatal(err)
		}
		if got := c.FirmwareRegistryURI(); got != want {
			t.Errorf("%q: %q, want %q", uci, got, want)
		}
	}
	if _, err := ConfigFromUCI("confine", []byte("config node node\n\toption id '001f'\nconfig server server\n\toption tcp_proto 'ftp'\n")); err == nil || !strings.Contains(err.Error(), "tcp_proto") {
		t.Errorf("tcp_proto ftp: %v", err)
	}
}
