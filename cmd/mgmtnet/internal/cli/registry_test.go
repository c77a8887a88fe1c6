package cli

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/confine-project/mgmtnet/mesh/registry"
)

// TestRegistrySynthOut: --out writes a whole file, world-readable like any
// file a server reads, whatever CreateTemp's mode.
func TestRegistrySynthOut(t *testing.T) {
	out := filepath.Join(t.TempDir(), "tb.json")
	var stdout, stderr bytes.Buffer
	if code := Run(context.Background(), []string{"registry", "synth", "nodes=3,servers=1,keys=1,keybits=2048", "--out", out}, Env{Stdout: &stdout, Stderr: &stderr}); code != 0 {
		t.Fatalf("exit %d: %s", code, stderr.String())
	}
	fi, err := os.Stat(out)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o644 {
		t.Errorf("mode %v, want 0644", fi.Mode().Perm())
	}
	if _, err := registry.LoadFile(out); err != nil {
		t.Error(err)
	}
	ents, _ := os.ReadDir(filepath.Dir(out))
	if len(ents) != 1 {
		t.Errorf("%d files in the directory, want 1 (no temporary left)", len(ents))
	}
}
