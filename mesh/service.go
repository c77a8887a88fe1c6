package mesh

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"

	"github.com/confine-project/mgmtnet/addressing"
)

// DNSServiceProperty is the registry property with which a server
// declares the DNS service address it announces into the mesh, e.g.
// "fdf5:5351:1dfd:0:53::53,weight=10". Nodes route to the service only
// through what the registry declares (a node's tinc accepts only the
// Subnets its host files grant), so the gateway's own dns.service_address
// must be declared here too for nodes to use it.
const DNSServiceProperty = "mgmtnet.dns"

// Service is a well-known address a member announces at a weight (lower
// is preferred). The zero value is none.
type Service struct {
	Addr   netip.Addr
	Weight int
}

// ParseService parses a service declaration: an IPv6 address, then
// optionally ",weight=N" (N in 0..MaxEgressWeight; default
// DefaultEgressWeight). The address must be in the plan's management /48
// and must not be an address the plan assigns to a member or sliver.
func ParseService(plan addressing.Plan, s string) (Service, error) {
	addrStr, rest, _ := strings.Cut(strings.TrimSpace(s), ",")
	a, err := netip.ParseAddr(strings.TrimSpace(addrStr))
	if err != nil || !a.Is6() || a.Is4In6() || a.Zone() != "" {
		return Service{}, fmt.Errorf("service declaration %q: want an IPv6 address, then optionally ,weight=N", s)
	}
	if !plan.Mgmt().Contains(a) {
		return Service{}, fmt.Errorf("service address %s is outside the management prefix %s", a, plan.Mgmt())
	}
	if e, err := plan.Reverse(a); err == nil {
		return Service{}, fmt.Errorf("service address %s is the address of %s", a, e)
	}
	svc := Service{Addr: a, Weight: DefaultEgressWeight}
	if rest != "" {
		k, v, ok := strings.Cut(strings.TrimSpace(rest), "=")
		w, err := strconv.Atoi(strings.TrimSpace(v))
		if !ok || strings.TrimSpace(k) != "weight" || err != nil || w < 0 || w > MaxEgressWeight {
			return Service{}, fmt.Errorf("service declaration %q: %q: want weight=N with N in 0..%d", s, rest, MaxEgressWeight)
		}
		svc.Weight = w
	}
	return svc, nil
}

// dnsServiceOf reads a candidate's DNS service declaration. A bad one is
// a warning: the member stays, without it.
func dnsServiceOf(plan addressing.Plan, props map[string]string) (Service, string) {
	v, ok := props[DNSServiceProperty]
	if !ok {
		return Service{}, ""
	}
	s, err := ParseService(plan, v)
	if err != nil {
		return Service{}, fmt.Sprintf("property %s ignored: %v", DNSServiceProperty, err)
	}
	return s, ""
}
