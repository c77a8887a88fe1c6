package source

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"time"

	"github.com/confine-project/mgmtnet/mesh"
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

// saveSnapshot writes the snapshot atomically (temporary file, fsync,
// rename, directory fsync), encoding it straight into the file: with 66 000
// members a []byte of it would be one more copy of the registry's answer.
func saveSnapshot(path string, s snapshot) error {
	dir := dirOf(path)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("save snapshot: %w", err)
	}
	tmp, err := os.CreateTemp(dir, ".tmp-mgmtnet-snapshot-*")
	if err != nil {
		return fmt.Errorf("save snapshot %s: %w", path, err)
	}
	defer os.Remove(tmp.Name()) // a no-op after the rename
	w := bufio.NewWriterSize(tmp, 1<<16)
	err = json.NewEncoder(w).Encode(s)
	if err == nil {
		err = w.Flush()
	}
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp.Name(), path)
	}
	if err == nil {
		if d, derr := os.Open(dir); derr == nil {
			err = d.Sync()
			d.Close()
		}
	}
	if err != nil {
		return fmt.Errorf("save snapshot %s: %w", path, err)
	}
	return nil
}

func loadSnapshot(path string) (snapshot, error) {
	var s snapshot
	f, err := os.Open(path)
	if err != nil {
		return s, fmt.Errorf("load snapshot: %w", err)
	}
	defer f.Close()
	if err := json.NewDecoder(bufio.NewReaderSize(f, 1<<16)).Decode(&s); err != nil {
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
