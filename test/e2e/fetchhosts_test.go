package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/confine-project/mgmtnet/addressing"
	"github.com/confine-project/mgmtnet/mesh/registry"
	"github.com/confine-project/mgmtnet/test/vtb"
	"github.com/confine-project/mgmtnet/tincgen"
)

func writeJSON(t *testing.T, path string, v any) {
	t.Helper()
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, b, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

// tincMember is a member that really runs tincd in the test.
type tincMember struct {
	name string
	dir  string
	addr netip.Addr
	priv []byte
	pub  []byte
}

func newTincMember(t *testing.T, root, name string, addr netip.Addr) *tincMember {
	t.Helper()
	priv, pub, err := tincgen.GenerateKey(nil, 2048)
	if err != nil {
		t.Fatal(err)
	}
	m := &tincMember{name: name, dir: filepath.Join(root, name), addr: addr, priv: priv, pub: pub}
	if err := os.MkdirAll(filepath.Join(m.dir, "hosts"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(m.dir, "rsa_key.priv"), priv, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(m.dir, "tinc-up"), tincgen.RenderTincUp(addr, 48, 1400), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(m.dir, "tinc-down"), tincgen.RenderTincDown(addr, 48), 0o755); err != nil {
		t.Fatal(err)
	}
	return m
}

func (m *tincMember) writeConf(t *testing.T, c tincgen.Conf) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(m.dir, "tinc.conf"), tincgen.RenderConf(c), 0o644); err != nil {
		t.Fatal(err)
	}
}

func runMgmtnet(t *testing.T, args ...string) (string, string) {
	t.Helper()
	cmd := exec.Command(mgmtnetBin, args...)
	var stdout, stderr strings.Builder
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("mgmtnet %s: %v\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), err, stdout.String(), stderr.String())
	}
	return stdout.String(), stderr.String()
}

// TestFetchHostsTinc: a server with StrictSubnets whose hosts directory
// comes from fetch-hosts, and two nodes that connect to it and ping each
// other over the overlay. Then the registry changes (a node is added, then
// another node is re-keyed), fetch-hosts --reload runs, and tincd's own log
// shows that only the changed peer's connection was closed.
func TestFetchHostsTinc(t *testing.T) {
	lab := vtb.ForTest(t)
	ctx := context.Background()
	plan, err := addressing.New(netip.MustParsePrefix("fd65:fc41:c50f::/48"))
	if err != nil {
		t.Fatal(err)
	}
	srvAddr, _ := plan.ServerAddr(2)
	n1Addr, _ := plan.NodeAddr(1)
	n2Addr, _ := plan.NodeAddr(2)
	root := filepath.Join(lab.Dir, "tinc")
	srv := newTincMember(t, root, "server", srvAddr)
	n1 := newTincMember(t, root, "node_1", n1Addr)
	n2 := newTincMember(t, root, "node_2", n2Addr)
	srv.writeConf(t, tincgen.Conf{Name: "server", Port: 655, StrictSubnets: true})
	n1.writeConf(t, tincgen.Conf{Name: "node_1", ConnectTo: []string{"server"}})
	n2.writeConf(t, tincgen.Conf{Name: "node_2", ConnectTo: []string{"server"}})

	// The registry.
	tb := registry.File{
		MgmtPrefix: plan.Mgmt(),
		Islands:    []registry.FileIsland{{ID: 1, Name: "island-1"}},
		Servers: []registry.FileMember{{ID: 2, Name: "server", Tinc: &registry.FileTinc{Name: "server", PubKey: string(srv.pub),
			Addresses: []registry.FileAddress{{Addr: "10.241.0.1", Port: 655, Island: 1}}}}},
		Nodes: []registry.FileMember{
			{ID: 1, Name: "node-1", Island: 1, Tinc: &registry.FileTinc{Name: "node_1", PubKey: string(n1.pub)}},
			{ID: 2, Name: "node-2", Island: 1, Tinc: &registry.FileTinc{Name: "node_2", PubKey: string(n2.pub)}},
		},
	}
	tbPath := filepath.Join(lab.Dir, "testbed.json")
	writeJSON(t, tbPath, tb)
	port, err := vtb.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	listen := fmt.Sprintf("127.0.0.1:%d", port)
	base := "http://" + listen + "/api/"
	if _, err := lab.Start(nil, "registry", mgmtnetBin, "registry", "serve", "--testbed", tbPath, "--listen", listen); err != nil {
		t.Fatal(err)
	}
	if err := vtb.WaitHTTP(ctx, base, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	for _, m := range []*tincMember{srv, n1, n2} {
		_, stderr := runMgmtnet(t, "fetch-hosts", base, "--hosts-dir", filepath.Join(m.dir, "hosts"), "--island", "1")
		if !strings.Contains(stderr, "2 nodes, 1 servers; 0 rejected, 0 skipped; written 3, unchanged 0, removed 0") {
			t.Fatalf("fetch-hosts summary for %s: %s", m.name, stderr)
		}
	}
	// The gateway's host file, as fetch-hosts wrote it.
	b, _ := os.ReadFile(filepath.Join(srv.dir, "hosts", "server"))
	if !strings.HasPrefix(string(b), "Address = 10.241.0.1 655\nSubnet = fd65:fc41:c50f:0:0:0:0:2\n\n-----BEGIN RSA PUBLIC KEY-----\n") {
		t.Fatalf("server host file:\n%s", b)
	}

	// The community network: one bridge, three members.
	cn, err := lab.AddNetns("cn")
	if err != nil {
		t.Fatal(err)
	}
	if err := cn.Bridge("br0"); err != nil {
		t.Fatal(err)
	}
	nss := map[string]*vtb.Netns{}
	for i, m := range []*tincMember{srv, n1, n2} {
		ns, err := lab.AddNetns(m.name)
		if err != nil {
			t.Fatal(err)
		}
		ip := []string{"10.241.0.1/24", "10.241.0.11/24", "10.241.0.12/24"}[i]
		if err := vtb.Attach(ns, "eth0", cn, "br0", ip); err != nil {
			t.Fatal(err)
		}
		nss[m.name] = ns
	}
	tincds := map[string]*vtb.Tincd{}
	for _, m := range []*tincMember{srv, n1, n2} {
		td, err := lab.StartTincd(nss[m.name], m.name, m.dir)
		if err != nil {
			t.Fatal(err)
		}
		tincds[m.name] = td
	}
	// Node 1 reaches node 2 over the overlay (through the server), and both
	// reach the server.
	for _, c := range []struct {
		from string
		to   netip.Addr
	}{{"node_1", n2Addr}, {"node_2", n1Addr}, {"node_1", srvAddr}, {"server", n2Addr}} {
		err := vtb.WaitFor(ctx, 30*time.Second, 200*time.Millisecond, func() error { return nss[c.from].Ping6(ctx, c.to.String()) })
		if err != nil {
			t.Fatalf("%s cannot reach %s over the overlay: %v", c.from, c.to, err)
		}
	}
	srvTinc := tincds["server"]
	waitActivated := func(peer string, n int) {
		t.Helper()
		err := vtb.WaitFor(ctx, 30*time.Second, 100*time.Millisecond, func() error {
			act, _ := vtb.ConnectionEvents(srvTinc.TincLog())
			if act[peer] < n {
				return fmt.Errorf("server log shows %d activations of %s, want %d", act[peer], peer, n)
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	waitActivated("node_1", 1)
	waitActivated("node_2", 1)
	_, closedBefore := vtb.ConnectionEvents(srvTinc.TincLog())

	// Change 1: a node is added. One file is written, one HUP; no
	// connection is closed.
	_, pub3, err := tincgen.GenerateKey(nil, 2048)
	if err != nil {
		t.Fatal(err)
	}
	tb.Nodes = append(tb.Nodes, registry.FileMember{ID: 3, Name: "node-3", Tinc: &registry.FileTinc{Name: "node_3", PubKey: string(pub3)}})
	writeJSON(t, tbPath, tb)
	hosts := filepath.Join(srv.dir, "hosts")
	// syncOne runs fetch-hosts --reload until the registry's change shows:
	// one file written, the rest unchanged, one HUP.
	syncOne := func() {
		t.Helper()
		err := vtb.WaitFor(ctx, 10*time.Second, 300*time.Millisecond, func() error {
			_, stderr := runMgmtnet(t, "fetch-hosts", base, "--hosts-dir", hosts, "--island", "1", "--reload", "--pidfile", srvTinc.PidFile())
			if !strings.Contains(stderr, "written 1, unchanged 2, removed 0; tincd reloaded") {
				return fmt.Errorf("fetch-hosts: %s", stderr)
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	syncOne()
	// Let tincd process the HUP, then check traffic and the log.
	err = vtb.WaitFor(ctx, 10*time.Second, 100*time.Millisecond, func() error {
		if !strings.Contains(srvTinc.TincLog(), "Got HUP signal") {
			return fmt.Errorf("server log shows no HUP")
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := nss["node_1"].Ping6(ctx, n2Addr.String()); err != nil {
		t.Fatalf("after adding node_3: %v", err)
	}
	_, closed := vtb.ConnectionEvents(srvTinc.TincLog())
	for _, peer := range []string{"node_1", "node_2"} {
		if closed[peer] != closedBefore[peer] {
			t.Errorf("adding node_3 closed the server's connection with %s (%d closes)", peer, closed[peer]-closedBefore[peer])
		}
	}
	t.Logf("after adding node_3: connections closed on the server: node_1 %d, node_2 %d", closed["node_1"]-closedBefore["node_1"], closed["node_2"]-closedBefore["node_2"])

	// Change 2: node_2 is re-keyed in the registry. Its file changes, so
	// tincd closes its connection (that is tinc's job); node_1's stays.
	priv2, pub2, err := tincgen.GenerateKey(nil, 2048)
	if err != nil {
		t.Fatal(err)
	}
	tb.Nodes[1].Tinc.PubKey = string(pub2)
	writeJSON(t, tbPath, tb)
	hupsBefore := strings.Count(srvTinc.TincLog(), "Got HUP signal")
	syncOne()
	err = vtb.WaitFor(ctx, 10*time.Second, 100*time.Millisecond, func() error {
		_, c := vtb.ConnectionEvents(srvTinc.TincLog())
		if strings.Count(srvTinc.TincLog(), "Got HUP signal") <= hupsBefore || c["node_2"] <= closed["node_2"] {
			return fmt.Errorf("server has not closed node_2's connection yet")
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	_, closedAfter := vtb.ConnectionEvents(srvTinc.TincLog())
	if closedAfter["node_1"] != closedBefore["node_1"] {
		t.Errorf("re-keying node_2 closed node_1's connection too (%d closes)", closedAfter["node_1"]-closedBefore["node_1"])
	}
	t.Logf("after re-keying node_2: connections closed on the server: node_1 %d, node_2 %d",
		closedAfter["node_1"]-closedBefore["node_1"], closedAfter["node_2"]-closedBefore["node_2"])
	// node_2 comes back once it uses its new key.
	if err := os.WriteFile(filepath.Join(n2.dir, "rsa_key.priv"), priv2, 0o600); err != nil {
		t.Fatal(err)
	}
	tincds["node_2"].Stop()
	if tincds["node_2"], err = lab.StartTincd(nss["node_2"], "node_2b", n2.dir); err != nil {
		t.Fatal(err)
	}
	err = vtb.WaitFor(ctx, 30*time.Second, 200*time.Millisecond, func() error { return nss["node_1"].Ping6(ctx, n2Addr.String()) })
	if err != nil {
		t.Fatalf("node_2 with its new key is not reachable: %v", err)
	}
	if err := nss["node_1"].Ping6(ctx, srvAddr.String()); err != nil {
		t.Fatal(err)
	}
}
