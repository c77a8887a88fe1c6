package e2e

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/confine-project/mgmtnet/test/vtb"
	"github.com/confine-project/mgmtnet/tincgen"
)

// firmwareWatchdog is the node firmware's cron line, verbatim
// (confine-dist, etc/crontabs/root, every 5 minutes): when BusyBox ps
// shows no " tincd --logfile -n confine" at the end of a line it starts
// one. The test runs it with a tincd on PATH that only says it was
// started (watchdogPath), so the line prints nothing exactly when it
// found the running tincd.
const firmwareWatchdog = `(ps|grep " tincd --logfile -n confine$" &> /dev/null) || tincd --logfile -n confine`

// The line is run from a file. Run as "sh -c <line>", as crond runs it,
// the shell's own command line ends in " tincd --logfile -n confine" and
// BusyBox ps shows it, so the grep matches the watchdog itself and it never
// starts a tincd (found by this test, with Debian's BusyBox; the node's
// crond and ps were not tried). From a file it checks what it means to.

// watchdogTincd stands for the tincd the watchdog would start.
const watchdogTincd = "#!/bin/sh\necho \"the watchdog starts another tincd: tincd $*\"\n"

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
	spki := spkiOf(t, pub)
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
			mode := os.FileMode(0o644)
			if n == "rsa_key.priv" {
				mode = 0o600
			}
			if err := os.WriteFile(p, b, mode); err != nil {
				t.Fatal(err)
			}
		}
		if err := os.WriteFile(filepath.Join(filepath.Dir(etc), "node_31.image"), files["hosts/node_31"], 0o644); err != nil {
			t.Fatal(err)
		}
		uci := filepath.Join(dir, "confine")
		bin := filepath.Join(dir, "bin")         // the firmware's commands: BusyBox's ps, grep and sh, and tincd
		wd := filepath.Join(dir, "watchdog-bin") // the watchdog's tincd
		must := func(err error) {
			t.Helper()
			if err != nil {
				t.Fatal(err)
			}
		}
		must(os.WriteFile(uci, []byte("config node node\n\toption id '001f'\n\toption tinc_gateway 'server'\n\toption state 'prepared'\n"+
			"config testbed testbed\n\toption mgmt_ipv6_prefix48 'fdf5:5351:1dfd'\n"), 0o644))
		must(os.MkdirAll(bin, 0o755))
		for _, applet := range []string{"ps", "grep", "sh"} {
			must(os.Symlink(busybox, filepath.Join(bin, applet)))
		}
		must(os.Symlink(tincd, filepath.Join(bin, "tincd")))
		must(os.MkdirAll(wd, 0o755))
		must(os.WriteFile(filepath.Join(wd, "tincd"), []byte(watchdogTincd), 0o755))
		must(os.WriteFile(filepath.Join(dir, "watchdog.sh"), []byte(firmwareWatchdog+"\n"), 0o644))
		ns, err := lab.AddNetns(name)
		if err != nil {
			t.Fatal(err)
		}
		// A mount namespace of its own: /etc/tinc, /run and /var/log are
		// this test's, and vanish with it.
		full := "set -e\nmount --make-rprivate /\nmount -t tmpfs tmpfs /run\nmount -t tmpfs tmpfs /var/log\n" +
			"mount --bind " + filepath.Dir(etc) + " /etc/tinc\nexport PATH=" + bin + ":$PATH\n" +
			"export UCI=" + uci + " MGMTNET=" + mgmtnetBin + " WATCHDOG_PATH=" + wd + ":" + bin + ":$PATH WATCHDOG=" + filepath.Join(dir, "watchdog.sh") + "\n" + script
		// And a pid namespace: BusyBox ps sees only this node's
		// processes, and its tincd ends with the script.
		out, err := ns.Run(context.Background(), "unshare", "--mount", "--pid", "--fork", "--mount-proc", "sh", "-c", full)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		return out
	}

	// The control: the watchdog does not see a tincd started any other
	// way, and would start a second one.
	ctl := run("fw-control", `printf 'Name = node_31\nConnectTo = server\n' > /etc/tinc/confine/tinc.conf
tincd -n confine
echo "watchdog<<"
PATH=$WATCHDOG_PATH busybox sh "$WATCHDOG" 2>&1 || true
echo ">>watchdog"
`)
	if w := between(ctl, "watchdog<<\n", ">>watchdog"); w != "the watchdog starts another tincd: tincd --logfile -n confine" {
		t.Errorf("control: the watchdog saw a tincd started as \"tincd -n confine\", so this test proves nothing:\n%s", ctl)
	}

	out := run("fw", `$MGMTNET node-boot --uci "$UCI"
echo "pid=$(cat /var/run/tinc.confine.pid)"
echo "cmdline=$(tr '\0' ' ' < /proc/$(cat /var/run/tinc.confine.pid)/cmdline)"
echo "watchdog<<"
PATH=$WATCHDOG_PATH busybox sh "$WATCHDOG" 2>&1 || true
echo ">>watchdog"
echo "ps<<"
ps | grep " tincd --logfile -n confine$" || true
echo ">>ps"
cmp /etc/tinc/confine/hosts/node_31 /etc/tinc/node_31.image && echo "own host file kept"
`)
	t.Logf("node-boot on the firmware's paths:\n%s", out)
	pid := regexp.MustCompile(`(?m)^pid=(\d+)$`).FindStringSubmatch(out)
	if pid == nil {
		t.Fatalf("no tincd pid in:\n%s", out)
	}
	// No registry.base_uri: the firmware's default, the server over the
	// overlay, which is not up.
	if !strings.Contains(out, "asking the firmware's default, http://[fdf5:5351:1dfd::2]/api/\n") || !strings.Contains(out, "unreachable") {
		t.Errorf("node-boot did not ask the firmware's default registry:\n%s", out)
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

	// What the watchdog's grep matched is node-boot's tincd.
	if m := between(out, "ps<<\n", ">>ps"); !strings.HasPrefix(strings.TrimSpace(m), pid[1]+" ") {
		t.Errorf("the watchdog's grep matched %q, not pid %s", m, pid[1])
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

// spkiOf returns the X.509 SPKI PEM ("BEGIN PUBLIC KEY") of a PKCS#1 PEM
// public key: the form the controller generates and ships.
func spkiOf(t *testing.T, pkcs1 []byte) []byte {
	t.Helper()
	block, _ := pem.Decode(pkcs1)
	if block == nil {
		t.Fatal("not PEM")
	}
	k, err := x509.ParsePKCS1PublicKey(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKIXPublicKey(k)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
}

// TestTincReadsSPKIHostKeys: real tinc 1.0 authenticates peers whose host
// files carry their keys in SPKI form, as the controller writes them and
// as node-boot now keeps a node's own file. A gateway and a node, each
// holding the other's file with an SPKI key, connect and reach each other
// over the tunnel.
func TestTincReadsSPKIHostKeys(t *testing.T) {
	lab := vtb.ForTest(t)
	ctx := context.Background()
	gw, err := lab.AddNetns("spki-gw")
	if err != nil {
		t.Fatal(err)
	}
	node, err := lab.AddNetns("spki-node")
	if err != nil {
		t.Fatal(err)
	}
	for _, cmd := range [][]string{
		{"ip", "link", "add", "v0", "type", "veth", "peer", "name", "v1"},
		{"ip", "link", "set", "v1", "netns", node.Full},
		{"ip", "addr", "add", "192.0.2.1/24", "dev", "v0"},
		{"ip", "link", "set", "v0", "up"},
	} {
		if err := gw.MustRun(cmd...); err != nil {
			t.Fatal(err)
		}
	}
	for _, cmd := range [][]string{{"ip", "addr", "add", "192.0.2.2/24", "dev", "v1"}, {"ip", "link", "set", "v1", "up"}} {
		if err := node.MustRun(cmd...); err != nil {
			t.Fatal(err)
		}
	}
	type member struct {
		name, host, addr string
		priv, spki       []byte
	}
	var ms []*member
	for _, m := range []struct{ name, host, addr string }{
		{"server", "Address = 192.0.2.1 655\nSubnet = fdf5:5351:1dfd:0:0:0:0:2\n\n", "fdf5:5351:1dfd::2"},
		{"node_31", "Subnet = fdf5:5351:1dfd:1f:0:0:0:0/64\n\n", "fdf5:5351:1dfd:1f::2"},
	} {
		priv, pub, err := tincgen.GenerateKey(nil, 2048)
		if err != nil {
			t.Fatal(err)
		}
		ms = append(ms, &member{m.name, m.host, m.addr, priv, spkiOf(t, pub)})
	}
	var dirs []string
	for i, m := range ms {
		dir := filepath.Join(lab.Dir, "spki-"+m.name)
		conf := "Name = " + m.name + "\nInterface = mgmt\n"
		if i == 1 {
			conf += "ConnectTo = server\n"
		}
		files := map[string]string{
			"tinc.conf":    conf,
			"rsa_key.priv": string(m.priv),
			"tinc-up":      "#!/bin/sh\nip link set \"$INTERFACE\" up mtu 1400\nip -6 addr add " + m.addr + "/48 dev \"$INTERFACE\"\n",
		}
		for _, o := range ms {
			files["hosts/"+o.name] = o.host + string(o.spki)
		}
		for n, b := range files {
			p := filepath.Join(dir, n)
			if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(p, []byte(b), 0o700); err != nil {
				t.Fatal(err)
			}
		}
		dirs = append(dirs, dir)
	}
	g, err := lab.StartTincd(gw, "spki-gw", dirs[0])
	if err != nil {
		t.Fatal(err)
	}
	if _, err := lab.StartTincd(node, "spki-node", dirs[1]); err != nil {
		t.Fatal(err)
	}
	if err := vtb.WaitFor(ctx, 20*time.Second, 200*time.Millisecond, func() error { return node.Ping6(ctx, "fdf5:5351:1dfd::2") }); err != nil {
		t.Fatalf("the node does not reach the gateway over tinc with SPKI host keys: %v\ngateway log:\n%s", err, g.TincLog())
	}
	if activated, _ := vtb.ConnectionEvents(g.TincLog()); activated["node_31"] == 0 {
		t.Errorf("the gateway's log shows no connection with node_31:\n%s", g.TincLog())
	}
}
