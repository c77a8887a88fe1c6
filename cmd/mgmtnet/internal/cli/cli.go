// Package cli implements mgmtnet's subcommands: argument parsing, wiring
// of the library packages, output formatting and exit codes. cmd/mgmtnet
// only calls Main. It holds no networking logic of its own.
package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"
)

// Exit codes (design.md "Behaviour users can count on").
const (
	ExitOK    = 0
	ExitError = 1
	ExitUsage = 2
)

// Env is what a command may touch: its output streams and a logger.
type Env struct {
	// Stdin is read by the commands that take a secret on it (registry
	// user add); nil reads nothing.
	Stdin  io.Reader
	Stdout io.Writer
	Stderr io.Writer
	Logger *slog.Logger
}

// usageError marks an error as the user's: bad flags or arguments.
type usageError struct{ err error }

func (u usageError) Error() string { return u.err.Error() }
func (u usageError) Unwrap() error { return u.err }

// usagef returns a usage error (exit code 2).
func usagef(format string, args ...any) error {
	return usageError{fmt.Errorf(format, args...)}
}

type command struct {
	name    string
	summary string
	run     func(ctx context.Context, env Env, args []string) error
}

func commands() []command {
	return []command{
		{"plan", "print the addressing plan: one entity, a range, or the reverse of an address", runPlan},
		{"fetch-hosts", "fetch every tinc member from the registry and write the tinc host files", runFetchHosts},
		{"registry", "run the registry: its database, the CONFINE REST API, writes, enrolment, the change feed", runRegistry},
		{"node-boot", "node boot hook: key, tinc.conf, host files, tinc-up/down; starts or reloads tincd", runNodeBoot},
		{"join", "put a researcher's host on the management network with a one-time invite", runJoin},
		{"gateway", "the gateway daemon: keep the tinc directory in sync with the registry, drive tincd", runGateway},
		{"dns", "serve authoritative DNS for the management network from the registry", runDNS},
		{"status", "print what the local gateway daemon knows (text or --json)", runStatus},
	}
}

const mainUsage = `mgmtnet manages the management network of a CONFINE-style community-network
testbed: an IPv6 /48 overlay carried by a tinc 1.0 mesh VPN.

Usage:
  mgmtnet <command> [arguments] [flags]

Commands:
%s
Run "mgmtnet <command> --help" for a command's arguments and flags.
Exit codes: 0 ok, 1 runtime error, 2 usage error.
`

func printMainUsage(w io.Writer) {
	var sb strings.Builder
	for _, c := range commands() {
		fmt.Fprintf(&sb, "  %-12s %s\n", c.name, c.summary)
	}
	fmt.Fprintf(w, mainUsage, sb.String())
}

// Run runs mgmtnet with args (without the program name) and returns the
// process exit code.
func Run(ctx context.Context, args []string, env Env) int {
	if env.Logger == nil {
		env.Logger = slog.New(slog.NewTextHandler(env.Stderr, &slog.HandlerOptions{Level: logLevel()}))
	}
	if len(args) == 0 {
		printMainUsage(env.Stderr)
		return ExitUsage
	}
	switch args[0] {
	case "-h", "-help", "--help", "help":
		printMainUsage(env.Stdout)
		return ExitOK
	}
	for _, c := range commands() {
		if c.name != args[0] {
			continue
		}
		err := c.run(ctx, env, args[1:])
		return report(env, c.name, err)
	}
	fmt.Fprintf(env.Stderr, "mgmtnet: unknown command %q\n\n", args[0])
	printMainUsage(env.Stderr)
	return ExitUsage
}

func report(env Env, name string, err error) int {
	if err == nil {
		return ExitOK
	}
	if errors.Is(err, flag.ErrHelp) {
		return ExitOK
	}
	var u usageError
	if errors.As(err, &u) {
		fmt.Fprintf(env.Stderr, "mgmtnet %s: %v\nRun \"mgmtnet %s --help\" for usage.\n", name, err, name)
		return ExitUsage
	}
	var s silentError
	if errors.As(err, &s) {
		return s.code
	}
	fmt.Fprintf(env.Stderr, "mgmtnet %s: %v\n", name, err)
	return ExitError
}

// silentError carries an exit code for an error already reported.
type silentError struct{ code int }

func (s silentError) Error() string { return fmt.Sprintf("exit %d", s.code) }

// newFlagSet returns a FlagSet that reports errors instead of exiting and
// prints usage (with the given synopsis) to w.
func newFlagSet(name, synopsis string, w io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(w)
	fs.Usage = func() {
		w := fs.Output()
		fmt.Fprintf(w, "Usage:\n%s\nFlags:\n", synopsis)
		fs.VisitAll(func(f *flag.Flag) {
			name, usage := flag.UnquoteUsage(f)
			head := "  --" + f.Name
			if name != "" {
				head += " " + name
			}
			fmt.Fprintf(w, "%s\n    \t%s", head, strings.ReplaceAll(usage, "\n", "\n    \t"))
			if f.DefValue != "" && f.DefValue != "false" {
				fmt.Fprintf(w, " (default %q)", f.DefValue)
			}
			fmt.Fprintln(w)
		})
	}
	return fs
}

// parseInterspersed parses flags that may come before or after positional
// arguments ("plan node 31 --json" and "plan --json node 31"). Everything
// after a "--" is positional. Flag errors are usage errors; --help returns
// flag.ErrHelp.
//
// "-h", "-help" or "--help" anywhere before "--" prints the usage to stdout.
// Flag errors are not printed here; report prints them once.
func parseInterspersed(fs *flag.FlagSet, args []string, stdout io.Writer) ([]string, error) {
	for _, a := range args {
		if a == "--" {
			break
		}
		if a == "-h" || a == "-help" || a == "--help" || a == "--h" {
			fs.SetOutput(stdout)
			fs.Usage()
			return nil, flag.ErrHelp
		}
	}
	fs.SetOutput(io.Discard)
	var rest []string
	for i, a := range args {
		if a == "--" {
			args, rest = args[:i], args[i+1:]
			break
		}
	}
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return nil, err
			}
			return nil, usageError{err}
		}
		args = fs.Args()
		if len(args) == 0 {
			return append(pos, rest...), nil
		}
		pos = append(pos, args[0])
		args = args[1:]
	}
}

// logLevel reads MGMTNET_LOG (debug, info, warn, error; default info).
func logLevel() slog.Level {
	var l slog.Level
	if err := l.UnmarshalText([]byte(os.Getenv("MGMTNET_LOG"))); err != nil {
		return slog.LevelInfo
	}
	return l
}

// Main is the whole program for cmd/mgmtnet.
func Main() {
	ctx, stop := signalContext()
	defer stop()
	code := Run(ctx, os.Args[1:], Env{Stdin: os.Stdin, Stdout: os.Stdout, Stderr: os.Stderr})
	stop()
	os.Exit(code)
}

// signalContext is cancelled on SIGINT or SIGTERM.
func signalContext() (context.Context, context.CancelFunc) {
	return signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
}
