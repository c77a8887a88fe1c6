package nodeboot

import (
	"fmt"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/confine-project/mgmtnet/tincgen"
)

// generation is one generation of CONFINE node firmware images
// (/work/research/firmware.md §0), as testdata/generations/<dir> holds it:
//   - confine: the UCI file /etc/config/confine;
//   - image/: the tinc directory the image ships (its rsa_key.priv is
//     testdata/node.priv);
//   - tinc-gateways/: /etc/confine/tinc-gateways, when the image has one;
//   - firmware/: the files the firmware's shell (confine_tinc_setup) writes
//     into the tinc directory at first boot, made by hand from its source;
//   - deviations.golden: how node-boot's result differs from the firmware's,
//     file by file, with the reasons listed here.
type generation struct {
	dir, title string
	// afterFirmware: node-boot runs on a node the firmware has booted
	// (image/ plus firmware/), not on a fresh image.
	afterFirmware bool
	// keyLink: rsa_key.priv is a symlink to the SSH host key (G0).
	keyLink bool
	// gateways is the ConnectTo order node-boot writes.
	gateways []string
	// why gives, for each file whose bytes or mode node-boot leaves other
	// than the firmware does, the reason. A difference not listed here
	// fails the test.
	why map[string]string
}

// The reasons for the deliberate differences (README, compatibility).
const (
	whyConf = "tinc.conf: node-boot adds TunnelServer = yes (the tunnel-server topology, docs/topology.md) and " +
		"MaxTimeout (10..20 s by name, so nodes do not come back in waves after a gateway restart), and orders " +
		"ConnectTo with tinc_gateway (default server) first, then by name (the firmware: ls order)"
	whyUp = "tinc-up: node-boot runs \"ip link\" (a family means nothing to ip link: the firmware's \"ip -6 link\" " +
		"does the same), writes the address in canonical form (fdf5:5351:1dfd:1f::2; the firmware copies the UCI " +
		"id: fdf5:5351:1dfd:001f:0:0:0:2, the same address) and mode 0755 (the firmware: chmod u+rx on a file " +
		"made under umask 022, 0744)"
	whyDown = "tinc-down: as tinc-up"
	whyPub  = "rsa_key.pub: only the firmware writes it, as the input of its fallback host file; nothing reads it " +
		"afterwards (node-boot derives the public key from rsa_key.priv)"
)

var generations = []generation{
	{
		dir:           "g0",
		title:         "G0: 2012 firmware (confine-dist 5816b60 .. 5f93c17), tinc name node_x001f, booted once by the firmware",
		keyLink:       true,
		gateways:      []string{"server"},
		afterFirmware: true,
		why: map[string]string{
			"tinc.conf": "tinc.conf: G0 is not supported as such: node-boot renames the node to node_31 (the decimal " +
				"name of G1 and later, and of the registry), so a gateway must know node_31; and " + whyConf,
			"hosts/node_31": "hosts/node_31: the node's host file under its decimal name; hosts/node_x001f is left " +
				"alone (node-boot never deletes)",
			"tinc-up":   whyUp,
			"tinc-down": whyDown,
		},
	},
	{
		dir:      "g1",
		title:    "G1: controller image before v0.11.2 (Oct 2014): no tinc_gateway, no registry section, every gateway in hosts/",
		gateways: []string{"server", "gateway_4", "gateway_7"},
		why: map[string]string{
			"tinc.conf": whyConf + "; and gives no ConnectTo to hosts/gateway_9, which has no Address (tincd " +
				"cannot connect to it)",
			"tinc-up":     whyUp,
			"tinc-down":   whyDown,
			"rsa_key.pub": whyPub,
		},
	},
	{
		dir:      "g2",
		title:    "G2: controller image since v0.11.3 (Nov 2014): tinc_gateway server_5, only it in hosts/, every gateway in /etc/confine/tinc-gateways",
		gateways: []string{"server_5", "server", "server_3"},
		why: map[string]string{
			"tinc.conf": whyConf + "; and connects to every gateway of /etc/confine/tinc-gateways too (the " +
				"firmware never reads that directory, so it has one gateway only)",
			"hosts/server":   "hosts/server: copied from /etc/confine/tinc-gateways (the firmware never reads it)",
			"hosts/server_3": "hosts/server_3: copied from /etc/confine/tinc-gateways (the firmware never reads it)",
			"tinc-up":        whyUp,
			"tinc-down":      whyDown,
			"rsa_key.pub":    whyPub,
		},
	},
	{
		dir: "shell",
		title: "shell fallback: a G2 image without hosts/node_31, booted once by the firmware, whose shell wrote " +
			"the node's host file (Subnet with the UCI id, PKCS#1 key on the next line); then node-boot",
		afterFirmware: true,
		gateways:      []string{"server"},
		why: map[string]string{
			"tinc.conf": whyConf,
			"tinc-up":   whyUp,
			"tinc-down": whyDown,
		},
	},
}

// firmwareMode is the mode the firmware's shell leaves a file with, under
// OpenWrt's umask 022: tinc-up and tinc-down get chmod u+rx, G0's copy of
// the server key chmod 600.
func firmwareMode(name string) fs.FileMode {
	switch name {
	case TincUpFile, TincDownFile:
		return 0o744
	case "server_rsa_key.priv":
		return 0o600
	}
	return 0o644
}

type fileState struct {
	data []byte
	mode fs.FileMode
}

// readTree returns the regular files under dir by slash path; a missing
// dir is empty.
func readTree(t *testing.T, dir string) map[string]fileState {
	t.Helper()
	out := map[string]fileState{}
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.Type().IsRegular() {
			return nil
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		st, err := os.Stat(path)
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, path)
		out[filepath.ToSlash(rel)] = fileState{b, st.Mode().Perm()}
		return nil
	})
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	return out
}

// writeTree writes files under dir, each with the mode mode gives.
func writeTree(t *testing.T, dir string, files map[string]fileState) {
	t.Helper()
	for name, f := range files {
		path := filepath.Join(dir, filepath.FromSlash(name))
		must(t, os.MkdirAll(filepath.Dir(path), 0o755))
		must(t, os.WriteFile(path, f.data, f.mode))
		must(t, os.Chmod(path, f.mode))
	}
}

// TestGenerations boots each firmware generation's tinc directory with
// node-boot, the registry unreachable (or, for images without a registry
// section, none), and compares every resulting file with what the
// firmware itself has there after its first boot: the differences must be
// exactly the documented ones (generation.why, deviations.golden).
func TestGenerations(t *testing.T) {
	for _, g := range generations {
		t.Run(g.dir, func(t *testing.T) {
			src := filepath.Join("testdata", "generations", g.dir)
			root := t.TempDir()
			tincDir, gwDir := filepath.Join(root, "tinc"), filepath.Join(root, "tinc-gateways")

			// What the firmware has after its first boot: the image, and
			// over it what its shell wrote.
			image := readTree(t, filepath.Join(src, "image"))
			for name, f := range image {
				image[name] = fileState{f.data, 0o644}
			}
			firmware := maps.Clone(image)
			for name, f := range readTree(t, filepath.Join(src, "firmware")) {
				firmware[name] = fileState{f.data, firmwareMode(name)}
			}
			if g.afterFirmware {
				writeTree(t, tincDir, firmware)
			} else {
				writeTree(t, tincDir, image)
			}
			gateways := readTree(t, filepath.Join(src, "tinc-gateways"))
			writeTree(t, gwDir, gateways)
			priv := readTestdata(t, "node.priv")
			keyPath := filepath.Join(tincDir, KeyFile)
			if g.keyLink {
				// G0: ln -s /etc/dropbear/openssh_rsa_host_key rsa_key.priv
				host := filepath.Join(root, "dropbear", "openssh_rsa_host_key")
				writeTree(t, filepath.Dir(host), map[string]fileState{filepath.Base(host): {priv, 0o600}})
				must(t, os.Symlink(host, keyPath))
			} else {
				must(t, os.WriteFile(keyPath, priv, 0o600))
			}

			cfg, err := LoadConfig(filepath.Join(src, "confine"))
			if err != nil {
				t.Fatal(err)
			}
			tincd := newFakeTincd(t)
			// The registry of the UCI file, if any; else none (the CLI
			// would ask the firmware's default, unreachable at first
			// boot anyway; --registry none is this).
			opts := Options{TincDir: tincDir, GatewaysDir: gwDir, Registry: cfg.RegistryURI,
				Timeout: 2 * time.Second, Retries: -1, Tincd: tincd}
			res, err := Run(t.Context(), cfg, opts)
			if err != nil {
				t.Fatal(err)
			}
			if res.Source != SourceFirmware || res.KeyGenerated {
				t.Errorf("source %s, key generated %v; want the firmware's files and key", res.Source, res.KeyGenerated)
			}
			if d := cmp.Diff(g.gateways, res.Gateways); d != "" {
				t.Errorf("ConnectTo (-want +got):\n%s", d)
			}
			if d := cmp.Diff([]string{"Start"}, tincd.take()); d != "" {
				t.Errorf("tincd calls (-want +got):\n%s", d)
			}

			got := readTree(t, tincDir)
			delete(got, KeyFile)
			if b, err := os.ReadFile(keyPath); err != nil || string(b) != string(priv) {
				t.Errorf("rsa_key.priv changed (%v)", err)
			}
			if st, err := os.Lstat(keyPath); err != nil || (st.Mode()&fs.ModeSymlink != 0) != g.keyLink {
				t.Errorf("rsa_key.priv: %v, mode %v; symlink wanted %v", err, st.Mode(), g.keyLink)
			}
			if d := cmp.Diff(gateways, readTree(t, gwDir), cmp.AllowUnexported(fileState{})); d != "" {
				t.Errorf("tinc-gateways changed (-before +after):\n%s", d)
			}

			registry := "no registry configured"
			if cfg.RegistryURI != "" {
				registry = "the registry unreachable"
			}
			var b strings.Builder
			fmt.Fprintf(&b, "# %s\n# firmware: its files after its first boot; node-boot: Run with %s\n", g.title, registry)
			var differ []string
			names := slices.Sorted(maps.Keys(firmware))
			for n := range got {
				if _, ok := firmware[n]; !ok {
					names = append(names, n)
				}
			}
			slices.Sort(names)
			for _, n := range names {
				fw, inFW := firmware[n]
				nb, inNB := got[n]
				if inFW && inNB && string(fw.data) == string(nb.data) && fw.mode == nb.mode {
					continue
				}
				differ = append(differ, n)
				switch {
				case !inNB:
					fmt.Fprintf(&b, "\n== %s: only the firmware has it\n", n)
				case !inFW:
					fmt.Fprintf(&b, "\n== %s: only node-boot has it (mode %#o)\n", n, nb.mode)
				case fw.mode != nb.mode:
					fmt.Fprintf(&b, "\n== %s: mode %#o (firmware) -> %#o (node-boot)\n", n, fw.mode, nb.mode)
				default:
					fmt.Fprintf(&b, "\n== %s\n", n)
				}
				fmt.Fprintf(&b, "why: %s\n", g.why[n])
				if inNB {
					from := "firmware/" + n
					if !inFW {
						from = "/dev/null"
					}
					b.WriteString(tincgen.UnifiedDiff(from, "node-boot/"+n, fw.data, nb.data))
				}
			}
			b.WriteString("\n== node-boot's report\n")
			for _, l := range res.Lines {
				fmt.Fprintln(&b, strings.ReplaceAll(l, root, "$ROOT"))
			}
			if d := cmp.Diff(slices.Sorted(maps.Keys(g.why)), differ); d != "" {
				t.Errorf("files in which node-boot differs from the firmware (-documented +found):\n%s", d)
			}
			golden(t, filepath.Join("generations", g.dir, "deviations.golden"), b.String())
		})
	}
}
