package tincgen

import (
	"errors"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/confine-project/mgmtnet/mesh"
)

// hostBytes returns a realistic host file for node_<i>; version changes the
// content (its egress subnet and port).
func hostBytes(key string, i, version int) []byte {
	var a [16]byte
	copy(a[:], []byte{0xfd, 0xf5, 0x53, 0x51, 0x1d, 0xfd, byte(i >> 8), byte(i)})
	p := netip.PrefixFrom(netip.AddrFrom16(a), 64)
	return RenderHost(Host{
		Addresses: []Address{{fmt.Sprintf("10.%d.%d.1", i>>8&0xff, i&0xff), uint16(655 + version)}},
		Subnets: []Subnet{
			NewSubnet(p),
			NewSubnet(netip.PrefixFrom(netip.AddrFrom4([4]byte{100, 64, byte(i >> 8), byte(i)}), 32)),
		},
		PublicKey: key,
	})
}

func makeFiles(key string, n, version int) Files {
	f := make(Files, n)
	for i := range n {
		f[fmt.Sprintf("node_%d", i)] = hostBytes(key, i, version)
	}
	return f
}

// dirState returns the regular files of dir with their contents.
func dirState(t testing.TB, dir string) map[string]string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	m := make(map[string]string)
	for _, e := range entries {
		if !e.Type().IsRegular() {
			m[e.Name()+"/"] = e.Type().String()
			continue
		}
		b, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		m[e.Name()] = string(b)
	}
	return m
}

func filesState(f Files) map[string]string {
	m := make(map[string]string, len(f))
	for k, v := range f {
		m[k] = string(v)
	}
	return m
}

func mustSync(t *testing.T, dir string, files Files, opts SyncOptions) Report {
	t.Helper()
	rep, err := Sync(dir, files, opts)
	if err != nil {
		t.Fatalf("Sync: %v", err)
	}
	return rep
}

func writeFile(t *testing.T, path, s string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(s), 0o644); err != nil {
		t.Fatal(err)
	}
}

var past = time.Date(2015, 3, 1, 12, 0, 0, 0, time.UTC)

func setOld(t *testing.T, dir string) {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if err := os.Chtimes(filepath.Join(dir, e.Name()), past, past); err != nil {
			t.Fatal(err)
		}
	}
}

// touched returns the names of files in dir whose mtime is not past.
func touched(t *testing.T, dir string) []string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		fi, err := e.Info()
		if err != nil {
			t.Fatal(err)
		}
		if !fi.ModTime().Equal(past) {
			names = append(names, e.Name())
		}
	}
	return names
}

func TestSyncCreatesAndKeepsMtimes(t *testing.T) {
	key := testKey(t)
	dir := filepath.Join(t.TempDir(), "hosts") // missing: Sync creates it
	files := makeFiles(key, 5, 0)

	rep := mustSync(t, dir, files, SyncOptions{})
	want := Report{Written: []string{"node_0", "node_1", "node_2", "node_3", "node_4"}}
	if diff := cmp.Diff(want, rep); diff != "" {
		t.Errorf("first Sync report (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(filesState(files), dirState(t, dir)); diff != "" {
		t.Errorf("dir after first Sync (-want +got):\n%s", diff)
	}
	for name := range files {
		fi, err := os.Stat(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != 0o644 {
			t.Errorf("%s mode = %v, want 0644", name, fi.Mode())
		}
	}
	fi, err := os.Stat(dir)
	if err != nil || fi.Mode().Perm() != 0o755 {
		t.Errorf("dir stat = %v, %v; want mode 0755", fi, err)
	}

	// Same files again: nothing is touched.
	setOld(t, dir)
	rep = mustSync(t, dir, files, SyncOptions{})
	want = Report{Unchanged: want.Written}
	if diff := cmp.Diff(want, rep); diff != "" {
		t.Errorf("second Sync report (-want +got):\n%s", diff)
	}
	if rep.Changed() {
		t.Error("second Sync: Changed() = true")
	}
	if got := touched(t, dir); len(got) != 0 {
		t.Errorf("second Sync touched %v", got)
	}

	// One file changes: exactly that one is written.
	files["node_3"] = hostBytes(key, 3, 1)
	rep = mustSync(t, dir, files, SyncOptions{})
	want = Report{Written: []string{"node_3"}, Unchanged: []string{"node_0", "node_1", "node_2", "node_4"}}
	if diff := cmp.Diff(want, rep); diff != "" {
		t.Errorf("third Sync report (-want +got):\n%s", diff)
	}
	if !rep.Changed() {
		t.Error("third Sync: Changed() = false")
	}
	// The directory's own mtime changes with the rename; the files must not.
	if got := touched(t, dir); !slices.Equal(got, []string{"node_3"}) {
		t.Errorf("third Sync touched %v, want [node_3]", got)
	}
	if diff := cmp.Diff(filesState(files), dirState(t, dir)); diff != "" {
		t.Errorf("dir after third Sync (-want +got):\n%s", diff)
	}
}

func TestSyncRemovesOnlyOwned(t *testing.T) {
	key := testKey(t)
	dir := t.TempDir()
	files := makeFiles(key, 4, 0)
	mustSync(t, dir, files, SyncOptions{})
	foreign := map[string]string{
		"README":       "hands off\n",
		"notes.txt":    "x\n",
		"node_1.orig":  "old\n", // not a valid tinc name, so not ours
		".hidden":      "h\n",
		"gateway_7":    "valid name, but not a prefix we own\n",
		".mgmtnet-123": "stale temp file from a crash\n",
	}
	for name, s := range foreign {
		writeFile(t, filepath.Join(dir, name), s)
	}
	writeFile(t, filepath.Join(dir, "server_9"), "stale\n")
	if err := os.Mkdir(filepath.Join(dir, "node_99"), 0o755); err != nil { // a directory is never ours
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(dir, "node_99", "node_1"), "inside\n")

	rep := mustSync(t, dir, files, SyncOptions{})
	want := Report{Unchanged: []string{"node_0", "node_1", "node_2", "node_3"}, Removed: []string{"server_9"}}
	if diff := cmp.Diff(want, rep); diff != "" {
		t.Errorf("Sync report (-want +got):\n%s", diff)
	}
	wantDir := filesState(files)
	for name, s := range foreign {
		wantDir[name] = s
	}
	delete(wantDir, ".mgmtnet-123")
	wantDir["node_99/"] = "d---------"
	if diff := cmp.Diff(wantDir, dirState(t, dir)); diff != "" {
		t.Errorf("dir after Sync (-want +got):\n%s", diff)
	}
	if _, err := os.Stat(filepath.Join(dir, "node_99", "node_1")); err != nil {
		t.Errorf("file in subdirectory: %v", err)
	}
}

func TestSyncMassDeletion(t *testing.T) {
	key := testKey(t)
	dir := t.TempDir()
	files := makeFiles(key, 10, 0)
	mustSync(t, dir, files, SyncOptions{})
	before := dirState(t, dir)

	// Keep 4 of 10 and change one of them: 6 removals > 0.5 * 10.
	keep := Files{}
	for _, name := range []string{"node_0", "node_1", "node_2", "node_3"} {
		keep[name] = files[name]
	}
	keep["node_0"] = hostBytes(key, 0, 1)
	rep, err := Sync(dir, keep, SyncOptions{})
	if !errors.Is(err, ErrMassDeletion) {
		t.Fatalf("Sync error = %v, want ErrMassDeletion", err)
	}
	if !strings.Contains(err.Error(), "remove 6 of 10") {
		t.Errorf("error %q does not give the counts", err)
	}
	if len(rep.Removed) != 6 {
		t.Errorf("report of refused sync lists %d removals, want 6", len(rep.Removed))
	}
	if diff := cmp.Diff(before, dirState(t, dir)); diff != "" {
		t.Errorf("refused Sync changed the dir (-before +after):\n%s", diff)
	}

	// A higher limit allows it, and so does Force.
	if _, err := Sync(dir, keep, SyncOptions{Guard: mesh.Guard{MaxRemoveFraction: 0.6}, DryRun: true}); err != nil {
		t.Errorf("Sync with MaxRemoveFraction 0.6: %v", err)
	}
	rep = mustSync(t, dir, keep, SyncOptions{Guard: mesh.Guard{Force: true}})
	if len(rep.Removed) != 6 || !slices.Equal(rep.Written, []string{"node_0"}) {
		t.Errorf("forced Sync report = %+v", rep)
	}
	if diff := cmp.Diff(filesState(keep), dirState(t, dir)); diff != "" {
		t.Errorf("dir after forced Sync (-want +got):\n%s", diff)
	}

	// The zero value removes everything we own (--cleanup), with Force.
	if _, err := Sync(dir, nil, SyncOptions{}); !errors.Is(err, ErrMassDeletion) {
		t.Errorf("cleanup without Force: error = %v, want ErrMassDeletion", err)
	}
	mustSync(t, dir, nil, SyncOptions{Guard: mesh.Guard{Force: true}})
	if got := dirState(t, dir); len(got) != 0 {
		t.Errorf("dir after cleanup: %v", got)
	}
}

func TestSyncRejectsInvalidNames(t *testing.T) {
	for _, name := range []string{"../x", "", ".mgmtnet-1", "a/b", "node 1"} {
		dir := t.TempDir()
		_, err := Sync(dir, Files{"node_1": []byte("ok\n"), name: []byte("x\n")}, SyncOptions{})
		if err == nil || !strings.Contains(err.Error(), "invalid tinc name") {
			t.Errorf("Sync with name %q: error = %v, want invalid tinc name", name, err)
		}
		if got := dirState(t, dir); len(got) != 0 {
			t.Errorf("Sync with name %q wrote %v", name, got)
		}
	}
}

func TestSyncDirectoryInTheWay(t *testing.T) {
	dir := t.TempDir()
	if err := os.Mkdir(filepath.Join(dir, "node_2"), 0o755); err != nil {
		t.Fatal(err)
	}
	_, err := Sync(dir, Files{"node_1": []byte("a\n"), "node_2": []byte("b\n")}, SyncOptions{})
	if err == nil || !strings.Contains(err.Error(), "node_2 is a directory") {
		t.Fatalf("Sync error = %v, want node_2 is a directory", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "node_1")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("node_1 written before the error: %v", err)
	}
}

func TestSyncDryRun(t *testing.T) {
	dir := t.TempDir()
	mustSync(t, dir, Files{
		"node_1": []byte("Subnet = 10.0.0.0/8\n"),
		"node_2": []byte("same\n"),
		"node_3": []byte("gone\n"),
	}, SyncOptions{})
	writeFile(t, filepath.Join(dir, ".mgmtnet-5"), "temp\n")
	setOld(t, dir)
	before := dirState(t, dir)

	rep := mustSync(t, dir, Files{
		"node_1": []byte("Subnet = 10.1.0.0/16\n"),
		"node_2": []byte("same\n"),
		"node_4": []byte("new\n"),
	}, SyncOptions{DryRun: true})
	want := Report{
		Written:   []string{"node_1", "node_4"},
		Unchanged: []string{"node_2"},
		Removed:   []string{"node_3"},
		Diff: "--- a/node_1\n+++ b/node_1\n@@ -1 +1 @@\n-Subnet = 10.0.0.0/8\n+Subnet = 10.1.0.0/16\n" +
			"--- a/node_4\n+++ b/node_4\n@@ -0,0 +1 @@\n+new\n" +
			"--- a/node_3\n+++ b/node_3\n@@ -1 +0,0 @@\n-gone\n",
	}
	if diff := cmp.Diff(want, rep); diff != "" {
		t.Errorf("DryRun report (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(before, dirState(t, dir)); diff != "" {
		t.Errorf("DryRun changed the dir (-before +after):\n%s", diff)
	}
	if got := touched(t, dir); len(got) != 0 {
		t.Errorf("DryRun touched %v", got)
	}

	// A dry run into a missing directory does not create it.
	missing := filepath.Join(t.TempDir(), "missing")
	rep = mustSync(t, missing, Files{"node_1": []byte("a\n")}, SyncOptions{DryRun: true})
	if !slices.Equal(rep.Written, []string{"node_1"}) {
		t.Errorf("DryRun into missing dir: Written = %v", rep.Written)
	}
	if _, err := os.Stat(missing); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("DryRun created %s: %v", missing, err)
	}
}

func TestSyncOwnedOption(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "gw_1"), "x\n")
	writeFile(t, filepath.Join(dir, "gw_2"), "y\n")
	writeFile(t, filepath.Join(dir, "node_1"), "z\n")
	rep := mustSync(t, dir, Files{"gw_1": []byte("x\n")}, SyncOptions{
		Owned: func(name string) bool { return strings.HasPrefix(name, "gw_") },
	})
	if !slices.Equal(rep.Removed, []string{"gw_2"}) {
		t.Errorf("Removed = %v, want [gw_2]", rep.Removed)
	}
	if diff := cmp.Diff(map[string]string{"gw_1": "x\n", "node_1": "z\n"}, dirState(t, dir)); diff != "" {
		t.Errorf("dir (-want +got):\n%s", diff)
	}
}

// TestSyncWriteFailure fails the fourth write (as a full disk would) and checks
// that every file is either old or new, no temporary file is left, nothing is
// removed, and the next Sync converges.
func TestSyncWriteFailure(t *testing.T) {
	key := testKey(t)
	dir := t.TempDir()
	a, b := makeFiles(key, 20, 0), makeFiles(key, 20, 1)
	a["node_stale"] = []byte("stale\n")
	mustSync(t, dir, a, SyncOptions{})

	var n atomic.Int32
	enospc := &os.PathError{Op: "write", Path: "x", Err: syscall.ENOSPC}
	hooks := &syncHooks{beforeRename: func(string) error {
		if n.Add(1) >= 4 {
			return enospc
		}
		return nil
	}}
	_, err := syncDir(dir, b, SyncOptions{}, hooks)
	if !errors.Is(err, syscall.ENOSPC) || !strings.Contains(err.Error(), "write host file node_") {
		t.Fatalf("Sync error = %v, want write host file ...: ENOSPC", err)
	}
	got := dirState(t, dir)
	if got["node_stale"] != "stale\n" {
		t.Error("failed Sync removed node_stale")
	}
	for name, s := range got {
		if name == "node_stale" {
			continue
		}
		if s != string(a[name]) && s != string(b[name]) {
			t.Errorf("%s is neither old nor new: %q", name, s)
		}
	}
	if len(got) != len(a) {
		t.Errorf("dir has %d files, want %d (no temporary files)", len(got), len(a))
	}
	mustSync(t, dir, b, SyncOptions{})
	if diff := cmp.Diff(filesState(b), dirState(t, dir)); diff != "" {
		t.Errorf("dir after recovery (-want +got):\n%s", diff)
	}
}

const crashEnv = "TINCGEN_CRASH_DIR"

// crashFiles returns the two versions the crash test syncs between. A has
// some extra files that B removes. The size keeps a full sync (a flush and a rename per
// file) near a second on a small ext4 VM, so the test stays under ~20 s.
func crashFiles(key string) (a, b Files) {
	const n = 4000
	a, b = makeFiles(key, n, 0), makeFiles(key, n, 1)
	for i := range 200 {
		a[fmt.Sprintf("host_%d", i)] = hostBytes(key, i, 2)
	}
	return a, b
}

// TestCrashHelper is the child of TestSyncCrash: it syncs version B into the
// directory named by $TINCGEN_CRASH_DIR, and gets killed while doing it.
func TestCrashHelper(t *testing.T) {
	dir := os.Getenv(crashEnv)
	if dir == "" {
		t.Skip("helper process for TestSyncCrash; runs only when " + crashEnv + " is set")
	}
	_, b := crashFiles(testKey(t))
	if _, err := Sync(dir, b, SyncOptions{}); err != nil {
		t.Fatal(err)
	}
}

// TestSyncCrash kills a process with SIGKILL in the middle of a large Sync, at
// delays spread over a full sync's duration, and checks that the directory
// holds, under every tinc name, either the old or the new bytes exactly.
func TestSyncCrash(t *testing.T) {
	if testing.Short() {
		t.Skip("crash test is long; run without -short")
	}
	key := testKey(t)
	a, b := crashFiles(key)
	dir := t.TempDir()

	run := func(delay time.Duration) (time.Duration, bool) {
		t.Helper()
		cmd := exec.Command(os.Args[0], "-test.run=^TestCrashHelper$", "-test.count=1")
		cmd.Env = append(os.Environ(), crashEnv+"="+dir)
		var out strings.Builder
		cmd.Stdout, cmd.Stderr = &out, &out
		start := time.Now()
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		var timer <-chan time.Time
		if delay > 0 {
			timer = time.After(delay)
		}
		select {
		case err := <-done:
			if err != nil {
				t.Fatalf("helper failed: %v\n%s", err, out.String())
			}
			return time.Since(start), false
		case <-timer:
			cmd.Process.Kill() // SIGKILL on Unix
			<-done
			return time.Since(start), true
		}
	}

	check := func(iter int) (temps int) {
		t.Helper()
		entries, err := os.ReadDir(dir)
		if err != nil {
			t.Fatal(err)
		}
		seen := 0
		for _, e := range entries {
			name := e.Name()
			if strings.HasPrefix(name, tempPrefix) {
				temps++
				continue
			}
			if !ValidName(name) {
				t.Errorf("iteration %d: unexpected file %q", iter, name)
				continue
			}
			got, err := os.ReadFile(filepath.Join(dir, name))
			if err != nil {
				t.Fatal(err)
			}
			if _, err := ParseHost(got); err != nil {
				t.Errorf("iteration %d: %s does not parse: %v", iter, name, err)
			}
			if string(got) != string(a[name]) && string(got) != string(b[name]) {
				t.Errorf("iteration %d: %s is neither version A nor B: %q", iter, name, got)
			}
			if _, inB := b[name]; inB {
				seen++
			}
		}
		if seen != len(b) {
			t.Errorf("iteration %d: %d of the %d files of B are present, want all", iter, seen, len(b))
		}
		return temps
	}

	// reset puts version A back with plain writes: it is test setup and
	// needs no fsync, which keeps the test fast. The final Sync below checks
	// that Sync itself cleans up after a kill.
	reset := func() {
		t.Helper()
		entries, err := os.ReadDir(dir)
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range entries {
			if _, ok := a[e.Name()]; !ok {
				if err := os.Remove(filepath.Join(dir, e.Name())); err != nil {
					t.Fatal(err)
				}
			}
		}
		for name, want := range a {
			path := filepath.Join(dir, name)
			if got, err := os.ReadFile(path); err == nil && string(got) == string(want) {
				continue
			}
			if err := os.WriteFile(path, want, 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}

	// One full run gives the time scale.
	reset()
	full, _ := run(0)
	if got := check(-1); got != 0 {
		t.Fatalf("a full Sync left %d temporary files", got)
	}
	t.Logf("full sync of %d files in a child process: %v", len(b), full)

	const iterations = 8
	r := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 0))
	totalTemps := 0
	for i := range iterations {
		reset()
		// Stratified: one delay in each eighth of the full duration.
		delay := time.Duration((float64(i) + r.Float64()) / iterations * float64(full))
		delay = max(delay, time.Millisecond)
		_, killed := run(delay)
		temps := check(i)
		totalTemps += temps
		t.Logf("iteration %d: delay %v, killed %v, %d temporary files left", i, delay, killed, temps)
		if t.Failed() {
			return
		}
	}
	t.Logf("%d temporary files left by %d kills", totalTemps, iterations)

	mustSync(t, dir, b, SyncOptions{})
	if diff := cmp.Diff(filesState(b), dirState(t, dir)); diff != "" {
		t.Errorf("dir after final Sync (-want +got):\n%s", diff)
	}
}

func BenchmarkSync(b *testing.B) {
	key := testKey(b)
	files := makeFiles(key, 10000, 0)
	b.Run("cold", func(b *testing.B) {
		for b.Loop() {
			b.StopTimer()
			dir := b.TempDir()
			b.StartTimer()
			if _, err := Sync(dir, files, SyncOptions{}); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("warm", func(b *testing.B) {
		dir := b.TempDir()
		if _, err := Sync(dir, files, SyncOptions{}); err != nil {
			b.Fatal(err)
		}
		for b.Loop() {
			rep, err := Sync(dir, files, SyncOptions{})
			if err != nil {
				b.Fatal(err)
			}
			if rep.Changed() {
				b.Fatal("warm sync wrote files")
			}
		}
	})
}

func TestSyncLocked(t *testing.T) {
	dir := t.TempDir()
	unlock, err := lockDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	_, err = Sync(dir, Files{"node_1": []byte("Subnet = 10.0.0.0/8\n")}, SyncOptions{})
	if !errors.Is(err, ErrLocked) {
		t.Fatalf("Sync while locked: %v, want ErrLocked", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "node_1")); err == nil {
		t.Error("a locked sync wrote a file")
	}
	unlock()
	if _, err := Sync(dir, Files{"node_1": []byte("Subnet = 10.0.0.0/8\n")}, SyncOptions{}); err != nil {
		t.Fatalf("Sync after unlock: %v", err)
	}
}

func TestSyncOnly(t *testing.T) {
	dir := t.TempDir()
	for _, n := range []string{"node_1", "node_2", "node_3", "node_4"} {
		os.WriteFile(filepath.Join(dir, n), []byte("Subnet = 10.0.0.0/8\n"), 0o644)
	}
	files := Files{
		"node_1": []byte("Subnet = 10.0.0.1\n"), // changed, in Only: written
		"node_2": []byte("Subnet = 10.0.0.2\n"), // changed, not in Only: left alone
		"node_4": []byte("Subnet = 10.0.0.0/8\n"),
	}
	// node_3 is gone from files and in Only: removed.
	rep, err := Sync(dir, files, SyncOptions{Only: map[string]bool{"node_1": true, "node_3": true}})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(rep.Written, []string{"node_1"}) || !slices.Equal(rep.Removed, []string{"node_3"}) || len(rep.Unchanged) != 0 {
		t.Errorf("report %+v", rep)
	}
	if b, _ := os.ReadFile(filepath.Join(dir, "node_2")); string(b) != "Subnet = 10.0.0.0/8\n" {
		t.Errorf("node_2 outside Only was written: %q", b)
	}
	if _, err := os.Stat(filepath.Join(dir, "node_4")); err != nil {
		t.Error("node_4 outside Only was removed")
	}
}

// TestSyncKeepTime: with KeepTime, a file whose Subnet lines alone change
// keeps its mtime (tinc 1.0 then keeps that peer's connection on
// SIGHUP); any other change, or a file KeepTime does not name, gets a new
// one.
func TestSyncKeepTime(t *testing.T) {
	dir := t.TempDir()
	key := "-----BEGIN RSA PUBLIC KEY-----\nAAAA\n-----END RSA PUBLIC KEY-----\n"
	files := Files{
		"server_3": []byte("Address = 192.0.2.3\nSubnet = fd00::/48#1000\n" + key),
		"node_1":   []byte("Subnet = fd00:0:0:1::/64\n" + key),
		"node_2":   []byte("Subnet = fd00:0:0:2::/64\n" + key),
	}
	if _, err := Sync(dir, files, SyncOptions{}); err != nil {
		t.Fatal(err)
	}
	old := time.Unix(1_700_000_000, 0)
	for name := range files {
		os.Chtimes(filepath.Join(dir, name), old, old)
	}
	next := Files{
		"server_3": []byte("Address = 192.0.2.3\nSubnet = fd00::/48#1000\nSubnet = fd00:0:0:9::/64#101\n" + key), // Subnets only
		"node_1":   []byte("Subnet = fd00:0:0:1::/64\n" + strings.Replace(key, "AAAA", "BBBB", 1)),               // a new key
		"node_2":   []byte("Subnet = fd00:0:0:2::/64\nSubnet = 100.64.0.2/32\n" + key),                           // Subnets only, not named
	}
	rep, err := Sync(dir, next, SyncOptions{KeepTime: func(n string) bool { return n != "node_2" }})
	if err != nil || len(rep.Written) != 3 {
		t.Fatalf("written %v, err %v", rep.Written, err)
	}
	for name, keep := range map[string]bool{"server_3": true, "node_1": false, "node_2": false} {
		st, _ := os.Stat(filepath.Join(dir, name))
		if got := st.ModTime().Equal(old); got != keep {
			t.Errorf("%s: mtime kept %v, want %v", name, got, keep)
		}
		b, _ := os.ReadFile(filepath.Join(dir, name))
		if string(b) != string(next[name]) {
			t.Errorf("%s: content %q", name, b)
		}
	}
	if !SubnetsOnly([]byte("subnet=1\nA = b\n"), []byte("A = b\nSubnet = 2\n")) || SubnetsOnly([]byte("A = b\n"), []byte("A = c\n")) {
		t.Error("SubnetsOnly")
	}
}
