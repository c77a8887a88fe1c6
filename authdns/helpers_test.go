package authdns

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"net"
	"net/netip"
	"strconv"
	"sync"
	"testing"

	"github.com/miekg/dns"

	"github.com/confine-project/mgmtnet/addressing"
	"github.com/confine-project/mgmtnet/mesh"
)

const testZone = "mgmt.example.net."

var (
	keyOnce sync.Once
	testKey string
	plan    = addressing.Default() // fdf5:5351:1dfd::/48
)

// pubKey returns one RSA public key for every member: mesh.Build wants a
// parsable key, and generating one per member would take long.
func pubKey(tb testing.TB) string {
	tb.Helper()
	keyOnce.Do(func() {
		k, err := rsa.GenerateKey(rand.Reader, 2048)
		if err != nil {
			panic(err)
		}
		testKey = string(pem.EncodeToMemory(&pem.Block{Type: "RSA PUBLIC KEY", Bytes: x509.MarshalPKCS1PublicKey(&k.PublicKey)}))
	})
	return testKey
}

// cand returns a valid candidate of the plan for a member of kind and id
// with a registry name.
func cand(tb testing.TB, kind addressing.Kind, id uint64, name string) mesh.Candidate {
	tb.Helper()
	a, err := plan.Address(addressing.Entity{Kind: kind, ID: id})
	if err != nil {
		tb.Fatal(err)
	}
	tinc, err := addressing.TincName(kind, id)
	if err != nil {
		tb.Fatal(err)
	}
	return mesh.Candidate{Kind: kind, ID: id, Name: name, MgmtAddr: a.String(), Backend: "tinc",
		Tinc: &mesh.CandidateTinc{Name: tinc, PubKey: pubKey(tb)}}
}

// build returns the testbed of cands, failing on any rejection.
func build(tb testing.TB, cands ...mesh.Candidate) *mesh.Testbed {
	tb.Helper()
	res := mesh.Build(plan, cands, mesh.BuildOptions{})
	if len(res.Rejected)+len(res.Skipped) > 0 {
		tb.Fatalf("build testbed: rejected %v, skipped %v", res.Rejected, res.Skipped)
	}
	return res.Testbed
}

// smallTestbed is the testbed of most tests: a node of each naming case,
// a server, hosts and a legacy gateway.
func smallTestbed(tb testing.TB) *mesh.Testbed {
	return build(tb,
		cand(tb, addressing.KindNode, 31, "node-31"),     // its plan name: nothing to add
		cand(tb, addressing.KindNode, 32, "Lab-Router"),  // served as lab-router
		cand(tb, addressing.KindNode, 40, "bad name"),    // invalid
		cand(tb, addressing.KindNode, 41, "server-9"),    // reserved: a plan name
		cand(tb, addressing.KindNode, 42, "ns"),          // reserved: the name server's
		cand(tb, addressing.KindServer, 2, "main"),       // served
		cand(tb, addressing.KindHost, 7, "laptop"),       // duplicate
		cand(tb, addressing.KindHost, 8, "LAPTOP"),       // duplicate
		cand(tb, addressing.KindHost, 0x123456789ab, ""), // no name
		cand(tb, addressing.KindGateway, 3, "old-gw"),    // a legacy gateway
	)
}

// bigTestbed has 66 000 members: every node id, 470 hosts and 10
// servers, all named by the registry like the synthetic testbeds.
var (
	bigOnce sync.Once
	bigTB   *mesh.Testbed
)

func bigTestbed(tb testing.TB) *mesh.Testbed {
	tb.Helper()
	bigOnce.Do(func() {
		var cands []mesh.Candidate
		for id := uint64(1); id <= addressing.MaxNode; id++ {
			cands = append(cands, cand(tb, addressing.KindNode, id, "node-"+strconv.FormatUint(id, 10)))
		}
		for id := uint64(1); id <= 470; id++ {
			cands = append(cands, cand(tb, addressing.KindHost, id, "laptop-"+strconv.FormatUint(id, 10)))
		}
		for id := uint64(2); id < 12; id++ {
			cands = append(cands, cand(tb, addressing.KindServer, id, "server-"+strconv.FormatUint(id, 10)))
		}
		res := mesh.Build(plan, cands, mesh.BuildOptions{Keys: mesh.NewKeyCache()})
		if res.Testbed.Len() != 66000 {
			panic("big testbed: " + strconv.Itoa(res.Testbed.Len()) + " members")
		}
		bigTB = res.Testbed
	})
	return bigTB
}

// recorder is a dns.ResponseWriter that keeps every message written, as
// a client would read it: packed and unpacked again.
type recorder struct {
	remote net.Addr
	msgs   []*dns.Msg
	sizes  []int
	err    error // the first message that did not unpack
}

var _ dns.ResponseWriter = (*recorder)(nil)

func udpFrom(a string) *recorder {
	return &recorder{remote: net.UDPAddrFromAddrPort(netip.AddrPortFrom(netip.MustParseAddr(a), 40000))}
}

func tcpFrom(a string) *recorder {
	return &recorder{remote: net.TCPAddrFromAddrPort(netip.AddrPortFrom(netip.MustParseAddr(a), 40000))}
}

func (r *recorder) LocalAddr() net.Addr  { return &net.UDPAddr{IP: net.IPv6loopback, Port: 53} }
func (r *recorder) RemoteAddr() net.Addr { return r.remote }
func (r *recorder) Close() error         { return nil }
func (r *recorder) TsigStatus() error    { return nil }
func (r *recorder) TsigTimersOnly(bool)  {}
func (r *recorder) Hijack()              {}

func (r *recorder) WriteMsg(m *dns.Msg) error {
	b, err := m.Pack()
	if err != nil {
		return err
	}
	_, err = r.Write(b)
	return err
}

func (r *recorder) Write(b []byte) (int, error) {
	m := new(dns.Msg)
	if err := m.Unpack(append([]byte(nil), b...)); err != nil && r.err == nil {
		r.err = err
	}
	r.msgs = append(r.msgs, m)
	r.sizes = append(r.sizes, len(b))
	return len(b), nil
}

// last returns the only message written.
func (r *recorder) only(tb testing.TB) *dns.Msg {
	tb.Helper()
	if r.err != nil {
		tb.Fatalf("answer does not unpack: %v", r.err)
	}
	if len(r.msgs) != 1 {
		tb.Fatalf("%d messages written, want 1", len(r.msgs))
	}
	return r.msgs[0]
}

// query returns a query for name and type, with RD set like a stub's.
func query(name string, t uint16) *dns.Msg {
	m := new(dns.Msg)
	m.SetQuestion(name, t)
	return m
}

// newTestServer returns a server that is not listening, with cfg (Zone
// defaulted to testZone) and, unless tb is nil, the testbed.
func newTestServer(t testing.TB, cfg Config, testbed *mesh.Testbed) *Server {
	t.Helper()
	if cfg.Zone == "" {
		cfg.Zone = testZone
	}
	s, err := New(cfg, ServerOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	if testbed != nil {
		if err := s.SetTestbed(testbed); err != nil {
			t.Fatal(err)
		}
	}
	return s
}

// rrStrings returns the records as zone-file lines.
func rrStrings(rrs []dns.RR) []string {
	out := make([]string, 0, len(rrs))
	for _, rr := range rrs {
		out = append(out, rr.String())
	}
	return out
}
