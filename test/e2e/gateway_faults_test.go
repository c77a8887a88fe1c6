package e2e

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/confine-project/mgmtnet/addressing"
	"github.com/confine-project/mgmtnet/mesh"
	"github.com/confine-project/mgmtnet/mesh/registry"
	"github.com/confine-project/mgmtnet/test/vtb"
	"github.com/confine-project/mgmtnet/tincgen"
)

// faultyRegistry serves a registry file, or a fault.
type faultyRegistry struct {
	srv  *registry.Server
	mode atomic.Value // "ok", "500", "garbage", "empty", "hang"
	ts   *httptest.Server
}

func newFaultyRegistry(t *testing.T, f *registry.File) *faultyRegistry {
	r := &faultyRegistry{srv: registry.NewServer(f, nil)}
	r.mode.Store("ok")
	empty := registry.NewServer(&registry.File{MgmtPrefix: f.MgmtPrefix}, nil)
	r.ts = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		switch r.mode.Load().(string) {
		case "500":
			http.Error(w, "internal error", http.StatusInternalServerError)
		case "garbage":
			w.Header().Set("Content-Type", "application/json")
			w.Write([]byte(`[{"id": 1, "mgmt_net": {{{ not json`))
		case "empty":
			empty.ServeHTTP(w, req)
		case "hang":
			select {
			case <-req.Context().Done():
			case <-time.After(30 * time.Second):
			}
		default:
			r.srv.ServeHTTP(w, req)
		}
	}))
	t.Cleanup(r.ts.Close)
	return r
}

func (r *faultyRegistry) url() string { return r.ts.URL + "/api/" }

// synthetic returns a registry file with n nodes and the main server.
func synthetic(t *testing.T, n int) *registry.File {
	t.Helper()
	f, err := registry.Synthetic(registry.SyntheticSpec{Nodes: n, Servers: 1, Keys: 3, KeyBits: 2048,
		Prefix: addressing.DefaultMgmtPrefix()})
	if err != nil {
		t.Fatal(err)
	}
	return f
}

// grow returns a copy of f with nodes up to n, new ones reusing node 1's
// key, so that no existing member changes.
func grow(f *registry.File, n int) *registry.File {
	g := *f
	g.Nodes = append([]registry.FileMember(nil), f.Nodes...)
	for id := len(f.Nodes) + 1; id <= n; id++ {
		name, _ := addressing.TincName(addressing.KindNode, uint64(id))
		g.Nodes = append(g.Nodes, registry.FileMember{ID: uint64(id), Name: name,
			Tinc: &registry.FileTinc{Name: name, PubKey: f.Nodes[0].Tinc.PubKey}})
	}
	return &g
}

// fakeTincdProc starts a vtb.FakeTincd that ignores SIGHUP and returns
// its pid file.
func fakeTincdProc(t *testing.T, dir string) string {
	t.Helper()
	f, err := vtb.StartFakeTincd(dir, true)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(f.Stop)
	return f.PidFile
}

// gatewayProc is a "mgmtnet gateway" the test started.
type gatewayProc struct {
	cmd    *exec.Cmd
	log    *syncBuffer
	socket string
	done   chan struct{}
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func startGateway(t *testing.T, config, socket string) *gatewayProc {
	t.Helper()
	g := &gatewayProc{log: &syncBuffer{}, socket: socket, done: make(chan struct{})}
	g.cmd = exec.Command(mgmtnetBin, "gateway", "--config", config)
	g.cmd.Stdout, g.cmd.Stderr = g.log, g.log
	g.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := g.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { g.cmd.Wait(); close(g.done) }()
	t.Cleanup(func() {
		g.stop()
		if t.Failed() {
			t.Logf("gateway log:\n%s", g.log.String())
		}
	})
	return g
}

func (g *gatewayProc) stop() {
	select {
	case <-g.done:
		return
	default:
	}
	g.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-g.done:
	case <-time.After(10 * time.Second):
		g.cmd.Process.Kill()
		<-g.done
	}
}

func (g *gatewayProc) kill9() {
	g.cmd.Process.Kill()
	<-g.done
}

func (g *gatewayProc) status(ctx context.Context) (*vtb.GatewayStatus, error) {
	select {
	case <-g.done:
		return nil, fmt.Errorf("mgmtnet gateway exited: %v\n%s", g.cmd.ProcessState, g.log.String())
	default:
	}
	return vtb.ReadGatewayStatus(ctx, mgmtnetBin, g.socket)
}

// waitStatus waits until cond accepts the daemon's status.
func (g *gatewayProc) waitStatus(t *testing.T, what string, timeout time.Duration, cond func(*vtb.GatewayStatus) error) *vtb.GatewayStatus {
	t.Helper()
	var last *vtb.GatewayStatus
	err := vtb.WaitFor(context.Background(), timeout, 50*time.Millisecond, func() error {
		st, err := g.status(context.Background())
		if err != nil {
			return err
		}
		last = st
		return cond(st)
	})
	if err != nil {
		t.Fatalf("%s: %v (last status %+v)", what, err, last)
	}
	return last
}

// checkHostsDir: every host file parses; it returns their bytes.
func checkHostsDir(t *testing.T, dir string) map[string][]byte {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	files := map[string][]byte{}
	for _, e := range entries {
		if !tincgen.OwnedName(e.Name()) {
			continue
		}
		b, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := tincgen.ParseHost(b); err != nil || len(b) == 0 {
			t.Fatalf("host file %s is corrupt: %v\n%s", e.Name(), err, b)
		}
		files[e.Name()] = b
	}
	return files
}

func sameFiles(t *testing.T, what string, a, b map[string][]byte) {
	t.Helper()
	if len(a) != len(b) {
		t.Fatalf("%s: %d host files before, %d after", what, len(a), len(b))
	}
	for name, x := range a {
		if !bytes.Equal(x, b[name]) {
			t.Fatalf("%s: host file %s changed", what, name)
		}
	}
}

type gwSetup struct {
	netDir, hosts, state, socket, config string
}

func newGwSetup(t *testing.T, url, pidFile string, extra string) gwSetup {
	t.Helper()
	dir := t.TempDir()
	s := gwSetup{netDir: filepath.Join(dir, "tinc"), state: filepath.Join(dir, "state"), socket: filepath.Join(dir, "status.sock")}
	s.hosts = filepath.Join(s.netDir, "hosts")
	os.MkdirAll(s.hosts, 0o755)
	os.WriteFile(filepath.Join(s.netDir, "tinc.conf"), []byte("Name = server\nPort = 655\nStrictSubnets = yes\n"), 0o644)
	s.config = filepath.Join(dir, "gateway.yaml")
	s.write(t, url, pidFile, extra)
	return s
}

func (s gwSetup) write(t *testing.T, url, pidFile, extra string) {
	t.Helper()
	cfg := fmt.Sprintf(`registry:
  url: %s
  timeout: 1s
identity:
  tinc_name: server
tinc:
  dir: %s
  manage: false
  pidfile: %s
poll:
  interval: 1s
  full_resync: 1h
state_dir: %s
status_socket: %s
%s`, url, s.netDir, pidFile, s.state, s.socket, extra)
	if err := tincgen.WriteFileAtomic(s.config, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestGatewayFaults: the daemon (unmanaged tincd) against a registry that
// fails in every way, a bad config reload, hand-edited and deleted host
// files, and a start with the registry down. After each fault nothing is
// lost and the daemon recovers.
func TestGatewayFaults(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end test: skipped with -short")
	}
	f := synthetic(t, 20)
	reg := newFaultyRegistry(t, f)
	pidFile := fakeTincdProc(t, t.TempDir())
	s := newGwSetup(t, reg.url(), pidFile, "")
	g := startGateway(t, s.config, s.socket)
	st := g.waitStatus(t, "first sync", 30*time.Second, func(st *vtb.GatewayStatus) error {
		if st.LastSync == nil || st.Members["nodes"] != 20 {
			return fmt.Errorf("not synced")
		}
		return nil
	})
	if st.FromCache || st.LastError != "" || st.Hups != 1 {
		t.Errorf("after the first sync: from_cache %v, last_error %q, hups %d; want false, \"\", 1", st.FromCache, st.LastError, st.Hups)
	}
	good := checkHostsDir(t, s.hosts)
	if len(good) != 21 {
		t.Fatalf("%d host files, want 21", len(good))
	}

	// The registry fails; meanwhile it gained a node.
	f2 := grow(f, 21)
	for _, fault := range []struct{ mode, want string }{
		{"500", "500"},
		{"garbage", "decode"},
		{"empty", "remove"},
		{"hang", "timeout"},
	} {
		t.Run("registry "+fault.mode, func(t *testing.T) {
			reg.mode.Store(fault.mode)
			// Retries with backoff make a failing poll take a while.
			g.waitStatus(t, fault.mode, 90*time.Second, func(st *vtb.GatewayStatus) error {
				if !strings.Contains(strings.ToLower(st.LastError), fault.want) {
					return fmt.Errorf("last_error %q does not mention %q", st.LastError, fault.want)
				}
				return nil
			})
			sameFiles(t, fault.mode, good, checkHostsDir(t, s.hosts))
		})
	}
	reg.srv.SetFile(f2)
	reg.mode.Store("ok")
	g.waitStatus(t, "recovery", 90*time.Second, func(st *vtb.GatewayStatus) error {
		if st.LastError != "" || st.Members["nodes"] != 21 {
			return fmt.Errorf("not recovered: last_error %q, nodes %d", st.LastError, st.Members["nodes"])
		}
		return nil
	})
	good = checkHostsDir(t, s.hosts)
	if len(good) != 22 {
		t.Fatalf("after recovery: %d host files, want 22", len(good))
	}

	t.Run("invalid config reload", func(t *testing.T) {
		s.write(t, reg.url(), pidFile, "bogus_key: 1\n")
		g.waitStatus(t, "bad reload", 20*time.Second, func(st *vtb.GatewayStatus) error {
			if !strings.Contains(st.LastError, "bogus_key") {
				return fmt.Errorf("last_error %q does not name the bad key", st.LastError)
			}
			return nil
		})
		// Still running on the old config: it still syncs.
		before, _ := g.status(context.Background())
		g.waitStatus(t, "still polling", 20*time.Second, func(st *vtb.GatewayStatus) error {
			if st.Syncs <= before.Syncs {
				return fmt.Errorf("no sync since the bad reload")
			}
			return nil
		})
		s.write(t, reg.url(), pidFile, "")
		g.waitStatus(t, "good reload", 20*time.Second, func(st *vtb.GatewayStatus) error {
			if st.LastError != "" {
				return fmt.Errorf("last_error %q after a good config", st.LastError)
			}
			return nil
		})
	})

	t.Run("host file edited and deleted by hand", func(t *testing.T) {
		os.WriteFile(filepath.Join(s.hosts, "node_3"), []byte("Subnet = ::/0\n"), 0o644)
		os.Remove(filepath.Join(s.hosts, "node_4"))
		err := vtb.WaitFor(context.Background(), 10*time.Second, 50*time.Millisecond, func() error {
			for _, n := range []string{"node_3", "node_4"} {
				b, err := os.ReadFile(filepath.Join(s.hosts, n))
				if err != nil || !bytes.Equal(b, good[n]) {
					return fmt.Errorf("%s not repaired", n)
				}
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	})

	t.Run("registry down at start", func(t *testing.T) {
		g.stop()
		reg.ts.Close() // connection refused from now on
		os.Remove(filepath.Join(s.hosts, "node_5"))
		g2 := startGateway(t, s.config, s.socket)
		st := g2.waitStatus(t, "start from cache", 20*time.Second, func(st *vtb.GatewayStatus) error {
			if !st.FromCache || st.Members["nodes"] != 21 {
				return fmt.Errorf("from_cache %v, nodes %d", st.FromCache, st.Members["nodes"])
			}
			return nil
		})
		if st.LastError == "" {
			t.Error("registry down, but last_error is empty")
		}
		sameFiles(t, "start from cache", good, checkHostsDir(t, s.hosts))
		if !strings.Contains(g2.log.String(), "last-known-good") {
			t.Errorf("the log does not say it runs on the last-known-good snapshot:\n%s", g2.log.String())
		}
	})
}

// TestGatewayKilledMidSync: kill -9 the daemon during a large first sync,
// start it again: every file is whole, and it converges.
func TestGatewayKilledMidSync(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end test: skipped with -short")
	}
	const n = 8000
	f := synthetic(t, n)
	reg := newFaultyRegistry(t, f)
	pidFile := fakeTincdProc(t, t.TempDir())
	s := newGwSetup(t, reg.url(), pidFile, "")
	g := startGateway(t, s.config, s.socket)
	// Kill it as soon as the sync has started writing.
	err := vtb.WaitFor(context.Background(), 60*time.Second, 5*time.Millisecond, func() error {
		entries, _ := os.ReadDir(s.hosts)
		if len(entries) < 2 {
			return fmt.Errorf("no files yet")
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	g.kill9()
	entries, _ := os.ReadDir(s.hosts)
	t.Logf("killed with %d entries in the hosts directory", len(entries))
	checkHostsDir(t, s.hosts) // whatever is there is whole
	g2 := startGateway(t, s.config, s.socket)
	st := g2.waitStatus(t, "converged", 120*time.Second, func(st *vtb.GatewayStatus) error {
		if st.LastSync == nil || st.LastError != "" || st.Members["nodes"] != n {
			return fmt.Errorf("not converged: %q", st.LastError)
		}
		return nil
	})
	// The only gateway holds as many nodes as its capacity (the
	// assignment), and its own file.
	files := checkHostsDir(t, s.hosts)
	if a := st.Assignment; a.Held != mesh.DefaultCapacity || a.Unplaced != n-mesh.DefaultCapacity || len(files) != a.Held+1 {
		t.Fatalf("%d host files after convergence, assignment %+v; want %d", len(files), a, mesh.DefaultCapacity+1)
	}
	left, _ := filepath.Glob(filepath.Join(s.hosts, ".mgmtnet-*"))
	if len(left) != 0 {
		t.Errorf("temporary files left: %v", left)
	}
}

// TestGatewayDiskFull: the hosts directory is on a small tmpfs; when it is
// full the sync fails and says so, no file is corrupt, and once there is
// room again the daemon catches up.
func TestGatewayDiskFull(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end test: skipped with -short")
	}
	if os.Geteuid() != 0 {
		if os.Getenv(vtb.RequireEnv) != "" {
			t.Fatal("disk-full test needs root (to mount a tmpfs)")
		}
		t.Skip("disk-full test needs root (to mount a tmpfs)")
	}
	f := synthetic(t, 100)
	reg := newFaultyRegistry(t, f)
	pidFile := fakeTincdProc(t, t.TempDir())
	s := newGwSetup(t, reg.url(), pidFile, "")
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=1m", "mgmtnet-test", s.netDir).CombinedOutput(); err != nil {
		t.Fatalf("mount tmpfs: %v: %s", err, out)
	}
	t.Cleanup(func() { exec.Command("umount", "-l", s.netDir).Run() })
	os.MkdirAll(s.hosts, 0o755)
	os.WriteFile(filepath.Join(s.netDir, "tinc.conf"), []byte("Name = server\nStrictSubnets = yes\n"), 0o644)
	g := startGateway(t, s.config, s.socket)
	g.waitStatus(t, "first sync", 30*time.Second, func(st *vtb.GatewayStatus) error {
		if st.LastSync == nil || st.Members["nodes"] != 100 {
			return fmt.Errorf("not synced")
		}
		return nil
	})
	good := checkHostsDir(t, s.hosts)
	// Fill the file system.
	filler := filepath.Join(s.netDir, "filler")
	fill, err := os.Create(filler)
	if err != nil {
		t.Fatal(err)
	}
	chunk := make([]byte, 4096)
	for {
		if _, err := fill.Write(chunk); err != nil {
			break
		}
	}
	fill.Close()
	reg.srv.SetFile(grow(f, 150))
	g.waitStatus(t, "disk full reported", 20*time.Second, func(st *vtb.GatewayStatus) error {
		if !strings.Contains(strings.ToLower(st.LastError), "no space") {
			return fmt.Errorf("last_error %q does not say the disk is full", st.LastError)
		}
		return nil
	})
	sameFiles(t, "disk full", good, checkHostsDir(t, s.hosts))
	os.Remove(filler)
	g.waitStatus(t, "recovery", 20*time.Second, func(st *vtb.GatewayStatus) error {
		if st.LastError != "" || st.Members["nodes"] != 150 {
			return fmt.Errorf("not recovered: %q", st.LastError)
		}
		return nil
	})
	if files := checkHostsDir(t, s.hosts); len(files) != 151 {
		t.Fatalf("%d host files after recovery, want 151", len(files))
	}
}

// TestGatewayModes: --check prints what would change and changes nothing;
// --once reconciles once and exits; the metrics endpoint serves the
// counters; --cleanup removes the snapshot and socket and keeps host files.
func TestGatewayModes(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end test: skipped with -short")
	}
	f := synthetic(t, 5)
	reg := newFaultyRegistry(t, f)
	pidFile := fakeTincdProc(t, t.TempDir())
	port, err := vtb.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	metrics := fmt.Sprintf("127.0.0.1:%d", port)
	s := newGwSetup(t, reg.url(), pidFile, "metrics_listen: "+metrics+"\n")
	run := func(args ...string) (string, int) {
		cmd := exec.Command(mgmtnetBin, append([]string{"gateway", "--config", s.config}, args...)...)
		out, err := cmd.CombinedOutput()
		code := 0
		if ee, ok := err.(*exec.ExitError); ok {
			code = ee.ExitCode()
		} else if err != nil {
			t.Fatal(err)
		}
		return string(out), code
	}
	out, code := run("--check")
	if code != 1 || !strings.Contains(out, "+++ b/node_1") {
		t.Fatalf("--check on an empty directory: exit %d, want 1 and a diff:\n%s", code, out)
	}
	if entries, _ := os.ReadDir(s.hosts); len(entries) != 0 {
		t.Fatalf("--check wrote %d files", len(entries))
	}
	if out, code = run("--once"); code != 0 {
		t.Fatalf("--once: exit %d:\n%s", code, out)
	}
	if files := checkHostsDir(t, s.hosts); len(files) != 6 {
		t.Fatalf("--once wrote %d host files, want 6", len(files))
	}
	if _, err := os.Stat(filepath.Join(s.state, "snapshot.json")); err != nil {
		t.Fatalf("--once saved no snapshot: %v", err)
	}
	if out, code = run("--check"); code != 0 {
		t.Fatalf("--check after --once: exit %d, want 0 (nothing to change):\n%s", code, out)
	}

	// sd_notify: a NOTIFY_SOCKET of our own receives READY=1 and STATUS=.
	notifyPath := filepath.Join(t.TempDir(), "notify.sock")
	notify, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: notifyPath, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer notify.Close()
	t.Setenv("NOTIFY_SOCKET", notifyPath)
	g := startGateway(t, s.config, s.socket)
	g.waitStatus(t, "synced", 30*time.Second, func(st *vtb.GatewayStatus) error {
		if st.LastSync == nil {
			return fmt.Errorf("not synced")
		}
		return nil
	})
	var notes []string
	notify.SetReadDeadline(time.Now().Add(5 * time.Second))
	for !strings.Contains(strings.Join(notes, "\n"), "READY=1") {
		buf := make([]byte, 4096)
		n, _, err := notify.ReadFromUnix(buf)
		if err != nil {
			t.Fatalf("sd_notify: no READY=1 (got %q): %v", notes, err)
		}
		notes = append(notes, string(buf[:n]))
	}
	if !strings.Contains(strings.Join(notes, "\n"), "STATUS=") {
		t.Errorf("sd_notify: READY=1 but no STATUS= line: %q", notes)
	}
	resp, err := http.Get("http://" + metrics + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body := new(bytes.Buffer)
	body.ReadFrom(resp.Body)
	resp.Body.Close()
	for _, want := range []string{"mgmtnet_sync_total", `mgmtnet_members{kind="node"} 5`, "mgmtnet_tincd_hups_total", "mgmtnet_last_sync_timestamp_seconds", "mgmtnet_snapshot_from_cache 0"} {
		if !strings.Contains(body.String(), want) {
			t.Errorf("metrics lack %q", want)
		}
	}
	g.stop()
	if out, code = run("--cleanup"); code != 0 {
		t.Fatalf("--cleanup: exit %d:\n%s", code, out)
	}
	if _, err := os.Stat(filepath.Join(s.state, "snapshot.json")); err == nil {
		t.Error("--cleanup left the snapshot")
	}
	if files := checkHostsDir(t, s.hosts); len(files) != 6 {
		t.Errorf("--cleanup removed host files: %d left", len(files))
	}

	// A deliberate bulk removal: refused by the guard, allowed by --once
	// --force.
	small := *f
	small.Nodes = f.Nodes[:1]
	reg.srv.SetFile(&small)
	if out, code = run("--once"); code != 1 || !strings.Contains(out, "would remove") {
		t.Fatalf("--once removing 4 of 6: exit %d, want 1 and the guard's message:\n%s", code, out)
	}
	if out, code = run("--once", "--force"); code != 0 {
		t.Fatalf("--once --force: exit %d:\n%s", code, out)
	}
	if files := checkHostsDir(t, s.hosts); len(files) != 2 {
		t.Errorf("--once --force left %d host files, want 2", len(files))
	}
}
