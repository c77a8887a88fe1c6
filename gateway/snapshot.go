package gateway

import (
	"encoding/json"
	"fmt"
	"os"
	"time"

	"github.com/confine-project/mgmtnet/mesh"
	"github.com/confine-project/mgmtnet/tincgen"
)

// snapshot is the last-known-good state saved in state_dir/snapshot.json:
// enough to rebuild the Testbed without the registry.
type snapshot struct {
	Saved       time.Time         `json:"saved"`
	RegistryURL string            `json:"registry_url"`
	Prefix      string            `json:"prefix"`
	Validators  map[string]string `json:"validators"`
	Candidates  []mesh.Candidate  `json:"candidates"`
}

func saveSnapshot(path string, s snapshot) error {
	b, err := json.Marshal(s)
	if err != nil {
		return fmt.Errorf("encode snapshot: %w", err)
	}
	if err := os.MkdirAll(dirOf(path), 0o755); err != nil {
		return fmt.Errorf("save snapshot: %w", err)
	}
	if err := tincgen.WriteFileAtomic(path, b, 0o600); err != nil {
		return fmt.Errorf("save snapshot %s: %w", path, err)
	}
	return nil
}

func loadSnapshot(path string) (snapshot, error) {
	var s snapshot
	b, err := os.ReadFile(path)
	if err != nil {
		return s, fmt.Errorf("load snapshot: %w", err)
	}
	if err := json.Unmarshal(b, &s); err != nil {
		return snapshot{}, fmt.Errorf("load snapshot %s: %w", path, err)
	}
	return s, nil
}

func dirOf(p string) string {
	for i := len(p) - 1; i > 0; i-- {
		if p[i] == '/' {
			return p[:i]
		}
	}
	return "."
}
