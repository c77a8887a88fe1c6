package tincgen

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/confine-project/mgmtnet/mesh"
	"golang.org/x/sys/unix"
)

// Files is the desired content of a hosts directory, by file name. It is
// a Source.
type Files map[string][]byte

// Source is the desired content of a hosts directory, file by file: Sync
// renders each file when it compares or writes it, rather than hold every
// file's bytes at once (66 000 host files are 40 MB). Files and
// HostSource are Sources.
type Source interface {
	// Names returns the file names, sorted, in a new slice the caller may
	// change.
	Names() []string
	// Has reports whether name is one of Names.
	Has(name string) bool
	// Render returns the bytes of the file name. Sync calls it from
	// several goroutines at once, and again for a file it writes, so it
	// must be safe for concurrent use and give the same bytes each time.
	Render(name string) ([]byte, error)
}

// Names returns the file names, sorted.
func (f Files) Names() []string { return slices.Sorted(maps.Keys(f)) }

// Has reports whether f names a file.
func (f Files) Has(name string) bool { _, ok := f[name]; return ok }

// Render returns a file's bytes.
func (f Files) Render(name string) ([]byte, error) {
	b, ok := f[name]
	if !ok {
		return nil, fmt.Errorf("no host file %s: %w", name, fs.ErrNotExist)
	}
	return b, nil
}

// Without returns src without the file name.
func Without(src Source, name string) Source { return without{src, name} }

type without struct {
	Source
	name string
}

func (w without) Names() []string {
	return slices.DeleteFunc(w.Source.Names(), func(n string) bool { return n == w.name })
}
func (w without) Has(name string) bool { return name != w.name && w.Source.Has(name) }
func (w without) Render(name string) ([]byte, error) {
	if name == w.name {
		return nil, fmt.Errorf("no host file %s: %w", name, fs.ErrNotExist)
	}
	return w.Source.Render(name)
}

// SyncOptions controls Sync. The zero value is ready to use.
type SyncOptions struct {
	// Guard limits the share of the existing owned files one sync may
	// remove (the one mass-deletion policy, mesh.Guard; zero value: half).
	Guard mesh.Guard
	// DryRun computes the Report, including Diff, and writes nothing.
	DryRun bool
	// Owned reports which existing files Sync owns and may remove. Nil means
	// OwnedName.
	Owned func(name string) bool
	// Only, when not nil, limits the sync to these names: those in files are
	// compared and written when they differ, those not in files are removed
	// when owned, and every other file is neither read nor removed. A caller
	// that knows what changed (the gateway daemon, from the snapshot diff)
	// so avoids reading 66 000 unchanged files. The mass-deletion guard
	// still counts against all existing owned files.
	Only map[string]bool
	// BeforeWrite, when set, is called once before the first file is written
	// or removed, and only when something will be; an error stops the sync
	// with nothing changed. fetch-hosts records there that a tincd reload
	// is pending.
	BeforeWrite func() error
	// KeepTime, when set, names files that keep their modification time
	// when only their Subnet lines change. tinc 1.0 closes, on SIGHUP, the
	// connection of every peer whose host file is newer than its last
	// reload; with StrictSubnets it re-reads every file's Subnets on the
	// same SIGHUP anyway. So a gateway that rewrites another gateway's
	// relay routes, or a node's egress /32, keeps that connection up.
	KeepTime func(name string) bool
	// Logger gets a warning for each file with a name Sync writes or owns
	// that is not a regular file (a FIFO, socket, symlink, device). Nil
	// discards them.
	Logger *slog.Logger
}

// Report says what Sync did, or would do with DryRun.
type Report struct {
	// Written, Unchanged and Removed are sorted file names.
	Written, Unchanged, Removed []string
	// Diff is a unified diff of all changes; it is filled only with DryRun.
	Diff string
}

// Changed reports whether the sync wrote or removed any file, that is, whether
// tincd needs a SIGHUP.
func (r Report) Changed() bool {
	return len(r.Written) > 0 || len(r.Removed) > 0
}

// OwnedName reports whether a file in a hosts directory is ours: a valid tinc
// name that starts with "node_" or "host_", or is "server" or starts with
// "server_". It is the default of SyncOptions.Owned.
func OwnedName(name string) bool {
	if !ValidName(name) {
		return false
	}
	return strings.HasPrefix(name, "node_") || strings.HasPrefix(name, "host_") ||
		name == "server" || strings.HasPrefix(name, "server_")
}

// ErrMassDeletion is mesh.ErrMassDeletion, returned wrapped with the counts
// when a sync would remove more of the existing owned files than
// SyncOptions.Guard allows. Nothing is written in that case.
var ErrMassDeletion = mesh.ErrMassDeletion

// tempPrefix starts the names of Sync's temporary files. A leading "." makes the
// name an invalid tinc name, so tincd never reads a half-written file as a host.
const tempPrefix = ".mgmtnet-"

// Sync makes dir hold files, changing as little as it can. tinc 1.0 closes the
// connection of every peer whose host file has a newer mtime on SIGHUP, even
// when its bytes are the same, so:
//   - a file whose bytes are already right is not touched;
//   - a new or different file is written to a temporary file in dir, synced,
//     made mode 0644 and renamed over the target, so a reader (or a crash) sees
//     either the old or the new bytes, never a mix;
//   - then the existing regular files that opts.Owned accepts and files does not
//     name are removed, and dir is synced once.
//
// Sync never opens anything but a regular file, and never blocks opening
// one (see ReadHostFile). A symlink, FIFO, socket or device where a file in
// files belongs counts as differing and is replaced by the rename; one
// with a name opts.Owned accepts that files does not name is removed
// (unlinked, never opened: tincd would hang opening a FIFO when a peer
// claims that name), outside the mass-deletion count. Each is logged to
// opts.Logger as a warning with its path and type.
//
// Every name in files must be a valid tinc name. dir is created (0755) if
// missing. Anything that is not owned (README, foo.bak, dotfiles, directories)
// is left alone, except temporary files left by an interrupted Sync, which are
// removed.
//
// Before writing anything Sync checks the removals against
// opts.Guard and returns ErrMassDeletion if there are too many; the
// Report then lists what the sync would have done. On any other error the
// Report is empty; files already renamed are complete, and no target is ever
// half-written.
//
// The files are those src renders (Files, or a HostSource). Each file is
// rendered when it is compared, and again when it is written, and dropped
// after: the sync holds the bytes of one file per worker (see parallel),
// not of the whole directory. A Diff (DryRun) holds what it shows.
func Sync(dir string, src Source, opts SyncOptions) (Report, error) {
	if src == nil {
		src = Files(nil) // no files: every owned file goes
	}
	return syncDir(dir, src, opts, nil)
}

// listDir calls fn with the name and type of every entry of dir, reading
// it in batches rather than all at once. A directory that does not exist
// has no entries.
func listDir(dir string, fn func(name string, typ fs.FileMode)) error {
	f, err := os.Open(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	defer f.Close()
	for {
		ents, err := f.ReadDir(1024)
		for _, e := range ents {
			fn(e.Name(), e.Type())
		}
		if err == io.EOF || (err == nil && len(ents) == 0) {
			return nil
		}
		if err != nil {
			return err
		}
	}
}

// syncHooks lets tests inject failures into the write path.
type syncHooks struct {
	// beforeRename runs after the temporary file for name is written and synced.
	beforeRename func(name string) error
	// afterList runs after the directory is listed, before any file is
	// read: a test swaps a file for a FIFO there.
	afterList func()
}

func syncDir(dir string, files Source, opts SyncOptions, hooks *syncHooks) (Report, error) {
	names := files.Names()
	for _, name := range names {
		if !ValidName(name) {
			return Report{}, fmt.Errorf("sync %s: invalid tinc name %q", dir, name)
		}
	}
	owned := opts.Owned
	if owned == nil {
		owned = OwnedName
	}

	if !opts.DryRun {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return Report{}, fmt.Errorf("sync %s: %w", dir, err)
		}
		unlock, err := lockDir(dir)
		if err != nil {
			return Report{}, err
		}
		defer unlock()
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	// The directory is listed in batches, and of its entries only those
	// in scope are kept (all of them without Only, by name and type): a
	// list of 66 000 entries beside it would be 5 MB more, and the
	// daemon's incremental sync needs a handful.
	existing := map[string]fs.FileMode{}
	var temps, remove, removeSpecial []string
	type special struct {
		name, action string
		typ          fs.FileMode
	}
	var specials []special
	existingOwned := 0
	err := listDir(dir, func(name string, typ fs.FileMode) {
		inScope := opts.Only == nil || opts.Only[name]
		if inScope {
			existing[name] = typ
		}
		switch {
		case typ.IsDir():
			// Never ours; one where a host file belongs is an error below.
		case !typ.IsRegular():
			if !inScope {
				break
			}
			listed := files.Has(name)
			if !listed && !owned(name) {
				break
			}
			action := "replacing it"
			if !listed {
				action = "removing it"
				removeSpecial = append(removeSpecial, name)
			}
			specials = append(specials, special{name, action, typ})
		case strings.HasPrefix(name, tempPrefix):
			temps = append(temps, name)
		case owned(name):
			existingOwned++
			if inScope && !files.Has(name) {
				remove = append(remove, name)
			}
		}
	})
	if err != nil {
		return Report{}, fmt.Errorf("sync %s: %w", dir, err)
	}
	slices.Sort(remove)
	slices.Sort(removeSpecial)
	slices.SortFunc(specials, func(a, b special) int { return strings.Compare(a.name, b.name) })
	for _, sp := range specials {
		log.Warn("host file is not a regular file; "+sp.action,
			"path", filepath.Join(dir, sp.name), "type", FileType(sp.typ))
	}
	if hooks != nil && hooks.afterList != nil {
		hooks.afterList()
	}
	if opts.Only != nil {
		names = slices.DeleteFunc(names, func(n string) bool { return !opts.Only[n] })
	}
	// notRegular handles a file that was regular when listed and is not
	// when read: it differs, and the rename replaces it.
	notRegular := func(name string, err error) {
		log.Warn("host file is not a regular file; replacing it", "path", filepath.Join(dir, name), "err", err)
	}

	// Compare contents. Reading ~66 000 small files dominates a warm sync, so
	// the reads run in parallel. Each file is rendered here and dropped
	// once compared; with DryRun only the diff of a differing one is kept.
	var (
		unchanged = make([]bool, len(names))
		diffs     []string
	)
	if opts.DryRun {
		diffs = make([]string, len(names))
	}
	err = parallel(len(names), func(i int) error {
		name := names[i]
		typ, ok := existing[name]
		if ok && typ.IsDir() {
			return fmt.Errorf("sync %s: host file %s is a directory", dir, name)
		}
		if !opts.DryRun && (!ok || !typ.IsRegular()) {
			return nil // new, or a symlink or special file: replace it, do not read it
		}
		want, err := files.Render(name)
		if err != nil {
			return fmt.Errorf("sync %s: %w", dir, err)
		}
		if !ok || !typ.IsRegular() {
			diffs[i] = unifiedDiff(name, nil, want)
			return nil
		}
		if diffs == nil {
			same, err := sameContent(filepath.Join(dir, name), want)
			if errors.Is(err, ErrNotRegular) {
				notRegular(name, err)
				return nil
			}
			if err != nil {
				return fmt.Errorf("read host file %s: %w", name, err)
			}
			unchanged[i] = same
			return nil
		}
		b, err := ReadHostFile(filepath.Join(dir, name))
		switch {
		case errors.Is(err, fs.ErrNotExist):
			b = nil
		case errors.Is(err, ErrNotRegular):
			notRegular(name, err)
			b = nil
		case err != nil:
			return fmt.Errorf("read host file %s: %w", name, err)
		default:
			unchanged[i] = bytes.Equal(b, want)
		}
		if !unchanged[i] {
			diffs[i] = unifiedDiff(name, b, want)
		}
		return nil
	})
	if err != nil {
		return Report{}, err
	}

	var rep Report
	var write []string
	for i, name := range names {
		if unchanged[i] {
			rep.Unchanged = append(rep.Unchanged, name)
		} else {
			write = append(write, name)
		}
	}
	rep.Written = write
	rep.Removed = append(slices.Clone(remove), removeSpecial...)
	slices.Sort(rep.Removed)

	if opts.DryRun {
		var d strings.Builder
		for i := range names {
			if !unchanged[i] {
				d.WriteString(diffs[i])
			}
		}
		for _, name := range remove {
			b, err := ReadHostFile(filepath.Join(dir, name))
			if errors.Is(err, ErrNotRegular) || errors.Is(err, fs.ErrNotExist) {
				continue // swapped since the listing: nothing to show
			}
			if err != nil {
				return Report{}, fmt.Errorf("read host file %s: %w", name, err)
			}
			d.WriteString(unifiedDiff(name, b, nil))
		}
		rep.Diff = d.String()
	}

	if err := opts.Guard.Check("owned host files", existingOwned, len(remove)); err != nil {
		return rep, fmt.Errorf("sync %s: %w", dir, err)
	}
	if opts.DryRun {
		return rep, nil
	}

	for _, name := range temps {
		if err := os.Remove(filepath.Join(dir, name)); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return Report{}, fmt.Errorf("remove stale temporary file %s: %w", name, err)
		}
	}
	remove = append(remove, removeSpecial...)
	if opts.BeforeWrite != nil && len(write)+len(remove) > 0 {
		if err := opts.BeforeWrite(); err != nil {
			return Report{}, fmt.Errorf("sync %s: %w", dir, err)
		}
	}
	var keep map[string]unix.Timespec
	if opts.KeepTime != nil {
		keep = keepTimes(dir, write, existing, files, opts.KeepTime)
	}
	// Add before delete: write everything, then remove.
	werr := writeAll(dir, write, files, keep, hooks)
	if werr == nil {
		for _, name := range remove {
			if err := os.Remove(filepath.Join(dir, name)); err != nil && !errors.Is(err, fs.ErrNotExist) {
				werr = fmt.Errorf("remove host file %s: %w", name, err)
				break
			}
		}
	}
	if len(write)+len(remove)+len(temps) > 0 {
		// Make the renames and removals durable. Do it even after a failure:
		// the files renamed so far are complete.
		if err := syncPath(dir); err != nil && werr == nil {
			werr = fmt.Errorf("sync directory %s: %w", dir, err)
		}
	}
	if werr != nil {
		return Report{}, werr
	}
	return rep, nil
}

// writeAll replaces the named files in dir, each through a temporary file:
// write every temporary file, make them all durable with one syncfs(2)
// (one flush for the batch instead of one fsync per file, which made a cold
// sync of 66 000 files take minutes), then rename each over its target. A
// failure before the renames leaves every target as it was and removes the
// temporary files; a crash leaves only ".mgmtnet-*" files, which the next
// Sync removes. Every target is always either the old or the new file.
//
// The file operations are raw system calls relative to the directory's
// descriptor: os.File's poller registration and path lookups cost more than
// the write itself for a 1 KB host file.
func writeAll(dir string, names []string, files Source, keep map[string]unix.Timespec, hooks *syncHooks) error {
	if len(names) == 0 {
		return nil
	}
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("open hosts directory %s: %w", dir, err)
	}
	defer d.Close()
	dfd := int(d.Fd())
	temps := make([]string, len(names))
	prefix := fmt.Sprintf("%s%d-%d-", tempPrefix, os.Getpid(), time.Now().UnixNano())
	err = parallel(len(names), func(i int) error {
		tmp := prefix + strconv.Itoa(i)
		// Rendered again rather than kept from the comparison: only the
		// workers' files are in memory at once.
		b, err := files.Render(names[i])
		if err != nil {
			return fmt.Errorf("write host file %s: %w", names[i], err)
		}
		if err := writeTemp(dfd, tmp, b); err != nil {
			return fmt.Errorf("write host file %s: %w", names[i], err)
		}
		temps[i] = tmp
		if t, ok := keep[names[i]]; ok {
			if err := unix.UtimesNanoAt(dfd, tmp, []unix.Timespec{t, t}, unix.AT_SYMLINK_NOFOLLOW); err != nil {
				return fmt.Errorf("write host file %s: keep its modification time: %w", names[i], err)
			}
		}
		return nil
	})
	if err == nil {
		if err = unix.Syncfs(dfd); err != nil {
			err = fmt.Errorf("flush host files to disk in %s: %w", dir, err)
		}
	}
	for i := 0; err == nil && i < len(names); i++ {
		if hooks != nil && hooks.beforeRename != nil {
			if err = hooks.beforeRename(names[i]); err != nil {
				err = fmt.Errorf("write host file %s: %w", names[i], err)
				break
			}
		}
		if err = unix.Renameat(dfd, temps[i], dfd, names[i]); err != nil {
			err = fmt.Errorf("write host file %s: rename: %w", names[i], err)
			break
		}
		temps[i] = ""
	}
	if err != nil {
		for _, tmp := range temps {
			if tmp != "" {
				unix.Unlinkat(dfd, tmp, 0)
			}
		}
	}
	return err
}

// keepTimes returns the modification times to keep (see
// SyncOptions.KeepTime): of the regular files among names that keep says
// so of and whose new content differs from the old in Subnet lines only.
func keepTimes(dir string, names []string, existing map[string]fs.FileMode, files Source, keep func(string) bool) map[string]unix.Timespec {
	out := map[string]unix.Timespec{}
	for _, name := range names {
		if typ, ok := existing[name]; !ok || !typ.IsRegular() || !keep(name) {
			continue
		}
		path := filepath.Join(dir, name)
		var st unix.Stat_t
		if err := unix.Lstat(path, &st); err != nil || st.Mode&unix.S_IFMT != unix.S_IFREG {
			continue
		}
		old, err := ReadHostFile(path)
		if err != nil {
			continue
		}
		if b, err := files.Render(name); err != nil || !SubnetsOnly(old, b) {
			continue
		}
		out[name] = st.Mtim
	}
	return out
}

// SubnetsOnly reports whether host files a and b differ in their Subnet
// lines at most.
func SubnetsOnly(a, b []byte) bool {
	strip := func(x []byte) []byte {
		var out []byte
		for line := range bytes.Lines(x) {
			k := bytes.TrimSpace(line)
			if i := bytes.IndexAny(k, "= \t"); i >= 0 {
				k = k[:i]
			}
			if !bytes.EqualFold(k, []byte("Subnet")) {
				out = append(out, line...)
			}
		}
		return out
	}
	return bytes.Equal(strip(a), strip(b))
}

// writeTemp creates the new file name in the directory dfd with content b
// and mode 0644. On error nothing is left behind.
func writeTemp(dfd int, name string, b []byte) error {
	fd, err := unix.Openat(dfd, name, unix.O_CREAT|unix.O_EXCL|unix.O_WRONLY|unix.O_CLOEXEC, 0o644)
	if err != nil {
		return fmt.Errorf("create: %w", err)
	}
	err = writeFull(fd, b)
	if err == nil {
		// The umask may have narrowed the mode; host files are 0644.
		err = unix.Fchmod(fd, 0o644)
	}
	if cerr := unix.Close(fd); err == nil && cerr != nil {
		err = cerr
	}
	if err != nil {
		unix.Unlinkat(dfd, name, 0)
	}
	return err
}

func writeFull(fd int, b []byte) error {
	for len(b) > 0 {
		n, err := unix.Write(fd, b)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return err
		}
		b = b[n:]
	}
	return nil
}

// ErrLocked reports that another process is syncing the same directory.
var ErrLocked = errors.New("another sync of this directory is running")

// lockDir takes an exclusive flock(2) on the directory itself, so that two
// syncs (cron and an operator, or fetch-hosts and the gateway daemon) never
// interleave: the second would remove the first one's temporary files. With
// the lock held, every ".mgmtnet-*" file is a crashed run's leftover.
func lockDir(dir string) (unlock func(), err error) {
	fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("lock %s: %w", dir, err)
	}
	if err := unix.Flock(fd, unix.LOCK_EX|unix.LOCK_NB); err != nil {
		unix.Close(fd)
		if err == unix.EWOULDBLOCK {
			return nil, fmt.Errorf("sync %s: %w", dir, ErrLocked)
		}
		return nil, fmt.Errorf("lock %s: %w", dir, err)
	}
	return func() { unix.Close(fd) }, nil
}

// sameContent reports whether the file at path holds exactly want. It
// reads at most len(want)+1 bytes with raw system calls (a warm sync reads
// every host file, and os.File's poller set-up costs more than the read).
// A file that does not exist is not the same; anything but a regular file
// is an ErrNotRegular error, and is never opened blocking.
func sameContent(path string, want []byte) (bool, error) {
	fd, size, err := openRegular(path, true)
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	if size != int64(len(want)) {
		unix.Close(fd)
		return false, nil
	}
	defer unix.Close(fd)
	buf := make([]byte, len(want)+1)
	n := 0
	for n < len(buf) {
		m, err := unix.Read(fd, buf[n:])
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return false, err
		}
		if m == 0 {
			break
		}
		n += m
	}
	return n == len(want) && bytes.Equal(buf[:n], want), nil
}

func syncPath(path string) error {
	d, err := os.Open(path)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// parallel runs fn(0) to fn(n-1) on a few goroutines and returns the first
// error; after an error no new call starts. File I/O here is latency bound
// (fsync, small reads), so it uses more goroutines than CPUs.
func parallel(n int, fn func(i int) error) error {
	workers := min(n, max(8, 4*runtime.GOMAXPROCS(0)))
	var (
		next    atomic.Int64
		failed  atomic.Bool
		errOnce sync.Once
		first   error
		wg      sync.WaitGroup
	)
	for range workers {
		wg.Go(func() {
			for !failed.Load() {
				i := int(next.Add(1) - 1)
				if i >= n {
					return
				}
				if err := fn(i); err != nil {
					errOnce.Do(func() { first = err })
					failed.Store(true)
					return
				}
			}
		})
	}
	wg.Wait()
	return first
}
