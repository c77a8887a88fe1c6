package e2e

import (
	"bytes"
	"compress/gzip"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/confine-project/mgmtnet/mesh/registry"
	"github.com/confine-project/mgmtnet/test/vtb"
)

// The attack tests replay a hostile registry against the real binary, on
// loopback only (no namespaces, no root): a gzip bomb (about 1 MB that
// unzips to 1 GiB), one endless member, and an answer that drips a byte
// every 5 s. Each run must fail with an error that names the limit or the
// timeout, end within the timeout (plus slack), and keep a peak RSS that
// owes nothing to the bomb's size.
//
// MGMTNET_ATTACK_BIN, when set, runs them against another mgmtnet binary
// (an older build, to see the attacks succeed).

const (
	bombBytes = 1 << 30
	// dripTimeout is the --timeout given to the runs against the drip;
	// dripSlack what a run may take beyond it (a generous bound on our own
	// deadline, not a benchmark).
	dripTimeout = 10 * time.Second
	dripSlack   = 10 * time.Second
	// maxRSS bounds a run's peak RSS. The client streams, and holds at
	// most MaxElementBytes of one JSON value, so what it holds does not
	// grow with the answer, nor with MaxBodyBytes: a run takes 11 to 17
	// MiB. (A client that buffered its answers up to the limit would
	// need 4 times the limit + 64 MB.)
	maxRSS = 96 << 20
)

// gzipBomb is prefix and filler, total bytes in all, gzipped as
// concatenated members of one compressed chunk (one stream to any gzip
// reader).
func gzipBomb(prefix string, filler byte, total int64) []byte {
	const chunk = 16 << 20
	gz := func(b []byte) []byte {
		var buf bytes.Buffer
		w, _ := gzip.NewWriterLevel(&buf, gzip.BestCompression)
		w.Write(b)
		w.Close()
		return buf.Bytes()
	}
	fill := bytes.Repeat([]byte{filler}, chunk)
	out := gz(append([]byte(prefix), fill[:chunk-len(prefix)]...))
	one := gz(fill)
	for n := int64(chunk); n < total; n += chunk {
		out = append(out, one...)
	}
	return out
}

// hostileRegistry serves, under /MODE/api/, a base resource and empty
// server and host lists, and a nodes list that attacks: "bomb" is a gzip
// bomb of blanks inside the array, "element" a gzip bomb of one endless
// string, "drip" one byte every 5 s.
func hostileRegistry(t *testing.T) *httptest.Server {
	var once sync.Once
	var blanks, endless []byte
	bombs := func() {
		blanks = gzipBomb("[", ' ', bombBytes)
		endless = gzipBomb(`[{"id": 31, "name": "`, 'a', bombBytes)
	}
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		parts := strings.SplitN(strings.TrimPrefix(r.URL.Path, "/"), "/", 3) // MODE, api, rest
		if len(parts) != 3 || parts[1] != "api" {
			http.NotFound(w, r)
			return
		}
		mode, rest := parts[0], parts[2]
		w.Header().Set("Content-Type", "application/json")
		switch rest {
		case "":
			base := "/" + mode + "/api/"
			rel := "http://confine-project.eu/rel/registry/"
			w.Header().Set("Link", fmt.Sprintf(`<%[1]snodes/>; rel="%[2]snode-list", <%[1]sservers/>; rel="%[2]sserver-list", <%[1]shosts/>; rel="%[2]shost-list"`, base, rel))
			io.WriteString(w, `{"testbed_params": {"mgmt_ipv6_prefix": "fdf5:5351:1dfd::/48"}}`)
		case "servers/", "hosts/":
			io.WriteString(w, "[]")
		case "nodes/":
			switch mode {
			case "bomb", "element":
				once.Do(bombs)
				b := blanks
				if mode == "element" {
					b = endless
				}
				w.Header().Set("Content-Encoding", "gzip")
				w.Header().Set("Content-Length", strconv.Itoa(len(b)))
				w.Write(b)
			case "drip":
				for {
					if _, err := io.WriteString(w, " "); err != nil {
						return
					}
					w.(http.Flusher).Flush()
					select {
					case <-r.Context().Done():
						return
					case <-time.After(5 * time.Second):
					}
				}
			}
		default:
			http.NotFound(w, r)
		}
	})
	srv := httptest.NewServer(h) // 127.0.0.1
	t.Cleanup(srv.Close)
	return srv
}

// attackBin is the binary the attacks are run against.
func attackBin() string {
	if b := os.Getenv("MGMTNET_ATTACK_BIN"); b != "" {
		return b
	}
	return mgmtnetBin
}

// runResult is one run of the binary.
type runResult struct {
	out  string // stdout and stderr
	took time.Duration
	// peakRSS is the highest VmHWM of the child seen, in bytes. (Not
	// the rusage of wait4: after a vfork-style exec that includes the
	// parent's RSS.)
	peakRSS int64
	err     error
}

// runAttacked runs mgmtnet with args until it exits, or until stop says
// (given the output so far) that it has shown what it does, when it is
// sent SIGTERM; it is killed after limit.
func runAttacked(t *testing.T, limit time.Duration, stop func(out string) bool, args ...string) runResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), limit)
	defer cancel()
	cmd := exec.CommandContext(ctx, attackBin(), args...)
	var out syncBuffer
	cmd.Stdout, cmd.Stderr = &out, &out
	start := time.Now()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	var err error
	var hwm int64
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for n := 0; ; n++ {
		select {
		case err = <-done:
			return runResult{out: out.String(), took: time.Since(start), err: err, peakRSS: hwm << 10}
		case <-tick.C:
			hwm = max(hwm, vtb.ProcKB(cmd.Process.Pid, "VmHWM"))
			if stop != nil && n%20 == 0 && stop(out.String()) {
				cmd.Process.Signal(syscall.SIGTERM) // the process this test started
				stop = nil
			}
		}
	}
}

const attackUCI = `config node node
    option id '001f'
    option tinc_gateway 'server'
config registry registry
    option base_uri 'http://127.0.0.1:1/api/'
config testbed testbed
    option mgmt_ipv6_prefix48 'fdf5:5351:1dfd'
`

func TestAttackInputs(t *testing.T) {
	srv := hostileRegistry(t)
	limitMsg := fmt.Sprintf("exceeds %d MiB unzipped", registry.DefaultMaxBodyBytes>>20)
	elementMsg := "over 1 MiB (MaxElementBytes)"
	timeoutMsg := fmt.Sprintf("deadline of %v", dripTimeout)
	attacks := []struct {
		mode, want string
		timeout    time.Duration // --timeout
	}{
		{"bomb", limitMsg, time.Minute},
		{"element", elementMsg, time.Minute},
		{"drip", timeoutMsg, dripTimeout},
	}
	commands := []struct {
		name string
		args func(t *testing.T, url string, timeout time.Duration) []string
		// daemon: the command does not exit on its own; it is stopped once
		// its log names the failure.
		daemon bool
		// code is its exit status on the failure (-1: any, stopped).
		code int
	}{
		{"fetch-hosts", func(t *testing.T, url string, timeout time.Duration) []string {
			return []string{"fetch-hosts", url, "--hosts-dir", filepath.Join(t.TempDir(), "hosts"), "--quiet", "--timeout", timeout.String()}
		}, false, 1},
		{"node-boot", func(t *testing.T, url string, timeout time.Duration) []string {
			dir := t.TempDir()
			uci := filepath.Join(dir, "confine")
			if err := os.WriteFile(uci, []byte(attackUCI), 0o644); err != nil {
				t.Fatal(err)
			}
			return []string{"node-boot", "--uci", uci, "--tinc-dir", filepath.Join(dir, "tinc"), "--gateways-dir", filepath.Join(dir, "none"),
				"--registry", url, "--no-start", "--timeout", timeout.String()}
		}, false, 1},
		{"dns", func(t *testing.T, url string, timeout time.Duration) []string {
			port, err := vtb.FreePort()
			if err != nil {
				t.Fatal(err)
			}
			return []string{"dns", "--registry", url, "--zone", "mgmt.example", "--listen", fmt.Sprintf("127.0.0.1:%d", port), "--timeout", timeout.String(),
				"--serial-file", filepath.Join(t.TempDir(), "dns.serial")}
		}, true, -1},
	}
	for _, a := range attacks {
		for _, c := range commands {
			t.Run(c.name+" against "+a.mode, func(t *testing.T) {
				url := srv.URL + "/" + a.mode + "/api/"
				var stop func(string) bool
				if c.daemon {
					stop = func(out string) bool { return strings.Contains(out, "registry poll failed") }
				}
				bound := a.timeout + dripSlack
				res := runAttacked(t, bound+20*time.Second, stop, c.args(t, url, a.timeout)...)
				t.Logf("%s against %s: %v, peak RSS %.1f MiB, exit %v", c.name, a.mode, res.took.Round(10*time.Millisecond), float64(res.peakRSS)/(1<<20), res.err)
				t.Logf("output:\n%s", res.out)
				if !strings.Contains(res.out, a.want) {
					t.Errorf("output does not name the failure %q", a.want)
				}
				if !strings.Contains(res.out, "/"+a.mode+"/api/") {
					t.Errorf("output does not name the registry")
				}
				if strings.Contains(res.out, "panic") {
					t.Errorf("it panicked")
				}
				code := -1
				if res.err != nil {
					if ee, ok := res.err.(*exec.ExitError); ok {
						code = ee.ExitCode()
					}
				} else {
					code = 0
				}
				if c.code >= 0 && code != c.code {
					t.Errorf("exit status %d, want %d", code, c.code)
				}
				if a.mode == "drip" && res.took > bound {
					t.Errorf("took %v against a registry that drips; want at most --timeout %v + %v", res.took, a.timeout, dripSlack)
				}
				if res.peakRSS <= 0 || res.peakRSS > maxRSS {
					t.Errorf("peak RSS %d bytes; want at most %d", res.peakRSS, maxRSS)
				}
			})
		}
	}
}
