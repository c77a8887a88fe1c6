package vtb

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/confine-project/mgmtnet/addressing"
	"github.com/confine-project/mgmtnet/mesh"
	"github.com/confine-project/mgmtnet/mesh/registry"
	"github.com/confine-project/mgmtnet/tincgen"
)

// The virtual testbed's community network: island I is 10.241.I.0/24 on
// bridge br-I in the "cn" namespace; the server has .1 in every island and
// node N has .(10+N) in its own. These addresses exist only inside the
// lab's namespaces.
const registryPort = 8080

// NodeSpec is one node of a virtual testbed.
type NodeSpec struct {
	ID      uint16
	Island  uint64 // 1 or 2
	Slivers int    // sliver namespaces (slices 1..Slivers, containers 1..Slivers)
	// OldFirmware runs the node's tincd without TunnelServer, as the 2015
	// firmware does: it forwards what it learns from one gateway to the
	// others (the key-race tests' legacy node).
	OldFirmware bool
}

// Spec describes a virtual testbed.
type Spec struct {
	Prefix  netip.Prefix // the management /48; default VCT's fd65:fc41:c50f::/48
	Islands int          // default 2
	Nodes   []NodeSpec
	// Mgmtnet is the mgmtnet binary the testbed runs.
	Mgmtnet string
	// GatewayDaemon makes the server run "mgmtnet gateway" (with managed
	// tincd) instead of fetch-hosts and a tincd of the harness's own.
	GatewayDaemon bool
	// PollInterval is the gateway daemon's poll interval (default 2s).
	PollInterval time.Duration
	// Egress adds the pretend Internet (egress.go) and makes the server
	// an egress gateway (weight 10) with a WAN link to it; it implies
	// GatewayDaemon. SecondGateway adds server 3 ("server_3", weight 20),
	// a second egress gateway in both islands.
	Egress        bool
	SecondGateway bool
	// ThirdGateway adds server 4 ("server_4", weight 30) as well; it
	// implies SecondGateway.
	ThirdGateway bool
	// Capacity, when set, is every server's mgmtnet.capacity in the
	// registry: how many members the assignment gives each gateway.
	Capacity int
	// DNS makes every gateway daemon serve DNS for DNSZone and announce
	// DNSServiceAddr (weight 10 for the server, 20 for server 3); it
	// implies GatewayDaemon.
	DNS bool
	// LegacyTopology runs the gateway daemons with tinc.tunnel_server
	// false: the controller's topology, in which every member learns every
	// other (the attack tests' control).
	LegacyTopology bool
	// NoUDPWatchdog turns the gateway daemons' UDP watchdog off
	// (tinc.udp_watchdog.interval 0s): the stale-key test's control.
	NoUDPWatchdog bool
	// RegistryDB makes the registry "mgmtnet registry serve --db" of an
	// SQLite database in the lab's directory (Testbed.DB), with the write
	// API and the change feed; WriteRegistry imports the testbed file into
	// it, and Registry runs the admin CLI on it.
	RegistryDB bool
}

// DefaultSpec is the demo's testbed: two islands, a server in both, three
// nodes with two slivers each.
func DefaultSpec(mgmtnet string) Spec {
	return Spec{Mgmtnet: mgmtnet, Islands: 2, Nodes: []NodeSpec{
		{ID: 1, Island: 1, Slivers: 2}, {ID: 2, Island: 1, Slivers: 2}, {ID: 0x1f, Island: 2, Slivers: 2},
	}}
}

// Server is a server and gateway of the testbed: the main one has tinc
// name "server" and id 2.
type Server struct {
	ID       uint64
	TincName string
	// Octet is the last octet of its addresses in every island
	// (10.241.<island>.<Octet>) and on the WAN (192.0.2.<Octet+1>).
	Octet    int
	WAN      netip.Addr // with Spec.Egress
	NS       *Netns
	TincDir  string
	Addr     netip.Addr
	Tincd    *Tincd // the harness's tincd; nil with a gateway daemon
	Registry *Proc
	// With Spec.GatewayDaemon: the daemon, its config, state and socket.
	Gateway       *Proc
	GatewayConfig string
	StateDir      string
	StatusSocket  string
	pub           []byte
}

// Node is a node of the virtual testbed.
type Node struct {
	Spec     NodeSpec
	NS       *Netns
	Dir      string // the node's root: etc/config/confine, etc/tinc/confine, ...
	TincDir  string
	UCI      string
	Addr     netip.Addr
	CNAddr   netip.Addr // community network address
	Slivers  []*Sliver
	TincName string
}

// PidFile returns the node's tincd pid file (node-boot's default for a
// non-default tinc dir).
func (n *Node) PidFile() string { return filepath.Join(n.TincDir, "tinc.pid") }

// TincLog returns the node's tincd log.
func (n *Node) TincLog() string {
	b, _ := os.ReadFile(filepath.Join(n.TincDir, "tinc.log"))
	return string(b)
}

// Sliver is a sliver namespace on a node: a management address in the
// node's /64 and a private IPv4 address in 192.168.157.0/25.
type Sliver struct {
	NS        *Netns
	Slice     uint64
	Container uint8
	MgmtAddr  netip.Addr
	PrivAddr  netip.Addr
}

// Testbed is a running virtual testbed.
type Testbed struct {
	Lab    *Lab
	Spec   Spec
	Plan   addressing.Plan
	CN     *Netns
	Server *Server
	// Gateways are every server: Server first, then server 3 with
	// Spec.SecondGateway.
	Gateways []*Server
	// Inet is the pretend Internet, with Spec.Egress.
	Inet     *Netns
	InetHost *Proc
	Nodes    []*Node
	File     *registry.File
	FilePath string
	// RegistryURL is the registry's base URI as nodes of island 1 reach it.
	RegistryURL string
}

// IslandRegistryURL returns the registry's base URI through island i.
func IslandRegistryURL(i uint64) string {
	return fmt.Sprintf("http://10.241.%d.1:%d/api/", i, registryPort)
}

// Mgmtnet runs the mgmtnet binary in namespace n (nil: the caller's).
func (tb *Testbed) Mgmtnet(ctx context.Context, n *Netns, args ...string) (string, error) {
	if n == nil {
		out, err := exec.CommandContext(ctx, tb.Spec.Mgmtnet, args...).CombinedOutput()
		if err != nil {
			return string(out), fmt.Errorf("mgmtnet %s: %w: %s", strings.Join(args, " "), err, out)
		}
		return string(out), nil
	}
	return n.Run(ctx, append([]string{tb.Spec.Mgmtnet}, args...)...)
}

// NodeBoot runs "mgmtnet node-boot" on a node, as its boot script would.
func (tb *Testbed) NodeBoot(ctx context.Context, n *Node, extra ...string) (string, error) {
	args := append([]string{"node-boot", "--uci", n.UCI, "--tinc-dir", n.TincDir,
		"--gateways-dir", filepath.Join(n.Dir, "etc/confine/tinc-gateways"), "--tincd", tb.nodeTincd(n)}, extra...)
	return tb.Mgmtnet(ctx, n.NS, args...)
}

// nodeTincd returns the tincd a node runs: tincd at debug level 1, so
// that its log says which connections came and went (a failed test prints
// it). An OldFirmware node's wrapper first drops TunnelServer from the
// tinc.conf node-boot wrote.
func (tb *Testbed) nodeTincd(n *Node) string {
	name, script := "tincd-d1", "#!/bin/sh\nexec tincd -d1 \"$@\"\n"
	if n.Spec.OldFirmware {
		name = "tincd-old-" + n.TincName
		script = fmt.Sprintf("#!/bin/sh\nsed -i '/^TunnelServer/Id' %q\nexec tincd -d1 \"$@\"\n", filepath.Join(n.TincDir, "tinc.conf"))
	}
	path := filepath.Join(tb.Lab.Dir, name)
	if _, err := os.Stat(path); err != nil {
		os.WriteFile(path, []byte(script), 0o755)
	}
	return path
}

// Build creates the network of a virtual testbed: the community network,
// the server with its tinc directory, the nodes with their slivers and
// firmware files. Nothing runs yet; Boot starts it.
func Build(ctx context.Context, lab *Lab, spec Spec) (*Testbed, error) {
	if !spec.Prefix.IsValid() {
		spec.Prefix = netip.MustParsePrefix("fd65:fc41:c50f::/48")
	}
	if spec.Islands == 0 {
		spec.Islands = 2
	}
	plan, err := addressing.New(spec.Prefix)
	if err != nil {
		return nil, err
	}
	tb := &Testbed{Lab: lab, Spec: spec, Plan: plan, RegistryURL: IslandRegistryURL(1)}
	if tb.CN, err = lab.AddNetns("cn"); err != nil {
		return nil, err
	}
	for i := 1; i <= spec.Islands; i++ {
		if err := tb.CN.Bridge(fmt.Sprintf("br-%d", i)); err != nil {
			return nil, err
		}
	}
	lab.Logf("community network: %d islands, 10.241.<island>.0/24, one bridge each", spec.Islands)

	if spec.DNS {
		tb.Spec.GatewayDaemon = true
	}
	if spec.Egress {
		tb.Spec.GatewayDaemon = true
		if err := tb.buildInternet(ctx); err != nil {
			return nil, err
		}
	}
	tb.File = &registry.File{MgmtPrefix: plan.Mgmt()}
	for i := 1; i <= spec.Islands; i++ {
		tb.File.Islands = append(tb.File.Islands, registry.FileIsland{ID: uint64(i), Name: fmt.Sprintf("island-%d", i)})
	}
	srv, err := tb.buildServer(ctx, addressing.MainServerID, 1, 10)
	if err != nil {
		return nil, err
	}
	tb.Server = srv
	if spec.SecondGateway || spec.ThirdGateway {
		if _, err := tb.buildServer(ctx, 3, 3, 20); err != nil {
			return nil, err
		}
	}
	if spec.ThirdGateway {
		if _, err := tb.buildServer(ctx, 4, 4, 30); err != nil {
			return nil, err
		}
	}
	srvAddrs := tb.File.Servers[0].Tinc.Addresses
	pub := srv.pub
	// The gateway file the node firmware ships: the server's host file as
	// the controller renders it (registry order of addresses).
	fwGateway := tincgen.RenderHost(tincgen.Host{
		Addresses: func() (a []tincgen.Address) {
			for _, x := range srvAddrs {
				a = append(a, tincgen.Address{Host: x.Addr, Port: uint16(x.Port)})
			}
			return a
		}(),
		Subnets:   []tincgen.Subnet{tincgen.NewSubnet(netip.PrefixFrom(srv.Addr, 128))},
		PublicKey: string(pub),
	})

	for _, ns := range spec.Nodes {
		n, err := tb.buildNode(ctx, ns, fwGateway)
		if err != nil {
			return nil, err
		}
		tb.Nodes = append(tb.Nodes, n)
	}
	return tb, nil
}

// buildServer creates a server: its namespace with an address in every
// island, its tinc directory (StrictSubnets, as the main server runs) and
// its registry entry; with Spec.Egress also its WAN link and its egress
// offer of the given weight.
func (tb *Testbed) buildServer(ctx context.Context, id uint64, octet, weight int) (*Server, error) {
	lab, spec := tb.Lab, tb.Spec
	name, _ := addressing.TincName(addressing.KindServer, id)
	srv := &Server{ID: id, TincName: name, Octet: octet}
	nsName := "server"
	if id != addressing.MainServerID {
		nsName = fmt.Sprintf("server-%d", id)
	}
	srv.TincDir = filepath.Join(lab.Dir, nsName, "tinc")
	srv.Addr, _ = tb.Plan.ServerAddr(id)
	var err error
	if srv.NS, err = lab.AddNetns(nsName); err != nil {
		return nil, err
	}
	var addrs []registry.FileAddress
	for i := 1; i <= spec.Islands; i++ {
		ifName := fmt.Sprintf("eth%d", i)
		addr := fmt.Sprintf("10.241.%d.%d", i, octet)
		if err := attachAs(srv.NS, ifName, fmt.Sprintf("s%d-%d", id, i), tb.CN, fmt.Sprintf("br-%d", i), addr+"/24"); err != nil {
			return nil, err
		}
		addrs = append(addrs, registry.FileAddress{Addr: addr, Port: 655, Island: uint64(i)})
	}
	priv, pub, err := tincgen.GenerateKey(nil, tincgen.DefaultKeyBits)
	if err != nil {
		return nil, err
	}
	srv.pub = pub
	if err := writeFiles(srv.TincDir, map[string][]byte{
		"rsa_key.priv": priv,
		"tinc.conf":    tincgen.RenderConf(tincgen.Conf{Name: name, Port: 655, StrictSubnets: true}),
		"tinc-up":      tincgen.RenderTincUp(srv.Addr, 48, 1400),
		"tinc-down":    tincgen.RenderTincDown(srv.Addr, 48),
	}); err != nil {
		return nil, err
	}
	m := registry.FileMember{ID: id, Name: nsName, Island: 1,
		Tinc: &registry.FileTinc{Name: name, PubKey: string(pub), Addresses: addrs}}
	if spec.Egress {
		if err := tb.attachWAN(srv); err != nil {
			return nil, err
		}
		m.Properties = map[string]string{mesh.EgressProperty: fmt.Sprintf("weight=%d", weight)}
	}
	if spec.DNS {
		// Nodes route to the DNS service as the registry declares it.
		if m.Properties == nil {
			m.Properties = map[string]string{}
		}
		m.Properties[mesh.DNSServiceProperty] = fmt.Sprintf("%s,weight=%d", tb.DNSServiceAddr(), weight)
	}
	if spec.Capacity > 0 {
		if m.Properties == nil {
			m.Properties = map[string]string{}
		}
		m.Properties[mesh.CapacityProperty] = fmt.Sprint(spec.Capacity)
	}
	tb.File.Servers = append(tb.File.Servers, m)
	tb.Gateways = append(tb.Gateways, srv)
	return srv, nil
}

// attachAs is Attach with an explicit name for the bridge-side end.
func attachAs(n *Netns, ifName, peer string, br *Netns, bridge string, addrs ...string) error {
	if err := Connect(br, peer, n, ifName); err != nil {
		return err
	}
	if err := br.MustRun("ip", "link", "set", peer, "master", bridge); err != nil {
		return err
	}
	for _, a := range addrs {
		if err := n.MustRun("ip", "addr", "add", a, "dev", ifName); err != nil {
			return err
		}
	}
	return nil
}

func writeFiles(dir string, files map[string][]byte) error {
	if err := os.MkdirAll(filepath.Join(dir, "hosts"), 0o755); err != nil {
		return err
	}
	for name, b := range files {
		mode := os.FileMode(0o644)
		switch name {
		case "rsa_key.priv":
			mode = 0o600
		case "tinc-up", "tinc-down":
			mode = 0o755
		}
		if err := os.WriteFile(filepath.Join(dir, name), b, mode); err != nil {
			return err
		}
	}
	return nil
}

// buildNode creates a node's namespace, its links, its slivers and the
// files its firmware ships (UCI config, the default gateway's host file).
func (tb *Testbed) buildNode(ctx context.Context, spec NodeSpec, fwGateway []byte) (*Node, error) {
	lab, plan := tb.Lab, tb.Plan
	name := fmt.Sprintf("node-%d", spec.ID)
	n := &Node{Spec: spec, Dir: filepath.Join(lab.Dir, name)}
	n.TincDir = filepath.Join(n.Dir, "etc/tinc/confine")
	n.UCI = filepath.Join(n.Dir, "etc/config/confine")
	n.Addr, _ = plan.NodeAddr(spec.ID)
	n.TincName, _ = addressing.TincName(addressing.KindNode, uint64(spec.ID))
	n.CNAddr = netip.AddrFrom4([4]byte{10, 241, byte(spec.Island), byte(10 + spec.ID%200)})
	var err error
	if n.NS, err = lab.AddNetns(name); err != nil {
		return nil, err
	}
	if err := attachAs(n.NS, "eth0", fmt.Sprintf("n-%d", spec.ID), tb.CN, fmt.Sprintf("br-%d", spec.Island), n.CNAddr.String()+"/24"); err != nil {
		return nil, err
	}
	// br-local carries the node /64 (slivers' management interfaces);
	// br-internal the slivers' private IPv4 network (confine.md §5).
	sub, _ := plan.NodeSubnet(spec.ID)
	for _, cmd := range [][]string{
		{"ip", "link", "add", "br-local", "type", "bridge"},
		{"ip", "link", "set", "br-local", "up"},
		{"ip", "-6", "addr", "add", n.Addr.String() + "/64", "dev", "br-local", "nodad"},
		{"ip", "link", "add", "br-internal", "type", "bridge"},
		{"ip", "link", "set", "br-internal", "up"},
		{"ip", "addr", "add", plan.NodePrivateIPv4().String(), "dev", "br-internal"},
		{"sysctl", "-qw", "net.ipv6.conf.all.forwarding=1"},
		{"sysctl", "-qw", "net.ipv4.ip_forward=1"},
		// The firmware masquerades the slivers' private network to the
		// community network (confine.md §5).
		{"nft", "add table ip firmware; add chain ip firmware post { type nat hook postrouting priority srcnat; };" +
			" add rule ip firmware post oifname eth0 ip saddr " + plan.SliverIPv4Prefix().String() + " masquerade"},
	} {
		if err := n.NS.MustRun(cmd...); err != nil {
			return nil, err
		}
	}
	for i := 1; i <= spec.Slivers; i++ {
		s := &Sliver{Slice: uint64(i), Container: uint8(i)}
		s.MgmtAddr, _ = plan.SliverAddr(addressing.SpaceMgmt, spec.ID, s.Slice, 1)
		s.PrivAddr, _ = plan.SliverIPv4(s.Container)
		if s.NS, err = lab.AddNetns(fmt.Sprintf("%s-sliver-%d", name, i)); err != nil {
			return nil, err
		}
		if err := attachAs(s.NS, "mgmt0", fmt.Sprintf("m%d-%d", spec.ID, i), n.NS, "br-local"); err != nil {
			return nil, err
		}
		if err := attachAs(s.NS, "priv0", fmt.Sprintf("p%d-%d", spec.ID, i), n.NS, "br-internal"); err != nil {
			return nil, err
		}
		for _, cmd := range [][]string{
			{"ip", "-6", "addr", "add", s.MgmtAddr.String() + "/64", "dev", "mgmt0", "nodad"},
			{"ip", "-6", "route", "add", "default", "via", n.Addr.String(), "dev", "mgmt0"},
			{"ip", "addr", "add", netip.PrefixFrom(s.PrivAddr, 25).String(), "dev", "priv0"},
			{"ip", "route", "add", "default", "via", plan.NodePrivateIPv4().Addr().String(), "dev", "priv0"},
		} {
			if err := s.NS.MustRun(cmd...); err != nil {
				return nil, err
			}
		}
		n.Slivers = append(n.Slivers, s)
	}
	_ = sub
	// The firmware's files.
	uci := fmt.Sprintf(`config node node
	option id '%s'
	option priv_ipv4_prefix24 '192.168.157'
	option mac_prefix16 '06:ab'
	option local_ifname 'eth0'
	option tinc_gateway 'server'
	option state 'prepared'
config registry registry
	option base_uri '%s'
config testbed testbed
	option mgmt_ipv6_prefix48 '%s'
`, addressing.FormatFirmwareNodeID(spec.ID), IslandRegistryURL(spec.Island), strings.TrimSuffix(plan.Mgmt().Addr().String(), "::"))
	if err := os.MkdirAll(filepath.Dir(n.UCI), 0o755); err != nil {
		return nil, err
	}
	if err := os.WriteFile(n.UCI, []byte(uci), 0o644); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(filepath.Join(n.Dir, "etc/confine/tinc-gateways"), 0o755); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(filepath.Join(n.TincDir, "hosts"), 0o755); err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(n.TincDir, "hosts", "server"), fwGateway, 0o644); err != nil {
		return nil, err
	}
	return n, nil
}

// WriteRegistry writes the testbed file the registry serves (it re-reads
// it within a second).
func (tb *Testbed) WriteRegistry() error {
	if tb.FilePath == "" {
		tb.FilePath = filepath.Join(tb.Lab.Dir, "testbed.json")
	}
	if err := WriteTestbedFile(tb.FilePath, tb.File); err != nil {
		return err
	}
	if !tb.Spec.RegistryDB {
		return nil
	}
	_, err := tb.Registry(context.Background(), "import", "--from", tb.FilePath)
	return err
}

// DBURL is the registry database of Spec.RegistryDB.
func (tb *Testbed) DBURL() string { return "sqlite:" + filepath.Join(tb.Lab.Dir, "registry.db") }

// Registry runs "mgmtnet registry ARGS --db DB" (Spec.RegistryDB), as an
// operator on the registry's machine does, and returns its standard
// output (its standard error goes to the lab's log).
func (tb *Testbed) Registry(ctx context.Context, args ...string) (string, error) {
	args = append(append([]string{"registry"}, args...), "--db", tb.DBURL())
	cmd := exec.CommandContext(ctx, tb.Spec.Mgmtnet, args...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	// What it says, without the log lines (the database's migrations).
	var said []string
	for _, l := range strings.Split(strings.TrimSpace(stderr.String()), "\n") {
		if !strings.HasPrefix(l, "time=") {
			said = append(said, l)
		}
	}
	tb.Lab.Logf("mgmtnet %s: %s", strings.Join(args, " "), strings.Join(said, "\n"))
	if err != nil {
		return string(out), fmt.Errorf("mgmtnet %s: %w: %s", strings.Join(args, " "), err, stderr.String())
	}
	return string(out), nil
}

// WriteTestbedFile writes a registry testbed file through a temporary file
// and a rename, so that "mgmtnet registry serve" never reads half of it.
func WriteTestbedFile(path string, f *registry.File) error {
	b, err := json.MarshalIndent(f, "", "  ")
	if err != nil {
		return err
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, b, 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// RegisterNode puts a node and its current public key into the registry
// file (as a node's administrator does after the first boot).
func (tb *Testbed) RegisterNode(n *Node) error {
	h, err := os.ReadFile(filepath.Join(n.TincDir, "hosts", n.TincName))
	if err != nil {
		return fmt.Errorf("register %s: %w", n.TincName, err)
	}
	host, err := tincgen.ParseHost(h)
	if err != nil {
		return fmt.Errorf("register %s: %w", n.TincName, err)
	}
	m := registry.FileMember{ID: uint64(n.Spec.ID), Name: fmt.Sprintf("node-%d", n.Spec.ID), Island: n.Spec.Island,
		Tinc: &registry.FileTinc{Name: n.TincName, PubKey: host.PublicKey}}
	for i := range tb.File.Nodes {
		if tb.File.Nodes[i].ID == m.ID {
			tb.File.Nodes[i] = m
			return tb.WriteRegistry()
		}
	}
	tb.File.Nodes = append(tb.File.Nodes, m)
	return tb.WriteRegistry()
}

// StartRegistry starts "mgmtnet registry serve" in the server's namespace,
// on every address, port 8080.
func (tb *Testbed) StartRegistry(ctx context.Context) error {
	if err := tb.WriteRegistry(); err != nil {
		return err
	}
	from := []string{"--testbed", tb.FilePath}
	if tb.Spec.RegistryDB {
		from = []string{"--db", tb.DBURL()}
	}
	p, err := tb.Lab.Start(tb.Server.NS, "registry", append(append([]string{tb.Spec.Mgmtnet, "registry", "serve"}, from...),
		"--listen", fmt.Sprintf(":%d", registryPort))...)
	if err != nil {
		return err
	}
	tb.Server.Registry = p
	return WaitFor(ctx, 10*time.Second, 50*time.Millisecond, func() error {
		_, err := tb.Server.NS.Run(ctx, "curl", "-sf", "-o", "/dev/null", fmt.Sprintf("http://127.0.0.1:%d/api/", registryPort))
		return err
	})
}

// SyncServer runs fetch-hosts for the server's hosts directory, with
// --reload when its tincd runs.
func (tb *Testbed) SyncServer(ctx context.Context) (string, error) {
	args := []string{"fetch-hosts", "http://127.0.0.1:8080/api/", "--hosts-dir", filepath.Join(tb.Server.TincDir, "hosts"), "--full"}
	if tb.Server.Tincd != nil {
		args = append(args, "--reload", "--pidfile", tb.Server.Tincd.PidFile())
	}
	return tb.Mgmtnet(ctx, tb.Server.NS, args...)
}

// Boot brings the testbed up the way a real one comes up:
//  1. every node runs node-boot once without starting tincd (its first boot:
//     a key is generated, the firmware's gateway file is used);
//  2. the nodes' keys are registered, the registry starts, the server's
//     hosts directory is written by fetch-hosts and its tincd starts;
//  3. every node runs node-boot again: the registry answers now, the
//     gateways' host files come from it, tincd starts;
//  4. it waits until every node reaches the server over the overlay.
func (tb *Testbed) Boot(ctx context.Context) error {
	lab := tb.Lab
	for _, n := range tb.Nodes {
		out, err := tb.NodeBoot(ctx, n, "--no-start", "--timeout", "1s")
		if err != nil {
			return err
		}
		lab.Logf("%s first boot (no registry yet):\n%s", n.TincName, indent(out))
		if err := tb.RegisterNode(n); err != nil {
			return err
		}
	}
	if err := tb.startServices(ctx); err != nil {
		return err
	}
	for _, n := range tb.Nodes {
		out, err := tb.NodeBoot(ctx, n)
		if err != nil {
			return err
		}
		lab.Logf("%s boot:\n%s", n.TincName, indent(out))
	}
	return tb.waitOverlay(ctx)
}

// EnrolBoot brings the testbed up the way the operator of a database
// registry (Spec.RegistryDB) does, without copying a key by hand:
//  1. the registry starts with the gateways alone, and so do the
//     gateways (or the server's fetch-hosts and tincd);
//  2. the operator adds every node, without a key, and invites it
//     ("mgmtnet registry node add", "mgmtnet registry invite");
//  3. every node boots once, with its invite (node-boot --enrol): it
//     makes its key, registers it, gets its gateways and starts tincd;
//  4. it waits until every node reaches the server over the overlay.
//
// It returns each node's invite and node-boot output, by tinc name.
func (tb *Testbed) EnrolBoot(ctx context.Context) (invites, boots map[string]string, err error) {
	if !tb.Spec.RegistryDB {
		return nil, nil, errors.New("EnrolBoot needs Spec.RegistryDB")
	}
	if err := tb.startServices(ctx); err != nil {
		return nil, nil, err
	}
	invites, boots = map[string]string{}, map[string]string{}
	for _, n := range tb.Nodes {
		id := strconv.Itoa(int(n.Spec.ID))
		if _, err := tb.Registry(ctx, "node", "add", id, "--name", "node-"+id, "--island", strconv.FormatUint(n.Spec.Island, 10)); err != nil {
			return nil, nil, err
		}
		out, err := tb.Registry(ctx, "invite", "--node", id, "--ttl", "1h")
		if err != nil {
			return nil, nil, err
		}
		invites[n.TincName] = strings.TrimSpace(out)
	}
	for _, n := range tb.Nodes {
		out, err := tb.NodeBoot(ctx, n, "--enrol", invites[n.TincName])
		if err != nil {
			return nil, nil, err
		}
		tb.Lab.Logf("%s boot with its invite:\n%s", n.TincName, indent(out))
		boots[n.TincName] = out
	}
	return invites, boots, tb.waitOverlay(ctx)
}

// startServices starts the registry, the pretend Internet host, and the
// gateway daemons or the server's fetch-hosts and tincd.
func (tb *Testbed) startServices(ctx context.Context) error {
	lab := tb.Lab
	if err := tb.StartRegistry(ctx); err != nil {
		return err
	}
	if tb.Spec.RegistryDB {
		lab.Logf("registry: %s (serving %s)", tb.RegistryURL, tb.DBURL())
	} else {
		lab.Logf("registry: %s (serving %s)", tb.RegistryURL, tb.FilePath)
	}
	if tb.Inet != nil {
		if err := tb.startInetHost(ctx); err != nil {
			return err
		}
	}
	if tb.Spec.GatewayDaemon {
		for _, g := range tb.Gateways {
			if err := tb.StartGatewayOn(ctx, g); err != nil {
				return err
			}
			lab.Logf("%s: mgmtnet gateway synced and runs tincd", g.TincName)
		}
		return nil
	}
	out, err := tb.SyncServer(ctx)
	if err != nil {
		return err
	}
	lab.Logf("server: %s", strings.TrimSpace(out))
	tb.Server.Tincd, err = lab.StartTincd(tb.Server.NS, "server", tb.Server.TincDir)
	return err
}

// waitOverlay waits until every node reaches the server over the overlay.
func (tb *Testbed) waitOverlay(ctx context.Context) error {
	for _, n := range tb.Nodes {
		err := WaitFor(ctx, 30*time.Second, 200*time.Millisecond, func() error { return n.NS.Ping6(ctx, tb.Server.Addr.String()) })
		if err != nil {
			return fmt.Errorf("%s does not reach the server over the overlay: %w\n%s's tincd log:\n%s%s", n.TincName, err, n.TincName, tail(n.TincLog(), 40), tb.Diagnose(ctx, n, tb.Server))
		}
	}
	return nil
}

func indent(s string) string {
	s = strings.TrimRight(s, "\n")
	if s == "" {
		return "    (no output)"
	}
	return "    " + strings.ReplaceAll(s, "\n", "\n    ")
}

// GatewayConfigYAMLFor returns the gateway daemon's configuration for a
// server: the main one reaches the registry on its own loopback, the
// others through island 1.
func (tb *Testbed) GatewayConfigYAMLFor(srv *Server) string {
	poll := tb.Spec.PollInterval
	if poll == 0 {
		poll = 2 * time.Second
	}
	watchdog := time.Second
	if tb.Spec.NoUDPWatchdog {
		watchdog = 0
	}
	regHost := "127.0.0.1"
	if srv != tb.Server {
		regHost = "10.241.1.1"
	}
	return fmt.Sprintf(`registry:
  url: http://%s:%d/api/
  timeout: 2s
identity:
  tinc_name: %s
island: 1
tinc:
  dir: %s
  net: confine
  manage: true
  tunnel_server: %t
  udp_watchdog:
    interval: %s
poll:
  interval: %s
  full_resync: %s
state_dir: %s
status_socket: %s
metrics_listen: 127.0.0.1:9101
`, regHost, registryPort, srv.TincName, srv.TincDir, !tb.Spec.LegacyTopology, watchdog, poll, max(poll, time.Minute), srv.StateDir, srv.StatusSocket) + tb.egressYAML() + tb.dnsYAML(srv)
}

// StartGatewayOn starts "mgmtnet gateway" in a server's namespace (debug
// logging, so tincd's own lines are in its log) and waits until its status
// shows a first sync.
func (tb *Testbed) StartGatewayOn(ctx context.Context, srv *Server) error {
	dir := filepath.Dir(srv.TincDir)
	if srv.GatewayConfig == "" {
		srv.GatewayConfig = filepath.Join(dir, "gateway.yaml")
		srv.StateDir = filepath.Join(dir, "state")
		srv.StatusSocket = filepath.Join(dir, "status.sock")
		if err := os.WriteFile(srv.GatewayConfig, []byte(tb.GatewayConfigYAMLFor(srv)), 0o644); err != nil {
			return err
		}
	}
	logName := "gateway"
	if srv != tb.Server {
		logName = "gateway-" + srv.TincName
	}
	p, err := tb.Lab.Start(srv.NS, logName, "env", "MGMTNET_LOG=debug", tb.Spec.Mgmtnet, "gateway", "--config", srv.GatewayConfig)
	if err != nil {
		return err
	}
	srv.Gateway = p
	return WaitFor(ctx, 30*time.Second, 100*time.Millisecond, func() error {
		if p.Exited() {
			return fmt.Errorf("mgmtnet gateway exited:\n%s", tail(p.Log(), 20))
		}
		st, err := ReadGatewayStatus(ctx, tb.Spec.Mgmtnet, srv.StatusSocket)
		if err != nil {
			return err
		}
		if st.LastSync == nil {
			return fmt.Errorf("gateway has not synced yet")
		}
		return nil
	})
}

// GatewayStatus is the part of "mgmtnet status --json" the tests read.
type GatewayStatus struct {
	Version   string     `json:"version"`
	LastSync  *time.Time `json:"last_sync"`
	FromCache bool       `json:"from_cache"`
	LastError string     `json:"last_error"`
	Hups      int        `json:"hups"`
	Restarts  int        `json:"restarts"`
	Syncs     int        `json:"syncs"`
	Rejected  []string   `json:"rejected"`
	Members   map[string]int
	Files     map[string]int
	Tincd     struct {
		Managed bool `json:"managed"`
		Pid     int  `json:"pid"`
		Running bool `json:"running"`
	} `json:"tincd"`
	Peers []struct {
		Name      string `json:"name"`
		Connected bool   `json:"connected"`
	} `json:"peers"`
	Egress struct {
		State    string            `json:"state"`
		Weight   int               `json:"weight"`
		Counters map[string]uint64 `json:"counters"`
	} `json:"egress"`
	Warnings       []string `json:"warnings"`
	RefusedSubnets []struct {
		Member string `json:"member"`
		Subnet string `json:"subnet"`
		Count  int    `json:"count"`
	} `json:"refused_subnets"`
	UDPWatchdog struct {
		Enabled bool `json:"enabled"`
		Repairs int  `json:"repairs"`
		Last    []struct {
			Peer string `json:"peer"`
		} `json:"last"`
	} `json:"udp_watchdog"`
	Assignment struct {
		Enabled   bool     `json:"enabled"`
		Gateways  int      `json:"gateways"`
		PerMember int      `json:"per_member"`
		Capacity  int      `json:"capacity"`
		Limit     int      `json:"limit"`
		Assigned  int      `json:"assigned"`
		Held      int      `json:"held"`
		Refused   []string `json:"refused"`
		Unplaced  int      `json:"unplaced"`
	} `json:"assignment"`
}

// Refused reports whether the gateway's tincd refused subnet (in tinc's
// notation, e.g. "0.0.0.0/0#0") from member.
func (s *GatewayStatus) Refused(member, subnet string) bool {
	for _, r := range s.RefusedSubnets {
		if r.Member == member && r.Subnet == subnet {
			return true
		}
	}
	return false
}

// Connected reports whether the gateway's tincd has a connection with peer.
func (s *GatewayStatus) Connected(peer string) bool {
	for _, p := range s.Peers {
		if p.Name == peer {
			return p.Connected
		}
	}
	return false
}

// GatewayStatus asks the server's gateway daemon for its status.
func (tb *Testbed) GatewayStatus(ctx context.Context) (*GatewayStatus, error) {
	return ReadGatewayStatus(ctx, tb.Spec.Mgmtnet, tb.Server.StatusSocket)
}

// ReadGatewayStatus runs "mgmtnet status --json" against a socket.
func ReadGatewayStatus(ctx context.Context, mgmtnet, socket string) (*GatewayStatus, error) {
	var stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, mgmtnet, "status", "--socket", socket, "--json")
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("mgmtnet status: %w: %s", err, bytes.TrimSpace(stderr.Bytes()))
	}
	var st GatewayStatus
	if err := json.Unmarshal(out, &st); err != nil {
		return nil, fmt.Errorf("mgmtnet status --json: %w: %s", err, out)
	}
	return &st, nil
}

// UnregisterNode removes a node from the registry file.
func (tb *Testbed) UnregisterNode(id uint16) error {
	nodes := tb.File.Nodes[:0]
	for _, m := range tb.File.Nodes {
		if m.ID != uint64(id) {
			nodes = append(nodes, m)
		}
	}
	tb.File.Nodes = nodes
	return tb.WriteRegistry()
}

// RegisterHost adds a host (a researcher's laptop that is not running) to
// the registry file: a change that concerns no running member.
func (tb *Testbed) RegisterHost(id uint64) error {
	_, pub, err := tincgen.GenerateKey(nil, 2048)
	if err != nil {
		return err
	}
	name, _ := addressing.TincName(addressing.KindHost, id)
	tb.File.Hosts = append(tb.File.Hosts, registry.FileMember{ID: id, Name: fmt.Sprintf("laptop-%d", id),
		Tinc: &registry.FileTinc{Name: name, PubKey: string(pub)}})
	return tb.WriteRegistry()
}

// Host is a researcher's machine on the community network, outside the
// testbed until it joins ("mgmtnet join").
type Host struct {
	ID       uint64
	NS       *Netns
	TincDir  string
	TincName string
}

// AddHost creates a host's namespace on island 1's bridge, at
// 10.241.1.(100+id).
func (tb *Testbed) AddHost(id uint64) (*Host, error) {
	name := fmt.Sprintf("host-%d", id)
	h := &Host{ID: id, TincDir: filepath.Join(tb.Lab.Dir, name, "tinc")}
	h.TincName, _ = addressing.TincName(addressing.KindHost, id)
	var err error
	if h.NS, err = tb.Lab.AddNetns(name); err != nil {
		return nil, err
	}
	addr := fmt.Sprintf("10.241.1.%d/24", 100+id%100)
	if err := attachAs(h.NS, "eth0", fmt.Sprintf("h-%d", id), tb.CN, "br-1", addr); err != nil {
		return nil, err
	}
	return h, nil
}
