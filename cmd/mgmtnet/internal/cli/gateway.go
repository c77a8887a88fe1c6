package cli

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/confine-project/mgmtnet/gateway"
	"github.com/confine-project/mgmtnet/tincgen"
)

const gatewaySynopsis = `  mgmtnet gateway --config FILE [--once [--force]] [--check] [--cleanup]

The gateway daemon: keeps the tinc directory in sync with the registry
(polling with ETags, repairing host files changed by hand at once), reloads
tincd with one SIGHUP per change (or, with tinc.tunnel_server: false,
restarts it when this gateway's own Subnets change), and serves its status
on a unix socket ("mgmtnet status") and, if configured, Prometheus
metrics. SIGHUP or a change of the config file reloads the config; SIGTERM
stops it (and a managed tincd).

  --check    validate the config, fetch once and print the diff of what
             would change; exit 0 when nothing would, 1 otherwise
  --once     reconcile once (SIGHUP tincd if something changed) and exit;
             with --force, also when it removes more host files than the
             mass-deletion guard allows (a deliberate bulk removal)
  --cleanup  remove what the daemon owns (state_dir/snapshot.json, the
             status socket, the egress table and route, the configured
             dns.service_address on lo) and stop a managed tincd. Host
             files are NOT deleted.

Exit status: 0 success, 1 error, 2 usage error.
`

func runGateway(ctx context.Context, env Env, args []string) error {
	dnsProcs() // for its DNS server
	fs := newFlagSet("gateway", gatewaySynopsis, env.Stderr)
	var path string
	var once, check, cleanup, force bool
	fs.StringVar(&path, "config", "/etc/mgmtnet/gateway.yaml", "config `file` (YAML)")
	fs.BoolVar(&once, "once", false, "reconcile once and exit")
	fs.BoolVar(&check, "check", false, "print what would change and exit")
	fs.BoolVar(&cleanup, "cleanup", false, "remove the snapshot, status socket, egress table and route and DNS service address, stop a managed tincd; keeps host files")
	fs.BoolVar(&force, "force", false, "with --once: allow removing more than guard.max_remove_fraction of the host files")
	pos, err := parseInterspersed(fs, args, env.Stdout)
	if err != nil {
		return err
	}
	if len(pos) != 0 {
		return usagef("unexpected arguments %q", pos)
	}
	n := 0
	for _, b := range []bool{once, check, cleanup} {
		if b {
			n++
		}
	}
	if n > 1 {
		return usagef("--once, --check and --cleanup exclude each other")
	}
	if force && !once {
		return usagef("--force goes with --once: the daemon never forces a mass deletion")
	}
	cfg, err := gateway.LoadConfig(path)
	if err != nil {
		return err
	}
	if cleanup {
		return gateway.Cleanup(ctx, cfg, env.Logger)
	}
	opts := gateway.Options{ConfigPath: path, Logger: env.Logger, Force: force}
	if once || check {
		opts.Notify = func(string) {}
	} else {
		hup := make(chan os.Signal, 1)
		signal.Notify(hup, syscall.SIGHUP)
		defer signal.Stop(hup)
		opts.Reload = hup
	}
	d, err := gateway.New(cfg, opts)
	if err != nil {
		return err
	}
	switch {
	case check:
		changed, err := d.Check(ctx, env.Stdout)
		if errors.Is(err, tincgen.ErrMassDeletion) {
			fmt.Fprintf(env.Stderr, "mgmtnet gateway: %v: the daemon would refuse this snapshot\n", err)
			return silentError{ExitError}
		}
		if err != nil {
			return err
		}
		if changed {
			return silentError{ExitError}
		}
		return nil
	case once:
		return d.Once(ctx)
	}
	return d.Run(ctx)
}
