package cli

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/confine-project/mgmtnet/tinc"
)

const nodeBootUCI = `config node node
    option id '001f'
    option tinc_gateway 'server'
config registry registry
    option base_uri 'http://127.0.0.1:1/api/'
config testbed testbed
    option mgmt_ipv6_prefix48 'fdf5:5351:1dfd'
`

func TestNodeBoot(t *testing.T) {
	dir := t.TempDir()
	uci := filepath.Join(dir, "confine")
	os.WriteFile(uci, []byte(nodeBootUCI), 0o644)
	tinc := filepath.Join(dir, "tinc")
	_, base := serve(t, testbed(t, 2))

	// The registry of the UCI file is down: no gateway file either.
	out, errOut, code := run(t, "node-boot", "--uci", uci, "--tinc-dir", tinc, "--gateways-dir", dir+"/none", "--no-start", "--timeout", "1s")
	if !strings.Contains(out, "generated a new RSA key in "+tinc+"/rsa_key.priv\n") {
		t.Errorf("stdout:\n%s", out)
	}
	if code != 1 || !strings.Contains(errOut, "mgmtnet node-boot: registry http://127.0.0.1:1/api/ unreachable (connect: connection refused), and the firmware shipped no gateway file") {
		t.Errorf("exit %d\n%s", code, errOut)
	}

	out, errOut, code = run(t, "node-boot", "--uci", uci, "--tinc-dir", tinc, "--registry", base, "--no-start")
	if code != 0 {
		t.Fatalf("exit %d\n%s", code, errOut)
	}
	for _, want := range []string{"wrote hosts/node_31\n", "wrote tinc.conf\n", "tincd not touched (--no-start)\n"} {
		if !strings.Contains(out, want) {
			t.Errorf("stdout lacks %q:\n%s", want, out)
		}
	}
	out, errOut, code = run(t, "node-boot", "--uci", uci, "--tinc-dir", tinc, "--registry", base, "--no-start", "--json")
	if code != 0 {
		t.Fatalf("exit %d\n%s", code, errOut)
	}
	var sum struct {
		GatewaySource      string `json:"gateway_source"`
		Written, Unchanged []string
	}
	if err := json.Unmarshal([]byte(out), &sum); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	want := []string{"hosts/node_31", "hosts/server", "tinc-down", "tinc-up", "tinc.conf"}
	if d := cmp.Diff(want, sum.Unchanged); d != "" || len(sum.Written) != 0 || sum.GatewaySource != "registry" {
		t.Errorf("second run: %s\n%s", d, out)
	}
}

// --registry none asks no registry, not even the firmware's default.
func TestNodeBootRegistryNone(t *testing.T) {
	dir := t.TempDir()
	uci := filepath.Join(dir, "confine")
	os.WriteFile(uci, []byte(nodeBootUCI), 0o644)
	out, errOut, code := run(t, "node-boot", "--uci", uci, "--tinc-dir", filepath.Join(dir, "tinc"), "--gateways-dir", dir+"/none", "--no-start", "--registry", "none")
	if code != 1 || strings.Contains(out, "registry http") || !strings.Contains(errOut, "no registry configured, and the firmware shipped no gateway file") {
		t.Errorf("exit %d\n%s\n%s", code, out, errOut)
	}
}

func TestNodeBootErrors(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad")
	os.WriteFile(bad, []byte("config node node\n option id 'zz'\n"), 0o644)
	tests := []struct {
		name string
		args []string
		code int
		want string
	}{
		{"bad id", []string{"--uci", bad, "--no-start"}, 1, bad + `:1: node id "zz": want exactly 4 hex digits (e.g. 001f)`},
		{"missing file", []string{"--uci", dir + "/nope"}, 1, "read node config: open " + dir + "/nope: no such file or directory"},
		{"argument", []string{"extra"}, 2, `node-boot takes no arguments, got ["extra"]`},
		{"ca and insecure", []string{"--ca", "x", "--insecure"}, 2, "--ca and --insecure exclude each other"},
		{"bad registry", []string{"--registry", "ftp://x/"}, 2, `--registry "ftp://x/": want an absolute http:// or https:// URI`},
		{"unknown flag", []string{"--frobnicate"}, 2, "flag provided but not defined: -frobnicate"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, errOut, code := run(t, append([]string{"node-boot"}, tt.args...)...)
			if code != tt.code || !strings.Contains(errOut, tt.want) {
				t.Errorf("exit %d (want %d)\n%s\nwant %s", code, tt.code, errOut, tt.want)
			}
		})
	}
	out, _, code := run(t, "node-boot", "--help")
	if code != 0 || !strings.Contains(out, "mgmtnet node-boot [--uci FILE]") {
		t.Errorf("--help: exit %d\n%s", code, out)
	}
}

func TestNodeBootTincdWiring(t *testing.T) {
	tests := []struct {
		dir, pid string
		want     []string
	}{
		// The firmware's command line: its watchdog greps for it.
		{"/etc/tinc/confine", "", []string{"--logfile", "-n", "confine"}},
		{"/etc/tinc/confine/", "/tmp/x.pid", []string{"-n", "confine", "--pidfile=/tmp/x.pid"}},
		{"/tmp/t", "", []string{"-c", "/tmp/t", "--pidfile=/tmp/t/tinc.pid", "--logfile=/tmp/t/tinc.log"}},
	}
	for _, tt := range tests {
		got := newTincd(nodeBootFlags{tincDir: tt.dir, pidFile: tt.pid, tincd: tinc.DefaultTincd}).Args()
		if d := cmp.Diff(tt.want, got); d != "" {
			t.Errorf("%s: args (-want +got):\n%s", tt.dir, d)
		}
	}
}
