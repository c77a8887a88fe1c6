package tincgen

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/confine-project/mgmtnet/addressing"
	"github.com/confine-project/mgmtnet/mesh"
	"github.com/google/go-cmp/cmp"
)

// sourceTestbed is a server and n nodes.
func sourceTestbed(t *testing.T, n int) *mesh.Testbed {
	t.Helper()
	key, err := os.ReadFile("testdata/rsa_public_key.pem")
	if err != nil {
		t.Fatal(err)
	}
	plan := addressing.Default()
	cands := []mesh.Candidate{{Kind: addressing.KindServer, ID: 2, MgmtAddr: "fdf5:5351:1dfd::2", Backend: "tinc",
		Tinc: &mesh.CandidateTinc{Name: "server", PubKey: string(key), Addresses: []mesh.CandidateAddress{{Addr: "gw.example.net"}}}}}
	for id := uint64(1); id <= uint64(n); id++ {
		a, _ := plan.Address(addressing.Entity{Kind: addressing.KindNode, ID: id})
		name, _ := addressing.TincName(addressing.KindNode, id)
		cands = append(cands, mesh.Candidate{Kind: addressing.KindNode, ID: id, MgmtAddr: a.String(), Backend: "tinc",
			Tinc: &mesh.CandidateTinc{Name: name, PubKey: string(key)}})
	}
	res := mesh.Build(plan, cands, mesh.BuildOptions{})
	if len(res.Rejected) != 0 {
		t.Fatalf("rejected: %v", res.Rejected)
	}
	return res.Testbed
}

// TestHostSourceMatchesHostFiles: a HostSource renders what HostFiles
// renders, and Sync of it does what Sync of the files does, dry
// run, Only and removal included.
func TestHostSourceMatchesHostFiles(t *testing.T) {
	tb := sourceTestbed(t, 20)
	for _, o := range []HostOptions{{}, {Island: 1, Gateway: "server"}} {
		files, err := HostFiles(tb, o)
		if err != nil {
			t.Fatal(err)
		}
		src := NewHostSource(tb, o)
		if diff := cmp.Diff(files.Names(), src.Names()); diff != "" {
			t.Fatalf("names (-Files +HostSource):\n%s", diff)
		}
		for _, name := range src.Names() {
			b, err := src.Render(name)
			if err != nil {
				t.Fatal(err)
			}
			if !src.Has(name) || string(b) != string(files[name]) {
				t.Errorf("%s: Has %v, rendered differently", name, src.Has(name))
			}
		}
		if src.Has("node_999") {
			t.Error("Has(node_999)")
		}
		if _, err := src.Render("node_999"); err == nil {
			t.Error("Render(node_999) did not fail")
		}

		a, b := t.TempDir(), t.TempDir()
		for _, dir := range []string{a, b} {
			writeFile(t, filepath.Join(dir, "node_3"), "stale\n")
			writeFile(t, filepath.Join(dir, "node_77"), "gone\n")
		}
		for _, opts := range []SyncOptions{{DryRun: true}, {Only: map[string]bool{"node_4": true, "node_77": true}}, {}} {
			want, err := Sync(a, files, opts)
			if err != nil {
				t.Fatal(err)
			}
			got, err := Sync(b, src, opts)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("report (-Sync of Files +Sync of a HostSource):\n%s", diff)
			}
			if diff := cmp.Diff(dirState(t, a), dirState(t, b)); diff != "" {
				t.Errorf("directory (-Sync of Files +Sync of a HostSource):\n%s", diff)
			}
		}
	}
}

func TestWithout(t *testing.T) {
	src := Without(Files{"a": []byte("1"), "b": []byte("2")}, "a")
	if diff := cmp.Diff([]string{"b"}, src.Names()); diff != "" {
		t.Errorf("names (-want +got):\n%s", diff)
	}
	if src.Has("a") || !src.Has("b") {
		t.Errorf("Has(a) %v, Has(b) %v", src.Has("a"), src.Has("b"))
	}
	if _, err := src.Render("a"); err == nil {
		t.Error("Render(a) did not fail")
	}
}
