package cli

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/confine-project/mgmtnet/join"
	"github.com/confine-project/mgmtnet/mesh/registry"
)

const joinSynopsis = `  mgmtnet join BASE_URI KEY [--tinc-dir DIR] [--ca FILE] [--insecure] [--timeout D]

Puts this host (a researcher's machine) on the management network with a
one-time invite ("mgmtnet registry invite --host ID" on the registry), as
"tinc join" does: makes the host's tinc key (or keeps rsa_key.priv), registers
it with the invite, reads the registry, and writes the tinc directory: the
host's own host file, its gateways' host files, tinc.conf and tinc-up/down.
Then start tincd: tincd -n confine (or tincd -c DIR). The invite names the
host; a spent, expired or unknown one is refused with the reason, and
nothing is written but the key.

Exit status: 0 joined, 1 error, 2 usage error.

Examples:
  mgmtnet join https://[fdf5:5351:1dfd::2]/api/ 5c1f0e...  --ca registry-server.crt
  mgmtnet join http://10.241.1.1:8080/api/ "$(cat invite)" --tinc-dir /etc/tinc/confine
`

func runJoin(ctx context.Context, env Env, args []string) error {
	fs := newFlagSet("join", joinSynopsis, env.Stderr)
	dir := fs.String("tinc-dir", "/etc/tinc/confine", "the tinc `directory` to write")
	ca := fs.String("ca", "", "PEM `FILE` to verify the registry's TLS certificate against")
	insecure := fs.Bool("insecure", false, "do not verify the registry's TLS certificate")
	timeout := fs.Duration("timeout", time.Minute, "the whole registry fetch")
	pos, err := parseInterspersed(fs, args, env.Stdout)
	if err != nil {
		return err
	}
	if len(pos) != 2 {
		return usagef("join: want BASE_URI and KEY")
	}
	res, err := join.Run(ctx, join.Options{Registry: pos[0], Token: strings.TrimSpace(pos[1]), TincDir: *dir, Logger: env.Logger,
		Client: registry.Options{CAFile: *ca, Insecure: *insecure, FetchTimeout: *timeout}})
	if res.KeyGenerated {
		fmt.Fprintf(env.Stdout, "generated a new RSA key in %s/rsa_key.priv\n", *dir)
	}
	if err != nil {
		return err
	}
	fmt.Fprintf(env.Stdout, "registered %s (host %d, %s) with the invite (it is spent)\n", res.TincName, res.ID, res.Addr)
	for _, w := range res.Written {
		fmt.Fprintf(env.Stdout, "wrote %s\n", w)
	}
	fmt.Fprintf(env.Stdout, "gateways: %s; start tinc with: tincd -c %s\n", strings.Join(res.Gateways, ", "), *dir)
	return nil
}
