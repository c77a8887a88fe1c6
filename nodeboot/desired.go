package nodeboot

import (
	"bytes"
	"errors"
	"fmt"
	"hash/fnv"
	"io/fs"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	"github.com/confine-project/mgmtnet/addressing"
	"github.com/confine-project/mgmtnet/mesh"
	"github.com/confine-project/mgmtnet/tincgen"
)

// The tinc interface of the management network (confine.md §4): MTU 1400,
// and the node's address is added with the whole /48 as its prefix.
const (
	tincMTU    = 1400
	tincUpBits = 48
)

// Names of the files node-boot writes, relative to the tinc directory.
const (
	ConfFile     = "tinc.conf"
	TincUpFile   = "tinc-up"
	TincDownFile = "tinc-down"
	HostsDir     = "hosts"
	KeyFile      = "rsa_key.priv"
)

// Gateway is a gateway the node connects to: its tinc name and the bytes
// of its host file.
type Gateway struct {
	Name string
	Host []byte
	// Egress reports that the gateway offers Internet egress (its host
	// file announces 0.0.0.0/0).
	Egress bool
}

// TincInterface is the node's tinc interface when egress is on: tinc.conf
// names it, so that the egress rules can name it too (it is what
// "tincd ... -n confine" calls it anyway).
const TincInterface = "confine"

// Tinc timers on a node that uses egress. A gateway that stops or
// withdraws its egress closes its connections, and the node moves to the
// next gateway at once; only a gateway that vanishes without a word (power
// loss, cut cable) is found out by pings, within PingInterval +
// PingTimeout. tinc's defaults (60 s + 5 s) would leave the slivers
// without Internet for a minute; 10 s + 2 s cost one small meta packet
// every 10 s per idle connection (80/s at a gateway holding 800 idle
// nodes, against 13/s with the defaults).
const (
	egressPingInterval = "10"
	egressPingTimeout  = "2"
)

// Reconnect timers of every node. tinc 1.0 retries a lost gateway 5 s
// later, then 5 s more per failed attempt, up to MaxTimeout (900 s by
// default), and a gateway accepts at most 10 new connections a second,
// refusing (tarpitting) the rest. After a gateway restart its nodes all
// lose it in the same second; with one MaxTimeout they would come back in
// waves, each admitting about 10 of them and sending the rest to wait a
// whole MaxTimeout again. So each node's MaxTimeout is minMaxTimeout plus
// a share of maxTimeoutSpread fixed by its name (MaxTimeout): the retries
// spread out over the interval, and the gateway admits 10 a second
// continuously. A node retries a gateway that is down at most every
// 20 s, and is back on a restarted one within about that once admitted.
const (
	minMaxTimeout    = 10
	maxTimeoutSpread = 11
)

// MaxTimeout is the tinc MaxTimeout node-boot writes for the node of
// this tinc name: 10..20 s, fixed by a hash of the name.
func MaxTimeout(tincName string) int {
	h := fnv.New32a()
	h.Write([]byte(tincName))
	return minMaxTimeout + int(h.Sum32()%maxTimeoutSpread)
}

// DesiredOptions are the optional parts of a node's desired files.
type DesiredOptions struct {
	// Egress routes the slivers' Internet traffic through the egress
	// gateways: the node announces its egress /32, tinc.conf names the
	// interface and shortens the ping timers, and tinc-up also runs
	// EgressUp (the device-bound part of the egress routes, which a tincd
	// restart takes away with the old interface).
	Egress   bool
	EgressUp string
	// OwnHost is the node's own host file as it is on disk (nil for
	// none). When it means the same as the one DesiredFiles renders
	// (tincgen.EquivalentHosts: the same Subnets, the same key in either
	// PEM form, no other line that differs), DesiredFiles keeps its bytes.
	// The file the controller ships (SPKI key after a blank line) and the
	// one the firmware shell writes (Subnet with the UCI's zero-padded
	// id, PKCS#1 key on the next line) then stay as they are, and tincd is
	// not restarted only to change the form of its own host file.
	OwnHost []byte
}

// File is one file of the tinc directory: its path relative to the
// directory ("tinc.conf", "hosts/server"), content and mode.
type File struct {
	Name string
	Data []byte
	Mode fs.FileMode
}

// Desired is the content node-boot wants in the tinc directory, sorted by
// name. Files not listed are left alone.
type Desired struct {
	Files []File
}

// Equal reports whether d and o list the same files with the same bytes
// and modes.
func (d Desired) Equal(o Desired) bool {
	return slices.EqualFunc(d.Files, o.Files, func(a, b File) bool {
		return a.Name == b.Name && a.Mode == b.Mode && bytes.Equal(a.Data, b.Data)
	})
}

// Lookup returns the file with the given name.
func (d Desired) Lookup(name string) (File, bool) {
	i, ok := slices.BinarySearchFunc(d.Files, name, func(f File, n string) int { return strings.Compare(f.Name, n) })
	if !ok {
		return File{}, false
	}
	return d.Files[i], true
}

// ErrNoGateway is returned when the node has no gateway to connect to, so
// it could not join the management network.
var ErrNoGateway = errors.New("no gateway to connect to")

// DesiredFiles returns the files of a node's tinc directory: its own host file
// hosts/node_<id> (its /64 and the public key pub, PEM), tinc.conf (Name
// and one ConnectTo per gateway: cfg.TincGateway first when it is one of
// them, then the others by name), tinc-up and tinc-down (the node's
// address P:N::2 with /48, MTU 1400), and hosts/<name> of each gateway with
// the given bytes; o adds egress and may keep the node's existing host
// file (DesiredOptions.OwnHost). It is pure: the same inputs give the same
// value.
func DesiredFiles(cfg Config, pub []byte, gateways []Gateway, o DesiredOptions) (Desired, error) {
	plan, err := cfg.Plan()
	if err != nil {
		return Desired{}, err
	}
	addr, err := plan.NodeAddr(cfg.NodeID)
	if err != nil {
		return Desired{}, err
	}
	subnet, err := plan.NodeSubnet(cfg.NodeID)
	if err != nil {
		return Desired{}, err
	}
	if len(bytes.TrimSpace(pub)) == 0 {
		return Desired{}, errors.New("desired files: no public key")
	}
	own := cfg.TincName()
	if len(gateways) == 0 {
		return Desired{}, ErrNoGateway
	}
	names := make([]string, 0, len(gateways))
	subnets := []tincgen.Subnet{tincgen.NewSubnet(subnet)}
	tincUp := tincgen.RenderTincUp(addr, tincUpBits, tincMTU)
	// The tunnel-server topology (docs/topology.md): the node's tincd
	// forwards nothing between its gateways and routes by its host files
	// alone, which the registry grants.
	opts := []tincgen.Option{{Key: "TunnelServer", Value: "yes"}, {Key: "MaxTimeout", Value: strconv.Itoa(MaxTimeout(own))}}
	if o.Egress {
		ea, err := plan.EgressIPv4(cfg.NodeID)
		if err != nil {
			return Desired{}, err
		}
		subnets = append(subnets, tincgen.NewSubnet(netip.PrefixFrom(ea, 32)))
		tincUp = append(tincUp, o.EgressUp...)
		opts = append(opts, []tincgen.Option{{Key: "Interface", Value: TincInterface},
			{Key: "PingInterval", Value: egressPingInterval}, {Key: "PingTimeout", Value: egressPingTimeout}}...)
	}
	ownHost := tincgen.RenderHost(tincgen.Host{Subnets: subnets, PublicKey: string(pub)})
	if o.OwnHost != nil && tincgen.EquivalentHosts(o.OwnHost, ownHost) {
		ownHost = o.OwnHost
	}
	files := []File{
		{Name: HostsDir + "/" + own, Mode: 0o644, Data: ownHost},
		{Name: TincUpFile, Mode: 0o755, Data: tincUp},
		{Name: TincDownFile, Mode: 0o755, Data: tincgen.RenderTincDown(addr, tincUpBits)},
	}
	seen := map[string]bool{}
	for _, g := range gateways {
		switch {
		case !tincgen.ValidName(g.Name):
			return Desired{}, fmt.Errorf("desired files: gateway %q: not a tinc name", g.Name)
		case g.Name == own:
			return Desired{}, fmt.Errorf("desired files: gateway %s is this node", g.Name)
		case seen[g.Name]:
			return Desired{}, fmt.Errorf("desired files: gateway %s listed twice", g.Name)
		}
		seen[g.Name] = true
		names = append(names, g.Name)
		files = append(files, File{Name: HostsDir + "/" + g.Name, Mode: 0o644, Data: g.Host})
	}
	files = append(files, File{Name: ConfFile, Mode: 0o644, Data: tincgen.RenderConf(tincgen.Conf{
		Name: own, ConnectTo: connectOrder(names, cfg.TincGateway), Options: opts,
	})})
	slices.SortFunc(files, func(a, b File) int { return strings.Compare(a.Name, b.Name) })
	return Desired{Files: files}, nil
}

// connectOrder sorts gateway names, with first (the UCI tinc_gateway) in
// front when it is one of them.
func connectOrder(names []string, first string) []string {
	out := slices.Clone(names)
	slices.SortFunc(out, func(a, b string) int {
		switch {
		case a == b:
			return 0
		case a == first:
			return -1
		case b == first:
			return 1
		}
		return strings.Compare(a, b)
	})
	return out
}

// RegistryGateways picks the node's gateways from what the registry
// answered: it validates the candidates with mesh.Build (against the
// prefix mesh.ChoosePrefix picks, with cfg.Prefix as the fallback), keeps
// the members with tinc addresses except the node itself, and renders
// their host files with the node's own island's addresses first. island
// is the island of the registry's node with cfg.NodeID (0 when absent).
// notes are the rejected candidates and warnings, to report.
func RegistryGateways(cfg Config, declared netip.Prefix, cands []mesh.Candidate) (gws []Gateway, island uint64, notes []string, err error) {
	prefix, note := mesh.ChoosePrefix(declared, cfg.Prefix, cands)
	if note != "" {
		notes = append(notes, note)
	}
	notes = append(notes, prefixNotes(cfg, prefix)...)
	plan, err := addressing.New(prefix)
	if err != nil {
		return nil, 0, notes, fmt.Errorf("registry management prefix: %w", err)
	}
	for i := range cands {
		if cands[i].Kind == addressing.KindNode && cands[i].ID == uint64(cfg.NodeID) {
			island = cands[i].Island
			break
		}
	}
	res := mesh.Build(plan, cands, mesh.BuildOptions{})
	for _, p := range res.Rejected {
		notes = append(notes, "rejected "+p.String())
	}
	for _, p := range res.Warnings {
		notes = append(notes, "warning: "+p.String())
	}
	gws, more := SnapshotGateways(cfg, res.Testbed, island)
	return gws, island, append(notes, more...), nil
}

// SnapshotGateways is RegistryGateways on a validated testbed (from
// package source), for a node in island.
func SnapshotGateways(cfg Config, tb *mesh.Testbed, island uint64) (gws []Gateway, notes []string) {
	plan := tb.Plan()
	own := cfg.TincName()
	// The node connects to the gateways the testbed's assignment gives it
	// (mesh.Assignment), which are the ones that hold its host file. A
	// node the registry does not list as a member (no key yet, or
	// rejected) has no assignment: it gets every gateway, as in the
	// controller's topology.
	assigned, ok := tb.Assignment().Of(own)
	if ok && len(assigned) == 0 {
		notes = append(notes, fmt.Sprintf("no gateway has room for %s (every gateway is at its %s): connecting to none until the registry adds gateways", own, mesh.CapacityProperty))
	}
	for _, m := range tb.Gateways() {
		if m.TincName == own || (ok && !slices.Contains(assigned, m.TincName)) {
			continue
		}
		gws = append(gws, Gateway{Name: m.TincName, Host: tincgen.RenderHost(tincgen.NodeGatewayHost(plan, m, island)), Egress: m.Egress.Offered})
	}
	return gws, notes
}

// prefixNotes says when the registry's prefix is not the node's.
func prefixNotes(cfg Config, prefix netip.Prefix) []string {
	if prefix == cfg.Prefix {
		return nil
	}
	return []string{fmt.Sprintf("the registry's management prefix %s differs from this node's %s (%s testbed mgmt_ipv6_prefix48)", prefix, cfg.Prefix, cfg.File)}
}
