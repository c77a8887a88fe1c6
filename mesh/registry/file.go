package registry

import (
	"bytes"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"strings"

	"github.com/confine-project/mgmtnet/addressing"
	"github.com/confine-project/mgmtnet/mesh"
)

// File is a testbed file: what the static registry Server serves. It is
// JSON, decoded strictly (an unknown key is an error):
//
//	{
//	  "mgmt_ipv6_prefix": "fd65:fc41:c50f::/48",
//	  "dialect": "v1",
//	  "islands": [{"id": 1, "name": "island-1"}],
//	  "servers": [{"id": 2, "name": "server", "island": 1,
//	               "tinc": {"name": "server", "pubkey": "-----BEGIN RSA PUBLIC KEY-----\n...",
//	                        "addresses": [{"addr": "10.0.1.1", "port": 655, "island": 1}]},
//	               "properties": {}}],
//	  "nodes":   [{"id": 31, "name": "node-31", "island": 1,
//	               "tinc": {"name": "node_31", "pubkey": "..."}}],
//	  "hosts":   [{"id": 7, "name": "laptop", "tinc": null}]
//	}
//
// mgmt_ipv6_prefix is required. dialect is "v1" (the default: controller
// v1.0, a top-level "tinc" object, the registry/v1 profiles) or "v0"
// (controllers v0.11.2 to v0.11.9: the registry/v0 profiles and
// mgmt_net.tinc_client and mgmt_net.tinc_server next to the top-level
// "tinc"); both use the "rel/registry/..." relations. Islands, servers, nodes and hosts are optional
// lists. A member's "island" and an address's "island" are island ids
// (0 or absent for none) and must name a listed island. "tinc": null (or
// absent) is a member without a registered key. Each member may also set
// "mgmt_addr" (default: the plan's address for its kind and id) and
// "backend" (default "tinc"; "native" keeps it out of the VPN).
//
// Validate checks only what serving needs (a usable prefix, unique ids,
// known islands and dialect, a management address for everyone). It does
// not check tinc names, keys or addresses: a testbed file may describe a
// broken registry on purpose, to test what consumers reject.
type File struct {
	MgmtPrefix netip.Prefix `json:"mgmt_ipv6_prefix"`
	Dialect    string       `json:"dialect,omitempty"`
	Islands    []FileIsland `json:"islands,omitempty"`
	Servers    []FileMember `json:"servers,omitempty"`
	Nodes      []FileMember `json:"nodes,omitempty"`
	Hosts      []FileMember `json:"hosts,omitempty"`
}

// FileIsland is an island of a testbed file.
type FileIsland struct {
	ID          uint64 `json:"id"`
	Name        string `json:"name"`
	Description string `json:"description,omitempty"`
}

// FileMember is a server, node or host of a testbed file.
type FileMember struct {
	ID         uint64            `json:"id"`
	Name       string            `json:"name"`
	Island     uint64            `json:"island,omitempty"`
	MgmtAddr   string            `json:"mgmt_addr,omitempty"`
	Backend    string            `json:"backend,omitempty"`
	Tinc       *FileTinc         `json:"tinc"`
	Properties map[string]string `json:"properties,omitempty"`
}

// FileTinc is a member's tinc section.
type FileTinc struct {
	Name      string        `json:"name"`
	PubKey    string        `json:"pubkey"`
	Addresses []FileAddress `json:"addresses,omitempty"`
}

// FileAddress is a gateway's tinc address. Port 0 is served as 655.
type FileAddress struct {
	Addr   string `json:"addr"`
	Port   int    `json:"port,omitempty"`
	Island uint64 `json:"island,omitempty"`
}

// LoadFile reads and validates a testbed file.
func LoadFile(path string) (*File, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read testbed file: %w", err)
	}
	f, err := ParseFile(b)
	if err != nil {
		return nil, fmt.Errorf("testbed file %s: %w", path, err)
	}
	return f, nil
}

// ParseFile decodes and validates the JSON of a testbed file.
func ParseFile(b []byte) (*File, error) {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	var f File
	if err := dec.Decode(&f); err != nil {
		return nil, fmt.Errorf("decode: %w", err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, errors.New("decode: trailing data after the JSON object")
	}
	if err := f.Validate(); err != nil {
		return nil, err
	}
	return &f, nil
}

// Validate checks that f can be served: a valid /48 prefix, a known
// dialect, unique ids per kind, islands that exist, ports in 0..65535, and
// a management address for every member (given, or from the plan).
func (f *File) Validate() error {
	if !f.MgmtPrefix.IsValid() {
		return errors.New("mgmt_ipv6_prefix is missing")
	}
	plan, err := addressing.New(f.MgmtPrefix)
	if err != nil {
		return fmt.Errorf("mgmt_ipv6_prefix: %w", err)
	}
	switch f.Dialect {
	case "", DialectV1, DialectV0:
	default:
		return fmt.Errorf("dialect %q: want v1 or v0", f.Dialect)
	}
	islands := map[uint64]bool{}
	for _, is := range f.Islands {
		if is.ID == 0 {
			return fmt.Errorf("island %q: id 0 is not an island (0 means none)", is.Name)
		}
		if islands[is.ID] {
			return fmt.Errorf("island %d is listed twice", is.ID)
		}
		islands[is.ID] = true
	}
	checkIsland := func(what string, id uint64) error {
		if id != 0 && !islands[id] {
			return fmt.Errorf("%s: island %d is not in islands", what, id)
		}
		return nil
	}
	for _, g := range f.groups() {
		seen := map[uint64]bool{}
		for _, m := range g.members {
			what := fmt.Sprintf("%s %d", g.kind, m.ID)
			if seen[m.ID] {
				return fmt.Errorf("%s is listed twice", what)
			}
			seen[m.ID] = true
			if err := checkIsland(what, m.Island); err != nil {
				return err
			}
			if m.MgmtAddr == "" {
				if _, err := plan.Address(addressing.Entity{Kind: g.kind, ID: m.ID}); err != nil {
					return fmt.Errorf("%s: no mgmt_addr, and the plan has none: %w", what, err)
				}
			}
			if m.Tinc == nil {
				continue
			}
			for _, a := range m.Tinc.Addresses {
				if a.Port < 0 || a.Port > 65535 {
					return fmt.Errorf("%s: tinc address %s port %d: want 0..65535", what, a.Addr, a.Port)
				}
				if err := checkIsland(what+" tinc address "+a.Addr, a.Island); err != nil {
					return err
				}
			}
		}
	}
	return nil
}

// group is one member collection of a File.
type group struct {
	kind     addressing.Kind
	name     string // collection path: "servers"
	resource string // profile resource: "server"
	members  []FileMember
}

func (f *File) groups() []group {
	return []group{
		{addressing.KindServer, "servers", "server", f.Servers},
		{addressing.KindNode, "nodes", "node", f.Nodes},
		{addressing.KindHost, "hosts", "host", f.Hosts},
	}
}

// mgmtAddrFunc returns a function of a member's served management
// address: its mgmt_addr, else the plan's address for its kind and id. It
// builds the plan once, not per member.
func (f *File) mgmtAddrFunc() func(addressing.Kind, *FileMember) string {
	plan, planErr := addressing.New(f.MgmtPrefix)
	return func(kind addressing.Kind, m *FileMember) string {
		if m.MgmtAddr != "" {
			return m.MgmtAddr
		}
		if planErr != nil {
			return ""
		}
		a, err := plan.Address(addressing.Entity{Kind: kind, ID: m.ID})
		if err != nil {
			return ""
		}
		return a.String()
	}
}

// assignment is the assignment of members to gateways (mesh.Assignment)
// of the members of f that mesh.Build accepts.
func (f *File) assignment() *mesh.Assignment {
	plan, err := addressing.New(f.MgmtPrefix)
	if err != nil {
		plan = addressing.Default()
	}
	mgmtAddr := f.mgmtAddrFunc()
	var cands []mesh.Candidate
	for _, g := range f.groups() {
		for i := range g.members {
			cands = append(cands, candidateOf(g.kind, &g.members[i], mgmtAddr(g.kind, &g.members[i])))
		}
	}
	return mesh.Build(plan, cands, mesh.BuildOptions{Keys: mesh.NewKeyCache()}).Testbed.Assignment()
}

// Candidate returns a member of f as a client decodes it from the server's
// answer, to validate with mesh.Build: its mgmt_addr defaults to the
// plan's address for its kind and id, as the server renders it.
func (f *File) Candidate(kind addressing.Kind, m *FileMember) mesh.Candidate {
	return candidateOf(kind, m, f.mgmtAddrFunc()(kind, m))
}

func candidateOf(kind addressing.Kind, m *FileMember, mgmtAddr string) mesh.Candidate {
	c := mesh.Candidate{Kind: kind, ID: m.ID, Name: m.Name, Island: m.Island, MgmtAddr: mgmtAddr,
		Backend: m.Backend, Properties: m.Properties}
	if m.Tinc != nil {
		c.Tinc = &mesh.CandidateTinc{Name: m.Tinc.Name, PubKey: m.Tinc.PubKey}
		for _, a := range m.Tinc.Addresses {
			c.Tinc.Addresses = append(c.Tinc.Addresses, mesh.CandidateAddress{Addr: a.Addr, Port: a.Port, Island: a.Island})
		}
	}
	return c
}

// SyntheticSpec describes a synthetic testbed; see Synthetic.
type SyntheticSpec struct {
	Nodes, Hosts, Servers int
	// Keys is how many distinct RSA keys to generate (default
	// min(members, 16)); KeyBits their size (default 2048).
	Keys, KeyBits int
	// Prefix is the management /48 (default fd65:fc41:c50f::/48, VCT's).
	Prefix netip.Prefix
}

// syntheticPrefix is the default prefix of synthetic testbeds: VCT's.
func syntheticPrefix() netip.Prefix { return netip.MustParsePrefix("fd65:fc41:c50f::/48") }

// ParseSyntheticSpec parses "nodes=65520,hosts=1000,servers=10" with
// optional keys=N, keybits=N and prefix=P/48. Missing counts are 0.
// Key bytes differ between runs (crypto/rsa always draws from a secure
// source); everything else is a pure function of the spec.
func ParseSyntheticSpec(s string) (SyntheticSpec, error) {
	var spec SyntheticSpec
	if strings.TrimSpace(s) == "" {
		return spec, errors.New("synthetic spec is empty; want e.g. nodes=100,servers=1,hosts=2")
	}
	seen := map[string]bool{}
	for _, kv := range strings.Split(s, ",") {
		k, v, ok := strings.Cut(strings.TrimSpace(kv), "=")
		if !ok {
			return spec, fmt.Errorf("synthetic spec: %q is not key=value", kv)
		}
		if seen[k] {
			return spec, fmt.Errorf("synthetic spec: %s given twice", k)
		}
		seen[k] = true
		var dst *int
		switch k {
		case "nodes":
			dst = &spec.Nodes
		case "hosts":
			dst = &spec.Hosts
		case "servers":
			dst = &spec.Servers
		case "keys":
			dst = &spec.Keys
		case "keybits":
			dst = &spec.KeyBits
		case "prefix":
			p, err := addressing.ParsePrefix48(v)
			if err == nil {
				_, err = addressing.New(p)
			}
			if err != nil {
				return spec, fmt.Errorf("synthetic spec: prefix=%s: %w", v, err)
			}
			spec.Prefix = p
			continue
		default:
			return spec, fmt.Errorf("synthetic spec: unknown key %q; want nodes, hosts, servers, keys, keybits or prefix", k)
		}
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 {
			return spec, fmt.Errorf("synthetic spec: %s=%s: want a non-negative integer", k, v)
		}
		*dst = n
	}
	return spec, spec.check()
}

// maxSyntheticServers is how many servers fit in the two documentation
// /24s used for their tinc addresses.
const maxSyntheticServers = 2 * 254

func (s SyntheticSpec) check() error {
	switch {
	case s.Nodes < 0 || s.Nodes > int(addressing.MaxNode):
		return fmt.Errorf("synthetic spec: nodes=%d: want 0..%d", s.Nodes, addressing.MaxNode)
	case s.Servers < 0 || s.Servers > maxSyntheticServers:
		return fmt.Errorf("synthetic spec: servers=%d: want 0..%d", s.Servers, maxSyntheticServers)
	case s.Hosts < 0 || s.Hosts > 1<<24:
		return fmt.Errorf("synthetic spec: hosts=%d: want 0..%d", s.Hosts, 1<<24)
	case s.Keys < 0 || s.Keys > 4096:
		return fmt.Errorf("synthetic spec: keys=%d: want 0..4096", s.Keys)
	case s.KeyBits != 0 && (s.KeyBits < mesh.MinRSABits || s.KeyBits > 8192):
		return fmt.Errorf("synthetic spec: keybits=%d: want %d..8192 (consumers refuse smaller keys)", s.KeyBits, mesh.MinRSABits)
	}
	return nil
}

// Synthetic builds a testbed of spec.Nodes nodes (ids 1..N, tinc names
// node_<id>), spec.Servers servers (ids 2..S+1; id 2 is tinc name
// "server", the others server_<id>; each with one tinc address in
// 198.51.100.0/24, then 203.0.113.0/24) and spec.Hosts hosts (ids 1..H,
// host_<id>), all in island 1.
//
// The keys are real PKCS#1 RSA public keys, but generating one per member
// would take minutes for a large testbed, so spec.Keys distinct keys are
// generated and assigned round-robin: keys repeat across members. tinc does
// not require distinct keys, and the bytes are as realistic as any.
func Synthetic(spec SyntheticSpec) (*File, error) {
	if err := spec.check(); err != nil {
		return nil, err
	}
	total := spec.Nodes + spec.Hosts + spec.Servers
	if spec.Keys == 0 {
		spec.Keys = min(total, 16)
	}
	if spec.KeyBits == 0 {
		spec.KeyBits = 2048
	}
	if !spec.Prefix.IsValid() {
		spec.Prefix = syntheticPrefix()
	}
	keys := make([]string, spec.Keys)
	for i := range keys {
		k, err := GeneratePublicKeyPEM(spec.KeyBits)
		if err != nil {
			return nil, err
		}
		keys[i] = k
	}
	next := 0
	key := func() string {
		k := keys[next%len(keys)]
		next++
		return k
	}
	f := &File{
		MgmtPrefix: spec.Prefix,
		Dialect:    DialectV1,
		Islands:    []FileIsland{{ID: 1, Name: "island-1"}},
	}
	for i := range spec.Servers {
		id := uint64(i + 2)
		name, _ := addressing.TincName(addressing.KindServer, id)
		addr := fmt.Sprintf("198.51.100.%d", i+1)
		if i >= 254 {
			addr = fmt.Sprintf("203.0.113.%d", i-253)
		}
		f.Servers = append(f.Servers, FileMember{
			ID: id, Name: strings.ReplaceAll(name, "_", "-"), Island: 1,
			Tinc:       &FileTinc{Name: name, PubKey: key(), Addresses: []FileAddress{{Addr: addr, Port: 655, Island: 1}}},
			Properties: map[string]string{},
		})
	}
	f.Nodes = make([]FileMember, 0, spec.Nodes)
	for i := range spec.Nodes {
		id := uint64(i + 1)
		f.Nodes = append(f.Nodes, FileMember{
			ID: id, Name: "node-" + strconv.FormatUint(id, 10), Island: 1,
			Tinc:       &FileTinc{Name: "node_" + strconv.FormatUint(id, 10), PubKey: key()},
			Properties: map[string]string{},
		})
	}
	for i := range spec.Hosts {
		id := uint64(i + 1)
		f.Hosts = append(f.Hosts, FileMember{
			ID: id, Name: "host-" + strconv.FormatUint(id, 10),
			Tinc: &FileTinc{Name: "host_" + strconv.FormatUint(id, 10), PubKey: key()},
		})
	}
	if err := f.Validate(); err != nil {
		return nil, fmt.Errorf("synthetic testbed: %w", err)
	}
	return f, nil
}

// GeneratePublicKeyPEM generates an RSA key of bits and returns its public
// half as tinc writes it: PEM "RSA PUBLIC KEY" (PKCS#1), 64-column base64
// lines, ending in a newline. The private half is discarded.
func GeneratePublicKeyPEM(bits int) (string, error) {
	k, err := rsa.GenerateKey(rand.Reader, bits)
	if err != nil {
		return "", fmt.Errorf("generate %d-bit RSA key: %w", bits, err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "RSA PUBLIC KEY", Bytes: x509.MarshalPKCS1PublicKey(&k.PublicKey)})), nil
}

// Count returns how many servers, nodes and hosts f has.
func (f *File) Count() (servers, nodes, hosts int) {
	return len(f.Servers), len(f.Nodes), len(f.Hosts)
}

// sortedByID returns ms sorted by id, without modifying ms.
func sortedByID(ms []FileMember) []FileMember {
	out := slices.Clone(ms)
	slices.SortStableFunc(out, func(a, b FileMember) int {
		switch {
		case a.ID < b.ID:
			return -1
		case a.ID > b.ID:
			return 1
		}
		return 0
	})
	return out
}
