package authdns

import (
	"errors"
	"fmt"
	"sync"
	"sync/atomic"

	"github.com/miekg/dns"
	"github.com/prometheus/client_golang/prometheus"
)

// refusal is why a query was REFUSED: the reason label of
// mgmtnet_dns_refused_total.
type refusal uint8

const (
	refusedClient   refusal = iota // the client is outside Config.Allow
	refusedTransfer                // a transfer from outside Config.AllowTransfer, or over UDP
	refusedZone                    // a name outside our zones, and no forwarding (or RD clear)
	refusedClass                   // a class other than IN (CHAOS "version.bind"...)
	refusedNotify                  // a NOTIFY: this server is a primary only
	refusedUnsigned                // a transfer without the TSIG signature a configured key requires
	numRefusals
)

var refusalNames = [numRefusals]string{"client", "transfer", "zone", "class", "notify", "unsigned"}

// transferKind is the kind label of mgmtnet_dns_transfers_total.
type transferKind uint8

const (
	transferAXFR     transferKind = iota // an AXFR
	transferIXFR                         // an IXFR answered with the changes
	transferIXFRFull                     // an IXFR answered with the whole zone: the journal does not reach the client's serial
	transferCurrent                      // an IXFR from a client already at the current serial
	numTransferKinds
)

var transferNames = [numTransferKinds]string{"axfr", "ixfr", "ixfr_full", "current"}

// The qtype label values with counters of their own; any other type is
// counted as "other".
var countedTypes = [...]uint16{
	dns.TypeAAAA, dns.TypeA, dns.TypePTR, dns.TypeSOA, dns.TypeNS, dns.TypeANY,
	dns.TypeAXFR, dns.TypeIXFR, dns.TypeCNAME, dns.TypeMX, dns.TypeTXT, dns.TypeSRV,
	dns.TypeHTTPS, dns.TypeSVCB, dns.TypeDS, dns.TypeDNSKEY, dns.TypeCAA,
}

const numTypes = len(countedTypes) + 1 // + "other"

// The rcode label values with counters of their own; others are "other".
var countedRcodes = [...]int{
	dns.RcodeSuccess, dns.RcodeFormatError, dns.RcodeServerFailure, dns.RcodeNameError,
	dns.RcodeNotImplemented, dns.RcodeRefused, dns.RcodeNotAuth, dns.RcodeBadVers,
}

const numRcodes = len(countedRcodes) + 1

func typeIndex(t uint16) int {
	// A linear scan of 17 values beats a map on the hot path, and the
	// common types come first.
	for i, c := range countedTypes {
		if c == t {
			return i
		}
	}
	return len(countedTypes)
}

func rcodeIndex(r int) int {
	for i, c := range countedRcodes {
		if c == r {
			return i
		}
	}
	return len(countedRcodes)
}

// metrics are the server's Prometheus metrics. Query counters are
// resolved once per (qtype, rcode) pair, on first use, so the hot path is
// two small scans and an atomic add, and only pairs that occurred are
// exported.
type metrics struct {
	queriesVec *prometheus.CounterVec
	queries    [numTypes][numRcodes]atomic.Pointer[prometheus.Counter]
	refused    [numRefusals]prometheus.Counter
	transfers  [numTransferKinds]prometheus.Counter
	tsigFailed *prometheus.CounterVec
	tcpConns   prometheus.Gauge
	tcpDropped prometheus.Counter
	limited    [2]prometheus.Counter // answers over the rate limit: dropped, slipped
	notifyOK   prometheus.Counter
	notifyErr  prometheus.Counter
	serial     prometheus.Gauge
	skipped    *prometheus.GaugeVec
	mu         sync.Mutex // serializes the first resolution of a query counter
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		queriesVec: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "mgmtnet_dns_queries_total", Help: "DNS queries answered, by query type and response code.",
		}, []string{"qtype", "rcode"}),
		tsigFailed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "mgmtnet_dns_tsig_failures_total", Help: "Signed queries whose TSIG failed, answered NOTAUTH, by TSIG error: badkey (unknown key or algorithm), badsig, badtime.",
		}, []string{"error"}),
		tcpConns: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "mgmtnet_dns_tcp_connections", Help: "TCP connections being served.",
		}),
		tcpDropped: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "mgmtnet_dns_tcp_rejected_total", Help: "TCP connections closed on accept because the connection cap was reached.",
		}),
		serial: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "mgmtnet_dns_zone_serial", Help: "SOA serial of the zones served (0 before the first testbed).",
		}),
		skipped: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "mgmtnet_dns_skipped_names", Help: "Registry names of members not served, by reason.",
		}, []string{"reason"}),
	}
	refused := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "mgmtnet_dns_refused_total", Help: "Queries REFUSED, by reason: client (not allowed), transfer (not allowed, or over UDP), zone (outside our zones, not forwarded), class (not IN), notify (this server is a primary only), unsigned (a transfer without the signature a configured TSIG key requires).",
	}, []string{"reason"})
	for i := range m.refused {
		m.refused[i] = refused.WithLabelValues(refusalNames[i])
	}
	notify := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "mgmtnet_dns_notify_total", Help: "NOTIFY messages to secondaries, by result: ok (acknowledged), error (failed after retries).",
	}, []string{"result"})
	transfers := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "mgmtnet_dns_transfers_total", Help: "Zone transfers served, by kind: axfr, ixfr (the changes), ixfr_full (the whole zone: the client's serial is older than the journal), current (the client is up to date).",
	}, []string{"kind"})
	for i := range m.transfers {
		m.transfers[i] = transfers.WithLabelValues(transferNames[i])
	}
	limited := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "mgmtnet_dns_rate_limited_total", Help: "UDP answers over the response-rate limit, by action: dropped, or slipped (sent truncated, for the client to retry over TCP).",
	}, []string{"action"})
	m.limited[0] = limited.WithLabelValues("dropped")
	m.limited[1] = limited.WithLabelValues("slipped")
	for _, e := range []string{"badkey", "badsig", "badtime"} {
		m.tsigFailed.WithLabelValues(e)
	}
	m.notifyOK = notify.WithLabelValues("ok")
	m.notifyErr = notify.WithLabelValues("error")
	for _, r := range []SkipReason{SkipInvalid, SkipDuplicate, SkipReserved} {
		m.skipped.WithLabelValues(r.String())
	}
	if reg == nil {
		return m, nil
	}
	var errs []error
	for _, c := range []prometheus.Collector{m.queriesVec, refused, transfers, notify, m.serial, m.skipped,
		m.tsigFailed, m.tcpConns, m.tcpDropped, limited} {
		if err := reg.Register(c); err != nil {
			errs = append(errs, err)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("register dns metrics: %w", err)
	}
	return m, nil
}

// query counts one answered query.
func (m *metrics) query(qtype uint16, rcode int) {
	ti, ri := typeIndex(qtype), rcodeIndex(rcode)
	p := m.queries[ti][ri].Load()
	if p == nil {
		p = m.resolve(ti, ri)
	}
	(*p).Inc()
}

func (m *metrics) resolve(ti, ri int) *prometheus.Counter {
	m.mu.Lock()
	defer m.mu.Unlock()
	if p := m.queries[ti][ri].Load(); p != nil {
		return p
	}
	t, r := "other", "other"
	if ti < len(countedTypes) {
		t = dns.TypeToString[countedTypes[ti]]
	}
	if ri < len(countedRcodes) {
		r = dns.RcodeToString[countedRcodes[ri]]
	}
	c := m.queriesVec.WithLabelValues(t, r)
	m.queries[ti][ri].Store(&c)
	return &c
}

// setZone publishes the serial and skipped names of a new zone.
func (m *metrics) setZone(z *Zone) {
	m.serial.Set(float64(z.Serial()))
	var n [len(skipNames)]int
	for _, s := range z.Skipped() {
		n[s.Reason]++
	}
	for _, r := range []SkipReason{SkipInvalid, SkipDuplicate, SkipReserved} {
		m.skipped.WithLabelValues(r.String()).Set(float64(n[r]))
	}
}
