package authdns

import (
	"net"
	"testing"

	"github.com/miekg/dns"
)

// discard is a ResponseWriter that throws answers away, so that the
// benchmarks measure ServeDNS alone.
type discard struct{ remote net.Addr }

func (d discard) LocalAddr() net.Addr       { return d.remote }
func (d discard) RemoteAddr() net.Addr      { return d.remote }
func (discard) WriteMsg(*dns.Msg) error     { return nil }
func (discard) Write(b []byte) (int, error) { return len(b), nil }
func (discard) Close() error                { return nil }
func (discard) TsigStatus() error           { return nil }
func (discard) TsigTimersOnly(bool)         {}
func (discard) Hijack()                     {}

// BenchmarkServeDNS answers common queries from a zone of 66 000
// members, the size of a full testbed.
func BenchmarkServeDNS(b *testing.B) {
	s := newTestServer(b, Config{}, bigTestbed(b))
	w := &discard{udpFrom("::1").remote}
	for _, bm := range []struct {
		name string
		q    *dns.Msg
	}{
		{"AAAA", query("node-31."+testZone, dns.TypeAAAA)},
		{"AAAA-registry-name", query("laptop-7."+testZone, dns.TypeAAAA)},
		{"AAAA-EDNS", query("node-31."+testZone, dns.TypeAAAA).SetEdns0(1232, false)},
		{"AAAA-sliver", query("slice-5.node-31."+testZone, dns.TypeAAAA)},
		{"PTR", query(ptrName("fdf5:5351:1dfd:1f::2"), dns.TypePTR)},
		{"PTR-sliver", query(ptrName("fdf5:5351:1dfd:1f:1001::5"), dns.TypePTR)},
		{"NXDOMAIN", query("nope."+testZone, dns.TypeAAAA)},
		{"NODATA", query("node-31."+testZone, dns.TypeA)},
		{"REFUSED", query("www.example.org.", dns.TypeA)},
	} {
		b.Run(bm.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				s.ServeDNS(w, bm.q)
			}
		})
	}
	b.Run("AAAA-parallel", func(b *testing.B) {
		q := query("node-31."+testZone, dns.TypeAAAA)
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				s.ServeDNS(w, q)
			}
		})
	})
}

// BenchmarkNewZone builds the zone of a full testbed: 65 520 nodes, 470
// hosts, 10 servers.
func BenchmarkNewZone(b *testing.B) {
	tb := bigTestbed(b)
	cfg := Config{Zone: testZone}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := NewZone(cfg, tb); err != nil {
			b.Fatal(err)
		}
	}
}
