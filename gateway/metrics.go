package gateway

import (
	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the daemon's Prometheus metrics, in a registry of its own.
type metrics struct {
	reg                               *prometheus.Registry
	syncs, syncErrors                 prometheus.Counter
	lastSync                          prometheus.Gauge
	members                           *prometheus.GaugeVec
	rejected                          prometheus.Gauge
	written, unchanged, removed       prometheus.Counter
	hups, restarts                    prometheus.Counter
	peersConnected, snapshotFromCache prometheus.Gauge
	probes                            *prometheus.CounterVec
	egressAnnounced                   prometheus.Gauge
	egressPackets                     *prometheus.GaugeVec
	unauthorized                      *prometheus.CounterVec
	udpRepairs                        prometheus.Counter
	assigned, refusedMembers          prometheus.Gauge
	feedVersion                       prometheus.Gauge
	feedErrors                        prometheus.Counter
}

func newMetrics() *metrics {
	m := &metrics{
		reg:        prometheus.NewRegistry(),
		syncs:      prometheus.NewCounter(prometheus.CounterOpts{Name: "mgmtnet_sync_total", Help: "Reconciles with the registry."}),
		syncErrors: prometheus.NewCounter(prometheus.CounterOpts{Name: "mgmtnet_sync_errors_total", Help: "Reconciles that failed."}),
		lastSync:   prometheus.NewGauge(prometheus.GaugeOpts{Name: "mgmtnet_last_sync_timestamp_seconds", Help: "Unix time of the last successful reconcile."}),
		members:    prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "mgmtnet_members", Help: "Members of the applied snapshot, by kind."}, []string{"kind"}),
		rejected:   prometheus.NewGauge(prometheus.GaugeOpts{Name: "mgmtnet_rejected_members", Help: "Members of the registry rejected by validation."}),
		written:    prometheus.NewCounter(prometheus.CounterOpts{Name: "mgmtnet_files_written_total", Help: "Host files written."}),
		unchanged:  prometheus.NewCounter(prometheus.CounterOpts{Name: "mgmtnet_files_unchanged_total", Help: "Host files compared and found unchanged."}),
		removed:    prometheus.NewCounter(prometheus.CounterOpts{Name: "mgmtnet_files_removed_total", Help: "Host files removed."}),
		hups:       prometheus.NewCounter(prometheus.CounterOpts{Name: "mgmtnet_tincd_hups_total", Help: "SIGHUPs sent to tincd."}),
		restarts:   prometheus.NewCounter(prometheus.CounterOpts{Name: "mgmtnet_tincd_restarts_total", Help: "tincd restarts."}),
		peersConnected: prometheus.NewGauge(prometheus.GaugeOpts{Name: "mgmtnet_tinc_peers_connected",
			Help: "tinc peers connected, from tincd's log."}),
		snapshotFromCache: prometheus.NewGauge(prometheus.GaugeOpts{Name: "mgmtnet_snapshot_from_cache",
			Help: "1 while running on the last-known-good snapshot from disk."}),
		probes: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "mgmtnet_egress_probes_total",
			Help: "Upstream health probe rounds, by result (ok, failed)."}, []string{"result"}),
		egressAnnounced: prometheus.NewGauge(prometheus.GaugeOpts{Name: "mgmtnet_egress_announced",
			Help: "1 while this gateway announces 0.0.0.0/0 (egress) into the mesh."}),
		egressPackets: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "mgmtnet_egress_packets",
			Help: "Packets counted by the egress nftables rules (masqueraded, forwarded, returned, spoofed, blocked_destination, wan_initiated, misrouted)."}, []string{"counter"}),
		unauthorized: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "mgmtnet_tinc_unauthorized_subnets_total",
			Help: "Subnet announcements tincd refused because the announcing member's host file does not grant them, by member."}, []string{"member"}),
	}
	m.udpRepairs = prometheus.NewCounter(prometheus.CounterOpts{Name: "mgmtnet_tinc_udp_repairs_total",
		Help: "Peers whose meta connection lived while they did not answer through tinc (a stale packet key), repaired by closing that connection."})
	m.assigned = prometheus.NewGauge(prometheus.GaugeOpts{Name: "mgmtnet_assigned_members",
		Help: "Members the registry's snapshot assigns to this gateway (tunnel-server topology)."})
	m.refusedMembers = prometheus.NewGauge(prometheus.GaugeOpts{Name: "mgmtnet_refused_members",
		Help: "Assigned members this gateway refuses: beyond tinc.max_members or tincd's descriptors."})
	m.feedVersion = prometheus.NewGauge(prometheus.GaugeOpts{Name: "mgmtnet_registry_feed_version",
		Help: "The registry change feed's version of the snapshot in use (0 while the daemon polls instead)."})
	m.feedErrors = prometheus.NewCounter(prometheus.CounterOpts{Name: "mgmtnet_registry_feed_errors_total",
		Help: "Requests to the registry's change feed that failed."})
	m.reg.MustRegister(m.feedVersion, m.feedErrors, m.assigned, m.refusedMembers, m.udpRepairs, m.unauthorized, m.probes, m.egressAnnounced, m.egressPackets, m.syncs, m.syncErrors, m.lastSync, m.members, m.rejected, m.written, m.unchanged,
		m.removed, m.hups, m.restarts, m.peersConnected, m.snapshotFromCache)
	return m
}
