package vtb

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"time"

	"github.com/confine-project/mgmtnet/mesh/registry"
)

// LoopbackRegistry is "mgmtnet registry serve" of a testbed file on a free
// 127.0.0.1 port, in the caller's namespace: the benchmarks' registry.
// Write File with WriteTestbedFile to change what it serves (it re-reads
// the file within a second).
type LoopbackRegistry struct {
	File   string // the testbed file it serves
	Listen string // 127.0.0.1:PORT
	URL    string // http://127.0.0.1:PORT/api/
	cmd    *exec.Cmd
}

// ServeTestbed writes f to dir/testbed.json and serves it with mgmtnet
// (bin) until Stop, once the registry answers HTTP.
func ServeTestbed(ctx context.Context, bin, dir string, f *registry.File) (*LoopbackRegistry, error) {
	r := &LoopbackRegistry{File: filepath.Join(dir, "testbed.json")}
	if err := WriteTestbedFile(r.File, f); err != nil {
		return nil, err
	}
	port, err := FreePort()
	if err != nil {
		return nil, err
	}
	r.Listen = fmt.Sprintf("127.0.0.1:%d", port)
	r.URL = "http://" + r.Listen + "/api/"
	r.cmd = exec.Command(bin, "registry", "serve", "--testbed", r.File, "--listen", r.Listen)
	r.cmd.Stderr = os.Stderr
	if err := r.cmd.Start(); err != nil {
		return nil, fmt.Errorf("start the registry: %w", err)
	}
	if err := WaitHTTP(ctx, r.URL, time.Minute); err != nil {
		r.Stop()
		return nil, err
	}
	return r, nil
}

// Stop stops the registry (the process this package started, by pid).
func (r *LoopbackRegistry) Stop() {
	r.cmd.Process.Signal(syscall.SIGTERM)
	r.cmd.Wait()
}
