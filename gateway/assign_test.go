package gateway

import (
	"bytes"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"

	"github.com/confine-project/mgmtnet/mesh"
	"github.com/confine-project/mgmtnet/mesh/registry"
)

// assignFile is a registry with three gateways (server, server_3,
// server_4) of the given capacity and the given nodes.
func assignFile(t *testing.T, nodes int, capacity string) *registry.File {
	f := testFile(t, nodes)
	for _, id := range []uint64{3, 4} {
		f.Servers = append(f.Servers, registry.FileMember{ID: id, Name: "gw", Tinc: &registry.FileTinc{Name: fmt.Sprintf("server_%d", id), PubKey: keys[1],
			Addresses: []registry.FileAddress{{Addr: fmt.Sprintf("10.0.0.%d", id), Port: 655}}}})
	}
	for i := range f.Servers {
		f.Servers[i].Properties = map[string]string{mesh.CapacityProperty: capacity}
	}
	return f
}

func hostNames(t *testing.T, dir string) []string {
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), "node_") {
			out = append(out, e.Name())
		}
	}
	return out
}

// TestDaemonAssignment: a gateway holds only the nodes assigned to it,
// relays to another gateway only that gateway's nodes, and rewriting
// another gateway's relay routes keeps that file's mtime (so tinc 1.0
// keeps the link up on the SIGHUP).
func TestDaemonAssignment(t *testing.T) {
	// 3 gateways × 4 places / 6 nodes: 2 gateways each, 4 nodes on each.
	r := newRig(t, assignFile(t, 6, "4"))
	r.start()
	r.wait(EventSynced)
	st := r.poll()
	tb := r.d.hosts.tb
	a := tb.Assignment()
	want := a.On("server")
	if got := hostNames(t, r.cfg.HostsDir()); !slices.Equal(got, want) || len(got) != 4 {
		t.Errorf("hosts dir holds %v, want the 4 assigned %v", got, want)
	}
	as := st.Assignment
	if !as.Enabled || as.Gateways != 3 || as.PerMember != 2 || as.Capacity != 4 || as.Assigned != 4 || as.Held != 4 || len(as.Refused) != 0 || as.Limit != 1000-2 {
		t.Errorf("status assignment %+v", as)
	}
	// server_3's file relays server_3's nodes, and no other.
	b3, _ := os.ReadFile(r.hostFile("server_3"))
	for i := 1; i <= 6; i++ {
		n := fmt.Sprintf("node_%d", i)
		has := bytes.Contains(b3, []byte(":"+fmt.Sprint(i)+":0:0:0:0/64#"))
		if has != a.Holds("server_3", n) {
			t.Errorf("server_3's file relays %s: %v; server_3 holds it: %v\n%s", n, has, a.Holds("server_3", n), b3)
		}
	}
	// A new node: the relay routes of the gateways that take it change,
	// and their files keep their mtime.
	old := map[string]time.Time{}
	for _, g := range []string{"server_3", "server_4"} {
		fi, _ := os.Stat(r.hostFile(g))
		old[g] = fi.ModTime()
	}
	time.Sleep(1100 * time.Millisecond) // a rewrite would get a newer second
	r.srv.SetFile(assignFile(t, 7, "5"))
	r.poll()
	tb2 := r.d.hosts.tb
	for _, g := range []string{"server_3", "server_4"} {
		fi, _ := os.Stat(r.hostFile(g))
		b, _ := os.ReadFile(r.hostFile(g))
		if tb2.Assignment().Holds(g, "node_7") && !bytes.Contains(b, []byte(":7:0:0:0:0/64#")) {
			t.Errorf("%s holds node_7 but its file does not relay it:\n%s", g, b)
		}
		if !fi.ModTime().Equal(old[g]) {
			t.Errorf("%s's file: mtime %v, want it kept at %v (only Subnets changed)", g, fi.ModTime(), old[g])
		}
	}
	if got, want := hostNames(t, r.cfg.HostsDir()), tb2.Assignment().On("server"); !slices.Equal(got, want) {
		t.Errorf("after node_7 joined: hosts dir %v, want %v", got, want)
	}
}

// TestDaemonMaxMembers: a gateway assigned more members than
// tinc.max_members holds the first ones, refuses the rest with a
// warning, in status and in the metric.
func TestDaemonMaxMembers(t *testing.T) {
	var logs bytes.Buffer
	r := newRig(t, testFile(t, 10))
	r.log = slog.New(slog.NewTextHandler(&logs, nil))
	r.cfg.Tinc.MaxMembers = 3
	r.start()
	r.wait(EventSynced)
	st := r.poll()
	if got := hostNames(t, r.cfg.HostsDir()); !slices.Equal(got, []string{"node_1", "node_2", "node_3"}) {
		t.Errorf("hosts dir holds %v, want node_1..3", got)
	}
	as := st.Assignment
	if as.Assigned != 10 || as.Held != 3 || as.Limit != 3 || len(as.Refused) != 7 || !slices.Contains(as.Refused, "node_10") {
		t.Errorf("status assignment %+v", as)
	}
	if !strings.Contains(logs.String(), "level=WARN") || !strings.Contains(logs.String(), "refused=7") {
		t.Errorf("no warning naming the refusals:\n%s", logs.String())
	}
	var pb dto.Metric
	r.d.m.refusedMembers.Write(&pb)
	if v := pb.GetGauge().GetValue(); v != 7 {
		t.Errorf("mgmtnet_refused_members %v, want 7", v)
	}
}
