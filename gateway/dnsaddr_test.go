package gateway

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/confine-project/mgmtnet/addressing"
	"github.com/confine-project/mgmtnet/gateway/loopback"
)

// fakeLoopback is a strict in-memory loopback.Netlink: lo only, deleting
// what is not there is EADDRNOTAVAIL. It prints lo's addresses, sorted.
type fakeLoopback struct {
	mu    sync.Mutex
	addrs []string
}

var _ loopback.Netlink = (*fakeLoopback)(nil)

func (f *fakeLoopback) LinkByName(name string) (netlink.Link, error) {
	if name != "lo" {
		return nil, fmt.Errorf("fake loopback: link %s: %w", name, unix.ENODEV)
	}
	return &netlink.Device{LinkAttrs: netlink.LinkAttrs{Name: "lo", Index: 1}}, nil
}

func (f *fakeLoopback) AddrList(l netlink.Link, family int) ([]netlink.Addr, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []netlink.Addr
	for _, s := range f.addrs {
		a, err := netlink.ParseAddr(s)
		if err != nil {
			return nil, err
		}
		out = append(out, *a)
	}
	return out, nil
}

func (f *fakeLoopback) AddrReplace(l netlink.Link, a *netlink.Addr) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if !slices.Contains(f.addrs, a.IPNet.String()) {
		f.addrs = append(f.addrs, a.IPNet.String())
	}
	return nil
}

func (f *fakeLoopback) AddrDel(l netlink.Link, a *netlink.Addr) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	i := slices.Index(f.addrs, a.IPNet.String())
	if i < 0 {
		return fmt.Errorf("fake loopback: delete %s: %w", a.IPNet, unix.EADDRNOTAVAIL)
	}
	f.addrs = slices.Delete(f.addrs, i, i+1)
	return nil
}

func (f *fakeLoopback) String() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	s := slices.Clone(f.addrs)
	slices.Sort(s)
	return strings.Join(s, " ")
}

// The DNS service address is on lo while DNS serves with it, and only
// then: a reload that changes it swaps it, one that disables DNS removes
// it, and so does the daemon's stop. An address on lo that is not the
// service address stays.
func TestDaemonServiceAddress(t *testing.T) {
	svc := serviceExample(addressing.DefaultMgmtPrefix())
	other := netip.MustParseAddr("fdf5:5351:1dfd:0:53::99")
	dns := func(enabled bool, addr netip.Addr) string {
		return fmt.Sprintf("dns: {enabled: %t, zone: mgmt.test., listen: [\"127.0.0.1:0\"], service_address: %q}\n", enabled, addr)
	}
	r := newRig(t, testFile(t, 1))
	lo := &fakeLoopback{addrs: []string{"::1/128"}}
	r.loopback = lo
	r.writeConfig(dns(true, svc))
	cfg, err := LoadConfig(r.path)
	if err != nil {
		t.Fatal(err)
	}
	r.cfg = cfg
	r.start()
	r.wait(EventSynced)
	check := func(what, want string) {
		t.Helper()
		// The loop starts DNS after the first sync: a poll is answered
		// after it.
		r.poll()
		if got := lo.String(); got != want {
			t.Errorf("%s: lo has %q, want %q", what, got, want)
		}
		if st := r.poll(); st.DNS.Error != "" {
			t.Errorf("%s: dns error %q", what, st.DNS.Error)
		}
	}
	check("serving", "::1/128 "+svc.String()+"/128")

	r.writeConfig(dns(true, other))
	r.wait(EventReloaded)
	check("address changed", "::1/128 "+other.String()+"/128")

	r.writeConfig(dns(false, other))
	r.wait(EventReloaded)
	check("dns disabled", "::1/128")

	r.writeConfig(dns(true, svc))
	r.wait(EventReloaded)
	check("dns enabled again", "::1/128 "+svc.String()+"/128")

	r.stop()
	if got := lo.String(); got != "::1/128" {
		t.Errorf("after the daemon stopped: lo has %q", got)
	}
}

// Cleanup's part on lo removes the configured service address and
// nothing else.
func TestCleanupServiceAddr(t *testing.T) {
	svc := serviceExample(addressing.DefaultMgmtPrefix())
	lo := &fakeLoopback{addrs: []string{"::1/128", svc.String() + "/128", "fdf5:5351:1dfd:0:53::99/128"}}
	cfg := DefaultConfig()
	cfg.DNS.ServiceAddress = svc.String() // DNS disabled: still ours
	if err := newServiceAddrs(cfg, lo, nil).Apply(context.Background(), loopback.Service{}); err != nil {
		t.Fatal(err)
	}
	if got := lo.String(); got != "::1/128 fdf5:5351:1dfd:0:53::99/128" {
		t.Errorf("lo has %q", got)
	}
	cfg.DNS.ServiceAddress = ""
	if err := newServiceAddrs(cfg, lo, nil).Apply(context.Background(), loopback.Service{}); err != nil {
		t.Fatal(err)
	}
	if got := lo.String(); got != "::1/128 fdf5:5351:1dfd:0:53::99/128" {
		t.Errorf("without a service address: lo has %q", got)
	}
}
