package nodeboot

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/confine-project/mgmtnet/tincgen"
)

// tempPrefix starts the names of temporary files. A leading "." is not a
// valid tinc name, so tincd never reads a half-written host file.
const tempPrefix = ".mgmtnet-"

// ApplyReport says what Apply did, or would do with dry run. Names are
// relative to the tinc directory, in Desired's order.
type ApplyReport struct {
	// Written are files created or replaced because their bytes differed
	// (or they did not exist).
	Written []string
	// Chmod are files whose bytes were right but whose mode was not; only
	// their mode was changed, so their mtime is kept.
	Chmod []string
	// Unchanged are files already right, left untouched.
	Unchanged []string
	// Diff is a unified diff of every change; filled only with dry run.
	Diff string
}

// Changed reports whether Apply wrote any file's bytes.
func (r ApplyReport) Changed() bool { return len(r.Written) > 0 }

// Apply makes the tinc directory dir hold the files of d. A file whose
// bytes and mode are right is not touched (tincd bounces the connection of
// a peer whose host file has a newer mtime on SIGHUP, confine.md §4). A
// file whose bytes differ is written to a temporary file in its directory,
// synced and renamed over the target, then the directory is synced, so a
// crash leaves the old or the new file. Nothing is ever deleted. With
// dryRun Apply only compares and fills Diff.
func Apply(dir string, d Desired, dryRun bool) (ApplyReport, error) {
	var rep ApplyReport
	var diff strings.Builder
	if !dryRun {
		if err := os.MkdirAll(filepath.Join(dir, HostsDir), 0o755); err != nil {
			return rep, fmt.Errorf("create tinc directory: %w", err)
		}
	}
	for _, f := range d.Files {
		path := filepath.Join(dir, filepath.FromSlash(f.Name))
		// A FIFO, socket or device in the way is never opened (it could
		// block forever) and is replaced by the rename, as a file that
		// differs.
		old, err := tincgen.ReadRegularFile(path)
		exists := err == nil
		if err != nil && !errors.Is(err, fs.ErrNotExist) && !errors.Is(err, tincgen.ErrNotRegular) {
			return rep, fmt.Errorf("read %s: %w", path, err)
		}
		if exists && bytes.Equal(old, f.Data) {
			st, err := os.Stat(path)
			if err != nil {
				return rep, fmt.Errorf("stat %s: %w", path, err)
			}
			if st.Mode().Perm() == f.Mode.Perm() {
				rep.Unchanged = append(rep.Unchanged, f.Name)
				continue
			}
			rep.Chmod = append(rep.Chmod, f.Name)
			if dryRun {
				fmt.Fprintf(&diff, "mode %s: %#o -> %#o\n", f.Name, st.Mode().Perm(), f.Mode.Perm())
				continue
			}
			if err := os.Chmod(path, f.Mode.Perm()); err != nil {
				return rep, fmt.Errorf("chmod %s: %w", path, err)
			}
			continue
		}
		rep.Written = append(rep.Written, f.Name)
		if dryRun {
			from := "a/" + f.Name
			if !exists {
				from = "/dev/null"
			}
			diff.WriteString(tincgen.UnifiedDiff(from, "b/"+f.Name, old, f.Data))
			continue
		}
		if err := tincgen.WriteFileAtomic(path, f.Data, f.Mode.Perm()); err != nil {
			return rep, err
		}
	}
	rep.Diff = diff.String()
	return rep, nil
}

// writeSync writes b to f, sets its mode (CreateTemp makes 0600), syncs
// and closes it.
func writeSync(f *os.File, b []byte, mode fs.FileMode) error {
	_, err := f.Write(b)
	if err == nil {
		err = f.Chmod(mode)
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// syncDir makes a directory's entries (a rename) durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("sync directory %s: %w", dir, err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("sync directory %s: %w", dir, err)
	}
	return nil
}
