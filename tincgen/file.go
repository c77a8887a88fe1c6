package tincgen

import (
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
)

// WriteFileAtomic replaces the file at path with b and mode through a
// temporary file in the same directory: write, chmod, fsync, rename, then
// fsync the directory. A crash at any point leaves the old file or the new
// one, never a part of either. The temporary name (".tmp-mgmtnet-...") is
// never a valid tinc name, so neither tincd nor Sync takes it for a host.
func WriteFileAtomic(path string, b []byte, mode fs.FileMode) error {
	dir := filepath.Dir(path)
	tmp, err := os.CreateTemp(dir, ".tmp-mgmtnet-"+filepath.Base(path)+"-*")
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	name := tmp.Name()
	defer os.Remove(name) // a no-op after the rename
	_, err = tmp.Write(b)
	if err == nil {
		err = tmp.Chmod(mode) // CreateTemp makes 0600
	}
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(name, path)
	}
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := syncPath(dir); err != nil {
		return fmt.Errorf("write %s: sync directory: %w", path, err)
	}
	return nil
}

// ConfName returns the Name in the tinc.conf at path, or "" when the file
// cannot be read or parsed.
func ConfName(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	c, err := ParseConf(b)
	if err != nil {
		return ""
	}
	return c.Name
}
