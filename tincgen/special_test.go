package tincgen

import (
	"bytes"
	"errors"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// noHang runs fn and fails the test when it has not returned after 10 s:
// a hang detector (a blocking open of a FIFO never returns), not a
// performance assertion.
func noHang(t *testing.T, what string, fn func()) {
	t.Helper()
	done := make(chan struct{})
	go func() {
		defer close(done)
		fn()
	}()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatalf("%s hangs (still blocked after 10s)", what)
	}
}

func mkfifo(t *testing.T, path string) {
	t.Helper()
	if err := syscall.Mkfifo(path, 0o644); err != nil {
		t.Skipf("cannot make a FIFO: %v", err)
	}
}

// TestSyncReplacesFIFO: a FIFO named like a member is replaced by the
// member's file (never opened), one named like an owned file that is not
// a member is removed, one with a foreign name is left alone; each owned
// one is logged with its path and type.
func TestSyncReplacesFIFO(t *testing.T) {
	key := testKey(t)
	dir := t.TempDir()
	files := makeFiles(key, 3, 0)
	mkfifo(t, filepath.Join(dir, "node_1"))
	mkfifo(t, filepath.Join(dir, "node_77"))
	mkfifo(t, filepath.Join(dir, "gateway_7"))
	var logs bytes.Buffer
	log := slog.New(slog.NewTextHandler(&logs, nil))
	var rep Report
	var err error
	noHang(t, "Sync over a FIFO", func() { rep, err = Sync(dir, files, SyncOptions{Logger: log}) })
	if err != nil {
		t.Fatal(err)
	}
	want := Report{Written: []string{"node_0", "node_1", "node_2"}, Removed: []string{"node_77"}}
	if diff := cmp.Diff(want, rep); diff != "" {
		t.Errorf("Sync report (-want +got):\n%s", diff)
	}
	wantDir := filesState(files)
	wantDir["gateway_7/"] = "p---------"
	if diff := cmp.Diff(wantDir, dirState(t, dir)); diff != "" {
		t.Errorf("dir after Sync (-want +got):\n%s", diff)
	}
	for _, name := range []string{"node_1", "node_77"} {
		line := filepath.Join(dir, name)
		if !strings.Contains(logs.String(), line) || !strings.Contains(logs.String(), "named pipe") {
			t.Errorf("no warning naming %s and its type in:\n%s", line, logs.String())
		}
	}
	if strings.Contains(logs.String(), "gateway_7") {
		t.Errorf("warned about a file that is not ours:\n%s", logs.String())
	}
}

// TestSyncFIFORace: a host file that is regular when the directory is
// listed and a FIFO when Sync reads it is not opened blocking; it is
// replaced. With DryRun it is reported as differing.
func TestSyncFIFORace(t *testing.T) {
	for _, dry := range []bool{false, true} {
		key := testKey(t)
		dir := t.TempDir()
		files := makeFiles(key, 3, 0)
		mustSync(t, dir, files, SyncOptions{})
		hooks := &syncHooks{afterList: func() {
			p := filepath.Join(dir, "node_1")
			if err := os.Remove(p); err != nil {
				t.Error(err)
			}
			mkfifo(t, p)
		}}
		var rep Report
		var err error
		noHang(t, "Sync racing a FIFO", func() { rep, err = syncDir(dir, files, SyncOptions{DryRun: dry}, hooks) })
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff([]string{"node_1"}, rep.Written); diff != "" {
			t.Errorf("dry run %v: written (-want +got):\n%s", dry, diff)
		}
		if dry {
			continue
		}
		if diff := cmp.Diff(filesState(files), dirState(t, dir)); diff != "" {
			t.Errorf("dir after Sync (-want +got):\n%s", diff)
		}
	}
}

// TestReadHostFile: regular files are read; a FIFO, a symlink, a socket
// and a directory are refused with ErrNotRegular, without blocking.
func TestReadHostFile(t *testing.T) {
	dir := t.TempDir()
	reg := filepath.Join(dir, "node_1")
	writeFile(t, reg, "Subnet = 10.0.0.1/32\n")
	mkfifo(t, filepath.Join(dir, "fifo"))
	if err := os.Symlink(reg, filepath.Join(dir, "link")); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(filepath.Join(dir, "dir"), 0o755); err != nil {
		t.Fatal(err)
	}
	noHang(t, "ReadHostFile", func() {
		b, err := ReadHostFile(reg)
		if err != nil || string(b) != "Subnet = 10.0.0.1/32\n" {
			t.Errorf("regular: %q, %v", b, err)
		}
		for name, typ := range map[string]string{"fifo": "named pipe", "link": "symlink", "dir": "directory"} {
			_, err := ReadHostFile(filepath.Join(dir, name))
			if !errors.Is(err, ErrNotRegular) || !strings.Contains(err.Error(), typ) ||
				!strings.Contains(err.Error(), filepath.Join(dir, name)) {
				t.Errorf("%s: error %v, want ErrNotRegular naming the path and %q", name, err, typ)
			}
		}
		if _, err := ReadHostFile(filepath.Join(dir, "missing")); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("missing: %v, want ErrNotExist", err)
		}
		// ReadRegularFile follows a symlink to a regular file, but not to a FIFO.
		if b, err := ReadRegularFile(filepath.Join(dir, "link")); err != nil || len(b) == 0 {
			t.Errorf("ReadRegularFile(link): %q, %v", b, err)
		}
		if err := os.Symlink(filepath.Join(dir, "fifo"), filepath.Join(dir, "fifolink")); err != nil {
			t.Fatal(err)
		}
		if _, err := ReadRegularFile(filepath.Join(dir, "fifolink")); !errors.Is(err, ErrNotRegular) {
			t.Errorf("ReadRegularFile(link to fifo): %v, want ErrNotRegular", err)
		}
	})
}
