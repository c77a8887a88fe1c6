package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"time"

	"golang.org/x/sys/unix"

	"github.com/confine-project/mgmtnet/tinc"
	"github.com/confine-project/mgmtnet/tincgen"
)

// Status is what the daemon knows, as "mgmtnet status --json" prints it.
type Status struct {
	Version        string         `json:"version"`
	LastSync       *time.Time     `json:"last_sync"`
	SyncAgeSeconds *float64       `json:"sync_age_seconds"`
	FromCache      bool           `json:"from_cache"`
	Registry       RegistryStatus `json:"registry"`
	Members        MemberCounts   `json:"members"`
	Rejected       []string       `json:"rejected"`
	// Warnings are members kept with a part dropped: a registry field
	// the grant policy refuses, an unusable tinc address.
	Warnings    []string     `json:"warnings"`
	Files       FileCounts   `json:"files"`
	Hups        int          `json:"hups"`
	Restarts    int          `json:"restarts"`
	Syncs       int          `json:"syncs"`
	LastError   string       `json:"last_error"`
	ConfigError string       `json:"config_error"`
	Tincd       tinc.State   `json:"tincd"`
	Peers       []Peer       `json:"peers"`
	Egress      EgressStatus `json:"egress"`
	DNS         DNSStatus    `json:"dns"`
	// RefusedSubnets are the Subnet announcements tincd refused since the
	// daemon started, by member and Subnet.
	RefusedSubnets []RefusalCount `json:"refused_subnets"`
	// UDPWatchdog counts the peers repaired because their meta connection
	// lived while they did not answer through tinc.
	UDPWatchdog UDPWatchdogStatus `json:"udp_watchdog"`
	// Assignment is this gateway's share of the assignment of members
	// to gateways.
	Assignment AssignmentStatus `json:"assignment"`
}

// RegistryStatus is the registry side of Status.
type RegistryStatus struct {
	URL       string            `json:"url"`
	ETags     map[string]string `json:"etags"`
	LastError string            `json:"last_error"`
}

// MemberCounts counts the members of the applied snapshot.
type MemberCounts struct {
	Nodes   int `json:"nodes"`
	Servers int `json:"servers"`
	Hosts   int `json:"hosts"`
}

// FileCounts are host file totals since start.
type FileCounts struct {
	Written   int `json:"written"`
	Unchanged int `json:"unchanged"`
	Removed   int `json:"removed"`
}

// statusSocketMode is the status socket's mode: the daemon's user and
// the status_socket_group may connect, nobody else.
const statusSocketMode fs.FileMode = 0o660

// serveStatus answers each connection to the unix socket cfg.StatusSocket
// with the status as one JSON object, until ctx ends. A stale socket is
// replaced; anything else at the path (a regular file, a directory, a
// symlink) is an error naming it, and is left alone. The socket is mode
// 0660 whatever the umask, and its group is cfg.StatusSocketGroup.
//
// There is no moment at which the socket accepts connections from others:
// it is bound inside a fresh 0700 directory next to the path (bind(2)
// applies the umask, and there is no fchmod for an unbound socket; setting
// the umask around the bind would race with every other goroutine creating
// files), chmodded and chowned there, then renamed into place. Nobody else
// can reach it in that directory, and the rename makes it appear at the
// path with its final mode and group.
func (d *Daemon) serveStatus(ctx context.Context, cfg Config) (func(), error) {
	path := cfg.StatusSocket
	gid, err := cfg.statusSocketGID()
	if err != nil {
		return nil, err
	}
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("status socket %s: %w", path, err)
	}
	if err := checkSocketPath(path); err != nil {
		return nil, err
	}
	if c, err := net.DialTimeout("unix", path, time.Second); err == nil {
		c.Close()
		return nil, fmt.Errorf("status socket %s: another process is serving it (another gateway daemon?)", path)
	}
	if err := removeStaleSocket(path); err != nil {
		return nil, err
	}
	ln, err := listenPrivate(path, gid)
	if err != nil {
		return nil, err
	}
	// Lstat after the rename: stop removes the path only while it is
	// still this socket.
	mine, err := os.Lstat(path)
	if err != nil {
		ln.Close()
		return nil, fmt.Errorf("status socket %s: %w", path, err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				c.SetDeadline(time.Now().Add(10 * time.Second))
				st, err := d.Status(ctx)
				if err != nil {
					return
				}
				b, _ := json.Marshal(st)
				c.Write(append(b, '\n'))
			}()
		}
	}()
	return func() {
		ln.Close()
		<-done
		if fi, err := os.Lstat(path); err == nil && os.SameFile(fi, mine) {
			os.Remove(path)
		}
	}, nil
}

// listenPrivate binds a unix socket with mode 0660 and group gid in a
// private directory next to path and moves it to path, which must not
// exist (see serveStatus).
func listenPrivate(path string, gid int) (*net.UnixListener, error) {
	tmpDir, err := os.MkdirTemp(filepath.Dir(path), ".ms") // 0700
	if err != nil {
		return nil, fmt.Errorf("status socket %s: %w", path, err)
	}
	defer os.RemoveAll(tmpDir)
	tmp := filepath.Join(tmpDir, "s")
	// sun_path holds 108 bytes with the terminating NUL.
	if len(tmp) > 107 {
		return nil, fmt.Errorf("status socket %s: path too long: the socket is bound at %s first, %d bytes, at most 107", path, tmp, len(tmp))
	}
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: tmp, Net: "unix"})
	if err != nil {
		return nil, fmt.Errorf("status socket %s: %w", path, err)
	}
	// Closing must not unlink tmp: the socket lives at path by then.
	ln.SetUnlinkOnClose(false)
	err = os.Chmod(tmp, statusSocketMode)
	if err == nil {
		err = os.Lchown(tmp, -1, gid)
	}
	if err == nil {
		// No replacing: whatever appeared at path since the stale
		// socket was removed stays, and is an error.
		err = unix.Renameat2(unix.AT_FDCWD, tmp, unix.AT_FDCWD, path, unix.RENAME_NOREPLACE)
		if errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ENOSYS) {
			err = os.Rename(tmp, path) // a file system without RENAME_NOREPLACE
		}
		if errors.Is(err, unix.EEXIST) {
			err = fmt.Errorf("something appeared at the path meanwhile: left as it is")
		}
	}
	if err != nil {
		ln.Close()
		return nil, fmt.Errorf("status socket %s: %w", path, err)
	}
	return ln, nil
}

// checkSocketPath returns nil when path does not exist or is a socket
// (stale: it may be replaced), else an error naming path and what is there.
func checkSocketPath(path string) error {
	fi, err := os.Lstat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("status socket %s: %w", path, err)
	}
	if fi.Mode().Type() != fs.ModeSocket {
		return fmt.Errorf("status socket %s: a %s is there, not a socket: left as it is (move it away, or set status_socket)",
			path, tincgen.FileType(fi.Mode()))
	}
	return nil
}

// removeStaleSocket removes the socket at path. Anything else there is an
// error naming it and is left alone; nothing at all is not an error.
func removeStaleSocket(path string) error {
	if err := checkSocketPath(path); err != nil {
		return err
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("status socket %s: %w", path, err)
	}
	return nil
}

// QueryStatus reads the status from a daemon's unix socket, as raw JSON.
func QueryStatus(ctx context.Context, path string) ([]byte, error) {
	var dl net.Dialer
	c, err := dl.DialContext(ctx, "unix", path)
	if err != nil {
		return nil, fmt.Errorf("connect to the gateway daemon at %s: %w", path, err)
	}
	defer c.Close()
	if dl, ok := ctx.Deadline(); ok {
		c.SetDeadline(dl)
	}
	b, err := io.ReadAll(io.LimitReader(c, 64<<20))
	if err != nil {
		return nil, fmt.Errorf("read status from %s: %w", path, err)
	}
	if !json.Valid(b) {
		return nil, fmt.Errorf("read status from %s: not a JSON object", path)
	}
	return b, nil
}
