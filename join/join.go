// Package join puts a researcher's host on the management network with a
// one-time invite, as "tinc join" does for tinc 1.1: it makes (or keeps)
// the host's tinc key, registers it with the registry's invite (which
// names the host), reads the registry, and writes the host's tinc
// directory: its own host file, the host files of its gateways (with the
// covering /48, as nodes hold them in the tunnel-server topology),
// tinc.conf and tinc-up/down. Starting tincd is the caller's.
//
// Every file is written whole or not at all (tincgen.WriteFileAtomic); a
// tinc.conf of another Name is not replaced.
package join

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"

	"github.com/confine-project/mgmtnet/addressing"
	"github.com/confine-project/mgmtnet/mesh"
	"github.com/confine-project/mgmtnet/mesh/registry"
	"github.com/confine-project/mgmtnet/source"
	"github.com/confine-project/mgmtnet/tincgen"
)

// Options are a join's settings.
type Options struct {
	// Registry is the registry's base URI and Token the invite's key
	// ("mgmtnet registry invite --host ID").
	Registry, Token string
	// TincDir is the tinc directory to write (/etc/tinc/<net>).
	TincDir string
	// Client are the registry client's options (TLS, timeouts).
	Client registry.Options
	// KeyBits is the size of a new RSA key; default 2048.
	KeyBits int
	Logger  *slog.Logger
}

// Result is what a join did.
type Result struct {
	TincName string
	ID       uint64
	Addr     netip.Addr // the host's management address
	Gateways []string
	// KeyGenerated is set when the host had no key yet.
	KeyGenerated bool
	Written      []string // files, relative to TincDir
}

// tincMTU and tincUpBits are the plan's tunnel MTU and the management
// network's prefix length, as on nodes.
const (
	tincMTU    = 1400
	tincUpBits = 48
)

// Run joins. A failure before the enrolment leaves the invite unspent; one
// after it leaves the key registered, and running again with a new
// invite (or fetch-hosts) finishes.
func Run(ctx context.Context, o Options) (Result, error) {
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.KeyBits == 0 {
		o.KeyBits = 2048
	}
	o.Client.Logger = o.Logger
	var res Result
	if err := os.MkdirAll(filepath.Join(o.TincDir, "hosts"), 0o755); err != nil {
		return res, fmt.Errorf("join: %w", err)
	}
	pub, generated, err := key(o.TincDir, o.KeyBits)
	if err != nil {
		return res, err
	}
	res.KeyGenerated = generated
	c, err := registry.New(o.Registry, o.Client)
	if err != nil {
		return res, fmt.Errorf("join: %w", err)
	}
	id, err := c.EnrolInvite(ctx, "hosts", o.Token, string(pub))
	var refused *registry.EnrolRefused
	switch {
	case errors.As(err, &refused) && refused.Status == 403:
		return res, fmt.Errorf("join: the registry refused the invite: %s (an invite for a node is refused here too: a node enrols at boot, mgmtnet node-boot --enrol KEY)", refused.Detail)
	case err != nil:
		return res, fmt.Errorf("join: %w", err)
	}
	res.ID = id
	res.TincName, _ = addressing.TincName(addressing.KindHost, id)
	src, err := source.New(source.Config{URL: o.Registry, Client: o.Client, Logger: o.Logger})
	if err != nil {
		return res, fmt.Errorf("join: %w", err)
	}
	snap, err := src.Fetch(ctx)
	if err != nil {
		return res, fmt.Errorf("join: registered, but: %w", err)
	}
	files, err := desiredFiles(snap.Testbed, snap.Prefix, res.TincName, pub)
	if err != nil {
		return res, fmt.Errorf("join: registered, but: %w", err)
	}
	res.Gateways = files.gateways
	me, _ := snap.Testbed.Lookup(res.TincName)
	res.Addr = me.Addr
	if err := checkConf(o.TincDir, res.TincName); err != nil {
		return res, err
	}
	for _, f := range files.files {
		if err := tincgen.WriteFileAtomic(filepath.Join(o.TincDir, f.name), f.data, f.mode); err != nil {
			return res, fmt.Errorf("join: %w", err)
		}
		res.Written = append(res.Written, f.name)
	}
	return res, nil
}

// key returns the public key of TincDir/rsa_key.priv, made first when
// there is none.
func key(dir string, bits int) (pub []byte, generated bool, err error) {
	path := filepath.Join(dir, "rsa_key.priv")
	b, err := os.ReadFile(path)
	switch {
	case err == nil:
		pub, err = tincgen.PublicKeyOf(b)
		if err != nil {
			return nil, false, fmt.Errorf("join: %s: %w", path, err)
		}
		return pub, false, nil
	case !errors.Is(err, fs.ErrNotExist):
		return nil, false, fmt.Errorf("join: %w", err)
	}
	priv, pub, err := tincgen.GenerateKey(nil, bits)
	if err != nil {
		return nil, false, fmt.Errorf("join: make a key: %w", err)
	}
	if err := tincgen.WriteFileAtomic(path, priv, 0o600); err != nil {
		return nil, false, fmt.Errorf("join: %w", err)
	}
	return pub, true, nil
}

// checkConf refuses to replace a tinc.conf of another Name.
func checkConf(dir, name string) error {
	b, err := os.ReadFile(filepath.Join(dir, "tinc.conf"))
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("join: %w", err)
	}
	c, err := tincgen.ParseConf(b)
	if err == nil && c.Name != name {
		return fmt.Errorf("join: %s/tinc.conf is of %q, not %s: not replacing it (use another --tinc-dir)", dir, c.Name, name)
	}
	return nil
}

type file struct {
	name string
	data []byte
	mode fs.FileMode
}

type desired struct {
	files    []file
	gateways []string
}

// desiredFiles is the host's tinc directory for the testbed tb: its own host
// file (its Subnets as the registry grants them, and pub), its gateways'
// (the assignment's, else every gateway), tinc.conf and tinc-up/down. The
// registry must list the host with pub.
func desiredFiles(tb *mesh.Testbed, prefix netip.Prefix, name string, pub []byte) (desired, error) {
	me, ok := tb.Lookup(name)
	if !ok {
		return desired{}, fmt.Errorf("the registry does not list %s (rejected? see its log)", name)
	}
	norm, err := mesh.NormalizePublicKey(string(pub))
	if err != nil || norm != me.PubKey {
		return desired{}, fmt.Errorf("the registry lists %s with another key than this host's", name)
	}
	plan, err := addressing.New(prefix)
	if err != nil {
		return desired{}, err
	}
	gws, ok := tb.Assignment().Of(name)
	if !ok || len(gws) == 0 {
		gws = nil
		for _, g := range tb.Gateways() {
			gws = append(gws, g.TincName)
		}
	}
	if len(gws) == 0 {
		return desired{}, errors.New("the registry lists no gateway")
	}
	slices.Sort(gws)
	own := tincgen.HostFor(me, 0)
	own.PublicKey = string(pub)
	d := desired{gateways: gws, files: []file{{name: "hosts/" + name, data: tincgen.RenderHost(own), mode: 0o644}}}
	for _, g := range gws {
		m, ok := tb.Lookup(g)
		if !ok {
			return desired{}, fmt.Errorf("gateway %s is not in the registry", g)
		}
		d.files = append(d.files, file{name: "hosts/" + g, data: tincgen.RenderHost(tincgen.NodeGatewayHost(plan, m, 0)), mode: 0o644})
	}
	d.files = append(d.files,
		file{name: "tinc-up", data: tincgen.RenderTincUp(me.Addr, tincUpBits, tincMTU), mode: 0o755},
		file{name: "tinc-down", data: tincgen.RenderTincDown(me.Addr, tincUpBits), mode: 0o755},
		file{name: "tinc.conf", data: tincgen.RenderConf(tincgen.Conf{Name: name, ConnectTo: gws,
			Options: []tincgen.Option{{Key: "TunnelServer", Value: "yes"}, {Key: "MaxTimeout", Value: strconv.Itoa(60)}}}), mode: 0o644})
	return d, nil
}
