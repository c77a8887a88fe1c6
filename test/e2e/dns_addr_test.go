package e2e

import (
	"context"
	"fmt"
	"net/netip"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/confine-project/mgmtnet/addressing"
	"github.com/confine-project/mgmtnet/test/vtb"
)

// TestDNSServiceAddrLifecycle: the gateway daemon, in a namespace of its
// own with the registry beside it, holds dns.service_address on lo while
// it serves DNS there; a SIGTERM removes it; after a SIGKILL it stays
// until "mgmtnet gateway --cleanup" removes it. An address on lo that is
// not the service address survives all of it.
func TestDNSServiceAddrLifecycle(t *testing.T) {
	lab := vtb.ForTest(t)
	ctx := context.Background()
	ns, err := lab.AddNetns("gw")
	if err != nil {
		t.Fatal(err)
	}
	// The registry on the namespace's own loopback.
	f := synthetic(t, 3)
	testbed := filepath.Join(lab.Dir, "testbed.json")
	if err := vtb.WriteTestbedFile(testbed, f); err != nil {
		t.Fatal(err)
	}
	if _, err := lab.Start(ns, "registry", mgmtnetBin, "registry", "serve", "--testbed", testbed, "--listen", "127.0.0.1:8080"); err != nil {
		t.Fatal(err)
	}
	// P:0:53::53, which the plan assigns to nobody; P:0:53::99 is
	// someone else's address on lo.
	a := addressing.DefaultMgmtPrefix().Addr().As16()
	a[9], a[15] = 0x53, 0x53
	svc := netip.AddrFrom16(a)
	a[15] = 0x99
	foreign := netip.AddrFrom16(a)
	if err := ns.MustRun("ip", "-6", "addr", "add", foreign.String()+"/128", "dev", "lo"); err != nil {
		t.Fatal(err)
	}
	pidFile := fakeTincdProc(t, t.TempDir())
	s := newGwSetup(t, "http://127.0.0.1:8080/api/", pidFile, fmt.Sprintf(`dns:
  enabled: true
  zone: mgmt.e2e.
  service_address: %s
`, svc))

	onLo := func() (svcOn, foreignOn bool) {
		t.Helper()
		out, err := ns.Run(ctx, "ip", "-6", "-o", "addr", "show", "dev", "lo")
		if err != nil {
			t.Fatal(err)
		}
		return strings.Contains(out, " "+svc.String()+"/128 "), strings.Contains(out, " "+foreign.String()+"/128 ")
	}
	expect := func(when string, want bool) {
		t.Helper()
		svcOn, foreignOn := onLo()
		if svcOn != want {
			t.Errorf("%s: service address %s on lo: %v, want %v", when, svc, svcOn, want)
		}
		if !foreignOn {
			t.Errorf("%s: the foreign address %s is gone from lo", when, foreign)
		}
	}
	start := func(name string) *vtb.Proc {
		t.Helper()
		p, err := lab.Start(ns, name, mgmtnetBin, "gateway", "--config", s.config)
		if err != nil {
			t.Fatal(err)
		}
		err = vtb.WaitFor(ctx, 30*time.Second, 100*time.Millisecond, func() error {
			if p.Exited() {
				return fmt.Errorf("mgmtnet gateway exited:\n%s", p.Log())
			}
			st, err := vtb.ReadGatewayStatus(ctx, mgmtnetBin, s.socket)
			if err != nil {
				return err
			}
			if st.LastSync == nil {
				return fmt.Errorf("not synced yet")
			}
			// The zone's SOA, asked at the service address: DNS serves
			// there.
			out, err := dig(ctx, ns, "+short", "SOA", "mgmt.e2e.", "@"+svc.String())
			if err != nil || out == "" {
				return fmt.Errorf("dig SOA @%s: %q %v", svc, out, err)
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		return p
	}

	p := start("gateway")
	expect("while running", true)
	if err := p.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	waitExited(t, p)
	expect("after SIGTERM", false)

	p = start("gateway-2")
	expect("while running again", true)
	p.Kill()
	expect("after SIGKILL", true)
	if out, err := ns.Run(ctx, mgmtnetBin, "gateway", "--cleanup", "--config", s.config); err != nil {
		t.Fatalf("mgmtnet gateway --cleanup: %v\n%s", err, out)
	}
	expect("after --cleanup", false)
	// Cleanup again finds nothing to do.
	if out, err := ns.Run(ctx, mgmtnetBin, "gateway", "--cleanup", "--config", s.config); err != nil {
		t.Fatalf("mgmtnet gateway --cleanup again: %v\n%s", err, out)
	}
	expect("after a second --cleanup", false)
}
