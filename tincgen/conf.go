package tincgen

import (
	"bytes"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"github.com/confine-project/mgmtnet/mesh"
)

// Conf is the content of tinc.conf.
type Conf struct {
	// Name is this host's tinc name (see ValidName).
	Name string
	// Port is the port tincd listens on; 0 means no Port line.
	Port uint16
	// StrictSubnets makes tincd accept only the subnets listed in host files.
	// The main server sets it: it is the management network's authorization.
	StrictSubnets bool
	// ConnectTo names the hosts to connect to, one line each, in order.
	ConnectTo []string
	// Options are the other "Key = Value" lines, rendered last in order.
	Options []Option
}

// RenderConf returns tinc.conf for c: "Name = <name>", then "Port = <port>" if
// Port is not zero, "StrictSubnets = yes" if set, one "ConnectTo = <name>" line
// per entry and the Options, each line ending in "\n".
func RenderConf(c Conf) []byte {
	var b bytes.Buffer
	fmt.Fprintf(&b, "Name = %s\n", c.Name)
	if c.Port != 0 {
		fmt.Fprintf(&b, "Port = %d\n", c.Port)
	}
	if c.StrictSubnets {
		b.WriteString("StrictSubnets = yes\n")
	}
	for _, n := range c.ConnectTo {
		fmt.Fprintf(&b, "ConnectTo = %s\n", n)
	}
	writeOptions(&b, c.Options)
	return b.Bytes()
}

// ParseConf parses tinc.conf with the same tolerant syntax as ParseHost. Name is
// required and, like every ConnectTo, must be a valid tinc name. StrictSubnets
// takes "yes" or "no" in any case. Other keys are kept in Options.
func ParseConf(b []byte) (Conf, error) {
	items, err := scan(b)
	if err != nil {
		return Conf{}, err
	}
	var (
		c                        Conf
		nameLine, portLine, ssLn int
	)
	for _, it := range items {
		if it.pem != "" {
			return Conf{}, fmt.Errorf("line %d: unexpected PEM block in tinc.conf", it.line)
		}
		switch strings.ToLower(it.key) {
		case "name":
			if nameLine != 0 {
				return Conf{}, fmt.Errorf("line %d: second Name (first on line %d)", it.line, nameLine)
			}
			if !ValidName(it.value) {
				return Conf{}, fmt.Errorf("line %d: invalid tinc name %q", it.line, it.value)
			}
			c.Name, nameLine = it.value, it.line
		case "port":
			if portLine != 0 {
				return Conf{}, fmt.Errorf("line %d: second Port (first on line %d)", it.line, portLine)
			}
			p, err := parsePort(it.value)
			if err != nil {
				return Conf{}, fmt.Errorf("line %d: %w", it.line, err)
			}
			c.Port, portLine = p, it.line
		case "strictsubnets":
			if ssLn != 0 {
				return Conf{}, fmt.Errorf("line %d: second StrictSubnets (first on line %d)", it.line, ssLn)
			}
			switch strings.ToLower(it.value) {
			case "yes":
				c.StrictSubnets = true
			case "no":
				c.StrictSubnets = false
			default:
				return Conf{}, fmt.Errorf("line %d: StrictSubnets must be yes or no, not %q", it.line, it.value)
			}
			ssLn = it.line
		case "connectto":
			if !ValidName(it.value) {
				return Conf{}, fmt.Errorf("line %d: invalid tinc name %q in ConnectTo", it.line, it.value)
			}
			c.ConnectTo = append(c.ConnectTo, it.value)
		default:
			c.Options = append(c.Options, Option{Key: it.key, Value: it.value})
		}
	}
	if nameLine == 0 {
		return Conf{}, errors.New("no Name in tinc.conf")
	}
	return c, nil
}

// RenderTincUp returns the tinc-up script: it brings "$INTERFACE" up with the
// given MTU and adds addr with prefix length bits (the CONFINE plan uses 1400
// and /48), for example "ip -6 addr add fdf5:5351:1dfd:1f::2/48 dev \"$INTERFACE\"".
// The address is written in canonical netip form.
func RenderTincUp(addr netip.Addr, bits, mtu int) []byte {
	return fmt.Appendf(nil, "#!/bin/sh\nip link set \"$INTERFACE\" up mtu %d\nip %s addr add %s/%d dev \"$INTERFACE\"\n",
		mtu, family(addr), addr, bits)
}

// RenderTincDown returns the tinc-down script, which undoes RenderTincUp: it
// deletes addr/bits from "$INTERFACE" and brings the interface down.
func RenderTincDown(addr netip.Addr, bits int) []byte {
	return fmt.Appendf(nil, "#!/bin/sh\nip %s addr del %s/%d dev \"$INTERFACE\"\nip link set \"$INTERFACE\" down\n",
		family(addr), addr, bits)
}

func family(a netip.Addr) string {
	if a.Is4() {
		return "-4"
	}
	return "-6"
}

// ValidName reports whether s is a valid tinc name: not empty, and only ASCII
// letters, digits and "_". Such a name is also a safe file name in a hosts
// directory (no "/", no ".", no leading "-"). It is mesh.ValidTincName.
func ValidName(s string) bool { return mesh.ValidTincName(s) }

// gatewayOptions are the tinc.conf options GatewayConf sets on a gateway
// of the tunnel-server topology (docs/topology.md).
var gatewayOptions = []Option{
	// Forward nothing between peers: no member learns another's Subnets,
	// edges or keys through a gateway, so no member can make another
	// route a prefix to it that its host file (as the gateway holds it)
	// does not grant, and every key exchange has one path.
	{Key: "TunnelServer", Value: "yes"},
	// Bound any relay loop between gateways (see HostOptions.Gateway).
	{Key: "DecrementTTL", Value: "yes"},
	// Retry a lost gateway link within 10 s, not tinc's default of up to
	// 900 s: relays between gateways depend on it.
	{Key: "MaxTimeout", Value: "10"},
}

// GatewayConf returns c as a gateway of the tunnel-server topology runs
// it: TunnelServer and DecrementTTL on, and one ConnectTo per peer (the
// other gateways this one dials) in place of c's own ConnectTo lines.
// Every other line of c is kept in order.
func GatewayConf(c Conf, peers []string) Conf {
	out := Conf{Name: c.Name, Port: c.Port, StrictSubnets: c.StrictSubnets, ConnectTo: slices.Clone(peers)}
	for _, o := range c.Options {
		if !slices.ContainsFunc(gatewayOptions, func(g Option) bool { return strings.EqualFold(g.Key, o.Key) }) {
			out.Options = append(out.Options, o)
		}
	}
	out.Options = append(out.Options, gatewayOptions...)
	return out
}

// IsTunnelServer reports whether c runs tincd with TunnelServer on.
func (c Conf) IsTunnelServer() bool {
	for _, o := range c.Options {
		if strings.EqualFold(o.Key, "TunnelServer") {
			return strings.EqualFold(o.Value, "yes")
		}
	}
	return false
}
