package e2e

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/confine-project/mgmtnet/test/vtb"
)

// TestEnrolment: the registry as an operator runs it today, end to end in
// the virtual testbed. The registry is "mgmtnet registry serve --db"
// (SQLite) holding the gateway alone; the operator adds the nodes and
// invites them with the admin CLI; each node enrols at boot with its
// invite (node-boot --enrol: no key is copied by hand) and joins the
// overlay through the gateway daemon, which follows the registry's change
// feed. A spent or a wrong invite is refused with the reason and the node
// boots on. Then the operator removes a node: the gateway drops its host
// file and its connection, and the node is cut off, while the other goes
// on. The gateway polls only every 10 minutes, so only the feed can bring
// these changes within the test's bounds.
func TestEnrolment(t *testing.T) {
	ctx := context.Background()
	_, tb, invites, boots := enrolledTestbed(t, 2)
	hosts := filepath.Join(tb.Server.TincDir, "hosts")
	for _, n := range tb.Nodes {
		if len(invites[n.TincName]) != 40 {
			t.Errorf("invite for %s: %q", n.TincName, invites[n.TincName])
		}
		if !strings.Contains(boots[n.TincName], "registered this node's public key with the registry (the invite is spent)") {
			t.Errorf("%s did not enrol:\n%s", n.TincName, boots[n.TincName])
		}
		b, err := os.ReadFile(filepath.Join(hosts, n.TincName))
		if err != nil {
			t.Fatalf("the gateway has no host file of %s: %v", n.TincName, err)
		}
		own, _ := os.ReadFile(filepath.Join(n.TincDir, "hosts", n.TincName))
		if key := pemOf(own); key == "" || !strings.Contains(string(b), key) {
			t.Errorf("the gateway's host file of %s does not carry the node's own key", n.TincName)
		}
	}
	n1, n2 := tb.Nodes[0], tb.Nodes[1]

	// 3. A spent invite, and one that was never made: the reason, and the
	// node boots on with what it has.
	for _, tc := range []struct{ token, reason string }{
		{invites[n1.TincName], "the invite token was used already"},
		{strings.Repeat("ab", 20), "unknown invite token"},
	} {
		out, err := tb.NodeBoot(ctx, n1, "--enrol", tc.token)
		if err != nil {
			t.Fatalf("node-boot with a bad invite failed: %v", err)
		}
		if !strings.Contains(out, "the registry refused the invite: ") || !strings.Contains(out, tc.reason) {
			t.Errorf("node-boot with a bad invite: want %q:\n%s", tc.reason, out)
		}
	}
	if err := vtb.WaitFor(ctx, 20*time.Second, 200*time.Millisecond, func() error { return n1.NS.Ping6(ctx, tb.Server.Addr.String()) }); err != nil {
		t.Errorf("%s lost the overlay after a refused invite: %v", n1.TincName, err)
	}

	// 4. The operator removes node 1: cut off within the feed's bound.
	start := time.Now()
	if _, err := tb.Registry(ctx, "node", "rm", fmt.Sprint(n1.Spec.ID)); err != nil {
		t.Fatal(err)
	}
	err := vtb.WaitFor(ctx, 15*time.Second, 100*time.Millisecond, func() error {
		if _, err := os.Stat(filepath.Join(hosts, n1.TincName)); !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("the gateway still has the host file of %s", n1.TincName)
		}
		st, err := tb.GatewayStatus(ctx)
		if err != nil {
			return err
		}
		if st.Connected(n1.TincName) {
			return fmt.Errorf("the gateway is still connected to %s", n1.TincName)
		}
		if n1.NS.Ping6(ctx, tb.Server.Addr.String()) == nil {
			return fmt.Errorf("%s still reaches the server", n1.TincName)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("removed from the registry, %s is not cut off: %v", n1.TincName, err)
	}
	t.Logf("%s cut off %v after the registry write", n1.TincName, time.Since(start).Round(10*time.Millisecond))
	if err := n2.NS.Ping6(ctx, tb.Server.Addr.String()); err != nil {
		t.Errorf("%s lost the overlay when %s was removed: %v", n2.TincName, n1.TincName, err)
	}
	// It stays cut off: its tincd cannot authenticate any more.
	time.Sleep(3 * time.Second)
	if n1.NS.Ping6(ctx, tb.Server.Addr.String()) == nil {
		t.Errorf("%s reaches the server again after its removal", n1.TincName)
	}
	log, err := tb.Registry(ctx, "log", "--limit", "20")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"node enrol node " + fmt.Sprint(n1.Spec.ID), "node rm node " + fmt.Sprint(n1.Spec.ID), "invite for node"} {
		if !strings.Contains(log, want) {
			t.Errorf("the audit log lacks %q:\n%s", want, log)
		}
	}
}

// enrolledTestbed builds a testbed of the first n nodes of the demo's, its
// registry a database and its gateway a daemon that polls only every 10
// minutes (so that only the change feed brings a change within a test's
// bounds), and boots it the operator's way (EnrolBoot): the nodes' invites
// and boot outputs, by tinc name.
func enrolledTestbed(t *testing.T, n int) (*vtb.Lab, *vtb.Testbed, map[string]string, map[string]string) {
	t.Helper()
	lab := vtb.ForTest(t)
	ctx := context.Background()
	spec := vtb.DefaultSpec(mgmtnetBin)
	spec.Nodes = spec.Nodes[:n]
	spec.GatewayDaemon = true
	spec.RegistryDB = true
	spec.PollInterval = 10 * time.Minute
	tb, err := vtb.Build(ctx, lab, spec)
	if err != nil {
		t.Fatal(err)
	}
	invites, boots, err := tb.EnrolBoot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return lab, tb, invites, boots
}

// pemOf returns the PEM block of a host file ("" for none).
func pemOf(b []byte) string {
	s := string(b)
	i := strings.Index(s, "-----BEGIN")
	j := strings.LastIndex(s, "-----END")
	if i < 0 || j < i {
		return ""
	}
	end := strings.Index(s[j+5:], "-----")
	if end < 0 {
		return ""
	}
	return s[i : j+5+end+5]
}
