package vpn

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"time"

	"github.com/vishvananda/netlink"
)

// ConfigureLink gives the tun link name the address addr (an address with
// its prefix length, e.g. the management /48), sets its MTU and brings it
// up. It waits (until ctx ends) for the link to appear: tincd creates it
// shortly after it starts. It is idempotent: an address already on the
// link is left as it is.
func ConfigureLink(ctx context.Context, name string, addr netip.Prefix, mtu int) error {
	var link netlink.Link
	for {
		l, err := netlink.LinkByName(name)
		if err == nil {
			link = l
			break
		}
		var nf netlink.LinkNotFoundError
		if !errors.As(err, &nf) {
			return fmt.Errorf("find link %s: %w", name, err)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("wait for link %s: %w", name, ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
	if mtu > 0 && link.Attrs().MTU != mtu {
		if err := netlink.LinkSetMTU(link, mtu); err != nil {
			return fmt.Errorf("set mtu %d on %s: %w", mtu, name, err)
		}
	}
	have, err := netlink.AddrList(link, netlink.FAMILY_ALL)
	if err != nil {
		return fmt.Errorf("list addresses of %s: %w", name, err)
	}
	found := false
	for _, a := range have {
		if ip, ok := netip.AddrFromSlice(a.IP); ok && ip.Unmap() == addr.Addr() {
			ones, _ := a.Mask.Size()
			found = ones == addr.Bits()
		}
	}
	if !found {
		ipn := &net.IPNet{IP: addr.Addr().AsSlice(), Mask: net.CIDRMask(addr.Bits(), addr.Addr().BitLen())}
		if err := netlink.AddrReplace(link, &netlink.Addr{IPNet: ipn}); err != nil {
			return fmt.Errorf("add address %s to %s: %w", addr, name, err)
		}
	}
	if err := netlink.LinkSetUp(link); err != nil {
		return fmt.Errorf("set %s up: %w", name, err)
	}
	return nil
}
