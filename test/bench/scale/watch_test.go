package main

import (
	"os"
	"path/filepath"
	"testing"
)

// A gateway's log as tinc 1.0.36 writes it at -d1: server_3 and server_1
// dial each other and the duplicate closes after the other activated; a
// node's attempt fails before its activation; a node drops.
const gatewayLog = `2026-12-02 18:11:34 tinc[10705]: Connection with server_2 (10.242.0.12 port 6552) activated
2026-12-02 18:11:34 tinc[10705]: Closing connection with server_2 (10.242.0.12 port 6552)
2026-12-02 18:11:34 tinc[10705]: Connection with server_2 (10.242.0.12 port 60265) activated
2026-12-02 18:11:34 tinc[10705]: Connection with server_3 (10.242.0.13 port 6553) activated
2026-12-02 18:11:34 tinc[10705]: Closing connection with server_3 (10.242.0.13 port 41955)
2026-12-02 18:11:35 tinc[10705]: Throttling incoming connections
2026-12-02 18:11:36 tinc[10705]: Closing connection with node_7 (10.242.1.1 port 40001)
2026-12-02 18:11:37 tinc[10705]: Connection with node_7 (10.242.1.1 port 40002) activated
2026-12-02 18:11:38 tinc[10705]: Connection with node_8 (10.242.1.1 port 40003) activated
2026-12-02 18:11:39 tinc[10705]: Closing connection with node_8 (10.242.1.1 port 40003)
2026-12-02 18:11:40 tinc[10705]: Connection with node_9 (10.242.1.1 port 40004) act`

func TestLogWatch(t *testing.T) {
	path := filepath.Join(t.TempDir(), "tinc.log")
	if err := os.WriteFile(path, []byte(gatewayLog), 0o644); err != nil {
		t.Fatal(err)
	}
	w := newLogWatch(path)
	w.poll()
	if got := w.count(); got != 3 {
		t.Errorf("count = %d, want 3 (server_2, server_3, node_7)", got)
	}
	if !w.upTo([]string{"server_2", "server_3"}) || w.upTo([]string{"node_8"}) {
		t.Errorf("upTo: up = %v", w.up)
	}
	if got := w.closedTotal(func(string) bool { return false }); got != 2 {
		t.Errorf("dropped = %d, want 2 (server_2's first, node_8)", got)
	}
	if w.throttled != 1 {
		t.Errorf("throttled = %d, want 1", w.throttled)
	}
	// The unfinished last line counts once it is complete.
	f, _ := os.OpenFile(path, os.O_APPEND|os.O_WRONLY, 0)
	f.WriteString("ivated\n")
	f.Close()
	w.poll()
	if got := w.count(); got != 4 {
		t.Errorf("count after the line completed = %d, want 4", got)
	}
}

func TestGraphSize(t *testing.T) {
	log := `x tinc[1]: Nodes:
x tinc[1]:  node_1 at MYSELF cipher 0
x tinc[1]:  server_1 at 10.242.0.11 port 6551 cipher 91
x tinc[1]: End of nodes.
x tinc[1]: Edges:
x tinc[1]:  node_1 to server_1 at 10.242.0.11 port 6551 options c weight 1
x tinc[1]: End of edges.
`
	if n, e := graphSize(log); n != 2 || e != 1 {
		t.Errorf("graphSize = %d, %d; want 2, 1", n, e)
	}
	if n, e := graphSize("nothing"); n != -1 || e != -1 {
		t.Errorf("graphSize of no dump = %d, %d; want -1, -1", n, e)
	}
}
