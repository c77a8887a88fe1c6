// Package mesh is the testbed model: the tinc members of a CONFINE
// management network (nodes, servers, hosts) as validated, immutable,
// sorted snapshots, and the difference between two snapshots.
//
// Data enters through Build: candidates decoded from the registry (or any
// other source) are validated one by one against the addressing plan, and
// a bad candidate is rejected with a reason that names it while the rest
// go on. Nothing that fails validation is in a Testbed, so everything
// downstream (host files, DNS, routes) may trust what it reads.
//
// The package is pure: standard library, go4.org/netipx and addressing
// only. It does not fetch, write files or log.
package mesh

import (
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	"github.com/confine-project/mgmtnet/addressing"
)

// DefaultTincPort is tinc's port when the registry gives none.
const DefaultTincPort = 655

// TincAddress is one address at which a gateway accepts tinc connections.
type TincAddress struct {
	Host   string // an IPv4 or IPv6 literal, or a host name
	Port   uint16
	Island uint64 // the island this address is reachable from; 0 for none
}

// Member is one validated tinc member of the management network.
// Members are values; the slices and map they hold must not be modified.
type Member struct {
	Kind       addressing.Kind
	ID         uint64
	Name       string         // the registry's free-text name (may be empty)
	TincName   string         // [A-Za-z0-9_]+, also the host file's name
	Addr       netip.Addr     // management address
	Subnets    []netip.Prefix // what it may announce in tinc, sorted
	PubKey     string         // PEM, LF line endings, ending in "\n"
	Addresses  []TincAddress  // public tinc addresses; non-empty for gateways
	Island     uint64         // the member's island; 0 for none
	Properties map[string]string
	// Egress is the member's offer of Internet egress, from its
	// EgressProperty.
	Egress Egress
	// DNS is the DNS service address the member announces, from its
	// DNSServiceProperty (servers only, see Policy).
	DNS Service
	// Capacity is how many members may be assigned to the member when it
	// is a gateway, from its CapacityProperty; 0 means DefaultCapacity.
	Capacity int
}

// IsGateway reports whether others can connect to the member: it has tinc
// addresses.
func (m *Member) IsGateway() bool { return len(m.Addresses) > 0 }

// Label names the member in messages: "node 31 (node_31)".
func (m *Member) Label() string { return label(m.Kind, m.ID, m.TincName) }

func label(kind addressing.Kind, id uint64, tincName string) string {
	s := kind.String() + " " + strconv.FormatUint(id, 10)
	if tincName != "" {
		s += " (" + tincName + ")"
	}
	return s
}

// Equal reports whether two members are the same in every field.
func (m *Member) Equal(o *Member) bool {
	if m.Kind != o.Kind || m.ID != o.ID || m.Name != o.Name || m.TincName != o.TincName ||
		m.Addr != o.Addr || m.PubKey != o.PubKey || m.Island != o.Island || m.Egress != o.Egress || m.DNS != o.DNS || m.Capacity != o.Capacity ||
		len(m.Properties) != len(o.Properties) ||
		!slices.Equal(m.Subnets, o.Subnets) || !slices.Equal(m.Addresses, o.Addresses) {
		return false
	}
	for k, v := range m.Properties {
		if ov, ok := o.Properties[k]; !ok || ov != v {
			return false
		}
	}
	return true
}

// ValidTincName reports whether s follows tinc's rule for names: one or
// more of [A-Za-z0-9_]. Such a name can never be a path ("../x").
func ValidTincName(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '_') {
			return false
		}
	}
	return true
}

// validHostName reports whether s is a syntactically valid DNS host name
// (RFC 1123 labels), which is what may follow "Address =" in a host file
// besides an IP literal. It rejects anything with spaces or control
// characters, so a registry value can never inject a line into a host file.
func validHostName(s string) bool {
	s = strings.TrimSuffix(s, ".")
	if s == "" || len(s) > 253 {
		return false
	}
	for _, l := range strings.Split(s, ".") {
		if l == "" || len(l) > 63 || l[0] == '-' || l[len(l)-1] == '-' {
			return false
		}
		for i := 0; i < len(l); i++ {
			c := l[i]
			if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-') {
				return false
			}
		}
	}
	return true
}

// Problem is a candidate that was rejected or skipped, or a part of a
// member that was dropped, with the reason.
type Problem struct {
	Kind     addressing.Kind
	ID       uint64
	TincName string
	Reason   string
	// Conflict marks a rejection for a collision with another member (a
	// tinc name, an id, overlapping Subnets): it may end when the other
	// member changes, unlike every other problem, which is the member's
	// own.
	Conflict bool `json:",omitempty"`
}

// String names the member and gives the reason: "node 31 (node_31): ...".
func (p Problem) String() string {
	return fmt.Sprintf("%s: %s", label(p.Kind, p.ID, p.TincName), p.Reason)
}
