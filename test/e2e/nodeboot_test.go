package e2e

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/confine-project/mgmtnet/test/vtb"
)

// fileStates records every file's bytes and mtime under dir.
func fileStates(t *testing.T, dir string) map[string]string {
	t.Helper()
	states := map[string]string{}
	err := filepath.Walk(dir, func(path string, info os.FileInfo, err error) error {
		if err != nil || info.IsDir() {
			return err
		}
		name := strings.TrimPrefix(path, dir)
		if strings.HasSuffix(name, "tinc.log") || strings.HasSuffix(name, "tinc.pid") {
			return nil // tincd's own files
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		states[name] = fmt.Sprintf("%x %d %s", b, info.ModTime().UnixNano(), info.Mode())
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return states
}

// TestNodeBoot: three nodes of the virtual testbed boot with node-boot and
// reach the server and each other over IPv6; running node-boot again
// changes nothing; a node whose key was deleted gets a new one and says so;
// a node that boots while the registry is down joins through the
// firmware's gateway file.
func TestNodeBoot(t *testing.T) {
	lab := vtb.ForTest(t)
	ctx := context.Background()
	spec := vtb.DefaultSpec(mgmtnetBin)
	spec.Nodes = append(spec.Nodes, vtb.NodeSpec{ID: 4, Island: 2, Slivers: 1}) // boots later, registry down
	tb, err := vtb.Build(ctx, lab, spec)
	if err != nil {
		t.Fatal(err)
	}
	late := tb.Nodes[3]
	tb.Nodes = tb.Nodes[:3]
	if err := tb.Boot(ctx); err != nil {
		t.Fatal(err)
	}
	n1, n2, n3 := tb.Nodes[0], tb.Nodes[1], tb.Nodes[2]
	// Everybody reaches everybody over the overlay, across islands too.
	for _, from := range tb.Nodes {
		for _, to := range tb.Nodes {
			if from == to {
				continue
			}
			err := vtb.WaitFor(ctx, 20*time.Second, 200*time.Millisecond, func() error { return from.NS.Ping6(ctx, to.Addr.String()) })
			if err != nil {
				t.Errorf("%s cannot reach %s: %v", from.TincName, to.TincName, err)
			}
		}
	}
	// A sliver's management address from the server.
	if err := tb.Server.NS.Ping6(ctx, n3.Slivers[0].MgmtAddr.String()); err != nil {
		t.Errorf("server cannot reach a sliver of %s: %v", n3.TincName, err)
	}
	// The island-2 node got the server's island-2 address first, from the
	// registry.
	b, _ := os.ReadFile(filepath.Join(n3.TincDir, "hosts", "server"))
	if !strings.HasPrefix(string(b), "Address = 10.241.2.1 655\nAddress = 10.241.1.1 655\n") {
		t.Errorf("%s's server host file is not island-first:\n%s", n3.TincName, b)
	}

	// Idempotent: a second run writes nothing and signals nothing.
	before := fileStates(t, n1.Dir)
	hups := strings.Count(n1.TincLog(), "Got HUP signal")
	pid, _ := os.ReadFile(n1.PidFile())
	out, err := tb.NodeBoot(ctx, n1)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out, "nothing changed") {
		t.Errorf("second node-boot did not say that nothing changed:\n%s", out)
	}
	after := fileStates(t, n1.Dir)
	for name, st := range before {
		if after[name] != st {
			t.Errorf("second node-boot changed %s", name)
		}
	}
	if len(after) != len(before) {
		t.Errorf("second node-boot created files: %d before, %d after", len(before), len(after))
	}
	time.Sleep(300 * time.Millisecond)
	if got := strings.Count(n1.TincLog(), "Got HUP signal"); got != hups {
		t.Errorf("second node-boot signalled tincd (%d HUPs, %d before)", got, hups)
	}
	if pid2, _ := os.ReadFile(n1.PidFile()); !bytes.Equal(pid, pid2) {
		t.Errorf("second node-boot restarted tincd: pid %q -> %q", pid, pid2)
	}

	// A deleted key: a new one, said so; once registered, the node is back.
	oldKey, _ := os.ReadFile(filepath.Join(n2.TincDir, "rsa_key.priv"))
	if err := os.Remove(filepath.Join(n2.TincDir, "rsa_key.priv")); err != nil {
		t.Fatal(err)
	}
	out, err = tb.NodeBoot(ctx, n2)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out, "generated a new RSA key") {
		t.Errorf("node-boot after deleting the key does not say it made a new one:\n%s", out)
	}
	newKey, err := os.ReadFile(filepath.Join(n2.TincDir, "rsa_key.priv"))
	if err != nil || bytes.Equal(oldKey, newKey) {
		t.Fatalf("no new key: %v", err)
	}
	if st, _ := os.Stat(filepath.Join(n2.TincDir, "rsa_key.priv")); st.Mode().Perm() != 0o600 {
		t.Errorf("new key mode %v, want 0600", st.Mode().Perm())
	}
	if err := tb.RegisterNode(n2); err != nil {
		t.Fatal(err)
	}
	time.Sleep(1100 * time.Millisecond) // the registry re-reads its file once a second
	if out, err := tb.SyncServer(ctx); err != nil || !strings.Contains(out, "written 1,") {
		t.Fatalf("server sync after the new key: %v\n%s", err, out)
	}
	if err := vtb.WaitFor(ctx, 30*time.Second, 200*time.Millisecond, func() error { return n2.NS.Ping6(ctx, tb.Server.Addr.String()) }); err != nil {
		t.Errorf("%s with its new key does not reach the server: %v", n2.TincName, err)
	}

	// The registry is down when a new node boots: it joins through the
	// gateway file its firmware shipped.
	if _, err := tb.NodeBoot(ctx, late, "--no-start", "--timeout", "1s"); err != nil {
		t.Fatal(err)
	}
	if err := tb.RegisterNode(late); err != nil {
		t.Fatal(err)
	}
	time.Sleep(1100 * time.Millisecond)
	if out, err := tb.SyncServer(ctx); err != nil || !strings.Contains(out, "written 1,") {
		t.Fatalf("server sync for the late node: %v\n%s", err, out)
	}
	tb.Server.Registry.Stop()
	out, err = tb.NodeBoot(ctx, late, "--timeout", "1s")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out, "unreachable") || !strings.Contains(out, "firmware") {
		t.Errorf("node-boot with the registry down does not say it used the firmware's files:\n%s", out)
	}
	if err := vtb.WaitFor(ctx, 30*time.Second, 200*time.Millisecond, func() error { return late.NS.Ping6(ctx, n1.Addr.String()) }); err != nil {
		t.Errorf("%s, booted with the registry down, does not reach %s: %v", late.TincName, n1.TincName, err)
	}
}
