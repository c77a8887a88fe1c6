package gateway

import (
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/confine-project/mgmtnet/gateway/egress"
)

// TestDaemonEgress drives the daemon's egress through its real prober
// against a loopback TCP target: the first successful probe announces
// 0.0.0.0/0 in the gateway's own host file (one SIGHUP: TunnelServer
// implies StrictSubnets, which re-reads the own file) while every node's
// file carries its egress /32; a dead target withdraws the announcement
// (another SIGHUP, the nodes' files untouched); a target that answers again announces it
// after the hold-down. The kernel side is the fake.
func TestDaemonEgress(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	serve := func(ln net.Listener) {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}
	go serve(ln)
	r := newRig(t, testFile(t, 2))
	r.writeConfig("egress:\n  enabled: true\n  wan: wan0\n  allow: [10.0.0.0/8]\n  deny: [198.51.100.0/24]\n" +
		"  probe: {targets: [\"" + addr + "\"], interval: 100ms, timeout: 100ms, failures: 2, hold_down: 500ms}\n")
	cfg, err := LoadConfig(r.path)
	if err != nil {
		t.Fatal(err)
	}
	r.cfg = cfg
	r.start()
	r.wait(EventEgressChanged)
	read := func(name string) string {
		b, err := os.ReadFile(r.hostFile(name))
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	nodeFile := read("node_1")
	if !strings.Contains(read("server"), "Subnet = 0.0.0.0/0#10\n") {
		t.Fatalf("announced: server's host file:\n%s", read("server"))
	}
	if !strings.Contains(nodeFile, "Subnet = 100.64.0.1\n") {
		t.Errorf("node_1's host file lacks its egress /32:\n%s", nodeFile)
	}
	if got := r.tincd.take(); !strings.HasSuffix(got, "reload") || strings.Contains(got, "restart") {
		t.Errorf("announcing: tincd calls %q, want a reload last and no restart", got)
	}
	st := r.poll()
	if st.Egress.State != EgressAnnounced || st.Egress.Weight != 10 || st.Egress.Source != "config" || st.Egress.Counters == nil {
		t.Errorf("status: %+v", st.Egress)
	}
	if _, ok := st.Egress.Counters[egress.CounterBlockedDestination]; !ok {
		t.Errorf("status counters lack %s: %v", egress.CounterBlockedDestination, st.Egress.Counters)
	}
	if got := r.egress.State(); !strings.HasPrefix(got, "state: prefix 100.64.0.0/16 via confine, masquerade to wan0, allow [10.0.0.0/8], deny [198.51.100.0/24]\n") {
		t.Errorf("kernel egress state:\n%s", got)
	}

	// The upstream dies.
	ln.Close()
	r.wait(EventEgressChanged)
	if strings.Contains(read("server"), "0.0.0.0/0") {
		t.Errorf("withdrawn: server's host file still announces egress:\n%s", read("server"))
	}
	if got := read("node_1"); got != nodeFile {
		t.Errorf("a withdrawal rewrote node_1's file:\n%s", got)
	}
	if got := r.tincd.take(); got != "reload" {
		t.Errorf("withdrawing: tincd calls %q, want one reload", got)
	}
	st = r.poll()
	if st.Egress.State != EgressWithdrawn || st.Egress.LastProbe == nil || st.Egress.LastProbe.OK || st.Egress.Probes.Failed < 2 {
		t.Errorf("status after the upstream died: %+v", st.Egress)
	}
	// The kernel rules stay while withdrawn: connections in flight drain.
	if got := r.egress.State(); !strings.HasPrefix(got, "state: prefix") {
		t.Errorf("kernel egress state while withdrawn:\n%s", got)
	}

	// It comes back: announced after the hold-down, not before.
	var ln2 net.Listener
	for i := 0; i < 50; i++ {
		if ln2, err = net.Listen("tcp", addr); err == nil {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err != nil {
		t.Fatal(err)
	}
	defer ln2.Close()
	go serve(ln2)
	back := time.Now()
	r.wait(EventEgressChanged)
	if d := time.Since(back); d < 500*time.Millisecond {
		t.Errorf("announced again %s after the upstream came back, before the 500ms hold-down", d)
	}
	if !strings.Contains(read("server"), "Subnet = 0.0.0.0/0#10\n") {
		t.Errorf("announced again: server's host file:\n%s", read("server"))
	}
}
