package cli

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"

	"github.com/confine-project/mgmtnet/mesh/registry"
	"github.com/confine-project/mgmtnet/tincgen"
)

const registrySynopsis = `  mgmtnet registry serve (--testbed FILE | --synthetic SPEC) [--listen ADDR]
                         [--tls-cert FILE --tls-key FILE] [--per-page N]
  mgmtnet registry synth SPEC [--out FILE]

serve answers the CONFINE registry REST API as the 2015 controller v1.0
does (or v0.11.2 to v0.11.9, for a testbed file with "dialect": "v0"):
gzip, its ETags and 304s, Link headers and pagination; read-only, at
http://ADDR/api/, from a testbed file or a synthetic testbed. It stops on
SIGINT or SIGTERM. A testbed file is re-read when it changes: its mtime and
size are checked at most once a second, on requests, and on SIGHUP. A file
that no longer loads keeps the last good testbed served, and the log says why.

synth writes a synthetic testbed file (stdout by default) to edit or serve.

SPEC is nodes=N,hosts=N,servers=N with optional keys=N (distinct RSA keys,
assigned round-robin; default min(members, 16)), keybits=N (default 2048),
and prefix=P/48 (default fd65:fc41:c50f::/48). Nodes get ids 1..N,
servers 2..S+1 (id 2 is tinc name "server"), hosts 1..H.

Examples:
  mgmtnet registry serve --testbed mesh/registry/testdata/testbed.json
  mgmtnet registry serve --synthetic nodes=65520,hosts=1000,servers=10 --listen [::1]:8080
  mgmtnet registry serve --testbed testbed.json --tls-cert reg.crt --tls-key reg.key --listen :443
  mgmtnet registry synth nodes=100,servers=2,hosts=3,keys=4 --out testbed.json
`

func runRegistry(ctx context.Context, env Env, args []string) error {
	fs := newFlagSet("registry", registrySynopsis, env.Stderr)
	testbed := fs.String("testbed", "", "serve: testbed `FILE` (JSON)")
	synthetic := fs.String("synthetic", "", "serve: a synthetic testbed of this `SPEC`")
	listen := fs.String("listen", "127.0.0.1:8080", "serve: `ADDR` to listen on (host:port)")
	tlsCert := fs.String("tls-cert", "", "serve: TLS certificate `FILE` (PEM); serve HTTPS")
	tlsKey := fs.String("tls-key", "", "serve: TLS private key `FILE` (PEM)")
	perPage := fs.Int("per-page", 0, "serve: paginate lists with this page `size` unless a client asks for one (0: unpaginated, like the controller)")
	out := fs.String("out", "", "synth: write to `FILE` instead of stdout")
	pos, err := parseInterspersed(fs, args, env.Stdout)
	if err != nil {
		return err
	}
	if len(pos) == 0 {
		return usagef("missing form: serve or synth")
	}
	switch pos[0] {
	case "serve":
		if len(pos) != 1 {
			return usagef("serve takes flags only, got %q", pos[1:])
		}
		if *out != "" {
			return usagef("--out is for registry synth")
		}
		if (*testbed == "") == (*synthetic == "") {
			return usagef("serve: give exactly one of --testbed FILE or --synthetic SPEC")
		}
		if (*tlsCert == "") != (*tlsKey == "") {
			return usagef("serve: --tls-cert and --tls-key go together")
		}
		if *perPage < 0 {
			return usagef("--per-page %d: want 0 or more", *perPage)
		}
		return registryServe(ctx, env, serveConfig{
			testbed: *testbed, synthetic: *synthetic, listen: *listen,
			tlsCert: *tlsCert, tlsKey: *tlsKey, perPage: *perPage,
		})
	case "synth":
		if len(pos) != 2 {
			return usagef("synth: want exactly one SPEC, e.g. nodes=100,servers=1,hosts=2")
		}
		if *testbed != "" || *synthetic != "" || *tlsCert != "" || *tlsKey != "" || *perPage != 0 {
			return usagef("synth takes only SPEC and --out")
		}
		spec, err := registry.ParseSyntheticSpec(pos[1])
		if err != nil {
			return usageError{err}
		}
		return registrySynth(env, spec, *out)
	}
	return usagef("unknown form %q: want serve or synth", pos[0])
}

func registrySynth(env Env, spec registry.SyntheticSpec, out string) error {
	f, err := registry.Synthetic(spec)
	if err != nil {
		return err
	}
	b, err := json.MarshalIndent(f, "", "  ")
	if err != nil {
		return fmt.Errorf("encode testbed: %w", err)
	}
	b = append(b, '\n')
	if out == "" {
		_, err := env.Stdout.Write(b)
		return err
	}
	// Through a synced temporary file renamed into place (fetchhosts.go):
	// a server watching out never reads half a file, and the mode is 0644
	// rather than CreateTemp's 0600.
	return tincgen.WriteFileAtomic(out, b, 0o644)
}

type serveConfig struct {
	testbed, synthetic string
	listen             string
	tlsCert, tlsKey    string
	perPage            int
}

func registryServe(ctx context.Context, env Env, c serveConfig) error {
	log := env.Logger
	var f *registry.File
	var err error
	if c.synthetic != "" {
		spec, err := registry.ParseSyntheticSpec(c.synthetic)
		if err != nil {
			return usagef("--synthetic: %w", err)
		}
		f, err = registry.Synthetic(spec)
		if err != nil {
			return err
		}
	} else if f, err = registry.LoadFile(c.testbed); err != nil {
		return err
	}
	srv := registry.NewServer(f, log)
	srv.DefaultPerPage = c.perPage
	var handler http.Handler = srv
	if c.testbed != "" {
		rl := registry.NewFileReloader(srv, c.testbed, log)
		handler = rl
		// The SIGHUP goroutine ends when registryServe returns, however
		// it returns, and registryServe waits for it: a reload it runs
		// does not outlive the server.
		hup := make(chan os.Signal, 1)
		signal.Notify(hup, syscall.SIGHUP)
		stop := make(chan struct{})
		var wg sync.WaitGroup
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				case <-hup:
					rl.Check(true)
				}
			}
		})
		defer func() {
			signal.Stop(hup)
			close(stop)
			wg.Wait()
		}()
	}

	hs := &http.Server{
		Handler:           handler,
		ReadHeaderTimeout: 10 * time.Second,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
		BaseContext:       func(net.Listener) context.Context { return ctx },
	}
	scheme := "http"
	if c.tlsCert != "" {
		cert, err := tls.LoadX509KeyPair(c.tlsCert, c.tlsKey)
		if err != nil {
			return fmt.Errorf("load TLS certificate: %w", err)
		}
		hs.TLSConfig = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
		scheme = "https"
	}
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", c.listen)
	if err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	servers, nodes, hosts := f.Count()
	fmt.Fprintf(env.Stderr, "serving %d nodes, %d servers, %d hosts at %s://%s%s\n", nodes, servers, hosts, scheme, ln.Addr(), registry.PathPrefix)

	errc := make(chan error, 1)
	go func() {
		if hs.TLSConfig != nil {
			errc <- hs.ServeTLS(ln, "", "")
		} else {
			errc <- hs.Serve(ln)
		}
	}()
	select {
	case err := <-errc:
		return fmt.Errorf("serve: %w", err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := hs.Shutdown(sctx); err != nil {
		return fmt.Errorf("shut down: %w", err)
	}
	if err := <-errc; err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("serve: %w", err)
	}
	log.Info("registry stopped")
	return nil
}
