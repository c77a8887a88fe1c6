package mesh

import (
	"fmt"
	"slices"

	"github.com/confine-project/mgmtnet/addressing"
)

// Policy is what the registry may grant a member beyond its own address
// and subnet, which the plan fixes. The registry is edited by many people
// (node admins set their own nodes' fields), so a registry field alone
// must never let a member draw other members' traffic:
//
//   - tinc addresses make a member a gateway, a ConnectTo target of every
//     node: only servers (and the controller's legacy gateways) may have
//     them, unless the member is listed in Gateways;
//   - the egress property makes a member announce 0.0.0.0/0: only servers
//     may offer egress, unless the member is listed in Egress (a
//     gateway's egress.nodes).
//
// A grant the policy refuses is dropped with a warning that names the
// member and the field; the member stays, and so does the rest of the
// snapshot. The zero value is the default policy.
type Policy struct {
	// Gateways are tinc names of non-server members that may have tinc
	// addresses.
	Gateways []string
	// Egress are tinc names of non-server members that may offer egress.
	Egress []string
}

// mayGateway reports whether a member of this kind and name may have
// tinc addresses.
func (p Policy) mayGateway(kind addressing.Kind, name string) bool {
	return kind == addressing.KindServer || kind == addressing.KindGateway || slices.Contains(p.Gateways, name)
}

// mayEgress reports whether a member of this kind and name may offer
// egress.
func (p Policy) mayEgress(kind addressing.Kind, name string) bool {
	return kind == addressing.KindServer || slices.Contains(p.Egress, name)
}

// grant applies p to a validated member and returns the warnings for
// what it dropped.
func (p Policy) grant(m *Member) []string {
	var w []string
	if len(m.Addresses) > 0 && !p.mayGateway(m.Kind, m.TincName) {
		w = append(w, fmt.Sprintf("tinc addresses ignored (%d): only servers may be gateways that others connect to, unless the gateway policy lists %s", len(m.Addresses), m.TincName))
		m.Addresses = nil
	}
	if m.DNS.Addr.IsValid() && m.Kind != addressing.KindServer {
		w = append(w, fmt.Sprintf("property %s ignored: only servers may announce a DNS service address", DNSServiceProperty))
		m.DNS = Service{}
	}
	if m.Egress.Offered && !p.mayEgress(m.Kind, m.TincName) {
		w = append(w, fmt.Sprintf("property %s ignored: only servers may offer egress, unless the gateway's egress.nodes lists %s", EgressProperty, m.TincName))
		m.Egress = Egress{}
	}
	return w
}

// BuildOptions adjust Build.
type BuildOptions struct {
	// Keys caches parsed public keys across builds (nil: none).
	Keys *KeyCache
	// Policy is what the registry may grant (zero: the default).
	Policy Policy
}
