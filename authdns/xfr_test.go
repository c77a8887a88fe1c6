package authdns

import (
	"errors"
	"io"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/miekg/dns"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/confine-project/mgmtnet/addressing"
	"github.com/confine-project/mgmtnet/mesh"
)

const (
	testKeyName   = "mgmt-xfr."
	testKeySecret = "c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0LTAxMjM="
	otherSecret   = "b3RoZXItb3RoZXItb3RoZXItb3RoZXItb3RoZXItMDE="
)

var xfrKey = TSIGKey{Name: testKeyName, Algorithm: "hmac-sha256", Secret: testKeySecret}

func TestParseKeys(t *testing.T) {
	keys, err := ParseKeys([]byte(`# made by tsig-keygen
key "Mgmt-XFR" {
	algorithm hmac-sha256;
	secret "` + testKeySecret + `";
};
/* a second one */ key other. { algorithm "hmac-sha512"; secret "` + otherSecret + `"; };
`))
	if err != nil {
		t.Fatal(err)
	}
	want := []TSIGKey{{Name: "mgmt-xfr.", Algorithm: dns.HmacSHA256, Secret: testKeySecret}, {Name: "other.", Algorithm: dns.HmacSHA512, Secret: otherSecret}}
	if diff := cmp.Diff(want, keys); diff != "" {
		t.Errorf("keys (-want +got):\n%s", diff)
	}
	for in, wantErr := range map[string]string{
		``: "no key found",
		`key "a" { algorithm hmac-md5; secret "` + testKeySecret + `"; };`:                        `algorithm "hmac-md5"`,
		`key "a" { algorithm hmac-sha256; secret "c2hvcnQ="; };`:                                  "secret of 5 bytes",
		`key "a" { algorithm hmac-sha256; secret "not base64!"; };`:                               "not base64",
		`key "a" { algorithm hmac-sha256; };`:                                                     "empty secret",
		`key "a" { secret "` + testKeySecret + `"; }; key "A" { secret "` + otherSecret + `"; };`: "defined twice",
	} {
		if _, err := ParseKeys([]byte(in)); err == nil || !strings.Contains(err.Error(), wantErr) {
			t.Errorf("ParseKeys(%q) = %v, want an error with %q", in, err, wantErr)
		}
	}
}

func TestLoadKeyFileMode(t *testing.T) {
	path := filepath.Join(t.TempDir(), "xfr.key")
	body := `key "mgmt-xfr" { algorithm hmac-sha256; secret "` + testKeySecret + `"; };`
	if err := os.WriteFile(path, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadKeyFile(path); err == nil || !strings.Contains(err.Error(), "chmod 640") {
		t.Errorf("a world-readable key file: %v, want an error asking for chmod", err)
	}
	if err := os.Chmod(path, 0o640); err != nil {
		t.Fatal(err)
	}
	if keys, err := LoadKeyFile(path); err != nil || len(keys) != 1 {
		t.Errorf("LoadKeyFile = %v, %v", keys, err)
	}
}

// axfr transfers zone from addr over TCP, signed with key when it is
// not nil, and returns the records, or the error.
func axfr(t *testing.T, addr, zone string, key *TSIGKey, secret string) ([]dns.RR, error) {
	t.Helper()
	return transferIn(t, addr, zone, dns.TypeAXFR, 0, key, secret)
}

func transferIn(t *testing.T, addr, zone string, qtype uint16, serial uint32, key *TSIGKey, secret string) ([]dns.RR, error) {
	t.Helper()
	m := new(dns.Msg)
	if qtype == dns.TypeIXFR {
		m.SetIxfr(zone, serial, "ns."+testZone, "hostmaster."+testZone)
	} else {
		m.SetAxfr(zone)
	}
	tr := &dns.Transfer{DialTimeout: 5 * time.Second, ReadTimeout: 5 * time.Second}
	if key != nil {
		tr.TsigSecret = map[string]string{key.Name: secret}
		m.SetTsig(key.Name, dns.HmacSHA256, 300, time.Now().Unix())
	}
	ch, err := tr.In(m, addr)
	if err != nil {
		return nil, err
	}
	var rrs []dns.RR
	for env := range ch {
		if env.Error != nil {
			return rrs, env.Error
		}
		rrs = append(rrs, env.RR...)
	}
	return rrs, nil
}

// TestTSIG replays what a secondary without the key, with a wrong key
// and with the right one gets: transfers need the signature, a signed
// query is answered signed, and a forged signature gets NOTAUTH.
func TestTSIG(t *testing.T) {
	noLeaks(t)
	reg := prometheus.NewRegistry()
	s, addr := startServer(t, Config{TSIG: []TSIGKey{xfrKey}}, ServerOptions{Registerer: reg})
	// Unsigned: refused, over TCP, from loopback (which AllowTransfer
	// allows: the key is what is missing).
	if _, err := axfr(t, addr, testZone, nil, ""); err == nil || !strings.Contains(err.Error(), "rcode: 5") { // 5: REFUSED
		t.Errorf("unsigned AXFR: %v, want REFUSED", err)
	}
	// Signed with the right key: the whole zone, every message verified
	// by the client.
	rrs, err := axfr(t, addr, testZone, &xfrKey, testKeySecret)
	if err != nil {
		t.Fatalf("signed AXFR: %v", err)
	}
	if n := len(rrs); n < 10 || rrs[0].Header().Rrtype != dns.TypeSOA || rrs[n-1].Header().Rrtype != dns.TypeSOA {
		t.Errorf("signed AXFR: %d records, want the zone between two SOA", n)
	}
	for _, zone := range []string{testZone, s.Zone().ReverseOrigin()} {
		if _, err := transferIn(t, addr, zone, dns.TypeIXFR, 1, &xfrKey, testKeySecret); err != nil {
			t.Errorf("signed IXFR of %s: %v", zone, err)
		}
	}
	// Signed with another secret under the key's name: BADSIG, and no
	// record.
	if rrs, err := axfr(t, addr, testZone, &xfrKey, otherSecret); err == nil || len(rrs) > 0 {
		t.Errorf("AXFR with a wrong secret: %d records, err %v; want a failure", len(rrs), err)
	}
	// Over UDP, raw, to see the TSIG error the server puts in its answer.
	for _, c := range []struct {
		name, secret string
		want         uint16
	}{
		{testKeyName, otherSecret, dns.RcodeBadSig},
		{"unknown-key.", testKeySecret, dns.RcodeBadKey},
	} {
		q := query(testZone, dns.TypeSOA)
		q.SetTsig(c.name, dns.HmacSHA256, 300, time.Now().Unix())
		wire, _, err := dns.TsigGenerate(q, c.secret, "", false)
		if err != nil {
			t.Fatal(err)
		}
		r := rawUDP(t, addr, wire)
		tsig := r.IsTsig()
		if r.Rcode != dns.RcodeNotAuth || tsig == nil || tsig.Error != c.want || tsig.MAC != "" || len(r.Answer) > 0 {
			t.Errorf("SOA signed by %s with a wrong secret: %v; want NOTAUTH with TSIG error %s and no MAC", c.name, r, dns.RcodeToString[int(c.want)])
		}
	}
	// A signed query over UDP (the batch path) and TCP is answered signed:
	// the client verifies the answer's MAC, and fails without one.
	for _, network := range []string{"udp", "tcp"} {
		q := query(testZone, dns.TypeSOA)
		q.SetTsig(testKeyName, dns.HmacSHA256, 300, time.Now().Unix())
		c := &dns.Client{Net: network, Timeout: 5 * time.Second, TsigSecret: map[string]string{testKeyName: testKeySecret}}
		r, _, err := c.Exchange(q, addr)
		if err != nil || r.IsTsig() == nil || r.Rcode != dns.RcodeSuccess || len(r.Answer) != 1 {
			t.Errorf("signed SOA over %s: %v, %v; want a signed answer", network, r, err)
		}
	}
	wantMetrics(t, reg, []string{"mgmtnet_dns_tsig_failures_total", "mgmtnet_dns_refused_total"},
		`mgmtnet_dns_tsig_failures_total{error="badkey"} 1`,
		`mgmtnet_dns_tsig_failures_total{error="badsig"} 2`,
		`mgmtnet_dns_refused_total{reason="unsigned"} 1`)
}

// wantMetrics fails t unless the metrics of names include every sample
// in want.
func wantMetrics(t *testing.T, reg *prometheus.Registry, names []string, want ...string) {
	t.Helper()
	got := gather(t, reg, names...)
	for _, w := range want {
		if !slices.Contains(got, w) {
			t.Errorf("metrics %v: want %s", got, w)
		}
	}
}

// TestTSIGWithoutKeys: a server with no key takes every signature for
// one by a key it does not have.
func TestTSIGWithoutKeys(t *testing.T) {
	s := newTestServer(t, Config{}, smallTestbed(t))
	q := query("node-31."+testZone, dns.TypeAAAA)
	q.SetTsig(testKeyName, dns.HmacSHA256, 300, time.Now().Unix())
	w := tcpFrom("::1")
	s.ServeDNS(w, q)
	r := w.only(t)
	if r.Rcode != dns.RcodeNotAuth || r.IsTsig() == nil || r.IsTsig().Error != dns.RcodeBadKey {
		t.Errorf("signed query to a server without keys: %v; want NOTAUTH, BADKEY", r)
	}
}

func rawUDP(t *testing.T, addr string, wire []byte) *dns.Msg {
	t.Helper()
	c, err := net.Dial("udp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Write(wire); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 4096)
	n, err := c.Read(buf)
	if err != nil {
		t.Fatal(err)
	}
	r := new(dns.Msg)
	if err := r.Unpack(buf[:n]); err != nil {
		t.Fatal(err)
	}
	return r
}

// applyIXFR applies an IXFR answer to the records of a zone, as a
// secondary does, and returns the result; it fails the test on an answer
// that is not a well-formed IXFR.
func applyIXFR(t *testing.T, zone, answer []dns.RR) []dns.RR {
	t.Helper()
	set := map[string]dns.RR{}
	for _, rr := range zone {
		if rr.Header().Rrtype != dns.TypeSOA {
			set[rr.String()] = rr
		}
	}
	if len(answer) < 2 || answer[0].Header().Rrtype != dns.TypeSOA || answer[len(answer)-1].Header().Rrtype != dns.TypeSOA {
		t.Fatalf("IXFR answer not between two SOA: %v", rrStrings(answer))
	}
	deleting := false
	for _, rr := range answer[1 : len(answer)-1] {
		if rr.Header().Rrtype == dns.TypeSOA {
			deleting = !deleting
			continue
		}
		if deleting {
			if _, ok := set[rr.String()]; !ok {
				t.Fatalf("IXFR deletes %s, which the zone does not have", rr)
			}
			delete(set, rr.String())
		} else {
			set[rr.String()] = rr
		}
	}
	out := []dns.RR{answer[0]}
	for _, rr := range set {
		out = append(out, rr)
	}
	return out
}

func sortedStrings(rrs []dns.RR) []string {
	out := rrStrings(rrs)
	slices.Sort(out)
	return out
}

// TestIXFR: a secondary at an older serial gets the changes, which
// applied to its copy give exactly the current zone; one that is current
// gets the SOA; one older than the journal gets the whole zone.
func TestIXFR(t *testing.T) {
	noLeaks(t)
	reg := prometheus.NewRegistry()
	s, addr := startServer(t, Config{}, ServerOptions{Registerer: reg})
	clock := time.Unix(1_800_000_000, 0)
	s.now = func() time.Time { clock = clock.Add(time.Second); return clock }
	base := []mesh.Candidate{
		cand(t, addressing.KindNode, 1, "alpha"), cand(t, addressing.KindNode, 2, "beta"),
		cand(t, addressing.KindServer, 2, "main"), cand(t, addressing.KindHost, 9, ""),
	}
	steps := [][]mesh.Candidate{
		base,
		append(slices.Clone(base), cand(t, addressing.KindNode, 3, "gamma")), // a node joins
		{base[0], base[2], base[3], cand(t, addressing.KindNode, 3, "beta")}, // node 2 leaves, its name moves to node 3
		{base[0], cand(t, addressing.KindNode, 3, "beta")},                   // two more leave
	}
	type copyAt struct {
		serial   uint32
		fwd, rev []dns.RR
	}
	var copies []copyAt
	for _, cands := range steps {
		if err := s.SetTestbed(build(t, cands...)); err != nil {
			t.Fatal(err)
		}
		z := s.Zone()
		fwd, err := axfr(t, addr, testZone, nil, "")
		if err != nil {
			t.Fatal(err)
		}
		rev, err := axfr(t, addr, z.ReverseOrigin(), nil, "")
		if err != nil {
			t.Fatal(err)
		}
		copies = append(copies, copyAt{z.serial, fwd, rev})
	}
	cur := copies[len(copies)-1]
	for _, c := range copies[:len(copies)-1] {
		for _, zc := range []struct {
			zone      string
			have, now []dns.RR
		}{{testZone, c.fwd, cur.fwd}, {s.Zone().ReverseOrigin(), c.rev, cur.rev}} {
			ans, err := transferIn(t, addr, zc.zone, dns.TypeIXFR, c.serial, nil, "")
			if err != nil {
				t.Fatalf("IXFR of %s from %d: %v", zc.zone, c.serial, err)
			}
			if len(ans) > 1 && ans[1].Header().Rrtype != dns.TypeSOA {
				t.Fatalf("IXFR of %s from %d answered with the whole zone", zc.zone, c.serial)
			}
			// An AXFR ends with the SOA again; the zone has it once.
			if diff := cmp.Diff(sortedStrings(zc.now[:len(zc.now)-1]), sortedStrings(applyIXFR(t, zc.have, ans))); diff != "" {
				t.Errorf("%s from serial %d, IXFR applied (-current +got):\n%s", zc.zone, c.serial, diff)
			}
		}
	}
	// Current: the SOA alone.
	if ans, err := transferIn(t, addr, testZone, dns.TypeIXFR, cur.serial, nil, ""); err != nil || len(ans) != 1 || ans[0].(*dns.SOA).Serial != cur.serial {
		t.Errorf("IXFR from the current serial: %v, %v; want the SOA alone", rrStrings(ans), err)
	}
	// Older than the journal: the whole zone, AXFR-style.
	ans, err := transferIn(t, addr, testZone, dns.TypeIXFR, copies[0].serial-100, nil, "")
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(sortedStrings(cur.fwd[1:]), sortedStrings(ans[1:])); diff != "" || ans[0].Header().Rrtype != dns.TypeSOA {
		t.Errorf("IXFR from an unknown serial, not the whole zone (-want +got):\n%s", diff)
	}
	// Over UDP an IXFR gets the SOA: the secondary then asks over TCP.
	q := new(dns.Msg)
	q.SetIxfr(testZone, copies[0].serial, "ns."+testZone, "hostmaster."+testZone)
	if r := exchange(t, "udp", addr, q); len(r.Answer) != 1 || r.Answer[0].(*dns.SOA).Serial != cur.serial {
		t.Errorf("IXFR over UDP: %v; want the current SOA", r)
	}
	wantMetrics(t, reg, []string{"mgmtnet_dns_transfers_total"},
		`mgmtnet_dns_transfers_total{kind="ixfr"} 6`,
		`mgmtnet_dns_transfers_total{kind="current"} 1`,
		`mgmtnet_dns_transfers_total{kind="ixfr_full"} 1`)
}

// TestJournalBounds: the journal keeps at most journalDeltas changes and
// no more records than the zone holds.
func TestJournalBounds(t *testing.T) {
	s := newTestServer(t, Config{}, nil)
	clock := time.Unix(1_800_000_000, 0)
	s.now = func() time.Time { clock = clock.Add(time.Second); return clock }
	for i := range journalDeltas + 10 {
		if err := s.SetTestbed(build(t, cand(t, addressing.KindNode, 1, ""), cand(t, addressing.KindNode, uint64(2+i%3), ""))); err != nil {
			t.Fatal(err)
		}
	}
	z := s.Zone()
	if n := len(z.journal); n != journalDeltas {
		t.Errorf("journal of %d changes, want %d", n, journalDeltas)
	}
	for i := 1; i < len(z.journal); i++ {
		if z.journal[i].from != z.journal[i-1].to {
			t.Fatalf("journal not a chain at %d: %d -> %d then %d -> %d", i, z.journal[i-1].from, z.journal[i-1].to, z.journal[i].from, z.journal[i].to)
		}
	}
	if last := z.journal[len(z.journal)-1]; last.to != z.serial {
		t.Errorf("journal ends at %d, zone is at %d", last.to, z.serial)
	}
}

// TestSerialPersists: across a restart with a clock set back, the serial
// stays for the same zone and grows for another.
func TestSerialPersists(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state", "dns.serial")
	tb1 := build(t, cand(t, addressing.KindNode, 1, ""))
	tb2 := build(t, cand(t, addressing.KindNode, 2, ""))
	start := func(clock time.Time) *Server {
		s, err := New(Config{Zone: testZone}, ServerOptions{SerialFile: path})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		s.now = func() time.Time { return clock }
		return s
	}
	s := start(time.Unix(1_800_000_000, 0))
	if err := s.SetTestbed(tb1); err != nil {
		t.Fatal(err)
	}
	first := s.Zone().Serial()
	if first != 1_800_000_000 {
		t.Errorf("first serial %d, want the clock's", first)
	}
	// Restarted a day earlier by the clock, with the same zone: the same
	// serial, so secondaries transfer nothing.
	s = start(time.Unix(1_800_000_000-86400, 0))
	if err := s.SetTestbed(tb1); err != nil {
		t.Fatal(err)
	}
	if got := s.Zone().Serial(); got != first {
		t.Errorf("same zone after restart: serial %d, want %d", got, first)
	}
	// Restarted again, the clock still behind, with another zone: greater.
	s = start(time.Unix(1_800_000_000-86400, 0))
	if err := s.SetTestbed(tb2); err != nil {
		t.Fatal(err)
	}
	if got := s.Zone().Serial(); !serialGreater(got, first) {
		t.Errorf("new zone after restart with the clock behind: serial %d, not greater than %d", got, first)
	}
	// A damaged file is reported and ignored: serving goes on.
	if err := os.WriteFile(path, []byte("garbage\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	s = start(time.Unix(1_900_000_000, 0))
	if err := s.SetTestbed(tb1); err != nil || s.Zone().Serial() != 1_900_000_000 {
		t.Errorf("after a damaged serial file: %v, serial %d", err, s.Zone().Serial())
	}
}

// TestTCPLimits: past MaxTCPConns a connection is closed on accept and
// counted; an idle one is closed after TCPIdleTimeout; a freed slot
// serves again.
func TestTCPLimits(t *testing.T) {
	noLeaks(t)
	reg := prometheus.NewRegistry()
	_, addr := startServer(t, Config{MaxTCPConns: 2, TCPIdleTimeout: 500 * time.Millisecond}, ServerOptions{Registerer: reg})
	dial := func() net.Conn {
		t.Helper()
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	ask := func(c net.Conn) error {
		co := &dns.Conn{Conn: c}
		c.SetDeadline(time.Now().Add(5 * time.Second))
		if err := co.WriteMsg(query("node-31."+testZone, dns.TypeAAAA)); err != nil {
			return err
		}
		_, err := co.ReadMsg()
		return err
	}
	held := []net.Conn{dial(), dial()}
	for _, c := range held {
		if err := ask(c); err != nil {
			t.Fatalf("a connection within the cap: %v", err)
		}
	}
	// The third is reset as soon as it is accepted: the dial itself may
	// see the reset, or else its query gets no answer.
	if c, err := net.Dial("tcp", addr); err == nil {
		if err := ask(c); err == nil {
			t.Error("a connection over the cap was served")
		}
		c.Close()
	}
	wantMetrics(t, reg, []string{"mgmtnet_dns_tcp_rejected_total", "mgmtnet_dns_tcp_connections"},
		"mgmtnet_dns_tcp_rejected_total 1", "mgmtnet_dns_tcp_connections 2")
	// Idle, the held connections are closed by the server.
	for _, c := range held {
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		if _, err := c.Read(make([]byte, 1)); !errors.Is(err, io.EOF) {
			t.Errorf("idle connection: read %v, want EOF (closed by the server)", err)
		}
	}
	// Their slots are free again.
	var err error
	for range 50 { // the server frees a slot right after closing the connection
		if err = ask(dial()); err == nil {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err != nil {
		t.Errorf("after the idle connections closed: %v", err)
	}
}

// TestRateLimit: a client network outside the management prefix gets
// RateLimit answers a second, then every second answer truncated and the
// others dropped; management and loopback clients are not limited.
func TestRateLimit(t *testing.T) {
	reg := prometheus.NewRegistry()
	s, err := New(Config{Zone: testZone, RateLimit: 3, Allow: mustPrefixes("0.0.0.0/0", "::/0")}, ServerOptions{Registerer: reg})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	s.now = func() time.Time { return time.Unix(1_800_000_000, 0) }
	if err := s.SetTestbed(smallTestbed(t)); err != nil {
		t.Fatal(err)
	}
	count := func(from string, n int) (answered, truncated int) {
		for range n {
			w := udpFrom(from)
			s.ServeDNS(w, query("node-31."+testZone, dns.TypeAAAA))
			for _, m := range w.msgs {
				answered++
				if m.Truncated && len(m.Answer) == 0 {
					truncated++
				}
			}
		}
		return
	}
	if a, tc := count("192.0.2.1", 10); a != 3+3 || tc != 3 {
		t.Errorf("10 queries from 192.0.2.1: %d answered, %d truncated; want 3 answers then 3 truncated of 7", a, tc)
	}
	if a, _ := count("192.0.2.200", 2); a != 1 { // same /24: over the limit already
		t.Errorf("2 queries from the same /24: %d answered, want 1 (a slip)", a)
	}
	if a, tc := count("198.51.100.1", 3); a != 3 || tc != 0 {
		t.Errorf("another network: %d answered, %d truncated; want 3 answers", a, tc)
	}
	for _, inside := range []string{"fdf5:5351:1dfd:1f::2", "::1", "127.0.0.1"} {
		if a, tc := count(inside, 20); a != 20 || tc != 0 {
			t.Errorf("%s: %d of 20 answered, %d truncated; want no limit", inside, a, tc)
		}
	}
	// TCP is never limited.
	w := tcpFrom("192.0.2.1")
	s.ServeDNS(w, query("node-31."+testZone, dns.TypeAAAA))
	if r := w.only(t); len(r.Answer) != 1 {
		t.Errorf("TCP over the limit: %v", r)
	}
	wantMetrics(t, reg, []string{"mgmtnet_dns_rate_limited_total"},
		`mgmtnet_dns_rate_limited_total{action="dropped"} 5`, `mgmtnet_dns_rate_limited_total{action="slipped"} 4`)
}

// TestCompressed: answers are name-compressed, as other servers' are.
func TestCompressed(t *testing.T) {
	s := newTestServer(t, Config{}, smallTestbed(t))
	w := udpFrom("::1")
	s.ServeDNS(w, query("node-31."+testZone, dns.TypeAAAA))
	// Header 12, question 23+4, answer: a pointer 2, type..rdlength 10,
	// address 16.
	if got, want := w.sizes[0], 12+len("node-31."+testZone)+1+4+2+10+16; got != want {
		t.Errorf("AAAA answer of %d bytes, want %d (compressed)", got, want)
	}
}

func mustPrefixes(ss ...string) []netip.Prefix {
	var out []netip.Prefix
	for _, s := range ss {
		out = append(out, netip.MustParsePrefix(s))
	}
	return out
}

// TestNameServerMemberGlue: a name server named by a member gets that
// member's management address as glue, while the member is present.
func TestNameServerMemberGlue(t *testing.T) {
	cfg := Config{Zone: testZone, NS: []NameServer{{Name: "ns." + testZone, Member: "node_31"}}}
	z, err := NewZone(cfg, smallTestbed(t))
	if err != nil {
		t.Fatal(err)
	}
	var sc scratch
	ans := z.lookupForward(&sc, "ns."+testZone, "ns."+testZone, dns.TypeAAAA)
	if got := rrStrings(ans.answer); len(got) != 1 || !strings.HasSuffix(got[0], "fdf5:5351:1dfd:1f::2") {
		t.Errorf("ns AAAA with node_31 present: %v", got)
	}
	z, err = NewZone(cfg, build(t, cand(t, addressing.KindNode, 1, "")))
	if err != nil {
		t.Fatal(err)
	}
	if ans := z.lookupForward(&sc, "ns."+testZone, "ns."+testZone, dns.TypeAAAA); len(ans.answer) != 0 {
		t.Errorf("ns AAAA with node_31 absent: %v", rrStrings(ans.answer))
	}
}
