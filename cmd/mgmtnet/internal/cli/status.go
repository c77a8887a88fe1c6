package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/confine-project/mgmtnet/gateway"
)

const statusSynopsis = `  mgmtnet status [--socket PATH] [--json]

Prints what the local gateway daemon knows: snapshot version, sync age,
registry ETags and errors, members, host file counts, tincd and its peers.
`

func runStatus(ctx context.Context, env Env, args []string) error {
	fs := newFlagSet("status", statusSynopsis, env.Stderr)
	var sock string
	var asJSON bool
	fs.StringVar(&sock, "socket", "/run/mgmtnet/status.sock", "the daemon's status `socket`")
	fs.BoolVar(&asJSON, "json", false, "print one JSON object")
	pos, err := parseInterspersed(fs, args, env.Stdout)
	if err != nil {
		return err
	}
	if len(pos) != 0 {
		return usagef("unexpected arguments %q", pos)
	}
	ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	b, err := gateway.QueryStatus(ctx, sock)
	if err != nil {
		return err
	}
	if asJSON {
		fmt.Fprintf(env.Stdout, "%s\n", bytes.TrimSpace(b))
		return nil
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		return fmt.Errorf("decode status: %w", err)
	}
	tw := tabwriter.NewWriter(env.Stdout, 0, 0, 2, ' ', 0)
	flatten(tw, "", m)
	return tw.Flush()
}

// flatten prints nested objects as "a.b  value" lines, sorted by key.
func flatten(tw *tabwriter.Writer, prefix string, v any) {
	switch x := v.(type) {
	case map[string]any:
		keys := make([]string, 0, len(x))
		for k := range x {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		if len(keys) == 0 {
			fmt.Fprintf(tw, "%s\t-\n", prefix)
		}
		for _, k := range keys {
			p := k
			if prefix != "" {
				p = prefix + "." + k
			}
			flatten(tw, p, x[k])
		}
	case []any:
		var parts []string
		for _, e := range x {
			if m, ok := e.(map[string]any); ok && m["name"] != nil {
				parts = append(parts, fmt.Sprintf("%v=%v", m["name"], m["connected"]))
				continue
			}
			parts = append(parts, fmt.Sprint(e))
		}
		s := strings.Join(parts, ", ")
		if s == "" {
			s = "-"
		}
		fmt.Fprintf(tw, "%s\t%s\n", prefix, s)
	case nil:
		fmt.Fprintf(tw, "%s\t-\n", prefix)
	case string:
		if x == "" {
			x = "-"
		}
		fmt.Fprintf(tw, "%s\t%s\n", prefix, x)
	default:
		fmt.Fprintf(tw, "%s\t%v\n", prefix, x)
	}
}
