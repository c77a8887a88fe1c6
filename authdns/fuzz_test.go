package authdns

import (
	"net/netip"
	"testing"

	"github.com/miekg/dns"
)

// FuzzServeDNS feeds any message that unpacks to ServeDNS, over UDP and
// TCP, and checks that it never panics and that every answer is a
// well-formed response to that query that fits the transport.
func FuzzServeDNS(f *testing.F) {
	s := newTestServer(f, Config{
		NS:            []NameServer{{Name: "ns." + testZone, Addrs: []netip.Addr{netip.MustParseAddr("fdf5:5351:1dfd::53")}}},
		AllowTransfer: []netip.Prefix{netip.MustParsePrefix("::1/128")},
	}, smallTestbed(f))
	for _, m := range []*dns.Msg{
		query("node-31."+testZone, dns.TypeAAAA),
		query("Lab-Router."+testZone, dns.TypeANY),
		query("slice-5-iface-2.node-31."+testZone, dns.TypeAAAA),
		query("nope."+testZone, dns.TypeAAAA).SetEdns0(512, true),
		query(ptrName("fdf5:5351:1dfd:1f:1001::5"), dns.TypePTR),
		query("f.1.0.0."+testReverse, dns.TypePTR),
		query(testZone, dns.TypeNS).SetEdns0(1232, false),
		query(testZone, dns.TypeAXFR),
		query(testReverse, dns.TypeIXFR),
		query("www.example.org.", dns.TypeA),
		withOpcode(query(testZone, dns.TypeSOA), dns.OpcodeUpdate),
		new(dns.Msg).SetNotify(testZone),
	} {
		b, err := m.Pack()
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		r := new(dns.Msg)
		if err := r.Unpack(data); err != nil {
			return
		}
		tcp := len(data)%2 == 1
		w := udpFrom("::1")
		if tcp {
			w = tcpFrom("::1")
		}
		s.ServeDNS(w, r)
		if w.err != nil {
			t.Fatalf("answer to %v does not unpack: %v", r, w.err)
		}
		if r.Response && len(w.msgs) > 0 {
			t.Fatalf("answered a response: %v", w.msgs[0])
		}
		limit := dns.MaxMsgSize
		if !tcp {
			limit = dns.MinMsgSize
			if r.IsEdns0() != nil {
				limit = DefaultUDPSize
			}
		}
		for i, m := range w.msgs {
			if !m.Response || m.Id != r.Id {
				t.Fatalf("answer %d to %v is not a response to it: %v", i, r, m)
			}
			if w.sizes[i] > limit {
				t.Fatalf("answer %d is %d bytes, over %d: %v", i, w.sizes[i], limit, m)
			}
		}
	})
}
