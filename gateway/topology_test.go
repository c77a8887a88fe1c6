package gateway

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/confine-project/mgmtnet/mesh/registry"
)

// TestDaemonTunnelServerConf: the daemon keeps tinc.conf as the
// tunnel-server topology needs it, dials only the gateways after it, and
// turning TunnelServer on is a restart.
func TestDaemonTunnelServerConf(t *testing.T) {
	f := testFile(t, 2)
	f.Servers = append(f.Servers, registry.FileMember{ID: 3, Name: "third", Tinc: &registry.FileTinc{Name: "server_3", PubKey: keys[1],
		Addresses: []registry.FileAddress{{Addr: "10.0.0.3", Port: 655, Island: 1}}}})
	r := newRig(t, f)
	r.tincd.managed = true
	conf := filepath.Join(r.cfg.Tinc.Dir, "tinc.conf")
	// A gateway as the old design ran it, with the operator's own lines.
	os.WriteFile(conf, []byte("Name = server\nPort = 655\nStrictSubnets = yes\nConnectTo = node_1\nInterface = confine\n"), 0o644)
	r.start()
	r.wait(EventSynced)
	if got := r.tincd.take(); got != "restart" {
		t.Errorf("turning TunnelServer on: tincd calls %q, want one restart", got)
	}
	b, _ := os.ReadFile(conf)
	want := "Name = server\nPort = 655\nStrictSubnets = yes\nConnectTo = server_3\nInterface = confine\nTunnelServer = yes\nDecrementTTL = yes\nMaxTimeout = 10\n"
	if string(b) != want {
		t.Errorf("tinc.conf:\n%s\nwant:\n%s", b, want)
	}
	// server_3's file carries the relays for both nodes; server's own
	// carries none, but the covering /48.
	b3, _ := os.ReadFile(r.hostFile("server_3"))
	for _, l := range []string{"Subnet = fdf5:5351:1dfd:1:0:0:0:0/64#101\n", "Subnet = fdf5:5351:1dfd:2:0:0:0:0/64#101\n", "Subnet = fdf5:5351:1dfd:0:0:0:0:0/48#1000\n"} {
		if !strings.Contains(string(b3), l) {
			t.Errorf("server_3's file lacks %q:\n%s", l, b3)
		}
	}
	own, _ := os.ReadFile(r.hostFile("server"))
	if strings.Contains(string(own), "#101") || !strings.Contains(string(own), "/48#1000\n") {
		t.Errorf("own file:\n%s", own)
	}
	// A node's file is the controller's.
	if n, _ := os.ReadFile(r.hostFile("node_1")); strings.Contains(string(n), "#") {
		t.Errorf("node_1's file:\n%s", n)
	}
	// Nothing changes: no write, no signal.
	st, _ := os.Stat(conf)
	r.poll()
	if got := r.tincd.take(); got != "" {
		t.Errorf("steady state: tincd calls %q", got)
	}
	if st2, _ := os.Stat(conf); !st2.ModTime().Equal(st.ModTime()) {
		t.Error("tinc.conf rewritten in the steady state")
	}
	// Another gateway's egress and DNS service are held above any own
	// weight, so this gateway serves them itself when it offers them.
	f4 := testFile(t, 2)
	f4.Servers = append([]registry.FileMember{}, f.Servers...)
	s3 := f4.Servers[1]
	s3.Properties = map[string]string{"mgmtnet.egress": "weight=20", "mgmtnet.dns": "fdf5:5351:1dfd:0:53::53,weight=20"}
	f4.Servers[1] = s3
	r.srv.SetFile(f4)
	r.poll()
	r.tincd.take()
	b3, _ = os.ReadFile(r.hostFile("server_3"))
	for _, l := range []string{"Subnet = 0.0.0.0/0#65556\n", "Subnet = fdf5:5351:1dfd:0:53:0:0:53#65556\n"} {
		if !strings.Contains(string(b3), l) {
			t.Errorf("server_3's file lacks %q:\n%s", l, b3)
		}
	}
	// server_3 announcing them at its own weight is no attack.
	for _, l := range []string{"0.0.0.0/0#20", "fdf5:5351:1dfd:0:53:0:0:53/128#20", "fdf5:5351:1dfd:1:0:0:0:0/64#0"} {
		rf, _ := parseRefusal("Ignoring unauthorized ADD_SUBNET from server_3 (10.0.0.3 port 655): " + l)
		r.d.refusal(rf)
	}
	if s := r.poll(); len(s.RefusedSubnets) != 1 || s.RefusedSubnets[0].Subnet != "fdf5:5351:1dfd:1:0:0:0:0/64#0" {
		t.Errorf("refused: %+v", s.RefusedSubnets)
	}

	// A new node: every gateway's relays change, one HUP.
	f2 := testFile(t, 3)
	f2.Servers = f.Servers
	r.srv.SetFile(f2)
	r.poll()
	if got := r.tincd.take(); got != "reload" {
		t.Errorf("new node: tincd calls %q, want one reload", got)
	}
	if b3, _ := os.ReadFile(r.hostFile("server_3")); !strings.Contains(string(b3), "Subnet = fdf5:5351:1dfd:3:0:0:0:0/64#101\n") {
		t.Errorf("server_3's file lacks node_3's relay:\n%s", b3)
	}
}

// TestDaemonTunnelServerUnmanaged: a tincd mgmtnet does not run cannot
// be restarted; turning TunnelServer on is then a reload and a warning,
// never a failed sync.
func TestDaemonTunnelServerUnmanaged(t *testing.T) {
	r := newRig(t, testFile(t, 1))
	os.WriteFile(filepath.Join(r.cfg.Tinc.Dir, "tinc.conf"), []byte("Name = server\n"), 0o644)
	r.start()
	r.wait(EventSynced)
	if got := r.tincd.take(); got != "reload" {
		t.Errorf("tincd calls %q, want one reload", got)
	}
	if s := r.poll(); s.LastError != "" {
		t.Errorf("last_error %q", s.LastError)
	}
}

// TestDaemonLegacyTopology: with tinc.tunnel_server false, tinc.conf is
// the operator's, host files are the controller's, and a change of the
// gateway's own Subnets restarts tincd (tinc 1.0 without StrictSubnets
// does not reload its own).
func TestDaemonLegacyTopology(t *testing.T) {
	r := newRig(t, testFile(t, 2))
	r.cfg.Tinc.TunnelServer = false
	conf := filepath.Join(r.cfg.Tinc.Dir, "tinc.conf")
	os.WriteFile(conf, []byte("Name = server\n"), 0o644)
	r.start()
	r.wait(EventSynced)
	r.tincd.take()
	if b, _ := os.ReadFile(conf); string(b) != "Name = server\n" {
		t.Errorf("tinc.conf changed:\n%s", b)
	}
	if b, _ := os.ReadFile(r.hostFile("server")); strings.Contains(string(b), "/48") {
		t.Errorf("own file has the covering route:\n%s", b)
	}
	f := testFile(t, 2)
	f.Servers[0].Tinc.Addresses = append(f.Servers[0].Tinc.Addresses, registry.FileAddress{Addr: "10.0.0.9", Port: 655, Island: 1})
	r.srv.SetFile(f)
	r.poll()
	if got := r.tincd.take(); got != "reload" {
		t.Errorf("address change: %q", got)
	}
}

// TestRefusals: tincd's refusal lines are parsed, counted by member and
// Subnet, exported as a metric and shown in status.
func TestRefusals(t *testing.T) {
	r := newRig(t, testFile(t, 1))
	r.start()
	r.wait(EventSynced)
	for _, l := range []string{
		"Ignoring unauthorized ADD_SUBNET from node_1 (10.241.1.11 port 655): fd65:fc41:c50f:0:0:0:0:53#0",
		"Ignoring unauthorized ADD_SUBNET from node_1 (10.241.1.11 port 655): 0.0.0.0/0#0",
		"Ignoring unauthorized ADD_SUBNET from node_1 (10.241.1.11 port 655): 0.0.0.0/0#0",
		"Connection with node_1 (10.241.1.11 port 655) activated",
	} {
		if rf, ok := parseRefusal(l); ok {
			r.d.refusal(rf)
		}
	}
	s := r.poll()
	if len(s.RefusedSubnets) != 2 || s.RefusedSubnets[0].Subnet != "0.0.0.0/0#0" || s.RefusedSubnets[0].Count != 2 ||
		s.RefusedSubnets[0].Member != "node_1" || s.RefusedSubnets[0].From != "10.241.1.11 port 655" ||
		time.Since(s.RefusedSubnets[0].Last) > time.Minute {
		t.Errorf("refused: %+v", s.RefusedSubnets)
	}
	mf, err := r.d.m.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, f := range mf {
		if f.GetName() == "mgmtnet_tinc_unauthorized_subnets_total" {
			for _, m := range f.GetMetric() {
				if m.GetLabel()[0].GetValue() == "node_1" && m.GetCounter().GetValue() == 3 {
					found = true
				}
			}
		}
	}
	if !found {
		t.Error("mgmtnet_tinc_unauthorized_subnets_total{member=\"node_1\"} is not 3")
	}
}
