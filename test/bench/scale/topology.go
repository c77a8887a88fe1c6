package main

import (
	"fmt"
	"math"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/confine-project/mgmtnet/addressing"
	"github.com/confine-project/mgmtnet/mesh"
	"github.com/confine-project/mgmtnet/nodeboot"
	"github.com/confine-project/mgmtnet/tincgen"
)

// The two topologies compared.
const (
	topoLegacy = "legacy"        // the 2015 controller's full broadcast
	topoTunnel = "tunnel-server" // mgmtnet's
)

// The synthetic testbed's management /48 (VCT's) and its community
// network: one bridge, 10.242.0.0/16, that exists only inside the
// harness's namespaces. Gateway i is 10.242.0.(10+i), the crowd
// namespace 10.242.1.1, probe i 10.242.2.i.
var prefix = netip.MustParsePrefix("fd65:fc41:c50f::/48")

const (
	cnBits       = 16
	crowdAddr    = "10.242.1.1"
	gatewayPort  = 6550 // + gateway number
	nodePortBase = 20000
)

func gatewayAddr(i int) string { return fmt.Sprintf("10.242.0.%d", 10+i) }
func probeAddr(i int) string   { return fmt.Sprintf("10.242.2.%d", i) }

// keyPair is one RSA key pair as tinc reads it. The harness makes a few
// and hands them round: tinc 1.0 does not care that members share a key,
// and mesh does not reject it.
type keyPair struct{ priv, pub []byte }

func makeKeys(n int) ([]keyPair, error) {
	keys := make([]keyPair, n)
	for i := range keys {
		priv, pub, err := tincgen.GenerateKey(nil, tincgen.DefaultKeyBits)
		if err != nil {
			return nil, err
		}
		keys[i] = keyPair{priv, pub}
	}
	return keys, nil
}

// daemon is one tincd of the layout: its tinc directory and what it dials.
type daemon struct {
	name      string
	id        uint64
	dir       string
	port      int
	mgmt      netip.Addr // management address
	connectTo []string   // from its rendered tinc.conf
}

// layout is every tincd of one (topology, N) run, with its files written.
type layout struct {
	topo     string
	gateways []*daemon
	crowd    []*daemon // the N nodes, probes excluded
	probes   []*daemon // nodes with a namespace and a real tun each
	joiners  []*daemon // extra nodes that join and leave
	// sameGateways reports that every node dials the same set of
	// gateways, so the probes could not be put on different ones.
	sameGateways bool
}

// render builds the synthetic testbed (gateways server_1..server_G, nodes
// node_1..node_(n+joins)) with mesh.Build and writes every tincd's
// directory under root, for topology topo, with the repository's own
// renderers: what the gateway daemon and node-boot would write, adjusted
// only where a harness must (ports, dummy devices).
func render(topo string, n, g, joins, probes int, capacity float64, keys []keyPair, root string) (*layout, error) {
	plan, err := addressing.New(prefix)
	if err != nil {
		return nil, err
	}
	key := func(i int) keyPair { return keys[i%len(keys)] }
	var cands []mesh.Candidate
	for i := 1; i <= g; i++ {
		id := uint64(i)
		addr, err := plan.Address(addressing.Entity{Kind: addressing.KindServer, ID: id})
		if err != nil {
			return nil, err
		}
		cands = append(cands, mesh.Candidate{
			Kind: addressing.KindServer, ID: id, Name: "server-" + strconv.Itoa(i), Island: 1,
			MgmtAddr: addr.String(), Backend: "tinc",
			Tinc: &mesh.CandidateTinc{Name: "server_" + strconv.Itoa(i), PubKey: string(key(i).pub),
				Addresses: []mesh.CandidateAddress{{Addr: gatewayAddr(i), Port: gatewayPort + i, Island: 1}}},
			Properties: map[string]string{mesh.EgressProperty: fmt.Sprintf("weight=%d", 10*i)},
		})
		if capacity > 0 && topo == topoTunnel {
			c := min(max(int(math.Ceil(capacity*float64(n+joins))), 1), mesh.MaxCapacity)
			cands[len(cands)-1].Properties[mesh.CapacityProperty] = strconv.Itoa(c)
		}
	}
	total := n + joins
	for i := 1; i <= total; i++ {
		id := uint64(i)
		addr, err := plan.NodeAddr(uint16(i))
		if err != nil {
			return nil, err
		}
		cands = append(cands, mesh.Candidate{
			Kind: addressing.KindNode, ID: id, Name: "node-" + strconv.Itoa(i), Island: 1,
			MgmtAddr: addr.String(), Backend: "tinc",
			Tinc: &mesh.CandidateTinc{Name: "node_" + strconv.Itoa(i), PubKey: string(key(i).pub)},
		})
	}
	res := mesh.Build(plan, cands, mesh.BuildOptions{})
	if len(res.Rejected) > 0 {
		return nil, fmt.Errorf("synthetic testbed: %d candidates rejected, first: %s", len(res.Rejected), res.Rejected[0])
	}
	tb := res.Testbed
	gws := tb.Gateways()
	if len(gws) != g {
		return nil, fmt.Errorf("synthetic testbed: %d gateways, want %d", len(gws), g)
	}

	l := &layout{topo: topo}
	for i, m := range gws {
		d, err := writeGateway(topo, tb, m, i+1, key(i+1), root)
		if err != nil {
			return nil, err
		}
		l.gateways = append(l.gateways, d)
	}

	// Nodes: render them all, then choose the probes from what they dial.
	nodes := make([]*daemon, total)
	errs := make(chan error, 2)
	for w := range 2 { // RegistryGateways builds the testbed again for every node
		go func() {
			for i := w; i < total; i += 2 {
				d, err := writeNode(topo, tb, cands, uint16(i+1), key(i+1), root)
				if err != nil {
					errs <- err
					return
				}
				nodes[i] = d
			}
			errs <- nil
		}()
	}
	for range 2 {
		if err := <-errs; err != nil {
			return nil, err
		}
	}
	l.crowd, l.joiners = nodes[:n], nodes[n:]
	picked := pickProbes(l.crowd, probes)
	l.sameGateways = true
	for _, d := range l.crowd[1:] {
		if !slices.Equal(sortedCopy(d.connectTo), sortedCopy(l.crowd[0].connectTo)) {
			l.sameGateways = false
			break
		}
	}
	for _, i := range picked {
		l.probes = append(l.probes, l.crowd[i])
	}
	l.crowd = slices.DeleteFunc(l.crowd, func(d *daemon) bool { return slices.Contains(l.probes, d) })
	for _, d := range l.crowd {
		if err := crowdConf(d); err != nil {
			return nil, err
		}
	}
	for _, d := range l.joiners {
		if err := crowdConf(d); err != nil {
			return nil, err
		}
	}
	return l, nil
}

func sortedCopy(s []string) []string { c := slices.Clone(s); slices.Sort(c); return c }

// pickProbes returns the indexes of k nodes on gateways as different as
// the topology allows: each next probe is the first node that shares the
// fewest gateways with the probes picked so far, so that the
// reachability check crosses gateways whenever it can.
func pickProbes(nodes []*daemon, k int) []int {
	out := []int{0}
	for len(out) < min(k, len(nodes)) {
		best, bestShared := -1, 0
		for i, d := range nodes {
			if slices.Contains(out, i) {
				continue
			}
			shared := 0
			for _, j := range out {
				for _, g := range d.connectTo {
					if slices.Contains(nodes[j].connectTo, g) {
						shared++
					}
				}
			}
			if best < 0 || shared < bestShared {
				best, bestShared = i, shared
			}
			if shared == 0 {
				break
			}
		}
		out = append(out, best)
	}
	return out
}

// writeGateway writes gateway m's tinc directory. Tunnel-server: the
// hosts directory HostFiles renders for it and tincgen.GatewayConf
// with the gateways after it as peers, as gateway/hostsync.go's applyConf
// does. Legacy: every member's controller host file, and a ConnectTo to
// every other gateway, as the 2015 controller's servers ran.
func writeGateway(topo string, tb *mesh.Testbed, m *mesh.Member, i int, k keyPair, root string) (*daemon, error) {
	d := &daemon{name: m.TincName, id: m.ID, dir: filepath.Join(root, m.TincName), port: gatewayPort + i, mgmt: m.Addr}
	var files tincgen.Files
	var err error
	conf := tincgen.Conf{Name: m.TincName, Port: uint16(d.port), StrictSubnets: true}
	switch topo {
	case topoTunnel:
		files, err = tincgen.HostFiles(tb, tincgen.HostOptions{Gateway: m.TincName})
		var peers []string
		for _, o := range tb.Gateways() {
			if o.TincName > m.TincName {
				peers = append(peers, o.TincName)
			}
		}
		conf = tincgen.GatewayConf(conf, peers)
	case topoLegacy:
		files, err = tincgen.HostFiles(tb, tincgen.HostOptions{})
		for _, o := range tb.Gateways() {
			if o.TincName != m.TincName {
				conf.ConnectTo = append(conf.ConnectTo, o.TincName)
			}
		}
	default:
		return nil, fmt.Errorf("topology %q: want %s or %s", topo, topoLegacy, topoTunnel)
	}
	if err != nil {
		return nil, fmt.Errorf("host files of %s: %w", m.TincName, err)
	}
	d.connectTo = conf.ConnectTo
	hosts := filepath.Join(d.dir, nodeboot.HostsDir)
	if err := os.MkdirAll(hosts, 0o755); err != nil {
		return nil, err
	}
	for name, b := range files {
		if err := os.WriteFile(filepath.Join(hosts, name), b, 0o644); err != nil {
			return nil, fmt.Errorf("write host file: %w", err)
		}
	}
	return d, writeAll(d.dir, []nodeboot.File{
		{Name: nodeboot.ConfFile, Data: tincgen.RenderConf(conf), Mode: 0o644},
		{Name: nodeboot.KeyFile, Data: k.priv, Mode: 0o600},
		{Name: nodeboot.TincUpFile, Data: tincgen.RenderTincUp(m.Addr, 48, 1400), Mode: 0o755},
		{Name: nodeboot.TincDownFile, Data: tincgen.RenderTincDown(m.Addr, 48), Mode: 0o755},
	})
}

// writeNode writes node id's tinc directory as node-boot's DesiredFiles
// has it with egress on (nodeboot.RegistryGateways, nodeboot.DesiredFiles).
// Legacy: the old firmware's, the same files without TunnelServer and with
// every gateway's controller host file. Every node gets its own Port.
func writeNode(topo string, tb *mesh.Testbed, cands []mesh.Candidate, id uint16, k keyPair, root string) (*daemon, error) {
	cfg := nodeboot.Config{File: "scale", NodeID: id, TincGateway: "server_1", Prefix: prefix,
		Egress: nodeboot.EgressOn, EgressPrefix: addressing.DefaultEgressPrefix()}
	var gws []nodeboot.Gateway
	switch topo {
	case topoTunnel:
		var err error
		if gws, _, _, err = nodeboot.RegistryGateways(cfg, prefix, cands); err != nil {
			return nil, fmt.Errorf("gateways of node %d: %w", id, err)
		}
	case topoLegacy:
		for _, m := range tb.Gateways() {
			gws = append(gws, nodeboot.Gateway{Name: m.TincName, Host: tincgen.RenderHost(tincgen.HostFor(m, 0)), Egress: m.Egress.Offered})
		}
	}
	want, err := nodeboot.DesiredFiles(cfg, k.pub, gws, nodeboot.DesiredOptions{Egress: true})
	if err != nil {
		return nil, fmt.Errorf("desired files of node %d: %w", id, err)
	}
	d := &daemon{name: cfg.TincName(), id: uint64(id), dir: filepath.Join(root, cfg.TincName()), port: nodePortBase + int(id)}
	d.mgmt, _ = tb.Plan().NodeAddr(id)
	files := append(want.Files, nodeboot.File{Name: nodeboot.KeyFile, Data: k.priv, Mode: 0o600})
	for i, f := range files {
		if f.Name != nodeboot.ConfFile {
			continue
		}
		c, err := tincgen.ParseConf(f.Data)
		if err != nil {
			return nil, fmt.Errorf("node %d: rendered tinc.conf: %w", id, err)
		}
		c.Port = uint16(d.port)
		if topo == topoLegacy {
			c.Options = slices.DeleteFunc(c.Options, func(o tincgen.Option) bool { return strings.EqualFold(o.Key, "TunnelServer") })
		}
		d.connectTo = c.ConnectTo
		files[i].Data = tincgen.RenderConf(c)
	}
	if len(d.connectTo) == 0 {
		return nil, fmt.Errorf("node %d: its tinc.conf has no ConnectTo", id)
	}
	return d, writeAll(d.dir, files)
}

// crowdConf turns a node into one of the crowd, many to a namespace:
// DeviceType = dummy in place of its tun (tinc 1.0.36 has it: no packet
// is read or written), and no tinc-up or tinc-down.
func crowdConf(d *daemon) error {
	path := filepath.Join(d.dir, nodeboot.ConfFile)
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	c, err := tincgen.ParseConf(b)
	if err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	c.Options = slices.DeleteFunc(c.Options, func(o tincgen.Option) bool {
		return strings.EqualFold(o.Key, "Interface") || strings.EqualFold(o.Key, "DeviceType")
	})
	c.Options = append(c.Options, tincgen.Option{Key: "DeviceType", Value: "dummy"})
	if err := os.WriteFile(path, tincgen.RenderConf(c), 0o644); err != nil {
		return err
	}
	for _, s := range []string{nodeboot.TincUpFile, nodeboot.TincDownFile} {
		if err := os.Remove(filepath.Join(d.dir, s)); err != nil && !os.IsNotExist(err) {
			return err
		}
	}
	return nil
}

func writeAll(dir string, files []nodeboot.File) error {
	for _, f := range files {
		path := filepath.Join(dir, f.Name)
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(path, f.Data, f.Mode); err != nil {
			return fmt.Errorf("write %s: %w", path, err)
		}
	}
	return nil
}
