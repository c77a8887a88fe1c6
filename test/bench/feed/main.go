// Command feed benchmarks the database registry ("mgmtnet registry serve
// --db", SQLite) at a large synthetic testbed and the time from a
// registry write to the gateway's reaction: a node removed through the
// write API (DELETE) until its host file is gone from the gateway's hosts
// directory and tincd got its SIGHUP. It times the gateway following the
// registry's change feed and, as the same-run baseline, the same gateway
// polling with ETags every second (registry.feed: false), each over the
// same number of removals of nodes whose files it holds. It also reports
// the registry's import time, RSS and request latencies. tincd is a
// stand-in: this program again, copied to a file named "tincd" (the
// daemon checks the name), that writes the time of each SIGHUP it gets to
// a file, so that the SIGHUP is timed where it lands rather than by
// asking the daemon. "make bench" runs it.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/confine-project/mgmtnet/mesh/registry"
	"github.com/confine-project/mgmtnet/test/vtb"
)

func main() {
	if hups := os.Getenv(hupLogEnv); hups != "" {
		standInTincd(hups)
		return
	}
	bin := flag.String("mgmtnet", "bin/mgmtnet", "mgmtnet binary to measure")
	nodes := flag.Int("nodes", 65520, "nodes in the testbed (+ -hosts hosts, 10 servers)")
	hosts := flag.Int("hosts", 1000, "hosts in the testbed")
	runs := flag.Int("runs", 5, "removals to time in each mode")
	baseline := flag.Bool("baseline", true, "also time the polling gateway (registry.feed: false, poll every second)")
	flag.StringVar(&logDir, "logs", "", "keep the gateways' debug logs in this directory")
	flag.Parse()
	if err := run(*bin, *nodes, *hosts, *runs, *baseline); err != nil {
		fmt.Fprintf(os.Stderr, "bench feed: %v\n", err)
		os.Exit(1)
	}
}

// hupLogEnv names the file where the stand-in tincd writes the time of
// each SIGHUP.
const hupLogEnv = "MGMTNET_BENCH_HUP_LOG"

// standInTincd is the stand-in tincd: it writes the Unix time in
// nanoseconds of each SIGHUP as a line to path, until it is killed.
func standInTincd(path string) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		os.Exit(1)
	}
	hup := make(chan os.Signal, 16)
	signal.Notify(hup, syscall.SIGHUP)
	for range hup {
		fmt.Fprintf(f, "%d\n", time.Now().UnixNano())
	}
}

// startTincd starts the stand-in tincd in dir and writes its pid file.
func startTincd(dir string) (cmd *exec.Cmd, pidFile, hupLog string, err error) {
	self, err := os.Executable()
	if err != nil {
		return nil, "", "", err
	}
	b, err := os.ReadFile(self)
	if err != nil {
		return nil, "", "", err
	}
	bin := filepath.Join(dir, "tincd")
	if err := os.WriteFile(bin, b, 0o755); err != nil {
		return nil, "", "", err
	}
	hupLog = filepath.Join(dir, "hups.log")
	cmd = exec.Command(bin)
	cmd.Env = append(os.Environ(), hupLogEnv+"="+hupLog)
	if err := cmd.Start(); err != nil {
		return nil, "", "", err
	}
	pidFile = filepath.Join(dir, "tinc.pid")
	if err := os.WriteFile(pidFile, []byte(strconv.Itoa(cmd.Process.Pid)+"\n"), 0o644); err != nil {
		cmd.Process.Kill()
		cmd.Wait()
		return nil, "", "", err
	}
	return cmd, pidFile, hupLog, nil
}

// hupsAfter returns the time of the first SIGHUP in log after t.
func hupsAfter(log string, t time.Time) (time.Time, bool) {
	b, _ := os.ReadFile(log)
	for _, l := range strings.Fields(string(b)) {
		n, err := strconv.ParseInt(l, 10, 64)
		if err == nil && n > t.UnixNano() {
			return time.Unix(0, n), true
		}
	}
	return time.Time{}, false
}

// logDir, when set, keeps the gateways' debug logs.
var logDir string

func median(d []time.Duration) time.Duration {
	s := slices.Clone(d)
	slices.Sort(s)
	return s[len(s)/2]
}

func mb(pid int, field string) float64 { return float64(vtb.ProcKB(pid, field)) / 1024 }

func run(bin string, nodes, hosts, runs int, baseline bool) error {
	ctx := context.Background()
	dir, err := os.MkdirTemp("", "mgmtnet-bench-feed-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	f, err := registry.Synthetic(registry.SyntheticSpec{Nodes: nodes, Hosts: hosts, Servers: 10, Keys: 16, KeyBits: 2048})
	if err != nil {
		return err
	}
	tbFile := filepath.Join(dir, "testbed.json")
	if err := vtb.WriteTestbedFile(tbFile, f); err != nil {
		return err
	}
	db := "sqlite:" + filepath.Join(dir, "registry.db")
	t0 := time.Now()
	if out, err := exec.Command(bin, "registry", "import", "--from", tbFile, "--db", db).CombinedOutput(); err != nil {
		return fmt.Errorf("import: %v\n%s", err, out)
	}
	importTime := time.Since(t0)
	out, err := exec.Command(bin, "registry", "token", "create", "--role", "operator", "--name", "bench", "--db", db).Output()
	if err != nil {
		return fmt.Errorf("token: %w", err)
	}
	token := strings.TrimSpace(string(out))

	port, err := vtb.FreePort()
	if err != nil {
		return err
	}
	listen := fmt.Sprintf("127.0.0.1:%d", port)
	base := "http://" + listen + "/api/"
	t0 = time.Now()
	serve := exec.Command(bin, "registry", "serve", "--db", db, "--listen", listen)
	if err := serve.Start(); err != nil {
		return err
	}
	defer func() { serve.Process.Signal(syscall.SIGTERM); serve.Wait() }()
	if err := vtb.WaitHTTP(ctx, base, 5*time.Minute); err != nil {
		return err
	}
	startTime := time.Since(t0)
	rpid := serve.Process.Pid
	members := nodes + hosts + 10
	fmt.Printf("# database registry and change feed benchmark, %s: %d members (SQLite), %d removals per mode\n", time.Now().UTC().Format("2006-01-02"), members, runs)
	fmt.Printf("registry import (testbed file -> SQLite)   %10s\n", importTime.Round(time.Millisecond))
	fmt.Printf("registry serve: start to first answer      %10s, RSS %.1f MB\n", startTime.Round(time.Millisecond), mb(rpid, "VmRSS"))

	get := func(url string) (time.Duration, int64, error) {
		t := time.Now()
		resp, err := http.Get(url)
		if err != nil {
			return 0, 0, err
		}
		n, err := io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return 0, 0, fmt.Errorf("get %s: %s", url, resp.Status)
		}
		return time.Since(t), n, err
	}
	first, size, err := get(base + "nodes/")
	if err != nil {
		return err
	}
	fmt.Printf("GET nodes/ first (renders the testbed)     %10s, %.1f MB\n", first.Round(time.Millisecond), float64(size)/1e6)
	for _, p := range []struct{ name, path string }{
		{"GET nodes/ (cached)", "nodes/"},
		{"GET nodes/31/", "nodes/31/"},
		{"GET base", ""},
		{"GET changes/ (current version)", "changes/"},
	} {
		var lat []time.Duration
		for range 5 {
			d, _, err := get(base + p.path)
			if err != nil {
				return err
			}
			lat = append(lat, d)
		}
		fmt.Printf("%-42s %10s median of 5\n", p.name, median(lat).Round(10*time.Microsecond))
	}
	fmt.Printf("registry RSS after these                   %8.1f MB (peak %.1f MB)\n", mb(rpid, "VmRSS"), mb(rpid, "VmHWM"))

	modes := []bool{true}
	if baseline {
		modes = append(modes, false)
	}
	medians := map[bool]time.Duration{}
	removed := map[string]bool{}
	for _, feed := range modes {
		lat, writes, err := gateway(ctx, bin, dir, listen, base, token, feed, runs, removed)
		if err != nil {
			return err
		}
		name := "following the feed"
		if !feed {
			name = "polling every 1 s"
		}
		medians[feed] = median(lat)
		slices.Sort(lat)
		fmt.Printf("write -> file removed + SIGHUP, %s: median %s (min %s, max %s) over %d; the DELETE itself: median %s\n",
			name, median(lat).Round(time.Millisecond), lat[0].Round(time.Millisecond), lat[len(lat)-1].Round(time.Millisecond), len(lat), median(writes).Round(time.Millisecond))
	}
	if baseline {
		fmt.Printf("feed / polling: %.2f\n", float64(medians[true])/float64(medians[false]))
	}
	fmt.Printf("registry RSS at the end                    %8.1f MB (peak %.1f MB)\n", mb(rpid, "VmRSS"), mb(rpid, "VmHWM"))
	return nil
}

// gateway runs a gateway against the registry, following the feed or
// polling every second, and times runs removals of nodes whose host
// files it holds (and that removed does not hold already).
func gateway(ctx context.Context, bin, dir, listen, base, token string, feed bool, runs int, removed map[string]bool) (lat, writes []time.Duration, err error) {
	mode := "poll"
	poll := time.Second
	if feed {
		mode, poll = "feed", time.Minute
	}
	gdir := filepath.Join(dir, "gateway-"+mode)
	if err := os.MkdirAll(gdir, 0o755); err != nil {
		return nil, nil, err
	}
	tincd, pidFile, hupLog, err := startTincd(gdir)
	if err != nil {
		return nil, nil, err
	}
	defer func() { tincd.Process.Kill(); tincd.Wait() }()
	netDir := filepath.Join(gdir, "tinc")
	hostsDir := filepath.Join(netDir, "hosts")
	os.MkdirAll(hostsDir, 0o755)
	os.WriteFile(filepath.Join(netDir, "tinc.conf"), []byte("Name = server\nStrictSubnets = yes\n"), 0o644)
	socket := filepath.Join(gdir, "status.sock")
	cfg := fmt.Sprintf(`registry:
  url: http://%s/api/
  feed: %t
identity:
  tinc_name: server
tinc:
  dir: %s
  pidfile: %s
poll:
  interval: %s
  full_resync: 1h
state_dir: %s
status_socket: %s
`, listen, feed, netDir, pidFile, poll, filepath.Join(gdir, "state"), socket)
	cfgPath := filepath.Join(gdir, "gateway.yaml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o644); err != nil {
		return nil, nil, err
	}
	gw := exec.Command(bin, "gateway", "--config", cfgPath)
	if logDir != "" {
		// The daemon's debug log, which times each snapshot's fetch and
		// apply.
		lf, err := os.Create(filepath.Join(logDir, "gateway-"+mode+".log"))
		if err != nil {
			return nil, nil, err
		}
		defer lf.Close()
		gw.Env = append(os.Environ(), "MGMTNET_LOG=debug")
		gw.Stderr = lf
	}
	if err := gw.Start(); err != nil {
		return nil, nil, err
	}
	defer func() { gw.Process.Signal(syscall.SIGTERM); gw.Wait() }()
	status := func() (*vtb.GatewayStatus, error) { return vtb.ReadGatewayStatus(ctx, bin, socket) }
	if err := vtb.WaitFor(ctx, 10*time.Minute, 100*time.Millisecond, func() error {
		st, err := status()
		if err != nil {
			return err
		}
		if st.LastSync == nil {
			return errors.New("not synced")
		}
		return nil
	}); err != nil {
		return nil, nil, err
	}
	time.Sleep(3 * time.Second) // the first sync's snapshot is saved after it
	held, err := os.ReadDir(hostsDir)
	if err != nil {
		return nil, nil, err
	}
	var victims []string
	for _, e := range held {
		if strings.HasPrefix(e.Name(), "node_") && !removed[e.Name()] && len(victims) < runs {
			victims = append(victims, e.Name())
			removed[e.Name()] = true
		}
	}
	if len(victims) < runs {
		return nil, nil, fmt.Errorf("the gateway holds %d node files, not %d", len(victims), runs)
	}
	for _, name := range victims {
		req, _ := http.NewRequest(http.MethodDelete, base+"nodes/"+strings.TrimPrefix(name, "node_")+"/", nil)
		req.Header.Set("Authorization", "Token "+token)
		t := time.Now()
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return nil, nil, err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusNoContent {
			return nil, nil, fmt.Errorf("DELETE %s: %s", name, resp.Status)
		}
		writes = append(writes, time.Since(t))
		path := filepath.Join(hostsDir, name)
		var hup time.Time
		if err := vtb.WaitFor(ctx, 2*time.Minute, 5*time.Millisecond, func() error {
			if _, err := os.Stat(path); !errors.Is(err, fs.ErrNotExist) {
				return fmt.Errorf("%s is still there", path)
			}
			var ok bool
			if hup, ok = hupsAfter(hupLog, t); !ok {
				return errors.New("no SIGHUP yet")
			}
			return nil
		}); err != nil {
			return nil, nil, err
		}
		lat = append(lat, hup.Sub(t))
		if logDir != "" {
			fmt.Fprintf(os.Stderr, "%s DELETE %s, SIGHUP %s later\n", t.UTC().Format(time.RFC3339Nano), name, hup.Sub(t))
		}
		time.Sleep(2 * time.Second) // the snapshot is saved after the HUP
	}
	return lat, writes, nil
}
