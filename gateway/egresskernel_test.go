package gateway

import (
	"testing"

	"github.com/confine-project/mgmtnet/gateway/egress"
	"github.com/confine-project/mgmtnet/vpn"
)

// The gateway's egress route and node egress's routes and rules share a
// protocol number: each keeps to its own tables (main, and node egress's
// own), and a machine that is both must not mistake one for the other's
// foreign state.
func TestEgressRouteProtocol(t *testing.T) {
	if egress.RouteProtocol != vpn.EgressProtocol {
		t.Errorf("egress.RouteProtocol = %d, vpn.EgressProtocol = %d", egress.RouteProtocol, vpn.EgressProtocol)
	}
}
