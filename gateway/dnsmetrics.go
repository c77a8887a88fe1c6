package gateway

import "github.com/prometheus/client_golang/prometheus"

// dnsRegisterer registers a DNS server's collectors on the daemon's
// registry and remembers them, so that a server stopped for a reload
// hands them back: the next server registers collectors of the same
// metrics, which the registry refuses while the old ones are there.
// (Counters restart from zero with the new server; Prometheus takes that
// as a counter reset.)
type dnsRegisterer struct {
	reg prometheus.Registerer
	cs  []prometheus.Collector
}

var _ prometheus.Registerer = (*dnsRegisterer)(nil)

// Register registers c and remembers it.
func (r *dnsRegisterer) Register(c prometheus.Collector) error {
	if err := r.reg.Register(c); err != nil {
		return err
	}
	r.cs = append(r.cs, c)
	return nil
}

// MustRegister registers cs, panicking as prometheus does on an error.
func (r *dnsRegisterer) MustRegister(cs ...prometheus.Collector) {
	for _, c := range cs {
		if err := r.Register(c); err != nil {
			panic(err)
		}
	}
}

// Unregister unregisters c.
func (r *dnsRegisterer) Unregister(c prometheus.Collector) bool { return r.reg.Unregister(c) }

// unregisterAll unregisters every collector registered through r.
func (r *dnsRegisterer) unregisterAll() {
	for _, c := range r.cs {
		r.reg.Unregister(c)
	}
	r.cs = nil
}
