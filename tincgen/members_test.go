package tincgen

import (
	"os"
	"slices"
	"testing"

	"github.com/confine-project/mgmtnet/addressing"
	"github.com/confine-project/mgmtnet/mesh"
	"github.com/google/go-cmp/cmp"
)

func TestHostFiles(t *testing.T) {
	key, err := os.ReadFile("testdata/rsa_public_key.pem")
	if err != nil {
		t.Fatal(err)
	}
	plan := addressing.Default()
	res := mesh.Build(plan, []mesh.Candidate{
		{Kind: addressing.KindServer, ID: 2, MgmtAddr: "fdf5:5351:1dfd::2", Backend: "tinc",
			Tinc: &mesh.CandidateTinc{Name: "server", PubKey: string(key), Addresses: []mesh.CandidateAddress{
				{Addr: "gw.example.net", Port: 655, Island: 1},
				{Addr: "10.241.0.254", Port: 655, Island: 2},
			}}},
		{Kind: addressing.KindNode, ID: 31, MgmtAddr: "fdf5:5351:1dfd:1f::2", Backend: "tinc",
			Tinc: &mesh.CandidateTinc{Name: "node_31", PubKey: string(key)}},
	}, mesh.BuildOptions{})
	if len(res.Rejected) != 0 {
		t.Fatalf("rejected: %v", res.Rejected)
	}
	files, err := HostFiles(res.Testbed, HostOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for name, golden := range map[string]string{"server": "testdata/gateway.host", "node_31": "testdata/node.host"} {
		want, err := os.ReadFile(golden)
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(string(want), string(files[name])); diff != "" {
			t.Errorf("%s differs from %s (-want +got):\n%s", name, golden, diff)
		}
	}
	// Island 2 first.
	h := HostFor(res.Testbed.At(1), 2)
	want := []Address{{Host: "10.241.0.254", Port: 655}, {Host: "gw.example.net", Port: 655}}
	if diff := cmp.Diff(want, h.Addresses); diff != "" {
		t.Errorf("island-first order (-want +got):\n%s", diff)
	}
	// Island 1 (already first) and an unknown island keep registry order.
	for _, island := range []uint64{1, 9} {
		h := HostFor(res.Testbed.At(1), island)
		if h.Addresses[0].Host != "gw.example.net" {
			t.Errorf("island %d: order %v", island, h.Addresses)
		}
	}
}

// The controller's get_host(island) inserts each address of the island at
// the front (host.insert(0, line)): two or more of them come in reverse
// registry order, then the others in registry order. Its lines for this
// member, island 1, are the expected file's (which, unlike the
// controller's, ends with a newline).
func TestHostForIslandOrderIsTheController(t *testing.T) {
	key, err := os.ReadFile("testdata/rsa_public_key.pem")
	if err != nil {
		t.Fatal(err)
	}
	res := mesh.Build(addressing.Default(), []mesh.Candidate{
		{Kind: addressing.KindServer, ID: 2, MgmtAddr: "fdf5:5351:1dfd::2", Backend: "tinc",
			Tinc: &mesh.CandidateTinc{Name: "server", PubKey: string(key), Addresses: []mesh.CandidateAddress{
				{Addr: "10.0.0.1", Port: 655, Island: 1},
				{Addr: "198.51.100.1", Port: 655, Island: 2},
				{Addr: "10.0.0.2", Port: 656, Island: 1},
				{Addr: "gw.example.net", Port: 655},
				{Addr: "10.0.0.3", Port: 655, Island: 1},
			}}},
	}, mesh.BuildOptions{})
	if len(res.Rejected) != 0 {
		t.Fatalf("rejected: %v", res.Rejected)
	}
	got := string(RenderHost(HostFor(res.Testbed.At(0), 1)))
	want := "Address = 10.0.0.3 655\nAddress = 10.0.0.2 656\nAddress = 10.0.0.1 655\n" +
		"Address = 198.51.100.1 655\nAddress = gw.example.net 655\n" +
		"Subnet = fdf5:5351:1dfd:0:0:0:0:2\n\n" + string(key)
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("island 1 (-controller +mgmtnet):\n%s", diff)
	}
	// Without an island: registry order.
	if h := HostFor(res.Testbed.At(0), 0); h.Addresses[0].Host != "10.0.0.1" || h.Addresses[4].Host != "10.0.0.3" {
		t.Errorf("no island: %v", h.Addresses)
	}
}

// FuzzHostOfMember: whatever the registry sends, a member that mesh accepts
// renders to a host file that parses back to exactly its own Addresses,
// Subnets and key: no registry value can add a line to a host file.
func FuzzHostOfMember(f *testing.F) {
	key, err := os.ReadFile("testdata/rsa_public_key.pem")
	if err != nil {
		f.Fatal(err)
	}
	f.Add("node_31", string(key), "10.0.0.1", 655)
	f.Add("node_31", "Subnet = 0.0.0.0/0\n"+string(key), "gw.example.net", 0)
	f.Add("node_31", string(key)+"Subnet = ::/0\n", "a\nSubnet = ::/0", 1)
	plan := addressing.Default()
	f.Fuzz(func(t *testing.T, name, pubkey, addr string, port int) {
		res := mesh.Build(plan, []mesh.Candidate{{Kind: addressing.KindNode, ID: 31, MgmtAddr: "fdf5:5351:1dfd:1f::2", Backend: "tinc",
			Tinc: &mesh.CandidateTinc{Name: name, PubKey: pubkey, Addresses: []mesh.CandidateAddress{{Addr: addr, Port: port}}}}}, mesh.BuildOptions{})
		for m := range res.Testbed.All() {
			h := HostFor(m, 0)
			if err := h.Validate(); err != nil {
				t.Fatalf("mesh accepted %q but its host file is invalid: %v", m.TincName, err)
			}
			back, err := ParseHost(RenderHost(h))
			if err != nil {
				t.Fatalf("rendered host file does not parse: %v", err)
			}
			if !slices.Equal(h.Subnets, back.Subnets) {
				t.Fatalf("subnets changed through the file: %v -> %v", h.Subnets, back.Subnets)
			}
			if diff := cmp.Diff(h.Addresses, back.Addresses); diff != "" {
				t.Fatalf("addresses changed through the file (-want +got):\n%s", diff)
			}
			if back.PublicKey != m.PubKey || len(back.Options) != 0 {
				t.Fatalf("key or options changed through the file: %q %v", back.PublicKey, back.Options)
			}
		}
	})
}

func TestHostFilesEgress(t *testing.T) {
	key, err := os.ReadFile("testdata/rsa_public_key.pem")
	if err != nil {
		t.Fatal(err)
	}
	plan := addressing.Default()
	cands := func(egress string) []mesh.Candidate {
		srv := mesh.Candidate{Kind: addressing.KindServer, ID: 2, MgmtAddr: "fdf5:5351:1dfd::2", Backend: "tinc",
			Tinc: &mesh.CandidateTinc{Name: "server", PubKey: string(key), Addresses: []mesh.CandidateAddress{{Addr: "10.241.1.1", Port: 655}}}}
		if egress != "" {
			srv.Properties = map[string]string{mesh.EgressProperty: egress}
		}
		return []mesh.Candidate{srv,
			{Kind: addressing.KindNode, ID: 0x1f, MgmtAddr: "fdf5:5351:1dfd:1f::2", Backend: "tinc",
				Tinc: &mesh.CandidateTinc{Name: "node_31", PubKey: string(key)}},
			{Kind: addressing.KindNode, ID: 0x1234, MgmtAddr: "fdf5:5351:1dfd:1234::2", Backend: "tinc",
				Tinc: &mesh.CandidateTinc{Name: "node_4660", PubKey: string(key)}},
			{Kind: addressing.KindHost, ID: 7, MgmtAddr: "fdf5:5351:1dfd:0:2000::7", Backend: "tinc",
				Tinc: &mesh.CandidateTinc{Name: "host_7", PubKey: string(key)}},
		}
	}
	subnets := func(files Files) map[string][]string {
		out := map[string][]string{}
		for name, b := range files {
			h, err := ParseHost(b)
			if err != nil {
				t.Fatalf("%s: %v", name, err)
			}
			for _, s := range h.Subnets {
				out[name] = append(out[name], s.String())
			}
		}
		return out
	}
	render := func(egress string, o HostOptions) Files {
		t.Helper()
		res := mesh.Build(plan, cands(egress), mesh.BuildOptions{})
		if len(res.Rejected)+len(res.Warnings) != 0 {
			t.Fatalf("rejected %v, warnings %v", res.Rejected, res.Warnings)
		}
		files, err := HostFiles(res.Testbed, o)
		if err != nil {
			t.Fatal(err)
		}
		return files
	}
	without := map[string][]string{
		"server":    {"fdf5:5351:1dfd:0:0:0:0:2"},
		"node_31":   {"fdf5:5351:1dfd:1f:0:0:0:0/64"},
		"node_4660": {"fdf5:5351:1dfd:1234:0:0:0:0/64"},
		"host_7":    {"fdf5:5351:1dfd:0:2000:0:0:7"},
	}
	with := func(gw string) map[string][]string {
		w := map[string][]string{
			"server":    {"fdf5:5351:1dfd:0:0:0:0:2"},
			"node_31":   {"fdf5:5351:1dfd:1f:0:0:0:0/64", "100.64.0.31"},
			"node_4660": {"fdf5:5351:1dfd:1234:0:0:0:0/64", "100.64.18.52"},
			"host_7":    {"fdf5:5351:1dfd:0:2000:0:0:7"},
		}
		if gw != "" {
			w["server"] = append(w["server"], gw)
		}
		return w
	}
	tests := []struct {
		name   string
		egress string
		opts   HostOptions
		want   map[string][]string
	}{
		{name: "no egress anywhere: the controller's files", want: without},
		{name: "registry offer", egress: "weight=20", want: with("0.0.0.0/0#20")},
		{name: "registry offer off", egress: "off", want: without},
		{name: "local config offers", opts: HostOptions{Egress: map[string]mesh.Egress{"server": {Offered: true, Weight: 5}}}, want: with("0.0.0.0/0#5")},
		{name: "local config overrides the registry's weight", egress: "weight=20",
			opts: HostOptions{Egress: map[string]mesh.Egress{"server": {Offered: true, Weight: 5}}}, want: with("0.0.0.0/0#5")},
		// A withdrawn offer drops the gateway's 0.0.0.0/0 but keeps the
		// nodes' /32s: a withdrawal must touch one file, not every node's.
		{name: "withdrawn", egress: "weight=20", opts: HostOptions{Egress: map[string]mesh.Egress{"server": {}}}, want: with("")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if diff := cmp.Diff(tt.want, subnets(render(tt.egress, tt.opts))); diff != "" {
				t.Errorf("subnets (-want +got):\n%s", diff)
			}
		})
	}
	// Without egress, HostFiles is the controller's
	// golden file.
	golden, err := os.ReadFile("testdata/node.host")
	if err != nil {
		t.Fatal(err)
	}
	if got := render("", HostOptions{})["node_31"]; string(got) != string(golden) {
		t.Errorf("node_31 without egress:\n%s\nwant the golden\n%s", got, golden)
	}
}
