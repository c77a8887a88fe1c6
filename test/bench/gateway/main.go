// Command gateway benchmarks "mgmtnet gateway" against a loopback registry
// ("mgmtnet registry serve") with a large synthetic testbed: the daemon's
// resident memory once it has synced, its CPU time per idle poll (every
// collection answers 304), and the time from a registry change to tincd's
// SIGHUP. tincd is a stand-in process named "tincd" that ignores SIGHUP
// (the daemon runs unmanaged and only signals it), so no tun device is
// needed. "make bench" runs it.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"syscall"
	"time"

	"github.com/confine-project/mgmtnet/mesh/registry"
	"github.com/confine-project/mgmtnet/test/vtb"
)

func main() {
	bin := flag.String("mgmtnet", "bin/mgmtnet", "mgmtnet binary to measure")
	nodes := flag.Int("nodes", 65520, "nodes in the testbed (+ -hosts hosts, 10 servers)")
	hosts := flag.Int("hosts", 1000, "hosts in the testbed")
	idle := flag.Duration("idle", 20*time.Second, "how long to measure idle polls")
	changes := flag.Int("changes", 5, "registry changes to time")
	tunnel := flag.Bool("tunnel-server", true, "run the gateway in the tunnel-server topology (the default: it holds the host files of the gateways and of the members assigned to it); false is the legacy topology, where it holds every member's file")
	flag.Parse()
	if err := run(*bin, *nodes, *hosts, *idle, *changes, *tunnel); err != nil {
		fmt.Fprintf(os.Stderr, "bench gateway: %v\n", err)
		os.Exit(1)
	}
}

func run(bin string, nodes, hosts int, idle time.Duration, changes int, tunnel bool) error {
	dir, err := os.MkdirTemp("", "mgmtnet-bench-gateway-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	f, err := registry.Synthetic(registry.SyntheticSpec{Nodes: nodes, Hosts: hosts, Servers: 10, Keys: 16, KeyBits: 2048})
	if err != nil {
		return err
	}
	reg, err := vtb.ServeTestbed(context.Background(), bin, dir, f)
	if err != nil {
		return err
	}
	defer reg.Stop()
	tbPath, listen := reg.File, reg.Listen

	// A stand-in tincd: a process named tincd that ignores SIGHUP.
	tincd, err := vtb.StartFakeTincd(dir, true)
	if err != nil {
		return err
	}
	defer tincd.Stop()
	netDir := filepath.Join(dir, "tinc")
	os.MkdirAll(filepath.Join(netDir, "hosts"), 0o755)
	os.WriteFile(filepath.Join(netDir, "tinc.conf"), []byte("Name = server\nStrictSubnets = yes\n"), 0o644)
	pidFile := tincd.PidFile
	socket := filepath.Join(dir, "status.sock")
	const poll = time.Second
	cfg := fmt.Sprintf(`registry:
  url: http://%s/api/
identity:
  tinc_name: server
tinc:
  dir: %s
  pidfile: %s
  tunnel_server: %t
poll:
  interval: %s
  full_resync: 1h
state_dir: %s
status_socket: %s
`, listen, netDir, pidFile, tunnel, poll, filepath.Join(dir, "state"), socket)
	cfgPath := filepath.Join(dir, "gateway.yaml")
	os.WriteFile(cfgPath, []byte(cfg), 0o644)

	ctx := context.Background()
	start := time.Now()
	gw := exec.Command(bin, "gateway", "--config", cfgPath)
	if err := gw.Start(); err != nil {
		return err
	}
	defer func() { gw.Process.Signal(syscall.SIGTERM); gw.Wait() }()
	pid := gw.Process.Pid
	status := func() (*vtb.GatewayStatus, error) { return vtb.ReadGatewayStatus(ctx, bin, socket) }
	err = vtb.WaitFor(ctx, 10*time.Minute, 100*time.Millisecond, func() error {
		st, err := status()
		if err != nil {
			return err
		}
		if st.LastSync == nil {
			return fmt.Errorf("not synced")
		}
		return nil
	})
	if err != nil {
		return err
	}
	firstSync := time.Since(start)
	time.Sleep(3 * time.Second)
	members := nodes + hosts + 10
	held, _ := os.ReadDir(filepath.Join(netDir, "hosts"))
	topology := "tunnel-server topology: the gateway fetches and validates every member, and holds the files of the gateways and of its assigned members"
	if !tunnel {
		topology = "legacy topology: the gateway holds every member's host file"
	}
	fmt.Printf("# gateway daemon benchmark, %s: %d members from a loopback registry, poll interval %s\n# %s\n",
		time.Now().UTC().Format("2006-01-02"), members, poll, topology)
	fmt.Printf("first sync (cold, %d members, %d host files) %10s\n", members, len(held), firstSync.Round(time.Millisecond))
	fmt.Printf("RSS after the first sync             %8.1f MB (peak %0.1f MB)\n", float64(vtb.ProcKB(pid, "VmRSS"))/1024, float64(vtb.ProcKB(pid, "VmHWM"))/1024)

	st0, _ := status()
	c0, t0 := vtb.CPUTime(pid), time.Now()
	time.Sleep(idle)
	st1, _ := status()
	c1, t1 := vtb.CPUTime(pid), time.Now()
	polls := int(t1.Sub(t0) / poll)
	if st0 != nil && st1 != nil && st1.Syncs > st0.Syncs {
		polls = st1.Syncs - st0.Syncs
	}
	fmt.Printf("CPU per idle poll (304)              %10s (%s over %d polls)\n", ((c1 - c0) / time.Duration(max(polls, 1))).Round(100*time.Microsecond), (c1 - c0).Round(10*time.Millisecond), polls)
	fmt.Printf("RSS while idle                       %8.1f MB\n", float64(vtb.ProcKB(pid, "VmRSS"))/1024)

	// Each change swaps the different keys of two nodes whose host files
	// the gateway holds (in the tunnel-server topology, only its assigned
	// members'), so that every change rewrites files and ends in a HUP.
	// In the legacy topology these are nodes i and i+changes, as before.
	isHeld := map[string]bool{}
	for _, e := range held {
		isHeld[e.Name()] = true
	}
	var heldNodes []int
	for i := range f.Nodes {
		if f.Nodes[i].Tinc != nil && isHeld[f.Nodes[i].Tinc.Name] {
			heldNodes = append(heldNodes, i)
		}
	}
	type pair struct{ a, b int }
	var pairs []pair
	used := map[int]bool{}
	for k, a := range heldNodes {
		if len(pairs) == changes || k >= changes {
			break
		}
		for _, b := range heldNodes[k+changes:] {
			if !used[b] && f.Nodes[b].Tinc.PubKey != f.Nodes[a].Tinc.PubKey {
				pairs = append(pairs, pair{a, b})
				used[a], used[b] = true, true
				break
			}
		}
	}
	if len(pairs) < changes {
		return fmt.Errorf("the gateway holds the files of %d nodes: not enough for %d changes", len(heldNodes), changes)
	}
	var lat []time.Duration
	for i := 0; i < changes; i++ {
		before, err := status()
		if err != nil {
			return err
		}
		a, b := pairs[i].a, pairs[i].b
		f.Nodes[a].Tinc.PubKey, f.Nodes[b].Tinc.PubKey = f.Nodes[b].Tinc.PubKey, f.Nodes[a].Tinc.PubKey
		time.Sleep(1100 * time.Millisecond) // the registry re-reads its file at most once a second
		t := time.Now()
		if err := vtb.WriteTestbedFile(tbPath, f); err != nil {
			return err
		}
		err = vtb.WaitFor(ctx, time.Minute, 10*time.Millisecond, func() error {
			st, err := status()
			if err != nil {
				return err
			}
			if st.Hups <= before.Hups {
				return fmt.Errorf("no HUP yet")
			}
			return nil
		})
		if err != nil {
			return err
		}
		lat = append(lat, time.Since(t))
	}
	slices.Sort(lat)
	fmt.Printf("registry change -> SIGHUP            median %s, max %s over %d changes (includes waiting for the next poll: up to %s)\n",
		lat[len(lat)/2].Round(time.Millisecond), lat[len(lat)-1].Round(time.Millisecond), len(lat), poll)
	time.Sleep(5 * time.Second) // let the last sync finish (the snapshot is saved after the HUP)
	fmt.Printf("RSS 5 s after the last change        %8.1f MB (peak %0.1f MB)\n", float64(vtb.ProcKB(pid, "VmRSS"))/1024, float64(vtb.ProcKB(pid, "VmHWM"))/1024)
	return nil
}
