package vtb

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/confine-project/mgmtnet/tinc"
)

// Diagnose is what a failed reachability check between node n and gateway
// g prints: for a few seconds both tincds log at debug level 5 (tinc 1.0's
// SIGINT toggle: "Got unauthenticated packet" and the key exchange only
// show there) while tcpdump captures the tinc traffic on both ends and
// both sides ping each other; then both tincds' lines, the captures, the
// routes. It is what found tinc 1.0's packet-key race; any future boot
// failure should name its cause from this output alone.
func (tb *Testbed) Diagnose(ctx context.Context, n *Node, g *Server) string {
	var b strings.Builder
	gwPid := filepath.Join(g.TincDir, "tinc.pid")
	if g.Tincd != nil {
		gwPid = g.Tincd.PidFile()
	}
	nodeLog := filepath.Join(n.TincDir, "tinc.log")
	nodeFrom := fileSize(nodeLog)
	gwFrom := 0
	if g.Gateway != nil {
		gwFrom = len(g.Gateway.Log())
	}
	// Debug level 5 on both: SIGINT toggles it in tinc 1.0.
	_, nodeErr := tinc.Signal(n.PidFile(), syscall.SIGINT)
	_, gwErr := tinc.Signal(gwPid, syscall.SIGINT)
	capture := func(ns *Netns) chan string {
		c := make(chan string, 1)
		go func() {
			out, _ := ns.Run(ctx, "timeout", "4", "tcpdump", "-n", "-l", "-i", "any", "-c", "80", "tcp or udp")
			c <- out
		}()
		return c
	}
	nodeCap, gwCap := capture(n.NS), capture(g.NS)
	time.Sleep(500 * time.Millisecond) // tcpdump is listening
	n2g, errN := n.NS.Run(ctx, "ping", "-6", "-n", "-c", "3", "-i", "0.5", "-W", "1", g.Addr.String())
	g2n, errG := g.NS.Run(ctx, "ping", "-6", "-n", "-c", "3", "-i", "0.5", "-W", "1", n.Addr.String())
	nodeDump, gwDump := <-nodeCap, <-gwCap
	// Back to the configured level.
	if nodeErr == nil {
		tinc.Signal(n.PidFile(), syscall.SIGINT)
	}
	if gwErr == nil {
		tinc.Signal(gwPid, syscall.SIGINT)
	}
	fmt.Fprintf(&b, "\n== diagnosis: %s <-> %s (both tincds at debug 5 for the pings below; SIGINT errors: node %v, gateway %v)\n", n.TincName, g.TincName, nodeErr, gwErr)
	fmt.Fprintf(&b, "%s -> %s ping: %v\n%s\n%s -> %s ping: %v\n%s\n", n.TincName, g.TincName, errN, n2g, g.TincName, n.TincName, errG, g2n)
	fmt.Fprintf(&b, "-- %s tincd log since the check failed:\n%s\n", n.TincName, tail(readFrom(nodeLog, nodeFrom), 120))
	if g.Gateway != nil {
		var lines []string
		log := g.Gateway.Log()
		if gwFrom <= len(log) {
			log = log[gwFrom:]
		}
		for _, l := range strings.Split(log, "\n") {
			if strings.Contains(l, "msg=tincd") || strings.Contains(l, "level=WARN") || strings.Contains(l, "level=ERROR") {
				lines = append(lines, l)
			}
		}
		fmt.Fprintf(&b, "-- %s tincd lines since the check failed:\n%s\n", g.TincName, tail(strings.Join(lines, "\n"), 120))
	}
	fmt.Fprintf(&b, "-- tcpdump on %s:\n%s\n-- tcpdump on %s:\n%s\n", n.TincName, nodeDump, g.TincName, gwDump)
	r, _ := g.NS.Run(ctx, "ip", "-6", "route")
	nr, _ := n.NS.Run(ctx, "ip", "-6", "route")
	fmt.Fprintf(&b, "-- %s ip -6 route:\n%s-- %s ip -6 route:\n%s", g.TincName, r, n.TincName, nr)
	return b.String()
}

func fileSize(path string) int64 {
	fi, err := os.Stat(path)
	if err != nil {
		return 0
	}
	return fi.Size()
}

func readFrom(path string, off int64) string {
	b, err := os.ReadFile(path)
	if err != nil || off > int64(len(b)) {
		return string(b)
	}
	return string(b[off:])
}
