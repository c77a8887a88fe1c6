package nodeboot

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"

	"github.com/confine-project/mgmtnet/tincgen"
)

// FirmwareGateways returns the gateways the firmware shipped, for when the
// registry does not answer (at first boot a node usually cannot reach it
// before tinc is up): the existing host file of cfg.TincGateway in
// tincDir/hosts, kept as it is, the other host files there that have an
// Address (the gateways an earlier boot got from the registry, and every
// gateway of an image made before the controller's tinc_gateway, Nov 2014,
// whose firmware connected to each file in hosts/), and every file in
// gatewaysDir (/etc/confine/tinc-gateways, where later images put the
// gateways other than tinc_gateway; the firmware itself never reads it)
// whose name is a valid tinc name (other than the node's own and those
// hosts/ already has), copied. A file that tincgen.ParseHost rejects, or
// that has no Address or no public key, is skipped and named in notes. A
// missing gatewaysDir is not an error.
func FirmwareGateways(cfg Config, tincDir, gatewaysDir string) (gws []Gateway, notes []string, err error) {
	own := cfg.TincName()
	seen := map[string]bool{own: true}
	add := func(name, path string) error {
		b, err := tincgen.ReadRegularFile(path)
		if err != nil {
			return fmt.Errorf("read gateway host file: %w", err)
		}
		h, err := tincgen.ParseHost(b)
		switch {
		case err != nil:
			notes = append(notes, fmt.Sprintf("skipped gateway file %s: not a tinc host file: %v", path, err))
			return nil
		case len(h.Addresses) == 0:
			// tincd cannot ConnectTo a host without an address.
			notes = append(notes, fmt.Sprintf("skipped gateway file %s: no Address line", path))
			return nil
		case h.PublicKey == "":
			notes = append(notes, fmt.Sprintf("skipped gateway file %s: no public key", path))
			return nil
		}
		seen[name] = true
		egress := slices.ContainsFunc(h.Subnets, func(s tincgen.Subnet) bool { return s.Prefix == tincgen.EgressDefault })
		gws = append(gws, Gateway{Name: name, Host: b, Egress: egress})
		return nil
	}
	if !seen[cfg.TincGateway] {
		path := filepath.Join(tincDir, HostsDir, cfg.TincGateway)
		if st, err := os.Stat(path); err == nil && st.Mode().IsRegular() {
			if err := add(cfg.TincGateway, path); err != nil {
				return nil, notes, err
			}
		} else if err != nil && !errors.Is(err, fs.ErrNotExist) {
			return nil, notes, fmt.Errorf("gateway host file: %w", err)
		}
	}
	// The other gateways in hosts/: those an earlier boot took from the
	// registry (with the assignment of members to gateways, cfg.TincGateway
	// may not be one of them and may refuse this node), and an old image's
	// files. A file there without an Address is not a gateway's.
	if entries, err := os.ReadDir(filepath.Join(tincDir, HostsDir)); err == nil {
		for _, e := range entries {
			name := e.Name()
			if !tincgen.ValidName(name) || seen[name] || !e.Type().IsRegular() {
				continue
			}
			path := filepath.Join(tincDir, HostsDir, name)
			b, err := tincgen.ReadRegularFile(path)
			if err != nil {
				continue
			}
			if h, err := tincgen.ParseHost(b); err != nil || len(h.Addresses) == 0 {
				continue
			}
			if err := add(name, path); err != nil {
				return nil, notes, err
			}
		}
	}
	if gatewaysDir == "" {
		return gws, notes, nil
	}
	entries, err := os.ReadDir(gatewaysDir)
	if errors.Is(err, fs.ErrNotExist) {
		return gws, notes, nil
	}
	if err != nil {
		return nil, notes, fmt.Errorf("read gateways directory: %w", err)
	}
	for _, e := range entries { // sorted by name
		name := e.Name()
		if !tincgen.ValidName(name) || seen[name] {
			continue
		}
		path := filepath.Join(gatewaysDir, name)
		st, err := os.Stat(path) // follows a symlink
		if err != nil || !st.Mode().IsRegular() {
			continue
		}
		if err := add(name, path); err != nil {
			return nil, notes, err
		}
	}
	return gws, notes, nil
}
