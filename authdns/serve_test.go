package authdns

import (
	"fmt"
	"net/netip"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"github.com/miekg/dns"

	"github.com/confine-project/mgmtnet/addressing"
)

const testReverse = "d.f.d.1.1.5.3.5.5.f.d.f.ip6.arpa."

func aaaa(owner, addr string) string  { return owner + "\t300\tIN\tAAAA\t" + addr }
func ptr(owner, target string) string { return owner + "\t300\tIN\tPTR\t" + target }

func soa(zone string, ttl int, serial uint32) string {
	return fmt.Sprintf("%s\t%d\tIN\tSOA\tns.%s hostmaster.%s %d 900 300 1209600 60", zone, ttl, testZone, testZone, serial)
}

func ptrName(a string) string { return addressing.PTRName(netip.MustParseAddr(a)) }

// withOpcode returns m with another opcode.
func withOpcode(m *dns.Msg, op int) *dns.Msg { m.Opcode = op; return m }

// TestServeDNS runs every kind of query through ServeDNS and checks the
// whole answer: rcode, AA, answer and authority sections.
func TestServeDNS(t *testing.T) {
	tb := smallTestbed(t)
	s := newTestServer(t, Config{}, tb)
	serial := s.Zone().Serial()
	fwdNeg := []string{soa(testZone, 60, serial)}
	revNeg := []string{soa(testReverse, 60, serial)}
	fq := func(rel string) string { return rel + "." + testZone }
	// A partial reverse name: the first n nibbles after the /48 of addr.
	partial := func(addr string, n int) string {
		full := ptrName(addr)
		return full[(32-12-n)*2:]
	}

	tests := []struct {
		name    string
		q       *dns.Msg
		w       *recorder // default: UDP from ::1
		rcode   int
		noAA    bool
		answer  []string
		ns      []string
		noReply bool
	}{
		// Plan names of each kind of member.
		{name: "node", q: query(fq("node-31"), dns.TypeAAAA), answer: []string{aaaa(fq("node-31"), "fdf5:5351:1dfd:1f::2")}},
		{name: "server", q: query(fq("server-2"), dns.TypeAAAA), answer: []string{aaaa(fq("server-2"), "fdf5:5351:1dfd::2")}},
		{name: "host", q: query(fq("host-7"), dns.TypeAAAA), answer: []string{aaaa(fq("host-7"), "fdf5:5351:1dfd:0:2000::7")}},
		{name: "host 48-bit", q: query(fq("host-1250999896491"), dns.TypeAAAA), answer: []string{aaaa(fq("host-1250999896491"), "fdf5:5351:1dfd:0:2000:123:4567:89ab")}},
		{name: "legacy gateway", q: query(fq("gateway-3"), dns.TypeAAAA), answer: []string{aaaa(fq("gateway-3"), "fdf5:5351:1dfd:0:1::3")}},
		{name: "absent node", q: query(fq("node-33"), dns.TypeAAAA), rcode: dns.RcodeNameError, ns: fwdNeg},
		// Registry names.
		{name: "registry name lower-cased", q: query(fq("lab-router"), dns.TypeAAAA), answer: []string{aaaa(fq("lab-router"), "fdf5:5351:1dfd:20::2")}},
		{name: "registry name", q: query(fq("main"), dns.TypeAAAA), answer: []string{aaaa(fq("main"), "fdf5:5351:1dfd::2")}},
		{name: "duplicate registry name", q: query(fq("laptop"), dns.TypeAAAA), rcode: dns.RcodeNameError, ns: fwdNeg},
		{name: "registry name that is a plan name", q: query(fq("server-9"), dns.TypeAAAA), rcode: dns.RcodeNameError, ns: fwdNeg},
		{name: "registry name of the name server", q: query(fq("ns"), dns.TypeAAAA), ns: fwdNeg},
		// Slivers: computed for any slice of a present node.
		{name: "sliver", q: query(fq("slice-5.node-31"), dns.TypeAAAA), answer: []string{aaaa(fq("slice-5.node-31"), "fdf5:5351:1dfd:1f:1001::5")}},
		{name: "sliver iface", q: query(fq("slice-5-iface-2.node-31"), dns.TypeAAAA), answer: []string{aaaa(fq("slice-5-iface-2.node-31"), "fdf5:5351:1dfd:1f:1002::5")}},
		{name: "sliver 48-bit slice", q: query(fq("slice-281474976710655.node-32"), dns.TypeAAAA), answer: []string{aaaa(fq("slice-281474976710655.node-32"), "fdf5:5351:1dfd:20:1001:ffff:ffff:ffff")}},
		{name: "sliver of an absent node", q: query(fq("slice-5.node-33"), dns.TypeAAAA), rcode: dns.RcodeNameError, ns: fwdNeg},
		{name: "sliver iface 1 long form", q: query(fq("slice-5-iface-1.node-31"), dns.TypeAAAA), rcode: dns.RcodeNameError, ns: fwdNeg},
		{name: "sliver under a server", q: query(fq("slice-5.server-2"), dns.TypeAAAA), rcode: dns.RcodeNameError, ns: fwdNeg},
		{name: "sliver other type", q: query(fq("slice-5.node-31"), dns.TypeTXT), ns: fwdNeg},
		// Apex.
		{name: "soa", q: query(testZone, dns.TypeSOA), answer: []string{soa(testZone, 300, serial)}},
		{name: "ns", q: query(testZone, dns.TypeNS), answer: []string{testZone + "\t300\tIN\tNS\tns." + testZone}},
		{name: "any at apex", q: query(testZone, dns.TypeANY), answer: []string{soa(testZone, 300, serial)}},
		{name: "aaaa at apex", q: query(testZone, dns.TypeAAAA), ns: fwdNeg},
		// RFC 2308 and RFC 8482.
		{name: "nodata", q: query(fq("node-31"), dns.TypeA), ns: fwdNeg},
		{name: "nodata mx", q: query(fq("node-31"), dns.TypeMX), ns: fwdNeg},
		{name: "any", q: query(fq("node-31"), dns.TypeANY), answer: []string{aaaa(fq("node-31"), "fdf5:5351:1dfd:1f::2")}},
		{name: "nxdomain", q: query(fq("nope"), dns.TypeAAAA), rcode: dns.RcodeNameError, ns: fwdNeg},
		{name: "below a member", q: query(fq("www.node-31"), dns.TypeAAAA), rcode: dns.RcodeNameError, ns: fwdNeg},
		{name: "escaped dot", q: query(`node-31\.mgmt.example.net.`, dns.TypeAAAA), rcode: dns.RcodeRefused, noAA: true},
		{name: "case-insensitive", q: query("Node-31.MGMT.example.NET.", dns.TypeAAAA), answer: []string{aaaa("Node-31.MGMT.example.NET.", "fdf5:5351:1dfd:1f::2")}},
		{name: "case-insensitive sliver", q: query("SLICE-5.Node-31.mgmt.example.net.", dns.TypeAAAA), answer: []string{aaaa("SLICE-5.Node-31.mgmt.example.net.", "fdf5:5351:1dfd:1f:1001::5")}},
		// Reverse.
		{name: "ptr node", q: query(ptrName("fdf5:5351:1dfd:1f::2"), dns.TypePTR), answer: []string{ptr(ptrName("fdf5:5351:1dfd:1f::2"), fq("node-31"))}},
		{name: "ptr server", q: query(ptrName("fdf5:5351:1dfd::2"), dns.TypePTR), answer: []string{ptr(ptrName("fdf5:5351:1dfd::2"), fq("server-2"))}},
		{name: "ptr host", q: query(ptrName("fdf5:5351:1dfd:0:2000::7"), dns.TypePTR), answer: []string{ptr(ptrName("fdf5:5351:1dfd:0:2000::7"), fq("host-7"))}},
		{name: "ptr legacy gateway", q: query(ptrName("fdf5:5351:1dfd:0:1::3"), dns.TypePTR), answer: []string{ptr(ptrName("fdf5:5351:1dfd:0:1::3"), fq("gateway-3"))}},
		{name: "ptr sliver", q: query(ptrName("fdf5:5351:1dfd:1f:1001::5"), dns.TypePTR), answer: []string{ptr(ptrName("fdf5:5351:1dfd:1f:1001::5"), fq("slice-5.node-31"))}},
		{name: "ptr sliver iface", q: query(ptrName("fdf5:5351:1dfd:1f:1000::5"), dns.TypePTR), answer: []string{ptr(ptrName("fdf5:5351:1dfd:1f:1000::5"), fq("slice-5-iface-0.node-31"))}},
		{name: "ptr upper-case nibbles", q: query(strings.ToUpper(ptrName("fdf5:5351:1dfd:1f::2")), dns.TypePTR), answer: []string{ptr(strings.ToUpper(ptrName("fdf5:5351:1dfd:1f::2")), fq("node-31"))}},
		{name: "ptr absent node", q: query(ptrName("fdf5:5351:1dfd:21::2"), dns.TypePTR), rcode: dns.RcodeNameError, ns: revNeg},
		{name: "ptr sliver of an absent node", q: query(ptrName("fdf5:5351:1dfd:21:1001::5"), dns.TypePTR), rcode: dns.RcodeNameError, ns: revNeg},
		{name: "ptr not in plan", q: query(ptrName("fdf5:5351:1dfd:1f::3"), dns.TypePTR), rcode: dns.RcodeNameError, ns: revNeg},
		{name: "ptr nodata", q: query(ptrName("fdf5:5351:1dfd:1f::2"), dns.TypeAAAA), ns: revNeg},
		{name: "ptr any", q: query(ptrName("fdf5:5351:1dfd:1f::2"), dns.TypeANY), answer: []string{ptr(ptrName("fdf5:5351:1dfd:1f::2"), fq("node-31"))}},
		{name: "ptr too long", q: query("0."+ptrName("fdf5:5351:1dfd:1f::2"), dns.TypePTR), rcode: dns.RcodeNameError, ns: revNeg},
		{name: "ptr bad nibble", q: query("g"+ptrName("fdf5:5351:1dfd:1f::2")[1:], dns.TypePTR), rcode: dns.RcodeNameError, ns: revNeg},
		{name: "reverse soa", q: query(testReverse, dns.TypeSOA), answer: []string{soa(testReverse, 300, serial)}},
		{name: "reverse ns", q: query(testReverse, dns.TypeNS), answer: []string{testReverse + "\t300\tIN\tNS\tns." + testZone}},
		// Empty non-terminals of the reverse zone.
		{name: "ent node word", q: query(partial("fdf5:5351:1dfd:1f::2", 4), dns.TypePTR), ns: revNeg},
		{name: "ent first nibble", q: query(partial("fdf5:5351:1dfd:1f::2", 1), dns.TypePTR), ns: revNeg},
		{name: "ent node, deep", q: query(partial("fdf5:5351:1dfd:1f::2", 19), dns.TypePTR), ns: revNeg},
		{name: "ent slivers", q: query(partial("fdf5:5351:1dfd:1f:1001::5", 6), dns.TypePTR), ns: revNeg},
		{name: "ent slivers iface 7", q: query(partial("fdf5:5351:1dfd:1f:1007:abcd::", 12), dns.TypePTR), ns: revNeg},
		{name: "ent host block", q: query(partial("fdf5:5351:1dfd:0:2000::", 5), dns.TypePTR), ns: revNeg},
		{name: "no ent: absent node", q: query(partial("fdf5:5351:1dfd:21::", 4), dns.TypePTR), rcode: dns.RcodeNameError, ns: revNeg},
		{name: "no ent: node word 2000", q: query(partial("fdf5:5351:1dfd:1f:2000::", 5), dns.TypePTR), rcode: dns.RcodeNameError, ns: revNeg},
		{name: "no ent: absent host", q: query(partial("fdf5:5351:1dfd:0:2000::100", 19), dns.TypePTR), rcode: dns.RcodeNameError, ns: revNeg},
		{name: "no ent: iface word 11xx", q: query(partial("fdf5:5351:1dfd:1f:1100::", 6), dns.TypePTR), rcode: dns.RcodeNameError, ns: revNeg},
		// Outside the zones, and who may ask.
		{name: "other zone", q: query("www.example.org.", dns.TypeA), rcode: dns.RcodeRefused, noAA: true},
		{name: "parent zone", q: query("example.net.", dns.TypeSOA), rcode: dns.RcodeRefused, noAA: true},
		{name: "other reverse", q: query("ip6.arpa.", dns.TypeSOA), rcode: dns.RcodeRefused, noAA: true},
		{name: "client outside allow", q: query(fq("node-31"), dns.TypeAAAA), w: udpFrom("2001:db8::1"), rcode: dns.RcodeRefused, noAA: true},
		{name: "client in the /48", q: query(fq("node-31"), dns.TypeAAAA), w: udpFrom("fdf5:5351:1dfd:20::2"), answer: []string{aaaa(fq("node-31"), "fdf5:5351:1dfd:1f::2")}},
		{name: "client ipv4 loopback", q: query(fq("node-31"), dns.TypeAAAA), w: tcpFrom("127.0.0.1"), answer: []string{aaaa(fq("node-31"), "fdf5:5351:1dfd:1f::2")}},
		{name: "client ipv4-mapped", q: query(fq("node-31"), dns.TypeAAAA), w: udpFrom("::ffff:127.0.0.1"), answer: []string{aaaa(fq("node-31"), "fdf5:5351:1dfd:1f::2")}},
		{name: "client ipv4 outside", q: query(fq("node-31"), dns.TypeAAAA), w: udpFrom("192.0.2.1"), rcode: dns.RcodeRefused, noAA: true},
		// Transfers.
		{name: "axfr from a node", q: query(testZone, dns.TypeAXFR), w: tcpFrom("fdf5:5351:1dfd:1f::2"), rcode: dns.RcodeRefused, noAA: true},
		{name: "axfr over udp", q: query(testZone, dns.TypeAXFR), rcode: dns.RcodeRefused, noAA: true},
		{name: "ixfr over udp", q: query(testZone, dns.TypeIXFR), answer: []string{soa(testZone, 300, serial)}},
		{name: "axfr below the apex", q: query(fq("node-31"), dns.TypeAXFR), w: tcpFrom("::1"), rcode: dns.RcodeNotAuth, noAA: true},
		{name: "axfr other zone", q: query("example.org.", dns.TypeAXFR), w: tcpFrom("::1"), rcode: dns.RcodeRefused, noAA: true},
		// Malformed and unsupported.
		{name: "no question", q: &dns.Msg{MsgHdr: dns.MsgHdr{Id: 1}}, rcode: dns.RcodeFormatError, noAA: true},
		{name: "two questions", q: func() *dns.Msg {
			m := query(fq("node-31"), dns.TypeAAAA)
			m.Question = append(m.Question, m.Question[0])
			return m
		}(), rcode: dns.RcodeFormatError, noAA: true},
		{name: "qtype opt", q: query(fq("node-31"), dns.TypeOPT), rcode: dns.RcodeFormatError, noAA: true},
		{name: "two opt records", q: func() *dns.Msg {
			m := query(fq("node-31"), dns.TypeAAAA).SetEdns0(1232, false)
			m.Extra = append(m.Extra, m.Extra[0])
			return m
		}(), rcode: dns.RcodeFormatError, noAA: true},
		{name: "update", q: withOpcode(query(testZone, dns.TypeSOA), dns.OpcodeUpdate), rcode: dns.RcodeNotImplemented, noAA: true},
		{name: "status", q: withOpcode(query(testZone, dns.TypeSOA), dns.OpcodeStatus), rcode: dns.RcodeNotImplemented, noAA: true},
		{name: "notify", q: new(dns.Msg).SetNotify(testZone), rcode: dns.RcodeRefused, noAA: true},
		{name: "chaos", q: func() *dns.Msg {
			m := query("version.bind.", dns.TypeTXT)
			m.Question[0].Qclass = dns.ClassCHAOS
			return m
		}(), rcode: dns.RcodeRefused, noAA: true},
		{name: "response", q: func() *dns.Msg {
			m := query(fq("node-31"), dns.TypeAAAA)
			m.Response = true
			return m
		}(), noReply: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w := tt.w
			if w == nil {
				w = udpFrom("::1")
			}
			s.ServeDNS(w, tt.q)
			if tt.noReply {
				if len(w.msgs) != 0 {
					t.Fatalf("answered %v", w.msgs[0])
				}
				return
			}
			m := w.only(t)
			if m.Rcode != tt.rcode {
				t.Errorf("rcode %s, want %s", dns.RcodeToString[m.Rcode], dns.RcodeToString[tt.rcode])
			}
			if m.Id != tt.q.Id || !m.Response {
				t.Errorf("id %d response %v; want the query's id %d, response", m.Id, m.Response, tt.q.Id)
			}
			if m.Authoritative == tt.noAA {
				t.Errorf("AA %v, want %v", m.Authoritative, !tt.noAA)
			}
			if len(tt.q.Question) == 1 && (len(m.Question) != 1 || m.Question[0] != tt.q.Question[0]) {
				t.Errorf("question %v, want the query's %v", m.Question, tt.q.Question)
			}
			if diff := cmp.Diff(tt.answer, rrStrings(m.Answer), cmpopts.EquateEmpty()); diff != "" {
				t.Errorf("answer (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(tt.ns, rrStrings(m.Ns), cmpopts.EquateEmpty()); diff != "" {
				t.Errorf("authority (-want +got):\n%s", diff)
			}
			if m.Truncated {
				t.Error("TC set")
			}
		})
	}
}
