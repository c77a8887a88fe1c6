package gateway

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/confine-project/mgmtnet/tincgen"
)

// syncBuffer is a bytes.Buffer safe for a logger and a test to share.
type syncBuffer struct {
	mu chan struct{}
	b  bytes.Buffer
}

func newSyncBuffer() *syncBuffer { return &syncBuffer{mu: make(chan struct{}, 1)} }

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu <- struct{}{}
	defer func() { <-s.mu }()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu <- struct{}{}
	defer func() { <-s.mu }()
	return s.b.String()
}

// TestDaemonFIFOInHostsDir: a FIFO swapped in for a member's host file,
// and one with an owned name that is not a member, while the daemon runs:
// the daemon neither hangs nor opens them, replaces the first, removes
// the second, logs both, and keeps answering.
func TestDaemonFIFOInHostsDir(t *testing.T) {
	r := newRig(t, testFile(t, 3))
	logs := newSyncBuffer()
	r.log = slog.New(slog.NewTextHandler(logs, nil))
	r.start()
	r.wait(EventSynced)
	r.poll() // past the drain of the first sync's own file events
	want, err := os.ReadFile(r.hostFile("node_2"))
	if err != nil {
		t.Fatal(err)
	}
	r.tincd.take()

	// A FIFO made aside (an invalid tinc name: no event of interest) and
	// renamed over node_2, and a FIFO named node_99.
	tmp := filepath.Join(r.cfg.HostsDir(), ".fifo")
	if err := syscall.Mkfifo(tmp, 0o644); err != nil {
		t.Skipf("cannot make a FIFO: %v", err)
	}
	if err := os.Rename(tmp, r.hostFile("node_2")); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mkfifo(r.hostFile("node_99"), 0o644); err != nil {
		t.Fatal(err)
	}
	r.wait(EventRepaired)

	// The loop still answers, through the API and the status socket.
	s := r.poll()
	if s.LastError != "" {
		t.Errorf("last_error %q", s.LastError)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	raw, err := QueryStatus(ctx, r.cfg.StatusSocket)
	if err != nil {
		t.Fatal(err)
	}
	var st Status
	if err := json.Unmarshal(raw, &st); err != nil || st.Members.Nodes != 3 {
		t.Errorf("status socket: %v, %+v", err, st.Members)
	}

	fi, err := os.Lstat(r.hostFile("node_2"))
	if err != nil || !fi.Mode().IsRegular() {
		t.Fatalf("node_2 not repaired into a regular file: %v %v", fi, err)
	}
	if got, _ := os.ReadFile(r.hostFile("node_2")); !bytes.Equal(got, want) {
		t.Errorf("node_2 after repair:\n%s\nwant:\n%s", got, want)
	}
	if _, err := os.Lstat(r.hostFile("node_99")); !os.IsNotExist(err) {
		t.Errorf("FIFO node_99 not removed: %v", err)
	}
	if got := r.tincd.take(); got != "reload" {
		t.Errorf("repair: tincd calls %q, want one reload", got)
	}
	for _, name := range []string{"node_2", "node_99"} {
		if l := logs.String(); !strings.Contains(l, r.hostFile(name)) || !strings.Contains(l, "named pipe") {
			t.Errorf("no warning naming %s and its type in:\n%s", r.hostFile(name), l)
		}
	}
}

// TestStatusSocketLeavesOtherFiles: a regular file, a directory or a
// symlink at the status socket's path survives the daemon's start and
// --cleanup, and the error names the path and what is there.
func TestStatusSocketLeavesOtherFiles(t *testing.T) {
	for _, kind := range []string{"regular file", "directory", "symlink"} {
		t.Run(strings.ReplaceAll(kind, " ", "_"), func(t *testing.T) {
			r := newRig(t, testFile(t, 1))
			path := r.cfg.StatusSocket
			target := filepath.Join(t.TempDir(), "precious")
			if err := os.WriteFile(target, []byte("operator's\n"), 0o644); err != nil {
				t.Fatal(err)
			}
			var err error
			switch kind {
			case "regular file":
				err = os.WriteFile(path, []byte("operator's\n"), 0o644)
			case "directory":
				err = os.Mkdir(path, 0o755)
			case "symlink":
				err = os.Symlink(target, path)
			}
			if err != nil {
				t.Fatal(err)
			}
			check := func(what string, err error) {
				t.Helper()
				if err == nil || !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), "a "+kind+" is there") {
					t.Errorf("%s: error %v, want one naming %s and a %s", what, err, path, kind)
				}
				fi, lerr := os.Lstat(path)
				if lerr != nil || fileTypeOf(fi) != kind {
					t.Fatalf("%s: %s is gone or changed: %v %v", what, path, fi, lerr)
				}
				if b, _ := os.ReadFile(target); string(b) != "operator's\n" {
					t.Errorf("%s: symlink target changed: %q", what, b)
				}
				if kind == "regular file" {
					if b, _ := os.ReadFile(path); string(b) != "operator's\n" {
						t.Errorf("%s: file changed: %q", what, b)
					}
				}
			}

			d, err := New(r.cfg, Options{Tincd: r.tincd, Egress: r.egress, Notify: func(string) {}})
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			check("start", d.Run(ctx))
			check("cleanup", errors.Join(cleanupFiles(r.cfg)...))
		})
	}
}

// fileTypeOf names fi's type as the errors do.
func fileTypeOf(fi os.FileInfo) string { return tincgen.FileType(fi.Mode()) }

// TestStatusSocketModeAndGroup: the socket is 0660 whatever the umask,
// has the configured group, replaces a stale socket, refuses to take over
// a live one, and goes away when the daemon stops.
func TestStatusSocketModeAndGroup(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to chown the socket to another group")
	}
	for _, tc := range []struct {
		umask int
		group string
		gid   uint32
	}{
		{0, "", uint32(os.Getegid())},
		{0o077, "4242", 4242},
		{0o022, "daemon", 0}, // gid looked up below
	} {
		if tc.group == "daemon" {
			g, err := user.LookupGroup("daemon")
			if err != nil {
				continue
			}
			n, _ := strconv.Atoi(g.Gid)
			tc.gid = uint32(n)
		}
		r := newRig(t, testFile(t, 1))
		r.cfg.StatusSocketGroup = tc.group
		if err := r.cfg.Validate(); err != nil {
			t.Fatal(err)
		}
		// A stale socket (nobody listens) is replaced.
		stale, err := net.Listen("unix", r.cfg.StatusSocket)
		if err != nil {
			t.Fatal(err)
		}
		stale.(*net.UnixListener).SetUnlinkOnClose(false)
		stale.Close()

		d, err := New(r.cfg, Options{Tincd: r.tincd, Egress: r.egress, Notify: func(string) {}})
		if err != nil {
			t.Fatal(err)
		}
		old := syscall.Umask(tc.umask)
		stop, err := d.serveStatus(context.Background(), r.cfg)
		syscall.Umask(old)
		if err != nil {
			t.Fatalf("umask %#o: %v", tc.umask, err)
		}
		fi, err := os.Lstat(r.cfg.StatusSocket)
		if err != nil {
			t.Fatal(err)
		}
		st := fi.Sys().(*syscall.Stat_t)
		if fi.Mode().Type() != os.ModeSocket || fi.Mode().Perm() != 0o660 || st.Gid != tc.gid {
			t.Errorf("umask %#o group %q: %s gid %d, want a socket 0660 gid %d", tc.umask, tc.group, fi.Mode(), st.Gid, tc.gid)
		}
		// A second server refuses the live socket.
		if _, err := d.serveStatus(context.Background(), r.cfg); err == nil || !strings.Contains(err.Error(), "another process") {
			t.Errorf("second server: %v, want another process is serving it", err)
		}
		if leftovers, _ := filepath.Glob(filepath.Join(filepath.Dir(r.cfg.StatusSocket), ".ms*")); len(leftovers) > 0 {
			t.Errorf("temporary directories left: %v", leftovers)
		}
		stop()
		if _, err := os.Lstat(r.cfg.StatusSocket); !os.IsNotExist(err) {
			t.Errorf("socket left after stop: %v", err)
		}
	}
}

func TestStatusSocketGroupConfig(t *testing.T) {
	c := DefaultConfig()
	c.Registry.URL = "https://registry.example/api/"
	c.StatusSocketGroup = "no-such-group-mgmtnet"
	if err := c.Validate(); err == nil || !strings.Contains(err.Error(), `status_socket_group "no-such-group-mgmtnet"`) {
		t.Errorf("unknown group: %v, want an error naming status_socket_group", err)
	}
	for _, g := range []string{"", "0", "4242"} {
		c.StatusSocketGroup = g
		if err := c.Validate(); err != nil {
			t.Errorf("group %q: %v", g, err)
		}
	}
}
