package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"path/filepath"
	"time"

	"github.com/confine-project/mgmtnet/nodeboot"
	"github.com/confine-project/mgmtnet/tinc"
)

const nodeBootSynopsis = `  mgmtnet node-boot [--uci FILE] [--tinc-dir DIR] [--registry URI] [--gateways-dir DIR]
                    [--ca FILE] [--insecure] [--timeout D] [--no-start] [--dry-run]
                    [--pidfile FILE] [--tincd PATH] [--enrol TOKEN] [--json]

The node's boot hook (run once at boot by the OpenWrt init script). From the
firmware's UCI file (node.id, node.tinc_gateway, registry.base_uri,
testbed.mgmt_ipv6_prefix48) it:
  1. generates an RSA key in rsa_key.priv if there is none (never replaces one);
  2. asks the registry for the gateways; when it does not answer (usual at
     first boot, before tinc is up) it uses the firmware's gateway files:
     hosts/<tinc_gateway> as it is, every other file in hosts/ with an
     Address (an old image's gateways, an earlier boot's), and the files in
     --gateways-dir;
  3. writes hosts/node_<id> (its /64 and public key; an existing one that
     means the same, in the image's or the firmware's form, is kept),
     tinc.conf (Name and one ConnectTo per gateway), tinc-up, tinc-down and
     the gateways' host files, each only if its bytes differ, atomically; it
     never deletes anything;
  4. starts tincd if it is not running; else restarts it when its own host
     file, name, Interface or TunnelServer changed, sends one SIGHUP when
     anything else changed, and leaves it alone when nothing changed.
Running it again with nothing new writes nothing and signals nothing.

The registry is --registry, else the UCI file's registry.base_uri, else the
firmware's default, http://[<prefix48>::2]/api/ (the server, over the
overlay); --registry none asks none.

tincd runs as "tincd --logfile -n confine" for the default --tinc-dir, the
firmware's own command line (its watchdog looks for it), else
as "tincd -c DIR --pidfile=FILE --logfile=DIR/tinc.log".

Exit status: 0 success, 1 error (bad UCI file, no gateway, tincd failed),
2 usage error.

Examples:
  mgmtnet node-boot
  mgmtnet node-boot --dry-run
  mgmtnet node-boot --uci ./confine --tinc-dir /tmp/tinc --registry http://127.0.0.1:8080/api/ --no-start
`

type nodeBootFlags struct {
	uci, tincDir, registry, gatewaysDir, ca, pidFile, tincd, enrol string
	insecure, noStart, dryRun, json                                bool
	timeout                                                        time.Duration
}

func runNodeBoot(ctx context.Context, env Env, args []string) error {
	fs := newFlagSet("node-boot", nodeBootSynopsis, env.Stderr)
	var f nodeBootFlags
	fs.StringVar(&f.uci, "uci", nodeboot.DefaultUCIFile, "the firmware's UCI `file`")
	fs.StringVar(&f.tincDir, "tinc-dir", nodeboot.DefaultTincDir, "tinc `directory` of the net")
	fs.StringVar(&f.registry, "registry", "", "registry base `URI`; none: ask no registry (default: the UCI file's registry.base_uri, else the firmware's http://[<prefix48>::2]/api/)")
	fs.StringVar(&f.gatewaysDir, "gateways-dir", nodeboot.DefaultGatewaysDir, "`directory` of the firmware's extra gateway host files")
	fs.StringVar(&f.ca, "ca", "", "PEM `file` to verify the registry's TLS against (default: the UCI file's registry.cert)")
	fs.BoolVar(&f.insecure, "insecure", false, "do not verify the registry's TLS certificate")
	fs.DurationVar(&f.timeout, "timeout", nodeboot.DefaultTimeout, "deadline of the whole registry fetch, 2 retries and body reads included (each attempt waits at most 10s for progress)")
	fs.BoolVar(&f.noStart, "no-start", false, "never start or signal tincd")
	fs.BoolVar(&f.dryRun, "dry-run", false, "print what would change (with a diff) and change nothing")
	fs.StringVar(&f.pidFile, "pidfile", "", "tincd pid `file` (default /var/run/tinc.confine.pid for the default --tinc-dir, else DIR/tinc.pid)")
	fs.StringVar(&f.tincd, "tincd", tinc.DefaultTincd, "tincd `executable`")
	fs.BoolVar(&f.json, "json", false, "print a summary as one JSON object instead of one line per action")
	fs.StringVar(&f.enrol, "enrol", "", "register the node's public key with this one-time invite `TOKEN` (mgmtnet registry invite; default: the UCI file's mgmtnet.enrol_token)")
	pos, err := parseInterspersed(fs, args, env.Stdout)
	if err != nil {
		return err
	}
	if len(pos) != 0 {
		return usagef("node-boot takes no arguments, got %q", pos)
	}
	if f.ca != "" && f.insecure {
		return usagef("--ca and --insecure exclude each other")
	}
	if f.registry != "" && f.registry != "none" {
		if err := nodeboot.CheckRegistryURI(f.registry); err != nil {
			return usagef("--registry %q: %w", f.registry, err)
		}
	}
	if f.timeout <= 0 {
		return usagef("--timeout must be positive")
	}
	cfg, err := nodeboot.LoadConfig(f.uci)
	if err != nil {
		return err
	}
	opts := nodeboot.Options{
		TincDir: f.tincDir, GatewaysDir: f.gatewaysDir, Registry: f.registry, CAFile: f.ca, Insecure: f.insecure,
		Timeout: f.timeout, DryRun: f.dryRun, Logger: env.Logger,
	}
	opts.EnrolToken = f.enrol
	if opts.EnrolToken == "" {
		opts.EnrolToken = cfg.EnrolToken
	}
	switch {
	case opts.Registry == "none":
		opts.Registry = ""
	case opts.Registry == "" && cfg.RegistryURI != "":
		opts.Registry = cfg.RegistryURI
	case opts.Registry == "":
		// As the firmware does.
		opts.Registry, opts.RegistryIsDefault = cfg.FirmwareRegistryURI(), true
	}
	// The firmware pins the registry's certificate; it applies to the
	// https URI unless the user chose otherwise.
	if f.ca == "" && !f.insecure && cfg.RegistryCert != "" && len(opts.Registry) > 8 && opts.Registry[:8] == "https://" {
		opts.CAFile = cfg.RegistryCert
	}
	if !f.noStart {
		opts.Tincd = newTincd(f)
		if !f.dryRun {
			// The egress routes go with tincd: --no-start touches neither.
			eg, err := nodeboot.NewEgressApplier(opts.Logger)
			if err != nil {
				return fmt.Errorf("egress routing: %w", err)
			}
			opts.Egress = eg
		}
	}
	res, err := nodeboot.Run(ctx, cfg, opts)
	if res != nil {
		printNodeBoot(env.Stdout, f.json, res, err)
	}
	return err
}

// newTincd wires the real tincd for the flags.
func newTincd(f nodeBootFlags) *tinc.Daemonized {
	t := &tinc.Daemonized{Binary: f.tincd, PidFile: f.pidFile}
	if filepath.Clean(f.tincDir) == nodeboot.DefaultTincDir {
		// The firmware's own command line, so that its watchdog and its
		// stop find this tincd.
		t.Net, t.FirmwareCommand = "confine", true
		return t
	}
	t.ConfDir = f.tincDir
	t.LogFile = filepath.Join(f.tincDir, "tinc.log")
	if t.PidFile == "" {
		t.PidFile = filepath.Join(f.tincDir, "tinc.pid")
	}
	return t
}

func printNodeBoot(w io.Writer, asJSON bool, res *nodeboot.Result, runErr error) {
	if asJSON {
		out := struct {
			*nodeboot.Result
			Error string `json:"error,omitempty"`
		}{Result: res}
		if runErr != nil {
			out.Error = runErr.Error()
		}
		b, err := json.Marshal(out)
		if err != nil {
			fmt.Fprintf(w, "{\"error\":%q}\n", err.Error())
			return
		}
		fmt.Fprintf(w, "%s\n", b)
		return
	}
	for _, l := range res.Lines {
		fmt.Fprintln(w, l)
	}
	if res.Diff != "" {
		io.WriteString(w, res.Diff)
	}
}
