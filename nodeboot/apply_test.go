package nodeboot

import (
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

// TestApplyReplacesFIFO: a FIFO where node-boot writes tinc.conf or a host
// file is never opened (a blocking open would hang node-boot) and is
// replaced by the regular file.
func TestApplyReplacesFIFO(t *testing.T) {
	dir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, HostsDir), 0o755); err != nil {
		t.Fatal(err)
	}
	d := Desired{Files: []File{
		{Name: ConfFile, Data: []byte("Name = node_1\n"), Mode: 0o644},
		{Name: HostsDir + "/node_1", Data: []byte("Subnet = 10.0.0.1/32\n"), Mode: 0o644},
	}}
	for _, f := range d.Files {
		if err := syscall.Mkfifo(filepath.Join(dir, filepath.FromSlash(f.Name)), 0o644); err != nil {
			t.Skipf("cannot make a FIFO: %v", err)
		}
	}
	done := make(chan error, 1)
	go func() {
		_, err := Apply(dir, d, false)
		done <- err
	}()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second): // a hang detector
		t.Fatal("Apply hangs on a FIFO")
	}
	for _, f := range d.Files {
		p := filepath.Join(dir, filepath.FromSlash(f.Name))
		fi, err := os.Lstat(p)
		if err != nil || !fi.Mode().IsRegular() {
			t.Fatalf("%s: %v %v, want a regular file", p, fi, err)
		}
		if b, _ := os.ReadFile(p); string(b) != string(f.Data) {
			t.Errorf("%s = %q, want %q", p, b, f.Data)
		}
	}
}
