package gateway

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"path/filepath"
	"runtime/debug"
	"slices"
	"strings"
	"time"

	"github.com/confine-project/mgmtnet/mesh"
	"github.com/confine-project/mgmtnet/source"
	"github.com/confine-project/mgmtnet/tinc"
	"github.com/confine-project/mgmtnet/tincgen"
)

// The host sync component: the data path from the snapshot source to the
// tinc host files and tinc.conf (source -> render -> change-only sync ->
// the tinc applier), its repairs after tampering, and the last-known-good
// fallback.

// Check fetches once and writes the unified diff of what a reconcile would
// change to w. It changes nothing.
func (d *Daemon) Check(ctx context.Context, w io.Writer) (changed bool, err error) {
	d.hosts.src.Forget()
	snap, err := d.hosts.src.Fetch(ctx)
	if err != nil {
		return false, err
	}
	d.logNotes(snap)
	for _, p := range snap.Rejected {
		fmt.Fprintf(w, "# rejected %s\n", p)
	}
	files, own, err := d.desired(snap.Testbed)
	if err != nil {
		return false, err
	}
	rep, err := d.tincd.app.Sync(files, d.syncOptions(own, true))
	if err != nil && !errors.Is(err, tincgen.ErrMassDeletion) {
		return false, err
	}
	io.WriteString(w, rep.Diff)
	return rep.Changed(), err
}

// logNotes logs how the prefix of a snapshot was chosen, when the
// registry's own did not hold the members.
func (d *Daemon) logNotes(snap source.Snapshot) {
	for _, n := range snap.Notes {
		d.log.Warn(n)
	}
}

// desired renders the host files of tb, this gateway's own included: the
// daemon owns the tinc directory, and the registry says which Subnets this
// gateway may announce (a change of them is one SIGHUP under TunnelServer,
// which implies StrictSubnets and so re-reads the own file, and a restart
// without it). The own file is never removed,
// even when the registry stops listing this gateway. (fetch-hosts, a
// one-shot tool on machines it does not own, writes it only when missing.)
//
// The files are rendered one at a time as the sync compares and writes
// them (tincgen.HostSource), never all at once.
func (d *Daemon) desired(tb *mesh.Testbed) (tincgen.Source, string, error) {
	return tincgen.NewHostSource(tb, d.hostOptions(tb)), d.cfg.Identity.TincName, nil
}

func (d *Daemon) syncOptions(own string, dry bool) tincgen.SyncOptions {
	o := tincgen.SyncOptions{DryRun: dry, Guard: d.cfg.guard(d.opts.Force),
		Owned:  func(name string) bool { return name != own && tincgen.OwnedName(name) },
		Logger: d.log}
	if d.cfg.Tinc.TunnelServer {
		// TunnelServer implies StrictSubnets: tincd re-reads every
		// file's Subnets on SIGHUP, so a change of Subnets alone (another
		// gateway's relay routes, a node's egress /32) need not close
		// that peer's connection.
		o.KeepTime = func(name string) bool { return name != own }
	}
	return o
}

// reconcile fetches and applies. full compares every file even on 304.
func (d *Daemon) reconcile(ctx context.Context, full bool) error {
	full = full || d.hosts.fullDue
	d.hosts.syncs++
	d.m.syncs.Inc()
	fetched, tb := d.hosts.validators, d.hosts.tb
	err := d.reconcile1(ctx, full)
	d.publishFeed()
	if full || !maps.Equal(fetched, d.hosts.validators) || tb != d.hosts.tb {
		// A changed snapshot, or a full comparison, went through the whole
		// registry answer, the decoded candidates, the rendered files or
		// every file on disk; none of it is live any more. Hand the memory
		// back now rather than keep the peak resident for months (the
		// gateway's RSS target is for 66 000 members).
		debug.FreeOSMemory()
	}
	if err != nil {
		d.lastErr = err.Error()
		d.m.syncErrors.Inc()
		d.log.Error("reconcile failed; keeping the last good state", "err", err)
		d.event(EventSyncFailed)
	} else {
		d.lastErr = ""
		d.hosts.fullDue = false
		d.applyEgressKernel(ctx)
		d.event(EventSynced)
	}
	d.notifyStatus()
	return err
}

func (d *Daemon) reconcile1(ctx context.Context, full bool) error {
	start := time.Now()
	snap, err := d.hosts.src.Fetch(ctx)
	fetched := time.Now()
	if err != nil {
		if !errors.Is(err, mesh.ErrMassDeletion) {
			d.hosts.regErr = err.Error()
		}
		return err
	}
	d.hosts.regErr = ""
	if snap.NotModified {
		// The registry confirmed what we run on, also when that came from
		// the cache.
		d.hosts.fromCache = false
		d.m.snapshotFromCache.Set(0)
		if full && d.hosts.tb != nil {
			return d.apply(ctx, d.hosts.tb, false)
		}
		d.hosts.lastSync = time.Now()
		d.m.lastSync.SetToCurrentTime()
		return d.signalPending(ctx)
	}
	d.logNotes(snap)
	var rejected []string
	for _, p := range snap.Rejected {
		rejected = append(rejected, p.String())
	}
	var warnings []string
	for _, p := range snap.Warnings {
		warnings = append(warnings, p.String())
		if !slices.Contains(d.hosts.warnings, p.String()) {
			// Once per snapshot that brings it: a registry field that
			// the grant policy refuses, an unusable tinc address.
			d.log.Warn("registry member kept without a part of it", "problem", p.String())
		}
	}
	// The DNS zone follows the source, not the host files: a snapshot
	// that validated is served even when writing the files failed.
	d.dnsSetTestbed(snap.Testbed)
	d.hosts.incremental = !full
	zoned := time.Now()
	if err := d.apply(ctx, snap.Testbed, false); err != nil {
		if errors.Is(err, tincgen.ErrMassDeletion) {
			return fmt.Errorf("%w: the registry returned %d members (%d rejected); keeping the old snapshot", err, snap.Testbed.Len(), len(rejected))
		}
		return err
	}
	d.log.Debug("new snapshot applied", "from_feed", snap.FromFeed, "fetch", fetched.Sub(start), "dns", zoned.Sub(fetched), "apply", time.Since(zoned))
	d.hosts.src.Commit(snap)
	d.hosts.prefix, d.hosts.validators, d.hosts.rejected, d.hosts.warnings = snap.Prefix, snap.Validators, rejected, warnings
	d.hosts.fromCache = false
	d.m.snapshotFromCache.Set(0)
	d.m.rejected.Set(float64(len(rejected)))
	return nil
}

// apply writes tb's host files and reloads or restarts tincd. On success
// tb becomes the applied snapshot.
func (d *Daemon) apply(ctx context.Context, tb *mesh.Testbed, repair bool) error {
	files, own, err := d.desired(tb)
	if err != nil {
		return err
	}
	opts := d.syncOptions(own, false)
	nodeEgress := tincgen.OffersEgress(tb, d.hostOptions(tb).Egress)
	if d.hosts.incremental && d.hosts.tb != nil && !repair && nodeEgress == d.hosts.nodeEgress {
		// Only the members that changed since the applied snapshot: their
		// files are compared and written, the others are not even read. The
		// periodic full resync and the repairs compare everything.
		ch := mesh.Diff(d.hosts.tb, tb)
		// This gateway's own file also depends on its egress announcement.
		opts.Only = map[string]bool{own: true}
		for _, l := range [][]string{ch.Added, ch.Changed, ch.Removed} {
			for _, n := range l {
				opts.Only[n] = true
			}
		}
		if d.cfg.Tinc.TunnelServer && len(ch.Added)+len(ch.Changed)+len(ch.Removed) > 0 {
			// The other gateways' files carry their members' relay
			// Subnets, and the assignment may move members onto or off
			// this gateway.
			for _, t := range []*mesh.Testbed{d.hosts.tb, tb} {
				for _, g := range t.Gateways() {
					opts.Only[g.TincName] = true
				}
			}
			for _, n := range d.heldChanges(d.hosts.tb, tb) {
				opts.Only[n] = true
			}
		}
	}
	d.hosts.incremental = false
	// The tinc applier writes what changed and so needs a SIGHUP.
	rep, err := d.tincd.app.Sync(files, opts)
	if err != nil {
		return fmt.Errorf("sync %s: %w", d.cfg.HostsDir(), err)
	}
	if rep.Changed() {
		d.hosts.touched = true
	}
	d.hosts.files.Written += len(rep.Written)
	d.hosts.files.Unchanged += len(rep.Unchanged)
	d.hosts.files.Removed += len(rep.Removed)
	d.m.written.Add(float64(len(rep.Written)))
	d.m.unchanged.Add(float64(len(rep.Unchanged)))
	d.m.removed.Add(float64(len(rep.Removed)))
	d.hosts.tb = tb
	d.hosts.nodeEgress = nodeEgress
	if !repair {
		d.hosts.lastSync = time.Now()
		d.m.lastSync.SetToCurrentTime()
		for k, n := range tb.Count() {
			d.m.members.WithLabelValues(k.String()).Set(float64(n))
		}
	}
	if len(rep.Written)+len(rep.Removed) > 0 {
		d.log.Info("host files synced", "written", len(rep.Written), "removed", len(rep.Removed),
			"unchanged", len(rep.Unchanged), "version", tb.Version())
	}
	if files.Has(own) {
		b, err := files.Render(own)
		if err != nil {
			return fmt.Errorf("render host files: %w", err)
		}
		subs := subnetLines(b)
		if d.hosts.ownSubnets != nil && *d.hosts.ownSubnets != subs {
			if d.cfg.Tinc.TunnelServer {
				// TunnelServer implies StrictSubnets, and then tinc 1.0
				// re-reads every host file on SIGHUP, its own included, and
				// announces or withdraws what changed (net.c).
				d.log.Info("this gateway's own Subnets changed; reloading tincd", "name", own, "subnets", subs)
				d.tincd.app.Need(tinc.ActionReload)
			} else {
				d.log.Info("this gateway's own Subnets changed; restarting tincd", "name", own, "subnets", subs)
				d.tincd.app.Need(tinc.ActionRestart)
			}
		}
		d.hosts.ownSubnets = &subs
	} else if d.hosts.ownSubnets == nil {
		// Not in the registry (yet): its own file, if any, stays as it
		// is; appearing later gives it Subnets to announce (a SIGHUP
		// under TunnelServer, else a restart).
		empty := ""
		d.hosts.ownSubnets = &empty
	}
	if d.cfg.Tinc.TunnelServer {
		d.expectRefusals(tb)
	}
	if err := d.applyConf(tb); err != nil {
		return err
	}
	return d.signalPending(ctx)
}

// applyConf keeps tinc.conf as the tunnel-server topology needs it
// (tincgen.GatewayConf): TunnelServer, DecrementTTL, MaxTimeout, and a
// ConnectTo for every gateway of tb whose tinc name sorts after this
// one's, so that each pair of gateways has exactly one link, dialled by
// the same side every time. The file is rewritten only when what it says
// differs; a change of ConnectTo needs a SIGHUP, turning TunnelServer on
// a restart.
func (d *Daemon) applyConf(tb *mesh.Testbed) error {
	if !d.cfg.Tinc.TunnelServer {
		return nil
	}
	path := filepath.Join(d.cfg.Tinc.Dir, "tinc.conf")
	b, err := tincgen.ReadRegularFile(path)
	if err != nil {
		return fmt.Errorf("tinc.conf: %w", err)
	}
	c, err := tincgen.ParseConf(b)
	if err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	own := d.cfg.Identity.TincName
	if c.Name != own {
		return fmt.Errorf("%s: Name = %s, but identity.tinc_name is %s", path, c.Name, own)
	}
	var dial []string
	for _, g := range tb.Gateways() {
		if g.TincName > own {
			dial = append(dial, g.TincName)
		}
	}
	want := tincgen.GatewayConf(c, dial)
	if bytes.Equal(tincgen.RenderConf(c), tincgen.RenderConf(want)) {
		return nil
	}
	if err := tincgen.WriteFileAtomic(path, tincgen.RenderConf(want), 0o644); err != nil {
		return fmt.Errorf("write tinc.conf: %w", err)
	}
	d.log.Info("tinc.conf updated for the tunnel-server topology", "connect_to", strings.Join(dial, " "))
	switch {
	case c.IsTunnelServer():
		d.tincd.app.Need(tinc.ActionReload)
	case !d.tincd.ctl.State().Managed:
		// tincd reads TunnelServer only at start, and mgmtnet does not
		// run this one: the HUP applies the rest.
		d.log.Warn("tinc.conf now sets TunnelServer: restart tincd by hand for it to take effect (tinc.manage is false)", "conf", path)
		d.tincd.app.Need(tinc.ActionReload)
	default:
		d.tincd.app.Need(tinc.ActionRestart)
	}
	return nil
}

// subnetLines returns the Subnet lines of a host file, sorted and joined:
// what tincd announces for its own name.
func subnetLines(b []byte) string {
	h, err := tincgen.ParseHost(b)
	if err != nil {
		return "unparsable: " + err.Error()
	}
	var l []string
	for _, s := range h.Subnets {
		l = append(l, s.String())
	}
	slices.Sort(l)
	return strings.Join(l, " ")
}

// loadCache applies the last-known-good snapshot from disk.
func (d *Daemon) loadCache(ctx context.Context) error {
	snap, err := d.hosts.src.Load()
	if err != nil {
		return err
	}
	d.dnsSetTestbed(snap.Testbed)
	if err := d.apply(ctx, snap.Testbed, false); err != nil {
		return err
	}
	d.hosts.src.Commit(snap)
	d.hosts.prefix, d.hosts.validators = snap.Prefix, snap.Validators
	d.hosts.rejected = d.hosts.rejected[:0]
	for _, p := range snap.Rejected {
		d.hosts.rejected = append(d.hosts.rejected, p.String())
	}
	d.m.rejected.Set(float64(len(d.hosts.rejected)))
	d.hosts.fromCache = true
	d.m.snapshotFromCache.Set(1)
	d.log.Warn(fmt.Sprintf("registry unreachable; running on the last-known-good snapshot of %s", snap.Saved.Format(time.RFC3339)))
	return nil
}

// takeTouched reports, and forgets, whether host files were written or
// removed since the last call: the loop then ignores the file events that
// its own writes caused.
func (d *Daemon) takeTouched() bool {
	t := d.hosts.touched
	d.hosts.touched = false
	return t
}

// tampered reports whether any of the named host files differs from what
// the applied snapshot says it must be (present with these bytes, or, for
// a file we own that is not in the snapshot, absent). Only then does a
// repair rewrite anything; events caused by our own writes find nothing.
func (d *Daemon) tampered(names map[string]bool) bool {
	if len(names) > 1000 {
		return true // many events at once: let apply compare everything
	}
	o := d.hostOptions(d.hosts.tb)
	for name := range names {
		// Never a blocking open: a FIFO here would hang the loop.
		b, err := tincgen.ReadHostFile(filepath.Join(d.cfg.HostsDir(), name))
		special := errors.Is(err, tincgen.ErrNotRegular)
		m, listed := d.hosts.tb.Lookup(name)
		// A member assigned to other gateways has no file here.
		listed = listed && tincgen.Holds(d.hosts.tb, o, m)
		if !listed {
			if (err == nil || special) && tincgen.OwnedName(name) && name != d.cfg.Identity.TincName {
				return true // a stale file of ours appeared
			}
			continue
		}
		if err != nil {
			return true // deleted, unreadable, or not a regular file
		}
		want, werr := tincgen.MemberFile(d.hosts.tb, m, o, d.hosts.nodeEgress)
		if werr != nil || !bytes.Equal(b, want) {
			return true
		}
	}
	return false
}

// repair rewrites the host files when one of names differs from what the
// applied snapshot says (tampered); the events of our own writes find
// nothing to do.
func (d *Daemon) repair(ctx context.Context, names map[string]bool) {
	if d.hosts.tb != nil && d.tampered(names) {
		if err := d.apply(ctx, d.hosts.tb, true); err != nil {
			d.lastErr = err.Error()
			d.hosts.fullDue = true // compare everything at the next poll
			d.log.Error("repair host files", "err", err)
		}
	}
	d.event(EventRepaired)
}
