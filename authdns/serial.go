package authdns

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/confine-project/mgmtnet/tincgen"
)

// savedSerial is the last serial served and the digest of the zones it
// was given to (Server.digest).
type savedSerial struct {
	serial uint32
	digest string
	valid  bool
}

// serialStore keeps the serial in a file of one line, "SERIAL DIGEST",
// replaced atomically. With no path it keeps nothing.
type serialStore struct{ path string }

func (st serialStore) load() (savedSerial, error) {
	if st.path == "" {
		return savedSerial{}, nil
	}
	b, err := os.ReadFile(st.path)
	if errors.Is(err, fs.ErrNotExist) {
		return savedSerial{}, nil
	}
	if err != nil {
		return savedSerial{}, err
	}
	fields := strings.Fields(string(b))
	if len(fields) != 2 {
		return savedSerial{}, fmt.Errorf("serial file %s: want one line \"SERIAL DIGEST\"", st.path)
	}
	n, err := strconv.ParseUint(fields[0], 10, 32)
	if err != nil {
		return savedSerial{}, fmt.Errorf("serial file %s: serial %q: want 0..4294967295", st.path, fields[0])
	}
	return savedSerial{serial: uint32(n), digest: fields[1], valid: true}, nil
}

func (st serialStore) save(s savedSerial) error {
	if st.path == "" {
		return nil
	}
	if err := os.MkdirAll(filepath.Dir(st.path), 0o755); err != nil {
		return fmt.Errorf("serial file: %w", err)
	}
	line := fmt.Sprintf("%d %s\n", s.serial, s.digest)
	if err := tincgen.WriteFileAtomic(st.path, []byte(line), 0o644); err != nil {
		return fmt.Errorf("serial file: %w", err)
	}
	return nil
}
