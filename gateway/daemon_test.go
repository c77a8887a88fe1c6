package gateway

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/confine-project/mgmtnet/addressing"
	"github.com/confine-project/mgmtnet/gateway/loopback"
	"github.com/confine-project/mgmtnet/mesh/registry"
	"github.com/confine-project/mgmtnet/tinc"
)

// fakeTincd is a strict fake of Tincd: it records calls and fails the test
// on a call that makes no sense in its state.
type fakeTincd struct {
	t       *testing.T
	mu      sync.Mutex
	running bool
	calls   []string
	// failReloads makes the next Reload calls fail.
	failReloads int
	// managed is what State reports as Managed.
	managed bool
}

var _ Tincd = (*fakeTincd)(nil)

func (f *fakeTincd) rec(c string) { f.mu.Lock(); f.calls = append(f.calls, c); f.mu.Unlock() }
func (f *fakeTincd) Start(context.Context) error {
	f.rec("start")
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.running {
		f.t.Errorf("fake tincd: Start while running")
	}
	f.running = true
	return nil
}
func (f *fakeTincd) Reload() error {
	f.rec("reload")
	if !f.State().Running {
		f.t.Errorf("fake tincd: Reload while not running")
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.failReloads > 0 {
		f.failReloads--
		return errors.New("fake tincd: reload failed")
	}
	return nil
}
func (f *fakeTincd) Restart(context.Context) error { f.rec("restart"); return nil }
func (f *fakeTincd) Stop(context.Context) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.running = false
	return nil
}
func (f *fakeTincd) State() tinc.State {
	f.mu.Lock()
	defer f.mu.Unlock()
	return tinc.State{Managed: f.managed, Pid: 100, Running: f.running}
}
func (f *fakeTincd) Events() <-chan TincdEvent { return nil }
func (f *fakeTincd) Peers() []Peer             { return nil }

// take returns and clears the calls, as sorted-free text.
func (f *fakeTincd) take() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	s := strings.Join(f.calls, ",")
	f.calls = nil
	return s
}

var (
	keyOnce sync.Once
	keys    []string
)

func testFile(t *testing.T, nodes int) *registry.File {
	t.Helper()
	keyOnce.Do(func() {
		for range 2 {
			k, err := registry.GeneratePublicKeyPEM(2048)
			if err != nil {
				panic(err)
			}
			keys = append(keys, k)
		}
	})
	f := &registry.File{MgmtPrefix: addressing.DefaultMgmtPrefix(),
		Islands: []registry.FileIsland{{ID: 1, Name: "one"}},
		Servers: []registry.FileMember{{ID: 2, Name: "main", Tinc: &registry.FileTinc{Name: "server", PubKey: keys[0],
			Addresses: []registry.FileAddress{{Addr: "10.0.0.1", Port: 655, Island: 1}}}}},
	}
	for i := 1; i <= nodes; i++ {
		name := fmt.Sprintf("node_%d", i)
		f.Nodes = append(f.Nodes, registry.FileMember{ID: uint64(i), Name: name, Tinc: &registry.FileTinc{Name: name, PubKey: keys[i%2]}})
	}
	return f
}

type rig struct {
	t      *testing.T
	srv    *registry.Server
	fail   atomic.Bool
	cfg    Config
	path   string
	tincd  *fakeTincd
	egress *FakeEgress
	events chan Event
	d      *Daemon
	cancel context.CancelFunc
	done   chan error
	// log, when set before start, is the daemon's logger.
	log *slog.Logger
	// loopback, when set before start, is the daemon's netlink for lo.
	loopback loopback.Netlink
}

func newRig(t *testing.T, f *registry.File) *rig {
	t.Helper()
	r := &rig{t: t, srv: registry.NewServer(f, nil), tincd: &fakeTincd{t: t, running: true}, egress: &FakeEgress{},
		events: make(chan Event, 100)}
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, q *http.Request) {
		if r.fail.Load() {
			http.Error(w, "boom", http.StatusInternalServerError)
			return
		}
		r.srv.ServeHTTP(w, q)
	}))
	t.Cleanup(ts.Close)
	dir, err := os.MkdirTemp("", "gw")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	tinc := filepath.Join(dir, "tinc")
	os.MkdirAll(filepath.Join(tinc, "hosts"), 0o755)
	// A gateway already in the tunnel-server topology.
	os.WriteFile(filepath.Join(tinc, "tinc.conf"), []byte("Name = server\nTunnelServer = yes\n"), 0o644)
	r.cfg = DefaultConfig()
	r.cfg.Registry.URL = ts.URL + "/api/"
	r.cfg.Tinc.Dir = tinc
	r.cfg.StateDir = filepath.Join(dir, "state")
	r.cfg.StatusSocket = filepath.Join(dir, "s.sock")
	r.path = filepath.Join(dir, "gateway.yaml")
	r.writeConfig("")
	return r
}

func (r *rig) writeConfig(extra string) {
	y := fmt.Sprintf("registry: {url: %q, timeout: 5s}\ntinc: {dir: %q}\nstate_dir: %q\nstatus_socket: %q\n%s",
		r.cfg.Registry.URL, r.cfg.Tinc.Dir, r.cfg.StateDir, r.cfg.StatusSocket, extra)
	if err := os.WriteFile(r.path, []byte(y), 0o644); err != nil {
		r.t.Fatal(err)
	}
}

func (r *rig) start() {
	r.t.Helper()
	// The registry client retries 5xx with backoff; keep tests quick.
	d, err := New(r.cfg, Options{ConfigPath: r.path, Tincd: r.tincd, Egress: r.egress, Loopback: r.loopback, Notify: func(string) {}, Logger: r.log,
		OnEvent: func(e Event) { r.events <- e }, Client: registry.Options{Retries: -1, Timeout: 5 * time.Second}})
	if err != nil {
		r.t.Fatal(err)
	}
	r.d = d
	ctx, cancel := context.WithCancel(context.Background())
	r.cancel, r.done = cancel, make(chan error, 1)
	go func() { r.done <- d.Run(ctx) }()
	r.t.Cleanup(r.stop)
}

func (r *rig) stop() {
	if r.cancel != nil {
		r.cancel()
		<-r.done
		r.cancel = nil
	}
}

// wait waits (bounded) for event e.
func (r *rig) wait(e Event) {
	r.t.Helper()
	timeout := time.After(20 * time.Second)
	for {
		select {
		case got := <-r.events:
			if got == e {
				return
			}
		case <-timeout:
			r.t.Fatalf("no %s event", e)
		}
	}
}

func (r *rig) poll() Status {
	r.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	s, err := r.d.Poll(ctx)
	if err != nil {
		r.t.Fatal(err)
	}
	return s
}

func (r *rig) hostFile(name string) string { return filepath.Join(r.cfg.HostsDir(), name) }

func TestDaemonSync(t *testing.T) {
	f := testFile(t, 3)
	r := newRig(t, f)
	r.start()
	r.wait(EventSynced)
	if got := r.tincd.take(); got != "reload" {
		t.Errorf("first sync: tincd calls %q, want one reload", got)
	}
	for _, n := range []string{"server", "node_1", "node_2", "node_3"} {
		if _, err := os.Stat(r.hostFile(n)); err != nil {
			t.Errorf("host file %s: %v", n, err)
		}
	}
	if _, err := os.Stat(r.cfg.SnapshotFile()); err != nil {
		t.Errorf("snapshot: %v", err)
	}

	// 304: nothing.
	s := r.poll()
	if got := r.tincd.take(); got != "" || s.LastError != "" {
		t.Errorf("304: tincd calls %q, last_error %q", got, s.LastError)
	}
	if s.Members.Nodes != 3 || s.Members.Servers != 1 || s.Hups != 1 || s.Version == "" || s.LastSync == nil {
		t.Errorf("status %+v", s)
	}

	// One member changed: one file, one HUP.
	f2 := testFile(t, 3)
	f2.Nodes[1].Tinc.PubKey = keys[0]
	if f.Nodes[1].Tinc.PubKey == keys[0] {
		f2.Nodes[1].Tinc.PubKey = keys[1]
	}
	r.srv.SetFile(f2)
	before := s.Files.Written
	s = r.poll()
	if got := r.tincd.take(); got != "reload" || s.Files.Written != before+1 {
		t.Errorf("one change: calls %q, written %d (was %d)", got, s.Files.Written, before)
	}

	// Own Subnets changed: a SIGHUP, since with TunnelServer (hence
	// StrictSubnets) tinc 1.0 re-reads its own host file on SIGHUP.
	// (A new management prefix changes every member's Subnets, this
	// gateway's own included; a tinc name stays bound to its kind and id.)
	f3 := testFile(t, 3)
	f3.Nodes[1].Tinc.PubKey = f2.Nodes[1].Tinc.PubKey
	f3.MgmtPrefix = netip.MustParsePrefix("fd65:fc41:c50f::/48")
	r.srv.SetFile(f3)
	s = r.poll()
	if got := r.tincd.take(); got != "reload" || s.Restarts != 0 {
		t.Errorf("own subnets: calls %q restarts %d", got, s.Restarts)
	}

	// Empty registry: the guard refuses, files are kept.
	empty := testFile(t, 0)
	empty.Servers = nil
	r.srv.SetFile(empty)
	s = r.poll()
	if !strings.Contains(s.LastError, "mass deletion") || r.tincd.take() != "" {
		t.Errorf("empty registry: last_error %q", s.LastError)
	}
	if _, err := os.Stat(r.hostFile("node_2")); err != nil {
		t.Errorf("guard: %v", err)
	}

	// Registry 500: last_error, files kept.
	r.fail.Store(true)
	s = r.poll()
	if s.LastError == "" || s.Registry.LastError == "" || s.Members.Nodes != 3 {
		t.Errorf("500: %+v", s)
	}
	r.fail.Store(false)
	r.srv.SetFile(f3)
	if s = r.poll(); s.LastError != "" {
		t.Errorf("recovered: last_error %q", s.LastError)
	}
	r.tincd.take()

	// A host file deleted by hand is repaired on the file event.
	if err := os.Remove(r.hostFile("node_1")); err != nil {
		t.Fatal(err)
	}
	r.wait(EventRepaired)
	if _, err := os.Stat(r.hostFile("node_1")); err != nil {
		t.Errorf("not repaired: %v", err)
	}
	if got := r.tincd.take(); got != "reload" {
		t.Errorf("repair: calls %q, want reload", got)
	}
}

func TestDaemonBadReloadKeepsConfig(t *testing.T) {
	r := newRig(t, testFile(t, 1))
	r.start()
	r.wait(EventSynced)
	r.writeConfig("bogus_key: 1\n")
	r.wait(EventReloadFailed)
	s := r.poll()
	if !strings.Contains(s.LastError, "bogus_key") || s.Registry.URL != r.cfg.Registry.URL {
		t.Errorf("status after bad reload: last_error %q url %q", s.LastError, s.Registry.URL)
	}
	r.writeConfig("island: 1\n")
	r.wait(EventReloaded)
	if s := r.poll(); s.LastError != "" || s.ConfigError != "" {
		t.Errorf("after a good reload: %q %q", s.LastError, s.ConfigError)
	}
}

func TestDaemonStartsFromCache(t *testing.T) {
	r := newRig(t, testFile(t, 2))
	d, err := New(r.cfg, Options{Tincd: r.tincd, Notify: func(string) {}})
	if err != nil {
		t.Fatal(err)
	}
	if err := d.Once(context.Background()); err != nil {
		t.Fatal(err)
	}
	os.RemoveAll(r.cfg.HostsDir())
	r.tincd.take()
	r.fail.Store(true)
	r.start()
	r.wait(EventSyncFailed)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	s, err := r.d.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !s.FromCache || s.Members.Nodes != 2 {
		t.Errorf("from cache: %+v", s)
	}
	if _, err := os.Stat(r.hostFile("node_2")); err != nil {
		t.Errorf("cache not applied: %v", err)
	}
}

// A SIGHUP that failed is sent again at the next poll, although the files
// are then unchanged: a revoked member must not keep its access.
func TestDaemonRetriesFailedReload(t *testing.T) {
	f := testFile(t, 3)
	r := newRig(t, f)
	r.start()
	r.wait(EventSynced)
	r.tincd.take()
	f2 := testFile(t, 2) // node_3 revoked
	r.srv.SetFile(f2)
	r.tincd.mu.Lock()
	r.tincd.failReloads = 1
	r.tincd.mu.Unlock()
	s := r.poll()
	if got := r.tincd.take(); got != "reload" || s.LastError == "" {
		t.Fatalf("failed reload: calls %q, last_error %q", got, s.LastError)
	}
	if _, err := os.Stat(r.hostFile("node_3")); err == nil {
		t.Fatal("revoked node's file still there")
	}
	s = r.poll() // 304 now: the pending HUP is delivered
	if got := r.tincd.take(); got != "reload" || s.LastError != "" {
		t.Errorf("retry: calls %q, last_error %q; want one reload and no error", got, s.LastError)
	}
	s = r.poll()
	if got := r.tincd.take(); got != "" {
		t.Errorf("after the retry: calls %q, want none", got)
	}
}
