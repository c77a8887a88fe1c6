// Package loopback holds a gateway's service addresses on the loopback
// interface: the DNS service address (dns.service_address) that several
// gateways announce into the mesh as a /128, and that each must also
// hold itself, so that what tinc routes to it reaches the local DNS
// server.
//
// Service is the desired state and Applier makes lo match it. The zero
// Service asks for none of ours: applying it removes them (daemon stop,
// --cleanup).
//
// Which addresses on lo are ours: the kernel has no owner mark for an
// address that every target supports (IFA_PROTO needs Linux 6.3), so an
// Applier takes as its own only the addresses it was told about: those
// it was built with (the configured service address, which --cleanup
// also knows) and those it applied since. It never removes any other
// address on lo, nor changes one of another length. The configured
// service address therefore belongs to mgmtnet: do not put it on lo by
// other means.
//
// What it does not do: announce the address into the mesh (the gateway's
// host file does), or route it (tinc does).
package loopback

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"slices"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Iface is the loopback interface.
const Iface = "lo"

// Service is the desired set of service addresses on lo, each held as a
// host address (/128, or /32 for IPv4). Build it with NewService, which
// sorts and deduplicates. The zero value asks for none.
type Service struct {
	Addrs []netip.Addr
}

// NewService returns the Service that holds addrs, sorted and
// deduplicated (IPv4-mapped IPv6 addresses become IPv4).
func NewService(addrs ...netip.Addr) Service {
	return Service{Addrs: addrs}.normalize()
}

func (s Service) normalize() Service {
	out := make([]netip.Addr, 0, len(s.Addrs))
	for _, a := range s.Addrs {
		out = append(out, a.Unmap())
	}
	slices.SortFunc(out, netip.Addr.Compare)
	return Service{Addrs: slices.Compact(out)}
}

// IsZero reports whether s asks for no address.
func (s Service) IsZero() bool { return len(s.Addrs) == 0 }

// Equal reports whether s and o ask for the same addresses.
func (s Service) Equal(o Service) bool { return slices.Equal(s.normalize().Addrs, o.normalize().Addrs) }

// Validate reports what is wrong with s, if anything: every address must
// be a unicast address without a zone, and not a loopback one.
func (s Service) Validate() error {
	var errs []error
	for _, a := range s.Addrs {
		if !a.IsValid() || a.Zone() != "" || a.IsUnspecified() || a.IsLoopback() || a.IsMulticast() || a.IsLinkLocalUnicast() {
			errs = append(errs, fmt.Errorf("service address %v: want a unicast address without a zone", a))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("loopback: %w", err)
	}
	return nil
}

// Netlink is what the Applier needs of rtnetlink. *netlink.Handle
// implements it (its zero value, &netlink.Handle{}, works in the calling
// thread's network namespace; netlink.NewHandleAt for another).
type Netlink interface {
	LinkByName(name string) (netlink.Link, error)
	AddrList(link netlink.Link, family int) ([]netlink.Addr, error)
	AddrReplace(link netlink.Link, addr *netlink.Addr) error
	AddrDel(link netlink.Link, addr *netlink.Addr) error
}

var _ Netlink = (*netlink.Handle)(nil)

// Applier makes the service addresses on lo match a Service. It touches
// only addresses of its own (see the package doc).
type Applier struct {
	nl  Netlink
	log *slog.Logger
	// claimed are ours from the start; applied are those Apply put on lo
	// (or found there when wanted) and has not removed since.
	claimed, applied map[netip.Addr]bool
}

// NewApplier returns an Applier that works through nl and takes ours as
// its own from the start: for --cleanup and for a daemon after a crash,
// the configured service address. Invalid ones are ignored. A nil log
// discards.
func NewApplier(nl Netlink, log *slog.Logger, ours ...netip.Addr) *Applier {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	a := &Applier{nl: nl, log: log, claimed: map[netip.Addr]bool{}, applied: map[netip.Addr]bool{}}
	for _, o := range NewService(ours...).Addrs {
		if (Service{Addrs: []netip.Addr{o}}).Validate() == nil {
			a.claimed[o] = true
		}
	}
	return a
}

// Apply makes lo hold exactly the addresses of want among ours (calls
// must not overlap). It observes lo's addresses and changes only what
// differs, so applying the same value twice changes nothing: it adds the
// wanted addresses that are missing, then removes the addresses of ours
// that are not wanted. An invalid want changes nothing. Apply stops at
// the first error and returns it; the next Apply converges.
func (a *Applier) Apply(ctx context.Context, want Service) error {
	if err := want.Validate(); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	want = want.normalize()
	if want.IsZero() && len(a.claimed) == 0 && len(a.applied) == 0 {
		return nil // nothing is ours: nothing to look at
	}
	lo, err := a.nl.LinkByName(Iface)
	if err != nil {
		return fmt.Errorf("loopback: find link %s: %w", Iface, err)
	}
	have, err := a.nl.AddrList(lo, netlink.FAMILY_ALL)
	if err != nil {
		return fmt.Errorf("loopback: list addresses of %s: %w", Iface, err)
	}
	for _, w := range want.Addrs {
		a.applied[w] = true // ours from now on, added or found
		if slices.ContainsFunc(have, func(h netlink.Addr) bool { p, ok := prefixOf(h); return ok && p == host(w) }) {
			continue
		}
		if err := a.nl.AddrReplace(lo, &netlink.Addr{IPNet: ipNet(host(w))}); err != nil {
			return fmt.Errorf("loopback: add %s to %s: %w", host(w), Iface, err)
		}
		a.log.Info("service address added", "addr", w.String(), "link", Iface)
	}
	// Deleting in a stable order keeps logs and tests deterministic.
	slices.SortFunc(have, func(x, y netlink.Addr) int {
		px, _ := prefixOf(x)
		py, _ := prefixOf(y)
		return cmp.Or(px.Addr().Compare(py.Addr()), cmp.Compare(px.Bits(), py.Bits()))
	})
	for _, h := range have {
		p, ok := prefixOf(h)
		if !ok || !a.ours(p.Addr()) || slices.Contains(want.Addrs, p.Addr()) {
			continue
		}
		if p != host(p.Addr()) {
			continue // ours is the host address; another length is someone else's
		}
		if err := a.nl.AddrDel(lo, &h); err != nil && !errors.Is(err, unix.EADDRNOTAVAIL) {
			// EADDRNOTAVAIL: gone already.
			return fmt.Errorf("loopback: delete %s from %s: %w", p, Iface, err)
		}
		delete(a.applied, p.Addr())
		a.log.Info("service address removed", "addr", p.Addr().String(), "link", Iface)
	}
	for o := range a.applied {
		if !slices.Contains(want.Addrs, o) {
			delete(a.applied, o) // not on lo any more
		}
	}
	return nil
}

func (a *Applier) ours(addr netip.Addr) bool { return a.claimed[addr] || a.applied[addr] }

// host is a as a host prefix.
func host(a netip.Addr) netip.Prefix { return netip.PrefixFrom(a, a.BitLen()) }

func ipNet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}

// prefixOf is the address of h with its prefix length, IPv4 as IPv4.
func prefixOf(h netlink.Addr) (netip.Prefix, bool) {
	if h.IPNet == nil {
		return netip.Prefix{}, false
	}
	a, ok := netip.AddrFromSlice(h.IP)
	if !ok {
		return netip.Prefix{}, false
	}
	ones, bits := h.Mask.Size()
	a = a.Unmap()
	if bits == 128 && a.Is4() {
		ones -= 96
	}
	return netip.PrefixFrom(a, ones), true
}
