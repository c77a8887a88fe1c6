package nodeboot

import (
	"flag"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/confine-project/mgmtnet/tincgen"

	"github.com/google/go-cmp/cmp"

	"github.com/confine-project/mgmtnet/addressing"
	"github.com/confine-project/mgmtnet/mesh"
)

var update = flag.Bool("update", false, "rewrite golden files")

func readTestdata(t *testing.T, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func node31(t *testing.T) Config {
	t.Helper()
	c, err := ConfigFromUCI("confine", []byte(firmwareUCI))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// dump prints a Desired as text for golden files.
func dump(d Desired) string {
	var b strings.Builder
	for _, f := range d.Files {
		fmt.Fprintf(&b, "==> %s (%#o) <==\n%s", f.Name, f.Mode, f.Data)
	}
	return b.String()
}

func golden(t *testing.T, name, got string) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *update {
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run with -update to create it)", err)
	}
	if d := cmp.Diff(string(want), got); d != "" {
		t.Errorf("%s (-want +got):\n%s", path, d)
	}
}

// registryCandidates is a registry answer: the main server with two
// addresses in two islands, node 31 (this node) in island 2, node 32, and a
// host without a key.
func registryCandidates(t *testing.T) []mesh.Candidate {
	gw, node := string(readTestdata(t, "gw.pub")), string(readTestdata(t, "node.pub"))
	return []mesh.Candidate{
		{Kind: addressing.KindServer, ID: 2, Name: "main", MgmtAddr: "fdf5:5351:1dfd::2", Backend: "tinc",
			Tinc: &mesh.CandidateTinc{Name: "server", PubKey: gw, Addresses: []mesh.CandidateAddress{
				{Addr: "gw.example.net", Port: 655, Island: 1}, {Addr: "10.241.0.254", Port: 655, Island: 2}}}},
		{Kind: addressing.KindHost, ID: 7, Name: "laptop", MgmtAddr: "fdf5:5351:1dfd:0:2000::7", Backend: "tinc"},
		{Kind: addressing.KindNode, ID: 31, Name: "n31", Island: 2, MgmtAddr: "fdf5:5351:1dfd:1f::2", Backend: "tinc",
			Tinc: &mesh.CandidateTinc{Name: "node_31", PubKey: node}},
		{Kind: addressing.KindNode, ID: 32, Name: "n32", Island: 1, MgmtAddr: "fdf5:5351:1dfd:20::2", Backend: "tinc",
			Tinc: &mesh.CandidateTinc{Name: "node_32", PubKey: node}},
	}
}

func TestDesiredRegistry(t *testing.T) {
	cfg := node31(t)
	gws, island, notes, err := RegistryGateways(cfg, netip.MustParsePrefix("fdf5:5351:1dfd::/48"), registryCandidates(t))
	if err != nil {
		t.Fatal(err)
	}
	if island != 2 || len(notes) != 0 {
		t.Errorf("island %d, notes %q; want 2 and none", island, notes)
	}
	d, err := DesiredFiles(cfg, readTestdata(t, "node.pub"), gws, DesiredOptions{})
	if err != nil {
		t.Fatal(err)
	}
	golden(t, "desired-registry.golden", dump(d))
	again, _ := DesiredFiles(cfg, readTestdata(t, "node.pub"), gws, DesiredOptions{})
	if !d.Equal(again) {
		t.Error("DesiredFiles is not deterministic")
	}
}

func TestDesiredFirmware(t *testing.T) {
	cfg := node31(t)
	gws, notes, err := FirmwareGateways(cfg, "testdata/firmware/tinc", "testdata/firmware/gateways")
	if err != nil {
		t.Fatal(err)
	}
	wantNotes := []string{`skipped gateway file testdata/firmware/gateways/broken: not a tinc host file: line 2: invalid subnet "not-a-subnet": ParseAddr("not-a-subnet"): unable to parse IP`, `skipped gateway file testdata/firmware/gateways/server_9: no Address line`}
	if d := cmp.Diff(wantNotes, notes); d != "" {
		t.Errorf("notes (-want +got):\n%s", d)
	}
	d, err := DesiredFiles(cfg, readTestdata(t, "node.pub"), gws, DesiredOptions{})
	if err != nil {
		t.Fatal(err)
	}
	golden(t, "desired-firmware.golden", dump(d))
	// hosts/server is kept byte for byte (not the gateways-dir copy).
	server, _ := d.Lookup("hosts/server")
	if d := cmp.Diff(string(readTestdata(t, "firmware/tinc/hosts/server")), string(server.Data)); d != "" {
		t.Errorf("hosts/server not kept as it is (-want +got):\n%s", d)
	}
}

func TestDesiredConnectOrder(t *testing.T) {
	host := []byte("Address = 192.0.2.1\n")
	tests := []struct {
		name, first string
		gws         []string
		want        string
	}{
		{"tinc_gateway first", "server_9", []string{"server", "server_9", "host_3"}, "Name = node_31\nConnectTo = server_9\nConnectTo = host_3\nConnectTo = server\nTunnelServer = yes\nMaxTimeout = 20\n"},
		{"tinc_gateway absent: sorted", "server", []string{"server_9", "host_3"}, "Name = node_31\nConnectTo = host_3\nConnectTo = server_9\nTunnelServer = yes\nMaxTimeout = 20\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := node31(t)
			cfg.TincGateway = tt.first
			var gws []Gateway
			for _, n := range tt.gws {
				gws = append(gws, Gateway{Name: n, Host: host})
			}
			d, err := DesiredFiles(cfg, readTestdata(t, "node.pub"), gws, DesiredOptions{})
			if err != nil {
				t.Fatal(err)
			}
			conf, _ := d.Lookup("tinc.conf")
			if diff := cmp.Diff(tt.want, string(conf.Data)); diff != "" {
				t.Errorf("tinc.conf (-want +got):\n%s", diff)
			}
		})
	}
}

func TestDesiredErrors(t *testing.T) {
	host := []byte("Address = 192.0.2.1\n")
	pub := readTestdata(t, "node.pub")
	tests := []struct {
		name string
		pub  []byte
		gws  []Gateway
		want string
	}{
		{"no gateway", pub, nil, "no gateway to connect to"},
		{"no key", nil, []Gateway{{Name: "server", Host: host}}, "desired files: no public key"},
		{"gateway is the node", pub, []Gateway{{Name: "node_31", Host: host}}, "desired files: gateway node_31 is this node"},
		{"twice", pub, []Gateway{{Name: "server", Host: host}, {Name: "server", Host: host}}, "desired files: gateway server listed twice"},
		{"bad name", pub, []Gateway{{Name: "../etc", Host: host}}, `desired files: gateway "../etc": not a tinc name`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := DesiredFiles(node31(t), tt.pub, tt.gws, DesiredOptions{})
			if err == nil || err.Error() != tt.want {
				t.Errorf("error = %v, want %s", err, tt.want)
			}
		})
	}
}

func TestUnifiedDiff(t *testing.T) {
	a := "Name = node_31\nConnectTo = server\n"
	b := "Name = node_31\nConnectTo = server\nConnectTo = server_5\n"
	want := "--- a/tinc.conf\n+++ b/tinc.conf\n@@ -1,2 +1,3 @@\n Name = node_31\n ConnectTo = server\n+ConnectTo = server_5\n"
	if d := cmp.Diff(want, tincgen.UnifiedDiff("a/tinc.conf", "b/tinc.conf", []byte(a), []byte(b))); d != "" {
		t.Errorf("diff (-want +got):\n%s", d)
	}
	if got := tincgen.UnifiedDiff("x", "y", []byte(a), []byte(a)); got != "" {
		t.Errorf("diff of equal files: %q", got)
	}
	want = "--- /dev/null\n+++ b/x\n@@ -0,0 +1 @@\n+new\n"
	if d := cmp.Diff(want, tincgen.UnifiedDiff("/dev/null", "b/x", nil, []byte("new\n"))); d != "" {
		t.Errorf("diff of a new file (-want +got):\n%s", d)
	}
}

func TestUnifiedDiffChange(t *testing.T) {
	a := "1\n2\n3\n4\n5\n6\n7\n8\n9\n10\n11\n12\n"
	b := "1\n2\nthree\n4\n5\n6\n7\n8\n9\n10\n11\ntwelve\n"
	want := "--- a\n+++ b\n@@ -1,6 +1,6 @@\n 1\n 2\n-3\n+three\n 4\n 5\n 6\n@@ -9,4 +9,4 @@\n 9\n 10\n 11\n-12\n+twelve\n"
	if d := cmp.Diff(want, tincgen.UnifiedDiff("a", "b", []byte(a), []byte(b))); d != "" {
		t.Errorf("diff (-want +got):\n%s", d)
	}
}

// TestDesiredAssignedGateways: in a testbed larger than its gateways'
// capacity, the node connects to the gateways the assignment gives it
// (those that hold its file), not to every gateway.
func TestDesiredAssignedGateways(t *testing.T) {
	cfg := node31(t)
	cands := registryCandidates(t)
	cands[0].Properties = map[string]string{mesh.CapacityProperty: "7"}
	gw := string(readTestdata(t, "gw.pub"))
	plan, _ := addressing.New(netip.MustParsePrefix("fdf5:5351:1dfd::/48"))
	for id := uint64(10); id < 16; id++ {
		a, _ := plan.ServerAddr(id)
		cands = append(cands, mesh.Candidate{Kind: addressing.KindServer, ID: id, MgmtAddr: a.String(), Backend: "tinc",
			Properties: map[string]string{mesh.CapacityProperty: "7"}, // 7 gateways × 7 / 23 members: 2 each
			Tinc: &mesh.CandidateTinc{Name: fmt.Sprintf("server_%d", id), PubKey: gw,
				Addresses: []mesh.CandidateAddress{{Addr: fmt.Sprintf("192.0.2.%d", id)}}}})
	}
	node := string(readTestdata(t, "node.pub"))
	for id := uint64(40); id < 60; id++ {
		a, _ := plan.NodeAddr(uint16(id))
		cands = append(cands, mesh.Candidate{Kind: addressing.KindNode, ID: id, MgmtAddr: a.String(), Backend: "tinc",
			Tinc: &mesh.CandidateTinc{Name: fmt.Sprintf("node_%d", id), PubKey: node}})
	}
	gws, _, notes, err := RegistryGateways(cfg, plan.Mgmt(), cands)
	if err != nil || len(notes) != 0 {
		t.Fatalf("err %v, notes %q", err, notes)
	}
	want, _ := mesh.Build(plan, cands, mesh.BuildOptions{}).Testbed.Assignment().Of("node_31")
	var got []string
	for _, g := range gws {
		got = append(got, g.Name)
	}
	slices.Sort(want)
	if len(want) != 2 || !slices.Equal(got, want) {
		t.Errorf("node_31 connects to %v; want its 2 assigned gateways %v", got, want)
	}
}

// TestDesiredFirmwareEarlierGateways: offline, a node also connects to the
// gateways an earlier boot got from the registry (their files in hosts/),
// since with the assignment of members to gateways the firmware's
// tinc_gateway may not hold it; a file there without an Address (the
// node's own) is not a gateway.
func TestDesiredFirmwareEarlierGateways(t *testing.T) {
	cfg := node31(t)
	dir := t.TempDir()
	os.MkdirAll(filepath.Join(dir, "hosts"), 0o755)
	server := readTestdata(t, "firmware/tinc/hosts/server")
	os.WriteFile(filepath.Join(dir, "hosts", "server"), server, 0o644)
	os.WriteFile(filepath.Join(dir, "hosts", "server_3"), []byte("Address = 192.0.2.3\n"+string(readTestdata(t, "gw.pub"))), 0o644)
	os.WriteFile(filepath.Join(dir, "hosts", "node_31"), []byte("Subnet = fdf5:5351:1dfd:1f:0:0:0:0/64\n"+string(readTestdata(t, "node.pub"))), 0o644)
	os.WriteFile(filepath.Join(dir, "hosts", "node_9"), readTestdata(t, "node.pub"), 0o644)
	gws, notes, err := FirmwareGateways(cfg, dir, "")
	if err != nil || len(notes) != 0 {
		t.Fatalf("err %v, notes %q", err, notes)
	}
	var names []string
	for _, g := range gws {
		names = append(names, g.Name)
	}
	if !slices.Equal(names, []string{"server", "server_3"}) {
		t.Errorf("offline gateways %v, want [server server_3]", names)
	}
}

// TestMaxTimeoutSpread: nodes' MaxTimeout is fixed per node and spread
// over 10..20 s, so that their retries after a gateway restart do not
// arrive in waves.
func TestMaxTimeoutSpread(t *testing.T) {
	count := map[int]int{}
	for id := 1; id <= 1000; id++ {
		name := fmt.Sprintf("node_%d", id)
		v := MaxTimeout(name)
		if v < 10 || v > 20 || v != MaxTimeout(name) {
			t.Fatalf("%s: MaxTimeout %d", name, v)
		}
		count[v]++
	}
	for v := 10; v <= 20; v++ {
		if count[v] < 50 || count[v] > 130 {
			t.Errorf("MaxTimeout %d for %d of 1000 nodes; want about 91", v, count[v])
		}
	}
}

// TestDesiredOwnHost: DesiredFiles keeps the node's existing host file
// (DesiredOptions.OwnHost) when it means the same as its own rendering,
// and renders its own otherwise.
func TestDesiredOwnHost(t *testing.T) {
	pub, spki := readTestdata(t, "node.pub"), string(readTestdata(t, "node.spki.pub"))
	ours := "Subnet = fdf5:5351:1dfd:1f:0:0:0:0/64\n\n" + string(pub)
	gws := []Gateway{{Name: "server", Host: readTestdata(t, "firmware/tinc/hosts/server")}}
	tests := []struct {
		name   string
		own    string
		egress bool
		want   string
	}{
		{"none", "", false, ours},
		{"SPKI form kept", "Subnet = fdf5:5351:1dfd:1f:0:0:0:0/64\n\n" + spki, false, "Subnet = fdf5:5351:1dfd:1f:0:0:0:0/64\n\n" + spki},
		{"egress: the /32 is missing", "Subnet = fdf5:5351:1dfd:1f:0:0:0:0/64\n\n" + spki, true, "Subnet = fdf5:5351:1dfd:1f:0:0:0:0/64\nSubnet = 100.64.0.31\n\n" + string(pub)},
		{"another key", "Subnet = fdf5:5351:1dfd:1f:0:0:0:0/64\n\n" + string(readTestdata(t, "gw.pub")), false, ours},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var own []byte
			if tt.own != "" {
				own = []byte(tt.own)
			}
			d, err := DesiredFiles(node31(t), pub, gws, DesiredOptions{Egress: tt.egress, OwnHost: own})
			if err != nil {
				t.Fatal(err)
			}
			f, _ := d.Lookup("hosts/node_31")
			if diff := cmp.Diff(tt.want, string(f.Data)); diff != "" {
				t.Errorf("hosts/node_31 (-want +got):\n%s", diff)
			}
		})
	}
}

// TestFirmwareGatewaysOwnNameExact: the node's own host file is told from
// the gateways' by its exact name. The firmware's "ls hosts/ | grep -v
// node_1" also drops node_10, node_11, ... for node 1; node-boot does not
// reproduce that: any other file with an Address is a gateway.
func TestFirmwareGatewaysOwnNameExact(t *testing.T) {
	cfg := node31(t)
	cfg.NodeID = 1
	dir := t.TempDir()
	gw := string(readTestdata(t, "gw.pub"))
	writeTree(t, dir, map[string]fileState{
		"hosts/node_1":  {[]byte("Subnet = fdf5:5351:1dfd:1:0:0:0:0/64\n\n" + string(readTestdata(t, "node.pub"))), 0o644},
		"hosts/node_10": {[]byte("Address = 192.0.2.10 655\nSubnet = fdf5:5351:1dfd:a:0:0:0:0/64\n\n" + gw), 0o644},
		"hosts/server":  {[]byte("Address = 192.0.2.2 655\nSubnet = fdf5:5351:1dfd:0:0:0:0:2\n\n" + gw), 0o644},
	})
	gws, notes, err := FirmwareGateways(cfg, dir, "")
	if err != nil || len(notes) != 0 {
		t.Fatalf("err %v, notes %q", err, notes)
	}
	var names []string
	for _, g := range gws {
		names = append(names, g.Name)
	}
	if d := cmp.Diff([]string{"server", "node_10"}, names); d != "" {
		t.Errorf("gateways of node_1 (-want +got):\n%s", d)
	}
}
