package e2e

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/confine-project/mgmtnet/test/vtb"
)

// TestHostJoin: a researcher's host joins with "mgmtnet join" and a
// one-time invite, as with "tinc join": the operator adds the host and
// invites it; join makes the key, registers it and writes the tinc
// directory; tincd starts and the host reaches the server and a node over
// the overlay. The same invite again, or a node's invite, is refused with
// the reason, and the node's invite stays unspent.
func TestHostJoin(t *testing.T) {
	ctx := context.Background()
	lab, tb, _, _ := enrolledTestbed(t, 1)
	host, err := tb.AddHost(7)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tb.Registry(ctx, "host", "add", "7", "--name", "laptop"); err != nil {
		t.Fatal(err)
	}
	out, err := tb.Registry(ctx, "invite", "--host", "7")
	if err != nil {
		t.Fatal(err)
	}
	invite := strings.TrimSpace(out)
	url := vtb.IslandRegistryURL(1)
	out, err = tb.Mgmtnet(ctx, host.NS, "join", url, invite, "--tinc-dir", host.TincDir)
	if err != nil {
		t.Fatal(err)
	}
	lab.Logf("mgmtnet join:\n%s", out)
	for _, want := range []string{"generated a new RSA key", "registered host_7 (host 7, ", "wrote tinc.conf", "wrote hosts/server", "gateways: server"} {
		if !strings.Contains(out, want) {
			t.Errorf("join says no %q:\n%s", want, out)
		}
	}
	conf, _ := os.ReadFile(filepath.Join(host.TincDir, "tinc.conf"))
	if !strings.Contains(string(conf), "Name = host_7\nConnectTo = server\n") {
		t.Errorf("tinc.conf:\n%s", conf)
	}
	if _, err := lab.StartTincd(host.NS, "host_7", host.TincDir); err != nil {
		t.Fatal(err)
	}
	for _, to := range []struct{ name, addr string }{{"the server", tb.Server.Addr.String()}, {tb.Nodes[0].TincName, tb.Nodes[0].Addr.String()}} {
		if err := vtb.WaitFor(ctx, 30*time.Second, 200*time.Millisecond, func() error { return host.NS.Ping6(ctx, to.addr) }); err != nil {
			b, _ := os.ReadFile(filepath.Join(host.TincDir, "tinc.log"))
			t.Fatalf("the joined host does not reach %s: %v\n%s", to.name, err, b)
		}
	}
	// Refusals: the spent invite; a node's invite, which stays unspent.
	if out, err := tb.Mgmtnet(ctx, host.NS, "join", url, invite, "--tinc-dir", host.TincDir); err == nil || !strings.Contains(out, "the registry refused the invite: the invite token was used already") {
		t.Errorf("join with a spent invite: %v\n%s", err, out)
	}
	if _, err := tb.Registry(ctx, "node", "add", "40", "--name", "node-40", "--island", "1"); err != nil {
		t.Fatal(err)
	}
	nodeInvite, err := tb.Registry(ctx, "invite", "--node", "40")
	if err != nil {
		t.Fatal(err)
	}
	other := filepath.Join(lab.Dir, "other-tinc")
	if out, err := tb.Mgmtnet(ctx, host.NS, "join", url, strings.TrimSpace(nodeInvite), "--tinc-dir", other); err == nil || !strings.Contains(out, "unknown invite token") {
		t.Errorf("join with a node's invite: %v\n%s", err, out)
	}
	if out, _ := tb.Registry(ctx, "node", "show", "40"); strings.Contains(out, "BEGIN") {
		t.Errorf("a node's invite used by join registered a key:\n%s", out)
	}
}
