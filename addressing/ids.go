package addressing

import (
	"fmt"
	"strconv"
	"strings"
)

// Id ranges of the plan (confine.md §2).
const (
	// MinNode and MaxNode bound node ids. Node id 0 is the block of servers,
	// hosts and legacy gateways; ids above 0xfff0 are reserved.
	MinNode = 1
	MaxNode = 0xfff0
	// MaxID48 is the largest server, host, legacy gateway or slice id: they
	// fill the last three words of an address. Id 0 is never assigned (the
	// registry's ids start at 1).
	MaxID48 = 1<<48 - 1
	// MinContainer and MaxContainer bound the container number that selects
	// a sliver's private IPv4 address inside the node's /24 (.126 is the node).
	MinContainer = 1
	MaxContainer = 125
)

// RangeError reports an id that is syntactically fine but outside its
// allowed range. Its message names the value and the range.
type RangeError struct {
	What  string // "node id", "server id", ...
	Value uint64
	Min   uint64
	Max   uint64
}

func (e *RangeError) Error() string {
	return fmt.Sprintf("%s %d (%#x) out of range: allowed %d..%d (%#x..%#x)",
		e.What, e.Value, e.Value, e.Min, e.Max, e.Min, e.Max)
}

func checkRange(what string, v, lo, hi uint64) error {
	if v < lo || v > hi {
		return &RangeError{What: what, Value: v, Min: lo, Max: hi}
	}
	return nil
}

// CheckNode reports whether n is a valid node id (1..0xfff0).
func CheckNode(n uint64) error { return checkRange("node id", n, MinNode, MaxNode) }

// CheckID48 reports whether id is a valid 48-bit id of the given kind
// (server, host, gateway or sliver's slice): 1..2^48-1.
func CheckID48(what string, id uint64) error {
	return checkRange(what+" id", id, 1, MaxID48)
}

// CheckContainer reports whether c is a valid container number (1..125).
func CheckContainer(c uint64) error {
	return checkRange("container number", c, MinContainer, MaxContainer)
}

// parseUint parses decimal or 0x-prefixed hexadecimal. It returns a
// descriptive error naming what was being parsed.
func parseUint(what, s string, bits int) (uint64, error) {
	t := strings.TrimSpace(s)
	if t == "" {
		return 0, fmt.Errorf("%s: empty", what)
	}
	var (
		v   uint64
		err error
	)
	if len(t) > 2 && (t[:2] == "0x" || t[:2] == "0X") {
		v, err = strconv.ParseUint(t[2:], 16, bits)
	} else {
		v, err = strconv.ParseUint(t, 10, bits)
	}
	if err != nil {
		if ne, ok := err.(*strconv.NumError); ok && ne.Err == strconv.ErrRange {
			return 0, fmt.Errorf("%s %q: larger than %d bits", what, s, bits)
		}
		return 0, fmt.Errorf("%s %q: not a decimal or 0x-prefixed hexadecimal number", what, s)
	}
	return v, nil
}

func isHex(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F') {
			return false
		}
	}
	return s != ""
}

// ParseNodeID parses a node id as a user types it: decimal ("31"),
// 0x-prefixed hexadecimal ("0x1f"), or the node firmware's four hex digits
// ("001f", "00AB"). Four characters are read as the firmware form when they
// start with "0" or contain a hex letter; any other all-decimal string is
// decimal. Case is ignored. The id must be in 1..0xfff0.
func ParseNodeID(s string) (uint16, error) {
	t := strings.TrimSpace(s)
	if len(t) == 4 && isHex(t) && (t[0] == '0' || strings.ContainsAny(t, "abcdefABCDEF")) {
		return ParseFirmwareNodeID(t)
	}
	v, err := parseUint("node id", t, 64)
	if err != nil {
		return 0, fmt.Errorf("%w (also accepted: the firmware's 4 hex digits, e.g. 001f)", err)
	}
	if err := CheckNode(v); err != nil {
		return 0, err
	}
	return uint16(v), nil
}

// ParseFirmwareNodeID parses the node firmware's form of a node id: exactly
// four hex digits in any case, as in UCI's `option id '001f'`.
func ParseFirmwareNodeID(s string) (uint16, error) {
	t := strings.TrimSpace(s)
	if len(t) != 4 || !isHex(t) {
		return 0, fmt.Errorf("firmware node id %q: want exactly 4 hex digits (e.g. 001f)", s)
	}
	v, _ := strconv.ParseUint(t, 16, 16)
	if err := CheckNode(v); err != nil {
		return 0, err
	}
	return uint16(v), nil
}

// FormatFirmwareNodeID formats a node id as the firmware writes it: four
// lower-case hex digits.
func FormatFirmwareNodeID(n uint16) string { return fmt.Sprintf("%04x", n) }

// ParseID48 parses a 48-bit id (server, host, gateway, slice) given in
// decimal or 0x-prefixed hexadecimal; what names it in errors ("server").
func ParseID48(what, s string) (uint64, error) {
	v, err := parseUint(what+" id", s, 64)
	if err != nil {
		return 0, err
	}
	if err := CheckID48(what, v); err != nil {
		return 0, err
	}
	return v, nil
}

// ParseIface parses a sliver interface number (0..255), decimal or 0x hex.
func ParseIface(s string) (uint8, error) {
	v, err := parseUint("iface number", s, 64)
	if err != nil {
		return 0, err
	}
	if err := checkRange("iface number", v, 0, 255); err != nil {
		return 0, err
	}
	return uint8(v), nil
}

// ParseContainer parses a container number (1..125), decimal or 0x hex.
func ParseContainer(s string) (uint8, error) {
	v, err := parseUint("container number", s, 64)
	if err != nil {
		return 0, err
	}
	if err := CheckContainer(v); err != nil {
		return 0, err
	}
	return uint8(v), nil
}
