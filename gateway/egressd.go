package gateway

import (
	"context"
	"time"

	"github.com/confine-project/mgmtnet/mesh"
	"github.com/confine-project/mgmtnet/tincgen"
)

// EgressStatus is the egress part of Status.
type EgressStatus struct {
	State     EgressState       `json:"state"`
	Weight    int               `json:"weight,omitempty"`
	Source    string            `json:"source,omitempty"` // "config" or "registry"
	WAN       string            `json:"wan,omitempty"`
	Prefix    string            `json:"prefix,omitempty"`
	Since     *time.Time        `json:"since,omitempty"` // last announce/withdraw
	LastProbe *ProbeResult      `json:"last_probe,omitempty"`
	Probes    ProbeCounts       `json:"probes"`
	Counters  map[string]uint64 `json:"counters,omitempty"` // NAT and filter counters (packets)
	Error     string            `json:"error,omitempty"`
}

// ProbeCounts are probe rounds since start.
type ProbeCounts struct {
	OK     int `json:"ok"`
	Failed int `json:"failed"`
}

// egressOffer returns this gateway's egress offer in tb: the local config
// (egress.enabled, egress.weight) over the registry's mgmtnet.egress
// property of its own member. ok is false when it offers none.
func (d *Daemon) egressOffer(tb *mesh.Testbed) (e mesh.Egress, source string, ok bool) {
	var reg mesh.Egress
	if tb != nil {
		if me, found := tb.Lookup(d.cfg.Identity.TincName); found {
			reg = me.Egress
		}
	}
	switch {
	case d.cfg.Egress.Enabled:
		e, source = mesh.Egress{Offered: true, Weight: mesh.DefaultEgressWeight}, "config"
		if reg.Offered {
			e.Weight = reg.Weight
		}
	case reg.Offered:
		e, source = reg, "registry"
	default:
		return mesh.Egress{}, "", false
	}
	if d.cfg.Egress.Weight > 0 {
		e.Weight = d.cfg.Egress.Weight
	}
	return e, source, true
}

// hostOptions are the options this gateway renders host files with: its
// island, its assignment (tunnel server), its DNS service Subnet, and its
// own egress offer as the health probes allow it.
func (d *Daemon) hostOptions(tb *mesh.Testbed) tincgen.HostOptions {
	o := tincgen.HostOptions{Island: d.cfg.Island}
	if d.cfg.Tinc.TunnelServer {
		o.Gateway = d.cfg.Identity.TincName
		_, o.Refused = d.assignment(tb)
	}
	if s, ok := d.serviceSubnet(); ok {
		o.Extra = map[string][]tincgen.Subnet{d.cfg.Identity.TincName: {s}}
	}
	if e, _, ok := d.egressOffer(tb); ok {
		e.Offered = d.egress.health != nil && d.egress.health.announced()
		o.Egress = map[string]mesh.Egress{d.cfg.Identity.TincName: e}
	}
	return o
}

// egressConfigured reports whether this gateway offers egress at all (the
// probes then decide whether it is announced).
func (d *Daemon) egressConfigured() bool {
	_, _, ok := d.egressOffer(d.hosts.tb)
	return ok
}

// startProbes (re)starts the probe goroutine when egress is configured and
// stops it when not. Results arrive on d.egress.probeC, read by the loop.
func (d *Daemon) startProbes(ctx context.Context) {
	if d.egress.stopProbes != nil {
		d.egress.stopProbes()
		d.egress.stopProbes = nil
	}
	if !d.egressConfigured() || len(d.cfg.Egress.Probe.Targets) == 0 {
		if !d.egressConfigured() {
			d.egress.health = nil
		} else if d.egress.health == nil || d.egress.health.state == EgressProbing {
			// Offered (by the registry) without probe targets: nothing
			// to judge the upstream by, so it is taken as healthy.
			d.egress.health = newHealth(1, 0)
			d.egress.health.observe(ProbeResult{At: time.Now(), OK: true, Target: "(no probe targets configured)"})
		}
		return
	}
	p := d.cfg.Egress.Probe
	if d.egress.health == nil {
		d.egress.health = newHealth(p.Failures, p.HoldDown.D())
	} else {
		d.egress.health.failures, d.egress.health.holdDown = max(p.Failures, 1), p.HoldDown.D()
	}
	pctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	d.egress.stopProbes = func() { cancel(); <-done }
	pr := newProber(p)
	go func() {
		defer close(done)
		t := time.NewTicker(p.Interval.D())
		defer t.Stop()
		for {
			r := pr.probe(pctx)
			if pctx.Err() != nil {
				return
			}
			select {
			case d.egress.probeC <- r:
			case <-pctx.Done():
				return
			}
			select {
			case <-t.C:
			case <-pctx.Done():
				return
			}
		}
	}()
}

// firstProbe runs one probe round synchronously when egress is
// configured (bounded by the probe timeout per target) and applies its
// outcome to the host files.
func (d *Daemon) firstProbe(ctx context.Context) {
	if !d.egressConfigured() || len(d.cfg.Egress.Probe.Targets) == 0 {
		return
	}
	p := d.cfg.Egress.Probe
	if d.egress.health == nil {
		d.egress.health = newHealth(p.Failures, p.HoldDown.D())
	}
	d.observeProbe(ctx, newProber(p).probe(ctx))
	d.takeTouched()
}

// observeProbe feeds a probe result to the state machine; a change of the
// announcement rewrites this gateway's own host file: one SIGHUP under
// TunnelServer (StrictSubnets re-reads it), a restart without it.
func (d *Daemon) observeProbe(ctx context.Context, r ProbeResult) {
	if d.egress.health == nil {
		return
	}
	if r.OK {
		d.egress.probesOK++
		d.m.probes.WithLabelValues("ok").Inc()
	} else {
		d.egress.probesFailed++
		d.m.probes.WithLabelValues("failed").Inc()
	}
	if !d.egress.health.observe(r) {
		return
	}
	announced := d.egress.health.announced()
	if announced {
		d.log.Info("upstream healthy: announcing egress", "target", r.Target)
		d.m.egressAnnounced.Set(1)
	} else {
		d.log.Warn("upstream down: withdrawing egress", "failure", r.Failure)
		d.m.egressAnnounced.Set(0)
	}
	if d.hosts.tb == nil {
		return
	}
	if err := d.apply(ctx, d.hosts.tb, true); err != nil {
		d.lastErr = err.Error()
		d.log.Error("apply the egress announcement", "err", err)
	}
	d.event(EventEgressChanged)
}

// egressStatus reports the egress state for Status.
func (d *Daemon) egressStatus() EgressStatus {
	e, source, ok := d.egressOffer(d.hosts.tb)
	if !ok {
		return EgressStatus{State: EgressOff}
	}
	st := EgressStatus{State: EgressProbing, Weight: e.Weight, Source: source, WAN: d.cfg.Egress.WAN,
		Prefix: d.cfg.egressPrefix().String(), Probes: ProbeCounts{OK: d.egress.probesOK, Failed: d.egress.probesFailed},
		Counters: d.egress.counters, Error: d.egress.err}
	if h := d.egress.health; h != nil {
		st.State = h.state
		if !h.changed.IsZero() {
			c := h.changed
			st.Since = &c
		}
		if !h.last.At.IsZero() {
			l := h.last
			st.LastProbe = &l
		}
	}
	return st
}

// applyEgressKernel makes the kernel's egress rules match the config:
// present while egress is configured (also while withdrawn: connections in
// flight drain), absent otherwise. It also reads the rules' counters.
func (d *Daemon) applyEgressKernel(ctx context.Context) {
	var want EgressRules
	if d.egressConfigured() && d.cfg.Egress.WAN != "" {
		allow, deny := d.cfg.egressLists()
		want = EgressRules{TincIface: d.tincIface(), WAN: d.cfg.Egress.WAN, Prefix: d.cfg.egressPrefix(), Allow: allow, Deny: deny}
	}
	if want.IsZero() && !d.egress.applied {
		return // nothing of ours was ever set up by this daemon
	}
	if !want.IsZero() && d.cfg.Tinc.Manage && !d.tincd.ctl.State().Running {
		return // no tinc link yet: configureLink applies once tincd runs
	}
	if err := d.egress.kernel.Apply(ctx, want); err != nil {
		if msg := err.Error(); msg != d.egress.err {
			d.log.Error("egress rules", "err", err)
		}
		d.egress.err = err.Error()
		return
	}
	d.egress.applied = !want.IsZero()
	d.egress.err = ""
	if want.IsZero() {
		d.egress.counters = nil
		return
	}
	d.readEgressCounters(ctx)
}

// readEgressCounters refreshes the egress rules' counters (status and
// metrics).
func (d *Daemon) readEgressCounters(ctx context.Context) {
	if !d.egress.applied {
		return
	}
	if c, err := d.egress.kernel.Counters(ctx); err == nil {
		d.egress.counters = c
		for k, v := range c {
			d.m.egressPackets.WithLabelValues(k).Set(float64(v))
		}
	}
}
