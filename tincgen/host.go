// Package tincgen renders and parses the files of a tinc 1.0 network directory
// (host files, tinc.conf, tinc-up and tinc-down) and syncs a hosts directory to a
// desired set of files, changing only the files whose bytes differ.
//
// Rendering is byte-compatible with the CONFINE controller. Parsing is tolerant:
// it accepts every variant that node firmware, VCT and the controller have written
// (see ParseHost).
//
// HostFiles turns a validated mesh.Testbed into the files of a hosts
// directory; that is the only place the package knows about the testbed model.
//
// The package does not generate or check key pairs, does not run or signal tincd
// (the caller sends one SIGHUP per sync), and does not decide which members belong
// in a directory: validation happened in package mesh.
package tincgen

import (
	"bytes"
	"cmp"
	"crypto/rsa"
	"encoding/pem"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"
)

// DefaultPort is the TCP and UDP port tinc uses when a host file gives none.
const DefaultPort = 655

// Subnet is one tinc Subnet: a prefix and an optional weight (tinc's "#w"
// suffix). A Weight below zero means the weight is not written, and tinc's
// default weight of 10 applies. Use NewSubnet for a subnet without weight.
type Subnet struct {
	Prefix netip.Prefix
	Weight int
}

// NewSubnet returns the Subnet p with no weight written.
func NewSubnet(p netip.Prefix) Subnet {
	return Subnet{Prefix: p, Weight: -1}
}

// String returns the subnet in the controller's format: the masked prefix, IPv6
// with all eight words in lower-case hex without leading zeros and without "::",
// no length for a single address (/32 or /128), and "#w" when Weight >= 0.
// For example "fdf5:5351:1dfd:1f:0:0:0:0/64", "100.64.0.31" and "0.0.0.0/0#10".
// An invalid prefix gives "invalid Subnet".
func (s Subnet) String() string {
	if !s.Prefix.IsValid() {
		return "invalid Subnet"
	}
	p := s.Prefix.Masked()
	a := p.Addr()
	var b strings.Builder
	if a.Is4() {
		b.WriteString(a.String())
	} else {
		w := a.As16()
		for i := 0; i < 16; i += 2 {
			if i > 0 {
				b.WriteByte(':')
			}
			b.WriteString(strconv.FormatUint(uint64(w[i])<<8|uint64(w[i+1]), 16))
		}
	}
	if p.Bits() != a.BitLen() {
		b.WriteByte('/')
		b.WriteString(strconv.Itoa(p.Bits()))
	}
	if s.Weight >= 0 {
		b.WriteByte('#')
		b.WriteString(strconv.Itoa(s.Weight))
	}
	return b.String()
}

// ParseSubnet parses a tinc Subnet value: an IPv4 or IPv6 address with an
// optional "/len" (none means a single address), then an optional "#weight".
// Compressed and full IPv6 forms and upper-case hex are accepted. A prefix with
// host bits set is rejected, as tinc rejects it. MAC subnets (switch mode) are
// not supported.
func ParseSubnet(s string) (Subnet, error) {
	sub := Subnet{Weight: -1}
	addr, weight, hasWeight := strings.Cut(s, "#")
	addr = strings.TrimSpace(addr)
	if hasWeight {
		w, err := strconv.ParseUint(strings.TrimSpace(weight), 10, 31)
		if err != nil {
			return Subnet{}, fmt.Errorf("invalid subnet %q: bad weight", s)
		}
		sub.Weight = int(w)
	}
	var err error
	if strings.Contains(addr, "/") {
		sub.Prefix, err = netip.ParsePrefix(addr)
	} else {
		var a netip.Addr
		a, err = netip.ParseAddr(addr)
		if err == nil && a.Zone() != "" {
			err = errors.New("zone not allowed")
		}
		if err == nil {
			sub.Prefix = netip.PrefixFrom(a, a.BitLen())
		}
	}
	if err != nil {
		return Subnet{}, fmt.Errorf("invalid subnet %q: %w", s, err)
	}
	if sub.Prefix != sub.Prefix.Masked() {
		return Subnet{}, fmt.Errorf("invalid subnet %q: host bits set (want %s)", s, sub.Prefix.Masked())
	}
	return sub, nil
}

// Address is one "Address = host port" line of a host file. Host is an IP
// address or a DNS name, as tinc resolves either.
type Address struct {
	Host string
	Port uint16
}

// Option is a "Key = Value" line that tincgen does not interpret.
type Option struct {
	Key, Value string
}

// Host is the content of one tinc host file.
type Host struct {
	// Addresses are rendered in order, one "Address = host port" line each.
	Addresses []Address
	// Subnets are rendered in order, one "Subnet = ..." line each.
	Subnets []Subnet
	// PublicKey is the PEM text of the RSA public key, with LF line endings and a
	// final "\n". It is empty when the file holds no key.
	PublicKey string
	// Options are the other "Key = Value" lines (for example IndirectData,
	// Compression, PMTU or Ed25519PublicKey), rendered after the Subnets in order.
	Options []Option
}

// Validate reports whether h can be rendered as a host file that means
// what h says: no value may hold a line break or a "#" (which would start a
// new line or a comment), an Address host and an Option key must be single
// words, ports must not be 0, Subnets must be masked prefixes, and the
// public key must be one PEM block and nothing else.
func (h Host) Validate() error {
	for _, a := range h.Addresses {
		if a.Host == "" || strings.ContainsAny(a.Host, " \t\r\n#=") {
			return fmt.Errorf("address %q: not a single host name or IP address", a.Host)
		}
		if a.Port == 0 {
			return fmt.Errorf("address %s: port 0", a.Host)
		}
	}
	for _, s := range h.Subnets {
		if !s.Prefix.IsValid() || s.Prefix.Masked() != s.Prefix {
			return fmt.Errorf("subnet %s: not a masked prefix", s.Prefix)
		}
	}
	for _, o := range h.Options {
		if !validKey(o.Key) || strings.ContainsAny(o.Value, "\r\n#") {
			return fmt.Errorf("option %q = %q: not a single key = value line", o.Key, o.Value)
		}
	}
	if h.PublicKey != "" {
		block, rest := pem.Decode([]byte(h.PublicKey))
		if block == nil || !strings.HasPrefix(h.PublicKey, "-----BEGIN ") || strings.TrimSpace(string(rest)) != "" {
			return fmt.Errorf("public key: not exactly one PEM block")
		}
	}
	return nil
}

// RenderHost returns the host file h in the controller's format: the Address
// lines, the Subnet lines, the Options, then, if there is a key, one empty line
// and the PEM public key ending in exactly one "\n". Its output is deterministic
// and ParseHost(RenderHost(h)) gives h back for any h that ParseHost returns.
func RenderHost(h Host) []byte {
	var b bytes.Buffer
	for _, a := range h.Addresses {
		fmt.Fprintf(&b, "Address = %s %d\n", a.Host, a.Port)
	}
	for _, s := range h.Subnets {
		fmt.Fprintf(&b, "Subnet = %s\n", s)
	}
	writeOptions(&b, h.Options)
	if h.PublicKey != "" {
		b.WriteString("\n")
		b.WriteString(strings.TrimRight(h.PublicKey, "\n"))
		b.WriteString("\n")
	}
	return b.Bytes()
}

func writeOptions(b *bytes.Buffer, opts []Option) {
	for _, o := range opts {
		fmt.Fprintf(b, "%s = %s\n", o.Key, o.Value)
	}
}

// ParseHost parses a tinc host file. It accepts what tinc 1.0 accepts and every
// variant seen in the field:
//   - "Key = Value", "Key=Value" and "Key Value", with keys in any case;
//   - "#" comment lines and blank lines anywhere, LF or CRLF line endings;
//   - "Subnet" values as ParseSubnet takes them;
//   - "Address = host port" and "Address = host"; an address without port gets
//     the port of a "Port" line, or DefaultPort when there is none;
//   - a PEM block ("-----BEGIN X-----" to "-----END X-----") anywhere, with or
//     without a blank line before it, or none at all.
//
// The Port line itself is folded into the addresses and not kept. Keys other
// than Address, Port and Subnet are kept in Options as written, with the value
// trimmed. Errors name the line ("line 3: ...").
func ParseHost(b []byte) (Host, error) {
	items, err := scan(b)
	if err != nil {
		return Host{}, err
	}
	var (
		h        Host
		port     uint16
		portLine int
		noPort   []int // indexes of Addresses without a port
	)
	for _, it := range items {
		if it.pem != "" {
			if h.PublicKey != "" {
				return Host{}, fmt.Errorf("line %d: second public key", it.line)
			}
			h.PublicKey = it.pem
			continue
		}
		switch strings.ToLower(it.key) {
		case "address":
			f := strings.Fields(it.value)
			if len(f) > 2 {
				return Host{}, fmt.Errorf("line %d: invalid address %q: want \"host [port]\"", it.line, it.value)
			}
			a := Address{Host: f[0]}
			if len(f) == 2 {
				p, err := parsePort(f[1])
				if err != nil {
					return Host{}, fmt.Errorf("line %d: invalid address %q: %w", it.line, it.value, err)
				}
				a.Port = p
			} else {
				noPort = append(noPort, len(h.Addresses))
			}
			h.Addresses = append(h.Addresses, a)
		case "port":
			if portLine != 0 {
				return Host{}, fmt.Errorf("line %d: second Port (first on line %d)", it.line, portLine)
			}
			p, err := parsePort(it.value)
			if err != nil {
				return Host{}, fmt.Errorf("line %d: %w", it.line, err)
			}
			port, portLine = p, it.line
		case "subnet":
			s, err := ParseSubnet(it.value)
			if err != nil {
				return Host{}, fmt.Errorf("line %d: %w", it.line, err)
			}
			h.Subnets = append(h.Subnets, s)
		default:
			h.Options = append(h.Options, Option{Key: it.key, Value: it.value})
		}
	}
	if port == 0 {
		port = DefaultPort
	}
	for _, i := range noPort {
		h.Addresses[i].Port = port
	}
	return h, nil
}

// EquivalentHosts reports whether the host files a and b mean the same to
// tincd, whatever their form. They do when both parse (ParseHost) and have:
//   - the same set of Subnets, compared parsed: "fdf5:5351:1dfd:001f:0:0:0:0/64"
//     (the firmware shell's form) and "fdf5:5351:1dfd:1f:0:0:0:0/64" (the
//     controller's) are one Subnet; weights must be equal, and a weight
//     written is not the same as none, even "#10";
//   - the same RSA public key, compared decoded: the PKCS#1 ("RSA PUBLIC
//     KEY") and X.509 SPKI ("PUBLIC KEY") forms of one key, both of which
//     tinc 1.0 reads from a host file, are equal; or no key in either;
//   - the same other lines (Address, Port and every other variable), in the
//     same order (tincd tries Addresses in order), keys compared without
//     regard to case and values with their blank space collapsed.
//
// Comments, blank lines, line endings and where the key stands do not
// count. A file that does not parse, or whose key does not decode, is
// equivalent to no file, not even to itself: only a file whose meaning is
// known is worth keeping.
func EquivalentHosts(a, b []byte) bool {
	ma, ok := meaningOf(a)
	if !ok {
		return false
	}
	mb, ok := meaningOf(b)
	if !ok {
		return false
	}
	return slices.Equal(ma.subnets, mb.subnets) && slices.Equal(ma.lines, mb.lines) &&
		(ma.key == nil) == (mb.key == nil) && (ma.key == nil || ma.key.Equal(mb.key))
}

// hostMeaning is what EquivalentHosts compares of a host file.
type hostMeaning struct {
	subnets []Subnet       // sorted, without repeats
	key     *rsa.PublicKey // nil for none
	lines   []string       // "key = value", key lower-case, in file order
}

// meaningOf reads a host file's meaning; false when it does not parse.
func meaningOf(b []byte) (hostMeaning, bool) {
	h, err := ParseHost(b)
	if err != nil {
		return hostMeaning{}, false
	}
	// ParseHost folds a Port line into the Addresses and drops it, but a
	// Port line also sets the port the node's own tincd listens on: so the
	// lines are compared as written, from the scanner.
	items, err := scan(b)
	if err != nil {
		return hostMeaning{}, false
	}
	var m hostMeaning
	if h.PublicKey != "" {
		if m.key, err = decodePublicKey(h.PublicKey); err != nil {
			return hostMeaning{}, false
		}
	}
	m.subnets = slices.Clone(h.Subnets)
	slices.SortFunc(m.subnets, func(x, y Subnet) int {
		if c := x.Prefix.Compare(y.Prefix); c != 0 {
			return c
		}
		return cmp.Compare(x.Weight, y.Weight)
	})
	m.subnets = slices.Compact(m.subnets)
	for _, it := range items {
		if it.pem != "" || strings.EqualFold(it.key, "Subnet") {
			continue
		}
		m.lines = append(m.lines, strings.ToLower(it.key)+" = "+strings.Join(strings.Fields(it.value), " "))
	}
	return m, true
}

func parsePort(s string) (uint16, error) {
	p, err := strconv.ParseUint(s, 10, 16)
	if err != nil || p == 0 {
		return 0, fmt.Errorf("invalid port %q: want 1 to 65535", s)
	}
	return uint16(p), nil
}

// item is one "Key = Value" line or one PEM block of a tinc file.
type item struct {
	line       int // 1-based line number of the key or the BEGIN line
	key, value string
	pem        string // the PEM text, LF-terminated lines; empty for a key line
}

// scan splits a tinc file into key lines and PEM blocks, the way tinc 1.0's
// read_config_file does: the key ends at the first space, tab or "=", then
// spaces, tabs and one "=" separate it from the value.
func scan(b []byte) ([]item, error) {
	var (
		items    []item
		pemLines []string
		pemStart int
		pemLabel string
		inPEM    bool
	)
	for i, raw := range strings.Split(string(b), "\n") {
		n := i + 1
		line := strings.TrimSpace(raw)
		if inPEM {
			pemLines = append(pemLines, line)
			if !strings.HasPrefix(line, "-----END") {
				continue
			}
			inPEM = false
			if want := "-----END " + pemLabel + "-----"; line != want {
				return nil, fmt.Errorf("line %d: %q does not match %q on line %d", n, line, want, pemStart)
			}
			text := strings.Join(pemLines, "\n") + "\n"
			if blk, rest := pem.Decode([]byte(text)); blk == nil || len(bytes.TrimSpace(rest)) != 0 {
				return nil, fmt.Errorf("line %d: invalid PEM block", pemStart)
			}
			items = append(items, item{line: pemStart, pem: text})
			continue
		}
		switch {
		case line == "" || line[0] == '#':
			continue
		case strings.HasPrefix(line, "-----BEGIN"):
			label, ok := strings.CutPrefix(line, "-----BEGIN ")
			label, ok2 := strings.CutSuffix(label, "-----")
			if !ok || !ok2 || label == "" {
				return nil, fmt.Errorf("line %d: invalid PEM header %q", n, line)
			}
			inPEM, pemStart, pemLabel, pemLines = true, n, label, []string{line}
			continue
		case strings.HasPrefix(line, "-----END"):
			return nil, fmt.Errorf("line %d: %q without BEGIN", n, line)
		}
		key, value, err := splitKeyValue(line)
		if err != nil {
			return nil, fmt.Errorf("line %d: %w", n, err)
		}
		items = append(items, item{line: n, key: key, value: value})
	}
	if inPEM {
		return nil, fmt.Errorf("line %d: -----BEGIN %s----- without -----END", pemStart, pemLabel)
	}
	return items, nil
}

func splitKeyValue(line string) (key, value string, err error) {
	i := strings.IndexAny(line, " \t=")
	if i < 0 {
		return "", "", fmt.Errorf("%q is not a \"Key = Value\" line", line)
	}
	key = line[:i]
	if !validKey(key) {
		return "", "", fmt.Errorf("%q is not a \"Key = Value\" line", line)
	}
	rest := strings.TrimLeft(line[i:], " \t")
	rest = strings.TrimPrefix(rest, "=")
	value = strings.TrimSpace(rest)
	if value == "" {
		return "", "", fmt.Errorf("no value for %s", key)
	}
	return key, value, nil
}

// validKey reports whether s looks like a tinc variable name: a letter, then
// letters, digits, "_", "." or "-". The rule is stricter than tinc's to catch
// garbage early; every variable tinc knows passes it.
func validKey(s string) bool {
	if s == "" || !isLetter(s[0]) {
		return false
	}
	for i := 1; i < len(s); i++ {
		c := s[i]
		if !isLetter(c) && !('0' <= c && c <= '9') && c != '_' && c != '.' && c != '-' {
			return false
		}
	}
	return true
}

func isLetter(c byte) bool { c &^= 0x20; return 'A' <= c && c <= 'Z' }
