package nodeboot

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net/http/httptest"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/confine-project/mgmtnet/addressing"
	"github.com/confine-project/mgmtnet/mesh/registry"
	"github.com/confine-project/mgmtnet/tinc"
)

// fakeTincd is a strict fake of tinc.Controller: it records every call, keeps a
// running pid, and fails the test on a call that the real tincd would
// refuse (start while running, signal while not running).
type fakeTincd struct {
	t       *testing.T
	pid     int
	nextPid int
	calls   []string
}

var _ tinc.Controller = (*fakeTincd)(nil)

func newFakeTincd(t *testing.T) *fakeTincd { return &fakeTincd{t: t, nextPid: 100} }

// State is a query, not an action: it is not recorded.
func (f *fakeTincd) State() tinc.State {
	return tinc.State{Managed: true, Pid: f.pid, Running: f.pid != 0}
}

func (f *fakeTincd) Start(context.Context) error {
	f.calls = append(f.calls, "Start")
	if f.pid != 0 {
		f.t.Errorf("fake tincd: Start while running (pid %d)", f.pid)
		return errors.New("already running")
	}
	f.pid, f.nextPid = f.nextPid, f.nextPid+1
	return nil
}

func (f *fakeTincd) Reload() error {
	f.calls = append(f.calls, "Reload")
	if f.pid == 0 {
		f.t.Errorf("fake tincd: Reload while not running")
		return tinc.ErrNotRunning
	}
	return nil
}

func (f *fakeTincd) Restart(context.Context) error {
	f.calls = append(f.calls, "Restart")
	if f.pid == 0 {
		f.t.Errorf("fake tincd: Restart while not running")
		return tinc.ErrNotRunning
	}
	f.pid, f.nextPid = f.nextPid, f.nextPid+1
	return nil
}

func (f *fakeTincd) Stop(context.Context) error {
	f.calls = append(f.calls, "Stop")
	f.pid = 0
	return nil
}

// take returns the calls since the last take.
func (f *fakeTincd) take() []string {
	c := f.calls
	f.calls = nil
	return c
}

// String prints the fake's state.
func (f *fakeTincd) String() string { return fmt.Sprintf("pid=%d calls=%v", f.pid, f.calls) }

// testRegistry is the registry of registryCandidates as a testbed file.
func testRegistry(t *testing.T) *registry.File {
	gw, node := string(readTestdata(t, "gw.pub")), string(readTestdata(t, "node.pub"))
	return &registry.File{MgmtPrefix: addressing.DefaultMgmtPrefix(),
		Islands: []registry.FileIsland{{ID: 1, Name: "one"}, {ID: 2, Name: "two"}},
		Servers: []registry.FileMember{{ID: 2, Name: "main", Tinc: &registry.FileTinc{Name: "server", PubKey: gw,
			Addresses: []registry.FileAddress{{Addr: "gw.example.net", Port: 655, Island: 1}, {Addr: "10.241.0.254", Port: 655, Island: 2}}}}},
		Nodes: []registry.FileMember{
			{ID: 31, Name: "n31", Island: 2, Tinc: &registry.FileTinc{Name: "node_31", PubKey: node}},
			{ID: 32, Name: "n32", Island: 1, Tinc: &registry.FileTinc{Name: "node_32", PubKey: node}},
		},
	}
}

func serveRegistry(t *testing.T, f *registry.File) (*registry.Server, string) {
	t.Helper()
	s := registry.NewServer(f, nil)
	ts := httptest.NewServer(s)
	t.Cleanup(ts.Close)
	return s, ts.URL + "/api/"
}

// snapshot describes a directory tree: names, modes, mtimes and bytes.
func snapshot(t *testing.T, dir string) string {
	t.Helper()
	var b strings.Builder
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		st, err := os.Lstat(path)
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, path)
		fmt.Fprintf(&b, "%s %v %d", rel, st.Mode(), st.ModTime().UnixNano())
		if !d.IsDir() {
			c, _ := os.ReadFile(path)
			fmt.Fprintf(&b, " %q", c)
		}
		b.WriteByte('\n')
		return nil
	})
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		t.Fatal(err)
	}
	return b.String()
}

func testOptions(dir, reg string, tincd tinc.Controller) Options {
	return Options{TincDir: dir, Registry: reg, GatewaysDir: filepath.Join(dir, "no-such-dir"),
		Timeout: 2 * time.Second, Retries: -1, KeyBits: 2048, Tincd: tincd}
}

type step struct {
	name      string
	before    func(t *testing.T)
	written   []string
	calls     []string
	generated bool
	line      string // the start of a line the report must have
}

func TestRunRegistry(t *testing.T) {
	srv, base := serveRegistry(t, testRegistry(t))
	dir := t.TempDir()
	tincd := newFakeTincd(t)
	cfg := node31(t)
	keyPath := filepath.Join(dir, KeyFile)
	var key []byte
	all := []string{"hosts/node_31", "hosts/server", "tinc-down", "tinc-up", "tinc.conf"}
	steps := []step{
		{name: "first boot", written: all, calls: []string{"Start"}, generated: true, line: "started tincd (pid 100)"},
		{name: "again: nothing", calls: nil, line: "nothing changed; tincd (pid 100) left alone"},
		{name: "gateway changed in the registry", before: func(t *testing.T) {
			f := testRegistry(t)
			f.Servers[0].Tinc.Addresses[1].Addr = "10.241.0.253"
			srv.SetFile(f)
		}, written: []string{"hosts/server"}, calls: []string{"Reload"}, line: "sent SIGHUP to tincd (pid 100)"},
		{name: "own subnet changed", before: func(t *testing.T) {
			cfg.Prefix = mustPrefix(t, "fd65:fc41:c50f::/48")
		}, written: []string{"hosts/node_31", "tinc-down", "tinc-up"}, calls: []string{"Restart"}, line: "restarted tincd (pid 101, was 100)"},
		{name: "key deleted", before: func(t *testing.T) {
			if err := os.Remove(keyPath); err != nil {
				t.Fatal(err)
			}
			key = nil
		}, written: []string{"hosts/node_31"}, calls: []string{"Restart"}, generated: true, line: "generated a new RSA key in " + keyPath},
		{name: "tincd died", before: func(t *testing.T) { tincd.pid = 0 }, calls: []string{"Start"}, line: "started tincd (pid 103)"},
	}
	for _, s := range steps {
		t.Run(s.name, func(t *testing.T) {
			if s.before != nil {
				s.before(t)
			}
			res, err := Run(t.Context(), cfg, testOptions(dir, base, tincd))
			if err != nil {
				t.Fatal(err)
			}
			if d := cmp.Diff(s.written, res.Written, cmpNilEmpty); d != "" {
				t.Errorf("written (-want +got):\n%s", d)
			}
			if d := cmp.Diff(s.calls, tincd.take()); d != "" {
				t.Errorf("tincd calls (-want +got):\n%s", d)
			}
			if res.KeyGenerated != s.generated {
				t.Errorf("key generated = %v, want %v", res.KeyGenerated, s.generated)
			}
			if !slices.ContainsFunc(res.Lines, func(l string) bool { return strings.HasPrefix(l, s.line) }) {
				t.Errorf("no line %q in:\n%s", s.line, strings.Join(res.Lines, "\n"))
			}
			if res.Source != SourceRegistry || res.Island != 2 {
				t.Errorf("source %s island %d, want registry, 2", res.Source, res.Island)
			}
			st, err := os.Stat(keyPath)
			if err != nil || st.Mode().Perm() != 0o600 {
				t.Fatalf("key file: %v, mode %v", err, st.Mode())
			}
			b, _ := os.ReadFile(keyPath)
			if key != nil && !bytes.Equal(key, b) {
				t.Error("the existing key was overwritten")
			}
			key = b
			pub, _, _ := EnsureKey(dir, 2048, nil, true)
			own, _ := os.ReadFile(filepath.Join(dir, "hosts/node_31"))
			if !bytes.Contains(own, pub) {
				t.Error("hosts/node_31 does not hold the key's public half")
			}
		})
	}
}

var cmpNilEmpty = cmp.Transformer("nilEmpty", func(s []string) []string {
	if len(s) == 0 {
		return nil
	}
	return s
})

func mustPrefix(t *testing.T, s string) netip.Prefix {
	t.Helper()
	p, err := addressing.ParsePrefix48(s)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func TestRunFirmwareFallback(t *testing.T) {
	dir := t.TempDir()
	hosts := filepath.Join(dir, "hosts")
	os.MkdirAll(hosts, 0o755)
	server := readTestdata(t, "firmware/tinc/hosts/server")
	os.WriteFile(filepath.Join(hosts, "server"), server, 0o644)
	os.WriteFile(filepath.Join(hosts, "README"), []byte("not ours\n"), 0o644)
	tincd := newFakeTincd(t)
	opts := testOptions(dir, "http://127.0.0.1:1/api/", tincd)
	opts.GatewaysDir = "testdata/firmware/gateways"
	res, err := Run(t.Context(), node31(t), opts)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{
		"generated a new RSA key in " + filepath.Join(dir, KeyFile),
		`skipped gateway file testdata/firmware/gateways/broken: not a tinc host file: line 2: invalid subnet "not-a-subnet": ParseAddr("not-a-subnet"): unable to parse IP`,
		"skipped gateway file testdata/firmware/gateways/server_9: no Address line",
		"registry http://127.0.0.1:1/api/ unreachable (connect: connection refused); using the firmware's gateway files: server, server_5",
		"wrote hosts/node_31", "wrote hosts/server_5", "wrote tinc-down", "wrote tinc-up", "wrote tinc.conf",
		"unchanged: hosts/server",
		"started tincd (pid 100)",
	}
	if d := cmp.Diff(want, res.Lines); d != "" {
		t.Errorf("lines (-want +got):\n%s", d)
	}
	if res.Source != SourceFirmware || res.RegistryError != "unreachable (connect: connection refused)" {
		t.Errorf("source %q, registry error %q", res.Source, res.RegistryError)
	}
	if d := cmp.Diff([]string{"server", "server_5"}, res.Gateways); d != "" {
		t.Errorf("gateways (-want +got):\n%s", d)
	}
	if b, _ := os.ReadFile(filepath.Join(hosts, "README")); string(b) != "not ours\n" {
		t.Error("README was touched")
	}
	if d := cmp.Diff([]string{"Start"}, tincd.take()); d != "" {
		t.Errorf("tincd calls (-want +got):\n%s", d)
	}
}

func TestRunErrors(t *testing.T) {
	t.Run("no gateway", func(t *testing.T) {
		dir := t.TempDir()
		tincd := newFakeTincd(t)
		_, err := Run(t.Context(), node31(t), testOptions(dir, "", tincd))
		if !errors.Is(err, ErrNoGateway) || !strings.Contains(err.Error(), "no registry configured, and the firmware shipped no gateway file") {
			t.Errorf("error = %v", err)
		}
		if len(tincd.calls) != 0 {
			t.Errorf("tincd touched: %v", tincd)
		}
	})
	t.Run("corrupt key is left alone", func(t *testing.T) {
		dir := t.TempDir()
		bad := []byte("-----BEGIN RSA PRIVATE KEY-----\nAAAA\n-----END RSA PRIVATE KEY-----\n")
		os.WriteFile(filepath.Join(dir, KeyFile), bad, 0o600)
		before := snapshot(t, dir)
		_, err := Run(t.Context(), node31(t), testOptions(dir, "", newFakeTincd(t)))
		if err == nil || !strings.Contains(err.Error(), "is not a usable RSA private key (left as it is") {
			t.Errorf("error = %v", err)
		}
		if after := snapshot(t, dir); after != before {
			t.Errorf("directory changed:\n%s\n%s", before, after)
		}
	})
	t.Run("existing key is used", func(t *testing.T) {
		dir := t.TempDir()
		priv := readTestdata(t, "node.priv")
		os.WriteFile(filepath.Join(dir, KeyFile), priv, 0o600)
		_, base := serveRegistry(t, testRegistry(t))
		res, err := Run(t.Context(), node31(t), testOptions(dir, base, nil))
		if err != nil {
			t.Fatal(err)
		}
		own, _ := os.ReadFile(filepath.Join(dir, "hosts/node_31"))
		if res.KeyGenerated || !bytes.Contains(own, readTestdata(t, "node.pub")) {
			t.Errorf("generated %v; own host file:\n%s", res.KeyGenerated, own)
		}
		if b, _ := os.ReadFile(filepath.Join(dir, KeyFile)); !bytes.Equal(b, priv) {
			t.Error("key changed")
		}
		if res.Tincd != TincdUntouched || res.Lines[len(res.Lines)-1] != "tincd not touched (--no-start)" {
			t.Errorf("tincd %q, lines %q", res.Tincd, res.Lines)
		}
	})
}

func TestRunDryRun(t *testing.T) {
	srv, base := serveRegistry(t, testRegistry(t))
	for _, tt := range []struct {
		name    string
		prepare func(t *testing.T, dir string, tincd *fakeTincd)
		line    string
	}{
		{"fresh", func(*testing.T, string, *fakeTincd) {}, "would start tincd (not running)"},
		{"changed", func(t *testing.T, dir string, tincd *fakeTincd) {
			if _, err := Run(t.Context(), node31(t), testOptions(dir, base, tincd)); err != nil {
				t.Fatal(err)
			}
			tincd.take()
			f := testRegistry(t)
			f.Servers[0].Tinc.Addresses[0].Port = 656
			srv.SetFile(f)
			os.Chmod(filepath.Join(dir, "tinc-up"), 0o644)
		}, "would send SIGHUP to tincd (pid 100)"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			tincd := newFakeTincd(t)
			tt.prepare(t, dir, tincd)
			before := snapshot(t, dir)
			opts := testOptions(dir, base, tincd)
			opts.DryRun = true
			res, err := Run(t.Context(), node31(t), opts)
			if err != nil {
				t.Fatal(err)
			}
			if after := snapshot(t, dir); after != before {
				t.Errorf("dry run changed the directory:\nbefore:\n%s\nafter:\n%s", before, after)
			}
			if d := cmp.Diff([]string(nil), tincd.take()); d != "" {
				t.Errorf("tincd calls (-want +got):\n%s", d)
			}
			if !slices.Contains(res.Lines, tt.line) || res.Diff == "" {
				t.Errorf("lines:\n%s\ndiff:\n%s", strings.Join(res.Lines, "\n"), res.Diff)
			}
			t.Logf("lines:\n%s\ndiff:\n%s", strings.Join(res.Lines, "\n"), res.Diff)
		})
	}
}

// TestRunKeepsOwnHostFile: node-boot keeps the node's own host file when it
// means the same as the one it would write, whatever its form, so that the
// file the image or the firmware made is not rewritten (and tincd not
// restarted) only to change its form; one that means something else is
// rewritten and tincd restarted, as its own Subnets and key are read only
// at start.
func TestRunKeepsOwnHostFile(t *testing.T) {
	pkcs1, spki, other := string(readTestdata(t, "node.pub")), string(readTestdata(t, "node.spki.pub")), string(readTestdata(t, "gw.pub"))
	// What the controller ships: IPy's strNormal, a blank line, the key as
	// M2Crypto writes it (SPKI).
	image := "Subnet = fdf5:5351:1dfd:1f:0:0:0:0/64\n\n" + spki
	// What the firmware shell writes when the image has none: the UCI id
	// verbatim, the key of ssh-keygen -e -m PEM on the next line.
	shell := "Subnet = fdf5:5351:1dfd:001f:0:0:0:0/64\n" + pkcs1
	ours := "Subnet = fdf5:5351:1dfd:1f:0:0:0:0/64\n\n" + pkcs1
	old := time.Date(2015, 3, 1, 12, 0, 0, 0, time.UTC)
	tests := []struct {
		name    string
		booted  bool   // node-boot ran before, tincd runs
		file    string // hosts/node_31 before the run
		egress  EgressMode
		want    string // hosts/node_31 after
		written []string
		calls   []string
	}{
		{name: "first boot of a controller image", file: image, want: image,
			written: []string{"tinc-down", "tinc-up", "tinc.conf"}, calls: []string{"Start"}},
		{name: "controller image form", booted: true, file: image, want: image},
		{name: "firmware shell form", booted: true, file: shell, want: shell},
		{name: "another key", booted: true, file: "Subnet = fdf5:5351:1dfd:1f:0:0:0:0/64\n\n" + other, want: ours,
			written: []string{"hosts/node_31"}, calls: []string{"Restart"}},
		{name: "another subnet", booted: true, file: "Subnet = fdf5:5351:1dfd:20:0:0:0:0/64\n\n" + spki, want: ours,
			written: []string{"hosts/node_31"}, calls: []string{"Restart"}},
		{name: "egress on adds its /32", booted: true, file: image, egress: EgressOn,
			want:    "Subnet = fdf5:5351:1dfd:1f:0:0:0:0/64\nSubnet = 100.64.0.31\n\n" + pkcs1,
			written: []string{"hosts/node_31", "tinc-up", "tinc.conf"}, calls: []string{"Restart"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			hosts := filepath.Join(dir, "hosts")
			must(t, os.MkdirAll(hosts, 0o755))
			must(t, os.WriteFile(filepath.Join(dir, KeyFile), readTestdata(t, "node.priv"), 0o600))
			must(t, os.WriteFile(filepath.Join(hosts, "server_5"), readTestdata(t, "firmware/gateways/server_5"), 0o644))
			cfg := node31(t)
			cfg.TincGateway = "server_5"
			tincd := newFakeTincd(t)
			opts := testOptions(dir, "", tincd)
			if tt.booted {
				if _, err := Run(t.Context(), cfg, opts); err != nil {
					t.Fatal(err)
				}
				tincd.take()
			}
			own := filepath.Join(hosts, "node_31")
			must(t, os.WriteFile(own, []byte(tt.file), 0o644))
			must(t, os.Chtimes(own, old, old))
			if tt.egress != "" {
				cfg.Egress = tt.egress
			}
			res, err := Run(t.Context(), cfg, opts)
			if err != nil {
				t.Fatal(err)
			}
			if d := cmp.Diff(tt.written, res.Written, cmpNilEmpty); d != "" {
				t.Errorf("written (-want +got):\n%s", d)
			}
			if d := cmp.Diff(tt.calls, tincd.take()); d != "" {
				t.Errorf("tincd calls (-want +got):\n%s", d)
			}
			got, err := os.ReadFile(own)
			if err != nil {
				t.Fatal(err)
			}
			if d := cmp.Diff(tt.want, string(got)); d != "" {
				t.Errorf("hosts/node_31 (-want +got):\n%s", d)
			}
			st, err := os.Stat(own)
			if err != nil {
				t.Fatal(err)
			}
			if kept := tt.want == tt.file; kept != st.ModTime().Equal(old) {
				t.Errorf("hosts/node_31 kept %v, but its mtime is %v (was %v)", kept, st.ModTime(), old)
			}
		})
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// TestRunOldImage: a G1 image (before the controller's tinc_gateway, Nov
// 2014) ships every gateway's host file in hosts/, and its firmware
// connects to each. node-boot keeps every one of them (those with an
// Address) until the registry answers; then it connects to the registry's
// gateways, and leaves the image's other files on disk. Offline again, it
// connects to every gateway file it has.
func TestRunOldImage(t *testing.T) {
	_, base := serveRegistry(t, testRegistry(t))
	dir := t.TempDir()
	writeTree(t, dir, readTree(t, "testdata/generations/g1/image"))
	must(t, os.WriteFile(filepath.Join(dir, KeyFile), readTestdata(t, "node.priv"), 0o600))
	cfg, err := LoadConfig("testdata/generations/g1/confine")
	if err != nil {
		t.Fatal(err)
	}
	if cfg.TincGateway != DefaultTincGateway || cfg.RegistryURI != "" {
		t.Fatalf("G1 UCI: tinc_gateway %q, registry %q; want the default and none", cfg.TincGateway, cfg.RegistryURI)
	}
	all := []string{"server", "gateway_4", "gateway_7"} // gateway_9 has no Address
	const down = "http://127.0.0.1:1/api/"
	tincd := newFakeTincd(t)
	for _, s := range []struct {
		name     string
		registry string
		source   string
		gateways []string
		written  []string
		calls    []string
	}{
		{"first boot, registry unreachable", down, SourceFirmware, all, []string{"tinc-down", "tinc-up", "tinc.conf"}, []string{"Start"}},
		{"no registry configured", "", SourceFirmware, all, nil, nil},
		{"the registry answers", base, SourceRegistry, []string{"server"}, []string{"hosts/server", "tinc.conf"}, []string{"Reload"}},
		{"unreachable again", down, SourceFirmware, all, []string{"tinc.conf"}, []string{"Reload"}},
	} {
		t.Run(s.name, func(t *testing.T) {
			opts := testOptions(dir, s.registry, tincd)
			res, err := Run(t.Context(), cfg, opts)
			if err != nil {
				t.Fatal(err)
			}
			if res.Source != s.source {
				t.Errorf("source %s, want %s", res.Source, s.source)
			}
			if d := cmp.Diff(s.gateways, res.Gateways); d != "" {
				t.Errorf("ConnectTo (-want +got):\n%s", d)
			}
			if d := cmp.Diff(s.written, res.Written, cmpNilEmpty); d != "" {
				t.Errorf("written (-want +got):\n%s", d)
			}
			if d := cmp.Diff(s.calls, tincd.take()); d != "" {
				t.Errorf("tincd calls (-want +got):\n%s", d)
			}
			for _, n := range []string{"gateway_4", "gateway_7", "gateway_9", "node_31"} {
				want, _ := os.ReadFile(filepath.Join("testdata/generations/g1/image/hosts", n))
				if got, err := os.ReadFile(filepath.Join(dir, "hosts", n)); err != nil || string(got) != string(want) {
					t.Errorf("hosts/%s changed or gone (%v)", n, err)
				}
			}
		})
	}
}
