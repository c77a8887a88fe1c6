package vtb

import (
	"fmt"
	"net/netip"
)

// DNSZone is the virtual testbed's management zone (Spec.DNS).
const DNSZone = "mgmt.vtb."

// DNSServiceAddr is the well-known DNS service address every gateway
// announces (Spec.DNS), P:0:53::53: word 5 of the node-0 block is 0x0053, which the
// addressing plan assigns to nothing.
func (tb *Testbed) DNSServiceAddr() netip.Addr {
	a := tb.Plan.Mgmt().Addr().As16()
	a[8], a[9] = 0x00, 0x53 // P:0:53::53
	a[15] = 0x53
	return netip.AddrFrom16(a)
}

// dnsYAML is a gateway config's dns section.
func (tb *Testbed) dnsYAML(srv *Server) string {
	if !tb.Spec.DNS {
		return ""
	}
	weight := 10
	if srv != tb.Server {
		weight = 20
	}
	return fmt.Sprintf(`dns:
  enabled: true
  zone: %s
  service_address: %s
  service_weight: %d
`, DNSZone, tb.DNSServiceAddr(), weight)
}
