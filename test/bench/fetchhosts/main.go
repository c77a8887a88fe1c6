// Command fetchhosts benchmarks "mgmtnet fetch-hosts" against a loopback
// registry ("mgmtnet registry serve") at several testbed sizes: cold (empty
// hosts directory), warm (nothing changed: 304) and one member changed,
// with wall time and peak RSS, next to the same-run baseline of merely
// downloading the JSON with curl and copying the resulting directory with
// cp -r. Every figure is the median of -runs runs. "make bench" runs it.
package main

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/confine-project/mgmtnet/mesh/registry"
	"github.com/confine-project/mgmtnet/test/vtb"
)

func main() {
	bin := flag.String("mgmtnet", "bin/mgmtnet", "mgmtnet binary to measure")
	sizes := flag.String("nodes", "1000,10000,65520", "comma-separated node counts")
	hosts := flag.Int("hosts", 1000, "hosts in every testbed")
	servers := flag.Int("servers", 10, "servers in every testbed")
	runs := flag.Int("runs", 5, "runs per figure (the median is reported)")
	work := flag.String("dir", "", "work directory (default: a new temporary directory)")
	flag.Parse()
	if err := run(*bin, *sizes, *hosts, *servers, *runs, *work); err != nil {
		fmt.Fprintf(os.Stderr, "bench fetch-hosts: %v\n", err)
		os.Exit(1)
	}
}

type sample struct {
	wall   time.Duration
	rssKiB int64
}

func median(s []sample) sample {
	walls := make([]time.Duration, len(s))
	rss := make([]int64, len(s))
	for i, x := range s {
		walls[i], rss[i] = x.wall, x.rssKiB
	}
	slices.Sort(walls)
	slices.Sort(rss)
	return sample{walls[len(walls)/2], rss[len(rss)/2]}
}

// measure runs a command under GNU time and returns its wall time and
// peak RSS. GNU time is used because the rusage Go gets for a child it
// started includes this process's own peak (the child is vforked from it
// before exec). Dirty data of earlier steps is flushed first, so that one
// step's writeback does not land on the next step's figure.
func measure(name string, args ...string) (sample, string, error) {
	exec.Command("sync").Run()
	tf, err := os.CreateTemp("", "mgmtnet-bench-time-")
	if err != nil {
		return sample{}, "", err
	}
	tf.Close()
	defer os.Remove(tf.Name())
	cmd := exec.Command("/usr/bin/time", append([]string{"-f", "%e %M", "-o", tf.Name(), name}, args...)...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	start := time.Now()
	err = cmd.Run()
	wall := time.Since(start)
	if err != nil {
		return sample{}, out.String(), fmt.Errorf("%s %s: %v: %s", name, strings.Join(args, " "), err, out.String())
	}
	b, err := os.ReadFile(tf.Name())
	if err != nil {
		return sample{}, "", err
	}
	var secs float64
	var rss int64
	if _, err := fmt.Sscanf(strings.TrimSpace(string(b)), "%f %d", &secs, &rss); err != nil {
		return sample{}, "", fmt.Errorf("parse /usr/bin/time output %q: %w", b, err)
	}
	return sample{wall, rss}, out.String(), nil
}

func run(bin, sizes string, hosts, servers, runs int, work string) error {
	if work == "" {
		d, err := os.MkdirTemp("", "mgmtnet-bench-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(d)
		work = d
	}
	fmt.Printf("# fetch-hosts benchmark, %s, median of %d runs; wall time and peak RSS\n", time.Now().UTC().Format("2006-01-02"), runs)
	fmt.Printf("%-7s %-26s %10s %10s\n", "nodes", "what", "wall", "peak RSS")
	for _, s := range strings.Split(sizes, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil {
			return fmt.Errorf("-nodes %q: %w", s, err)
		}
		if err := benchSize(bin, n, hosts, servers, runs, filepath.Join(work, strconv.Itoa(n))); err != nil {
			return err
		}
	}
	return nil
}

func benchSize(bin string, nodes, hosts, servers, runs int, dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	f, err := registry.Synthetic(registry.SyntheticSpec{Nodes: nodes, Hosts: hosts, Servers: servers, Keys: 16, KeyBits: 2048})
	if err != nil {
		return err
	}
	reg, err := vtb.ServeTestbed(context.Background(), bin, dir, f)
	if err != nil {
		return err
	}
	defer reg.Stop()
	tbPath, base := reg.File, reg.URL

	hostsDir := filepath.Join(dir, "hosts")
	cache := filepath.Join(dir, "cache.json")
	fetch := func(extra ...string) (sample, string, error) {
		args := append([]string{"fetch-hosts", base, "--hosts-dir", hostsDir, "--cache", cache, "--quiet"}, extra...)
		return measure(bin, args...)
	}
	var cold, warm, changed, download, copyDir []sample
	for i := 0; i < runs; i++ {
		os.RemoveAll(hostsDir)
		os.Remove(cache)
		s, _, err := fetch()
		if err != nil {
			return err
		}
		cold = append(cold, s)
		s, out, err := fetch()
		if err != nil {
			return err
		}
		if !strings.Contains(out, "unchanged") {
			return fmt.Errorf("warm run did not report unchanged: %s", out)
		}
		warm = append(warm, s)
		// One member changed: node 1 gets another key.
		f.Nodes[0].Tinc.PubKey, f.Nodes[1].Tinc.PubKey = f.Nodes[1].Tinc.PubKey, f.Nodes[0].Tinc.PubKey
		if err := vtb.WriteTestbedFile(tbPath, f); err != nil {
			return err
		}
		time.Sleep(1100 * time.Millisecond) // the server notices file changes once a second
		s, out, err = fetch()
		if err != nil {
			return err
		}
		if !strings.Contains(out, "written 1,") && !strings.Contains(out, "written 2,") {
			return fmt.Errorf("one-member change: unexpected summary: %s", out)
		}
		changed = append(changed, s)
		// Baseline: download the three collections, copy the directory.
		var dl sample
		for _, c := range []string{"servers", "hosts", "nodes"} {
			s, _, err := measure("curl", "-sf", "-o", filepath.Join(dir, c+".json"), base+c+"/")
			if err != nil {
				return err
			}
			dl.wall += s.wall
			dl.rssKiB = max(dl.rssKiB, s.rssKiB)
		}
		download = append(download, dl)
		copyTo := filepath.Join(dir, "copy")
		os.RemoveAll(copyTo)
		s, _, err = measure("cp", "-r", hostsDir, copyTo)
		if err != nil {
			return err
		}
		copyDir = append(copyDir, s)
	}
	base2 := median(download).wall + median(copyDir).wall
	row := func(what string, s sample) {
		fmt.Printf("%-7d %-26s %10s %8.1fMB\n", nodes, what, s.wall.Round(time.Millisecond), float64(s.rssKiB)/1024)
	}
	row("baseline: curl JSON", median(download))
	row("baseline: cp -r hosts dir", median(copyDir))
	row("fetch-hosts cold", median(cold))
	row("fetch-hosts warm (304)", median(warm))
	row("fetch-hosts one changed", median(changed))
	fmt.Printf("%-7d %-26s %10.2fx\n", nodes, "cold / (curl + cp -r)", float64(median(cold).wall)/float64(base2))
	return nil
}
