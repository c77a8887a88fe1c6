package e2e

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/confine-project/mgmtnet/test/vtb"
	"github.com/confine-project/mgmtnet/tincgen"
)

// firmwareWatchdog is the node firmware's cron line, verbatim
// (confine-dist, etc/crontabs/root, every 5 minutes): when BusyBox ps
// shows no " tincd --logfile -n confine" at the end of a line it starts
// one. A second tincd refuses to start beside a running one, saying so,
// so the line prints nothing exactly when it found the running tincd.
const firmwareWatchdog = `(ps|grep " tincd --logfile -n confine$" &> /dev/null) || tincd --logfile -n confine`

// TestFirmwareCoexistence boots a node from a controller-built image (its
// own host file shipped with the key in SPKI form, hosts/server, no
// registry reachable) with node-boot on the firmware's real paths
// (/etc/tinc/confine, /var/run/tinc.confine.pid, /var/log), inside a
// network and mount namespace of its own, then runs the firmware's tincd
// watchdog, as is, under BusyBox. node-boot's tincd is the one the
// firmware looks for: the watchdog finds it and starts no other. The
// image's own host file is kept byte for byte, so tincd is started, not
// restarted. The control, a tincd started as "tincd -n confine" (what
// node-boot did before), is invisible to the watchdog.
func TestFirmwareCoexistence(t *testing.T) {
	lab := vtb.ForTest(t)
	busybox, err := exec.LookPath("busybox")
	if err != nil {
		if os.Getenv(vtb.RequireEnv) != "" {
			t.Fatalf("busybox is missing (scripts/install-deps.sh installs it)")
		}
		t.Skip("busybox is missing (scripts/install-deps.sh installs it)")
	}
	tincd, err := exec.LookPath("tincd")
	if err != nil {
		t.Fatal(err)
	}
	priv, pub, err := tincgen.GenerateKey(nil, 2048)
	if err != nil {
		t.Fatal(err)
	}
	block, _ := pem.Decode(pub)
	rsaPub, err := x509.ParsePKCS1PublicKey(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKIXPublicKey(rsaPub)
	if err != nil {
		t.Fatal(err)
	}
	spki := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
	_, gwPub, err := tincgen.GenerateKey(nil, 2048)
	if err != nil {
		t.Fatal(err)
	}

	run := func(name, script string) string {
		t.Helper()
		dir := filepath.Join(lab.Dir, name)
		etc := filepath.Join(dir, "etc-tinc", "confine")
		// What the controller put in the image: its own host file
		// ("Subnet = ...", a blank line, the SPKI key), the private key,
		// the default gateway's file.
		files := map[string][]byte{
			"rsa_key.priv":  priv,
			"hosts/node_31": append([]byte("Subnet = fdf5:5351:1dfd:1f:0:0:0:0/64\n\n"), spki...),
			"hosts/server":  append([]byte("Address = 192.0.2.1 655\nSubnet = fdf5:5351:1dfd:0:0:0:0:2\n\n"), gwPub...),
		}
		for n, b := range files {
			p := filepath.Join(etc, n)
			if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(p, b, 0o600); err != nil {
				t.Fatal(err)
			}
		}
		if err := os.WriteFile(filepath.Join(filepath.Dir(etc), "node_31.image"), files["hosts/node_31"], 0o644); err != nil {
			t.Fatal(err)
		}
		uci := filepath.Join(dir, "confine")
		os.WriteFile(uci, []byte("config node node\n\toption id '001f'\n\toption tinc_gateway 'server'\n\toption state 'prepared'\n"+
			"config testbed testbed\n\toption mgmt_ipv6_prefix48 'fdf5:5351:1dfd'\n"), 0o644)
		// The firmware's commands: BusyBox's ps, grep and sh, and tincd.
		bin := filepath.Join(dir, "bin")
		os.MkdirAll(bin, 0o755)
		for _, applet := range []string{"ps", "grep", "sh"} {
			os.Symlink(busybox, filepath.Join(bin, applet))
		}
		os.Symlink(tincd, filepath.Join(bin, "tincd"))
		ns, err := lab.AddNetns(name)
		if err != nil {
			t.Fatal(err)
		}
		// A mount namespace of its own: /etc/tinc, /run and /var/log are
		// this test's, and vanish with it.
		full := "set -e\nmount --make-rprivate /\nmount -t tmpfs tmpfs /run\nmount -t tmpfs tmpfs /var/log\n" +
			"mount --bind " + filepath.Dir(etc) + " /etc/tinc\nexport PATH=" + bin + ":$PATH\n" +
			"export UCI=" + uci + " MGMTNET=" + mgmtnetBin + "\n" + script
		out, err := ns.Run(context.Background(), "unshare", "--mount", "sh", "-c", full)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		return out
	}

	out := run("fw", `$MGMTNET node-boot --uci "$UCI"
echo "pid=$(cat /var/run/tinc.confine.pid)"
echo "cmdline=$(tr '\0' ' ' < /proc/$(cat /var/run/tinc.confine.pid)/cmdline)"
echo "watchdog<<"
busybox sh -c '`+firmwareWatchdog+`' 2>&1 || true
echo ">>watchdog"
cmp /etc/tinc/confine/hosts/node_31 /etc/tinc/node_31.image && echo "own host file kept"
`)
	t.Logf("node-boot on the firmware's paths:\n%s", out)
	pid := regexp.MustCompile(`(?m)^pid=(\d+)$`).FindStringSubmatch(out)
	if pid == nil {
		t.Fatalf("no tincd pid in:\n%s", out)
	}
	if !strings.Contains(out, "started tincd (pid "+pid[1]+")") {
		t.Errorf("node-boot did not start tincd itself:\n%s", out)
	}
	if !strings.Contains(out, "cmdline=tincd --logfile -n confine \n") {
		t.Errorf("tincd's command line is not the firmware's:\n%s", out)
	}
	if w := between(out, "watchdog<<\n", ">>watchdog"); w != "" {
		t.Errorf("the firmware's watchdog did not see node-boot's tincd: it tried to start another:\n%s", w)
	}
	if !strings.Contains(out, "own host file kept") || strings.Contains(out, "wrote hosts/node_31") || strings.Contains(out, "restarted") {
		t.Errorf("node-boot rewrote the image's own host file (same key, SPKI form) or restarted tincd:\n%s", out)
	}
	if n, _ := strconv.Atoi(pid[1]); n > 0 {
		if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", n)); err != nil || !strings.HasPrefix(string(b), "tincd\x00") {
			t.Errorf("/proc/%d/cmdline: %q, %v", n, b, err)
		}
	}

	// The control: the same watchdog does not see a tincd started any
	// other way, and would start a second one.
	ctl := run("fw-control", `tincd -n confine
echo "watchdog<<"
busybox sh -c '`+firmwareWatchdog+`' 2>&1 || true
echo ">>watchdog"
`)
	if w := between(ctl, "watchdog<<\n", ">>watchdog"); !strings.Contains(w, "already running") {
		t.Errorf("control: the watchdog saw a tincd started as \"tincd -n confine\", so this test proves nothing:\n%s", ctl)
	}
}

// between returns what s holds between the markers, trimmed.
func between(s, from, to string) string {
	i := strings.Index(s, from)
	j := strings.Index(s, to)
	if i < 0 || j < i {
		return "(markers missing)"
	}
	return strings.TrimSpace(s[i+len(from) : j])
}
