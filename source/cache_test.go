package source

import (
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/confine-project/mgmtnet/addressing"
	"github.com/confine-project/mgmtnet/mesh"
	"github.com/confine-project/mgmtnet/mesh/registry"
)

var _ candidateSink = (*mesh.Builder)(nil)

// snapshotTestbed is a server, nodes (one with tinc addresses the policy
// drops) and a rejected node, built.
func snapshotTestbed(t *testing.T) ([]mesh.Candidate, *mesh.Testbed) {
	t.Helper()
	key, err := registry.GeneratePublicKeyPEM(2048)
	if err != nil {
		t.Fatal(err)
	}
	plan := addressing.Default()
	cands := []mesh.Candidate{{Kind: addressing.KindServer, ID: 2, MgmtAddr: "fdf5:5351:1dfd::2", Backend: "tinc",
		Tinc:       &mesh.CandidateTinc{Name: "server", PubKey: key, Addresses: []mesh.CandidateAddress{{Addr: "gw.example.net", Island: 1}}},
		Properties: map[string]string{"x": "y"}}}
	for id := uint64(1); id <= 5; id++ {
		a, _ := plan.Address(addressing.Entity{Kind: addressing.KindNode, ID: id})
		name, _ := addressing.TincName(addressing.KindNode, id)
		cands = append(cands, mesh.Candidate{Kind: addressing.KindNode, ID: id, Name: "n", MgmtAddr: a.String(), Backend: "tinc",
			Tinc: &mesh.CandidateTinc{Name: name, PubKey: key}})
	}
	cands[1].Tinc.Addresses = []mesh.CandidateAddress{{Addr: "192.0.2.1", Port: 700}}
	cands[2].MgmtAddr = "fdf5:5351:1dfd:77::2" // rejected
	return cands, mesh.Build(plan, cands, mesh.BuildOptions{}).Testbed
}

// A saved snapshot loads, one candidate at a time, into the same testbed.
func TestSnapshotRoundTrip(t *testing.T) {
	_, tb := snapshotTestbed(t)
	if tb.Len() == 0 {
		t.Fatal("empty testbed")
	}
	path := filepath.Join(t.TempDir(), "state", "snapshot.json")
	want := snapshot{Saved: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC), RegistryURL: "http://r/api/",
		Prefix: "fdf5:5351:1dfd::/48", Validators: map[string]string{"http://r/api/nodes/": `"e1"`}}
	if err := saveSnapshot(path, want, tb); err != nil {
		t.Fatal(err)
	}
	b := mesh.NewBuilder(mesh.BuildOptions{})
	got, err := loadSnapshot(path, b)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("header (-want +got):\n%s", diff)
	}
	if v := b.Build(addressing.Default()).Testbed.Version(); v != tb.Version() {
		t.Errorf("version %s, want %s", v, tb.Version())
	}
}

// A snapshot.json of an earlier version, with the candidates as one list
// (and before the other fields), still loads.
func TestSnapshotLoadsOldFormat(t *testing.T) {
	cands, tb := snapshotTestbed(t)
	old := struct {
		Candidates  []mesh.Candidate  `json:"candidates"`
		Saved       time.Time         `json:"saved"`
		RegistryURL string            `json:"registry_url"`
		Prefix      string            `json:"prefix"`
		Validators  map[string]string `json:"validators"`
	}{Candidates: cands, RegistryURL: "http://r/api/", Prefix: "fdf5:5351:1dfd::/48"}
	raw, err := json.Marshal(old)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "snapshot.json")
	if err := os.WriteFile(path, raw, 0o644); err != nil {
		t.Fatal(err)
	}
	b := mesh.NewBuilder(mesh.BuildOptions{})
	s, err := loadSnapshot(path, b)
	if err != nil {
		t.Fatal(err)
	}
	if s.Prefix != old.Prefix || s.RegistryURL != old.RegistryURL || b.Len() != len(cands) || tb.Len() != len(cands)-1 {
		t.Errorf("loaded %+v with %d candidates", s, b.Len())
	}
	if v := b.Build(addressing.Default()).Testbed.Version(); v != tb.Version() {
		t.Errorf("version %s, want %s", v, tb.Version())
	}
	if err := os.WriteFile(path, raw[:len(raw)/2], 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := loadSnapshot(path, mesh.NewBuilder(mesh.BuildOptions{})); err == nil {
		t.Error("a truncated snapshot loaded")
	}
}
