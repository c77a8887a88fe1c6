package tincgen

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"
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
	b, err := ReadRegularFile(path)
	if err != nil {
		return ""
	}
	c, err := ParseConf(b)
	if err != nil {
		return ""
	}
	return c.Name
}

// ErrNotRegular is returned, wrapped with the path and what is there, by
// ReadHostFile and ReadRegularFile for anything that is not a regular file.
var ErrNotRegular = errors.New("not a regular file")

// ReadHostFile reads the regular file at path, for a file in a tinc
// directory that anyone with write access there may have swapped for
// something else. A symlink (not followed), FIFO, socket, device or
// directory is refused with ErrNotRegular and never opened blocking: a
// FIFO opened for reading without O_NONBLOCK blocks until a writer comes,
// which would hang the caller forever.
func ReadHostFile(path string) ([]byte, error) {
	return readRegular(path, true)
}

// ReadRegularFile is ReadHostFile but follows symlinks: the file they end
// at must be regular. It is for files an operator may link into place,
// such as tinc.conf.
func ReadRegularFile(path string) ([]byte, error) {
	return readRegular(path, false)
}

func readRegular(path string, noFollow bool) ([]byte, error) {
	fd, size, err := openRegular(path, noFollow)
	if err != nil {
		return nil, err
	}
	defer unix.Close(fd)
	b := make([]byte, 0, size+512)
	for {
		if len(b) == cap(b) {
			b = append(b, 0)[:len(b)]
		}
		n, err := unix.Read(fd, b[len(b):cap(b)])
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return nil, &fs.PathError{Op: "read", Path: path, Err: err}
		}
		if n == 0 {
			return b, nil
		}
		b = b[:len(b)+n]
	}
}

// openRegular opens path read-only and returns the descriptor and the
// file's size, only for a regular file. It checks twice: lstat (stat
// without noFollow) before opening, so that a device is never even
// opened, and fstat of the opened descriptor, which closes the race of a
// file swapped in between. The open itself uses O_NONBLOCK, so a FIFO
// swapped in after the first check cannot block it (O_NONBLOCK changes
// nothing for a regular file), and O_NOFOLLOW with noFollow.
func openRegular(path string, noFollow bool) (fd int, size int64, err error) {
	var st unix.Stat_t
	flags := unix.O_RDONLY | unix.O_NONBLOCK | unix.O_CLOEXEC
	if noFollow {
		flags |= unix.O_NOFOLLOW
		err = unix.Lstat(path, &st)
	} else {
		err = unix.Stat(path, &st)
	}
	if err != nil {
		return -1, 0, &fs.PathError{Op: "stat", Path: path, Err: err}
	}
	if m := statMode(st.Mode); !m.IsRegular() {
		return -1, 0, notRegular(path, m)
	}
	for {
		fd, err = unix.Open(path, flags, 0)
		if err != unix.EINTR {
			break
		}
	}
	if err == unix.ELOOP && noFollow {
		return -1, 0, notRegular(path, fs.ModeSymlink)
	}
	if err != nil {
		return -1, 0, &fs.PathError{Op: "open", Path: path, Err: err}
	}
	if err := unix.Fstat(fd, &st); err != nil {
		unix.Close(fd)
		return -1, 0, &fs.PathError{Op: "stat", Path: path, Err: err}
	}
	if m := statMode(st.Mode); !m.IsRegular() {
		unix.Close(fd)
		return -1, 0, notRegular(path, m)
	}
	return fd, st.Size, nil
}

func notRegular(path string, m fs.FileMode) error {
	return fmt.Errorf("%s is a %s: %w", path, FileType(m), ErrNotRegular)
}

// statMode converts the type bits of a stat(2) mode to an fs.FileMode.
func statMode(mode uint32) fs.FileMode {
	switch mode & unix.S_IFMT {
	case unix.S_IFREG:
		return 0
	case unix.S_IFDIR:
		return fs.ModeDir
	case unix.S_IFLNK:
		return fs.ModeSymlink
	case unix.S_IFIFO:
		return fs.ModeNamedPipe
	case unix.S_IFSOCK:
		return fs.ModeSocket
	case unix.S_IFCHR:
		return fs.ModeDevice | fs.ModeCharDevice
	case unix.S_IFBLK:
		return fs.ModeDevice
	}
	return fs.ModeIrregular
}

// FileType names the type of a file mode for messages: "regular file",
// "directory", "symlink", "named pipe (FIFO)", "socket", "character
// device", "block device" or "irregular file".
func FileType(m fs.FileMode) string {
	switch {
	case m.IsRegular():
		return "regular file"
	case m&fs.ModeDir != 0:
		return "directory"
	case m&fs.ModeSymlink != 0:
		return "symlink"
	case m&fs.ModeNamedPipe != 0:
		return "named pipe (FIFO)"
	case m&fs.ModeSocket != 0:
		return "socket"
	case m&fs.ModeCharDevice != 0:
		return "character device"
	case m&fs.ModeDevice != 0:
		return "block device"
	}
	return "irregular file"
}
