package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestStatusJSON serves a canned status on a real unix socket and reads
// it through Run.
func TestStatusJSON(t *testing.T) {
	dir, err := os.MkdirTemp("", "st")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	sock := filepath.Join(dir, "s.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Write([]byte(`{"version":"abc","last_sync":null,"from_cache":true,"members":{"nodes":3},"peers":[{"name":"node_1","connected":true}]}` + "\n"))
			c.Close()
		}
	}()
	var out, errb bytes.Buffer
	if code := Run(context.Background(), []string{"status", "--socket", sock, "--json"}, Env{Stdout: &out, Stderr: &errb}); code != 0 {
		t.Fatalf("exit %d: %s", code, errb.String())
	}
	var m map[string]any
	if err := json.Unmarshal(out.Bytes(), &m); err != nil || m["version"] != "abc" || m["from_cache"] != true {
		t.Errorf("json %q: %v", out.String(), err)
	}
	out.Reset()
	if code := Run(context.Background(), []string{"status", "--socket", sock}, Env{Stdout: &out, Stderr: &errb}); code != 0 {
		t.Fatalf("exit %d: %s", code, errb.String())
	}
	for _, want := range []string{"members.nodes  3", "peers", "node_1=true", "version"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("text output lacks %q:\n%s", want, out.String())
		}
	}
	if code := Run(context.Background(), []string{"status", "--socket", filepath.Join(dir, "none")}, Env{Stdout: &out, Stderr: &errb}); code != 1 {
		t.Errorf("missing socket: exit %d", code)
	}
}
