package loopback

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/confine-project/mgmtnet/internal/nft/nfttest"
)

// fakeNetlink is a strict in-memory Netlink with one link, lo. Like the
// kernel it refuses another link (ENODEV) and deleting an address that is
// not there, with this length (EADDRNOTAVAIL); AddrReplace of an address
// that is there changes it in place. It records every write; fail makes
// a method fail.
type fakeNetlink struct {
	addrs  []netip.Prefix
	writes []string
	fail   map[string]error
}

var _ Netlink = (*fakeNetlink)(nil)

func (f *fakeNetlink) LinkByName(name string) (netlink.Link, error) {
	if err := f.fail["LinkByName"]; err != nil {
		return nil, err
	}
	if name != "lo" {
		return nil, fmt.Errorf("fake netlink: link %s: %w", name, unix.ENODEV)
	}
	return &netlink.Device{LinkAttrs: netlink.LinkAttrs{Name: "lo", Index: 1}}, nil
}

func (f *fakeNetlink) check(l netlink.Link) error {
	if l == nil || l.Attrs().Index != 1 {
		return fmt.Errorf("fake netlink: not lo: %w", unix.ENODEV)
	}
	return nil
}

func (f *fakeNetlink) AddrList(l netlink.Link, family int) ([]netlink.Addr, error) {
	if err := f.fail["AddrList"]; err != nil {
		return nil, err
	}
	if err := f.check(l); err != nil {
		return nil, err
	}
	if family != netlink.FAMILY_ALL {
		return nil, fmt.Errorf("fake netlink: AddrList(family %d) not supported", family)
	}
	var out []netlink.Addr
	for _, p := range f.addrs {
		out = append(out, netlink.Addr{IPNet: ipNet(p)})
	}
	return out, nil
}

func (f *fakeNetlink) AddrReplace(l netlink.Link, a *netlink.Addr) error {
	p, _ := prefixOf(*a)
	f.writes = append(f.writes, "AddrReplace lo "+p.String())
	if err := f.fail["AddrReplace"]; err != nil {
		return err
	}
	if err := f.check(l); err != nil {
		return err
	}
	if i := slices.IndexFunc(f.addrs, func(h netip.Prefix) bool { return h.Addr() == p.Addr() }); i >= 0 {
		f.addrs[i] = p
		return nil
	}
	f.addrs = append(f.addrs, p)
	return nil
}

func (f *fakeNetlink) AddrDel(l netlink.Link, a *netlink.Addr) error {
	p, _ := prefixOf(*a)
	f.writes = append(f.writes, "AddrDel lo "+p.String())
	if err := f.fail["AddrDel"]; err != nil {
		return err
	}
	if err := f.check(l); err != nil {
		return err
	}
	i := slices.Index(f.addrs, p)
	if i < 0 {
		return fmt.Errorf("fake netlink: delete %s: %w", p, unix.EADDRNOTAVAIL)
	}
	f.addrs = slices.Delete(f.addrs, i, i+1)
	return nil
}

func (f *fakeNetlink) take() []string {
	w := f.writes
	f.writes = nil
	return w
}

// state prints lo's addresses, sorted.
func state(t *testing.T, nl Netlink) string {
	t.Helper()
	lo, err := nl.LinkByName("lo")
	if err != nil {
		t.Fatal(err)
	}
	have, err := nl.AddrList(lo, netlink.FAMILY_ALL)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, h := range have {
		p, _ := prefixOf(h)
		out = append(out, p.String())
	}
	slices.Sort(out)
	return strings.Join(out, " ")
}

var (
	svc   = netip.MustParseAddr("fdf5:5351:1dfd:0:53::53")
	svc2  = netip.MustParseAddr("fdf5:5351:1dfd:0:53::54")
	other = netip.MustParseAddr("fdf5:5351:1dfd:0:53::55")
)

func TestService(t *testing.T) {
	s := NewService(svc2, svc, svc, netip.MustParseAddr("::ffff:192.0.2.53"))
	if d := cmp.Diff([]netip.Addr{netip.MustParseAddr("192.0.2.53"), svc, svc2}, s.Addrs, cmp.Comparer(func(a, b netip.Addr) bool { return a == b })); d != "" {
		t.Errorf("NewService (-want +got):\n%s", d)
	}
	if !s.Equal(Service{Addrs: []netip.Addr{svc, svc2, netip.MustParseAddr("192.0.2.53")}}) || s.Equal(Service{}) || !(Service{}).IsZero() {
		t.Error("Equal, IsZero")
	}
	for _, bad := range []string{"::", "::1", "127.0.0.1", "ff02::1", "fe80::1", "fe80::1%lo"} {
		if err := NewService(netip.MustParseAddr(bad)).Validate(); err == nil || !strings.HasPrefix(err.Error(), "loopback: service address") {
			t.Errorf("Validate(%s) = %v", bad, err)
		}
	}
	if err := (Service{Addrs: []netip.Addr{{}}}).Validate(); err == nil {
		t.Error("Validate of the zero Addr succeeded")
	}
}

// Steps against the fake: add, again, change (add before delete),
// cleanup, and foreign addresses (lo's own, an operator's, ours at
// another length) untouched throughout.
func TestApply(t *testing.T) {
	foreign := []netip.Prefix{netip.MustParsePrefix("127.0.0.1/8"), netip.MustParsePrefix("::1/128"),
		netip.PrefixFrom(other, 128), netip.MustParsePrefix("fdf5:5351:1dfd:1::1/64")}
	f := &fakeNetlink{addrs: slices.Clone(foreign)}
	a := NewApplier(f, nil)
	const base = "127.0.0.1/8 ::1/128 fdf5:5351:1dfd:0:53::55/128 fdf5:5351:1dfd:1::1/64"
	for _, s := range []struct {
		name   string
		want   Service
		writes []string
		state  string
	}{
		{"add", NewService(svc), []string{"AddrReplace lo fdf5:5351:1dfd:0:53::53/128"}, base + " fdf5:5351:1dfd:0:53::53/128"},
		{"again", NewService(svc), nil, base + " fdf5:5351:1dfd:0:53::53/128"},
		{"change", NewService(svc2), []string{"AddrReplace lo fdf5:5351:1dfd:0:53::54/128", "AddrDel lo fdf5:5351:1dfd:0:53::53/128"},
			base + " fdf5:5351:1dfd:0:53::54/128"},
		{"cleanup", Service{}, []string{"AddrDel lo fdf5:5351:1dfd:0:53::54/128"}, base},
		{"cleanup again", Service{}, nil, base},
	} {
		if err := a.Apply(t.Context(), s.want); err != nil {
			t.Fatalf("%s: Apply: %v", s.name, err)
		}
		if d := cmp.Diff(s.writes, f.take()); d != "" {
			t.Errorf("%s: writes (-want +got):\n%s", s.name, d)
		}
		want := strings.Fields(s.state)
		slices.Sort(want)
		if got := state(t, f); got != strings.Join(want, " ") {
			t.Errorf("%s: lo has %s, want %s", s.name, got, want)
		}
	}
}

// An applier built with the configured address (Cleanup, a daemon after
// a SIGKILL) removes it, and only it; one built with nothing removes
// nothing, not even an address it would have claimed.
func TestApplyClaimed(t *testing.T) {
	f := &fakeNetlink{addrs: []netip.Prefix{netip.MustParsePrefix("::1/128"), netip.PrefixFrom(svc, 128), netip.PrefixFrom(other, 128)}}
	if err := NewApplier(f, nil).Apply(t.Context(), Service{}); err != nil {
		t.Fatal(err)
	}
	if w := f.take(); len(w) != 0 {
		t.Errorf("an applier that owns nothing wrote %v", w)
	}
	if err := NewApplier(f, nil, svc, netip.Addr{}).Apply(t.Context(), Service{}); err != nil {
		t.Fatal(err)
	}
	if d := cmp.Diff([]string{"AddrDel lo fdf5:5351:1dfd:0:53::53/128"}, f.take()); d != "" {
		t.Errorf("writes (-want +got):\n%s", d)
	}
	if got := state(t, f); got != "::1/128 fdf5:5351:1dfd:0:53::55/128" {
		t.Errorf("lo has %s", got)
	}
	// The claimed address at another length is not ours.
	f.addrs = append(f.addrs, netip.PrefixFrom(svc, 64))
	if err := NewApplier(f, nil, svc).Apply(t.Context(), Service{}); err != nil || len(f.take()) != 0 {
		t.Errorf("Apply with %s/64 on lo: %v", svc, err)
	}
}

// An address of ours that is gone by the time Apply deletes it
// (EADDRNOTAVAIL) is no error.
func TestApplyGoneMeanwhile(t *testing.T) {
	f := &fakeNetlink{}
	a := NewApplier(f, nil)
	if err := a.Apply(t.Context(), NewService(svc)); err != nil {
		t.Fatal(err)
	}
	f.fail = map[string]error{"AddrDel": fmt.Errorf("fake: %w", unix.EADDRNOTAVAIL)}
	if err := a.Apply(t.Context(), Service{}); err != nil {
		t.Errorf("Apply(zero) with the address gone: %v", err)
	}
}

// Every failure is returned wrapped, naming what failed; the kernel's
// errno shows through. An invalid want changes nothing.
func TestApplyErrors(t *testing.T) {
	eperm := fmt.Errorf("fake: %w", unix.EPERM)
	for _, tt := range []struct {
		method       string
		before, want Service
		err          string
	}{
		{"LinkByName", Service{}, NewService(svc), "loopback: find link lo: fake: operation not permitted"},
		{"AddrList", Service{}, NewService(svc), "loopback: list addresses of lo: fake: operation not permitted"},
		{"AddrReplace", Service{}, NewService(svc), "loopback: add fdf5:5351:1dfd:0:53::53/128 to lo: fake: operation not permitted"},
		{"AddrDel", NewService(svc), Service{}, "loopback: delete fdf5:5351:1dfd:0:53::53/128 from lo: fake: operation not permitted"},
	} {
		f := &fakeNetlink{}
		a := NewApplier(f, nil)
		if err := a.Apply(t.Context(), tt.before); err != nil {
			t.Fatal(err)
		}
		f.fail = map[string]error{tt.method: eperm}
		if err := a.Apply(t.Context(), tt.want); !errors.Is(err, unix.EPERM) || err.Error() != tt.err {
			t.Errorf("%s: Apply = %v, want %q", tt.method, err, tt.err)
		}
	}
	f := &fakeNetlink{}
	if err := NewApplier(f, nil).Apply(t.Context(), NewService(netip.MustParseAddr("::1"))); err == nil || len(f.writes) != 0 {
		t.Errorf("an invalid Apply: %v, writes %v", err, f.writes)
	}
}

// The same, against lo of a throwaway network namespace: the kernel
// agrees with the fake on what is listed, added and deleted.
func TestApplyKernel(t *testing.T) {
	ns := nfttest.New(t)
	ns.AddAddr(t, "lo", netip.PrefixFrom(other, 128))
	a := NewApplier(ns.Netlink, nil)
	base := state(t, ns.Netlink)
	for _, s := range []struct {
		want  Service
		state string
	}{
		{NewService(svc), "fdf5:5351:1dfd:0:53::53/128"},
		{NewService(svc), "fdf5:5351:1dfd:0:53::53/128"},
		{NewService(svc2, netip.MustParseAddr("192.0.2.53")), "192.0.2.53/32 fdf5:5351:1dfd:0:53::54/128"},
		{Service{}, ""},
	} {
		if err := a.Apply(t.Context(), s.want); err != nil {
			t.Fatalf("Apply(%v): %v", s.want.Addrs, err)
		}
		got := strings.Fields(state(t, ns.Netlink))
		got = slices.DeleteFunc(got, func(x string) bool { return strings.Contains(base, x) })
		if strings.Join(got, " ") != s.state {
			t.Errorf("after Apply(%v): ours on lo %q, want %q", s.want.Addrs, got, s.state)
		}
		if !strings.Contains(state(t, ns.Netlink), other.String()) {
			t.Errorf("Apply(%v) removed a foreign address", s.want.Addrs)
		}
	}
	// Gone behind our back: removing it again is no error.
	if err := a.Apply(t.Context(), NewService(svc)); err != nil {
		t.Fatal(err)
	}
	lo, _ := ns.Netlink.LinkByName("lo")
	if err := ns.Netlink.AddrDel(lo, &netlink.Addr{IPNet: ipNet(host(svc))}); err != nil {
		t.Fatal(err)
	}
	if err := a.Apply(t.Context(), Service{}); err != nil {
		t.Errorf("Apply(zero) with the address gone: %v", err)
	}
	// The kernel's errno for deleting what is not there is the one Apply
	// tolerates.
	if err := ns.Netlink.AddrDel(lo, &netlink.Addr{IPNet: ipNet(host(svc))}); !errors.Is(err, unix.EADDRNOTAVAIL) {
		t.Errorf("AddrDel of a missing address = %v, want EADDRNOTAVAIL", err)
	}
}
