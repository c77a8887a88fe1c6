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
	})
	if len(res.Rejected) != 0 {
		t.Fatalf("rejected: %v", res.Rejected)
	}
	files, err := HostFiles(res.Testbed, 0)
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
			Tinc: &mesh.CandidateTinc{Name: name, PubKey: pubkey, Addresses: []mesh.CandidateAddress{{Addr: addr, Port: port}}}}})
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
