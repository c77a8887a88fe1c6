package authdns

import (
	"context"
	"net"
	"net/netip"
	"strings"

	"github.com/miekg/dns"
)

// reply is everything one answer needs, pooled by the Server: the
// message, its OPT record, computed records and the wire buffer. A
// query answered from the zone allocates nothing of its own.
type reply struct {
	msg   dns.Msg
	opt   dns.OPT
	extra [1]dns.RR
	scratch
	buf []byte
	// signWith is the key of a request whose TSIG verified: the answer is
	// signed with it.
	signWith *TSIGKey
	// limited is set for a UDP client under response-rate limiting.
	limited bool
	client  netip.Addr
}

// rcodeDetached is what serve returns when a goroutine took the reply
// over to answer a forwarded query later: ServeDNS must then neither count
// nor recycle it, nor read it.
const rcodeDetached = -1

// replyBufSize fits any UDP answer (Config.UDPSize is at most 4096) and
// most TCP ones; PackBuffer allocates for larger.
const replyBufSize = dns.DefaultMsgSize

func (s *Server) getReply() *reply { return s.replies.Get().(*reply) }

func (s *Server) putReply(rp *reply) {
	buf := rp.buf
	if cap(buf) > replyBufSize {
		buf = make([]byte, replyBufSize) // do not keep a rare large TCP buffer
	}
	*rp = reply{buf: buf[:cap(buf)]}
	s.replies.Put(rp)
}

// ServeDNS answers one query; it is the server's dns.Handler, exported so
// that tests and other servers can call it with their own ResponseWriter.
//
// In order: a message that is a response is dropped (never answer an
// answer: no loops); an opcode other than QUERY is NOTIMP, but NOTIFY,
// which is REFUSED (this server is a primary only); a message without
// exactly one question, or with more than one OPT record, is FORMERR; an
// EDNS version other than 0 is BADVERS (RFC 6891); a class other than IN
// or ANY is REFUSED; a client outside Config.Allow is REFUSED (for
// transfers: outside Config.AllowTransfer); before the first testbed,
// names of our zones get SERVFAIL; then the zones answer, or the query is
// forwarded or REFUSED.
func (s *Server) ServeDNS(w dns.ResponseWriter, r *dns.Msg) {
	if r == nil || r.Response {
		return
	}
	rp := s.getReply()
	rcode, sent := s.serve(w, r, rp)
	if rcode == rcodeDetached {
		return // a goroutine has the reply now, and may have recycled it already
	}
	if sent {
		s.m.query(qtype(r), rcode)
	}
	s.putReply(rp)
}

func qtype(r *dns.Msg) uint16 {
	if len(r.Question) == 0 {
		return 0
	}
	return r.Question[0].Qtype
}

// serve answers r through w and returns the rcode sent, or sent false
// when nothing was (a failed transfer).
func (s *Server) serve(w dns.ResponseWriter, r *dns.Msg, rp *reply) (rcode int, sent bool) {
	m := &rp.msg
	m.Id = r.Id
	m.Response = true
	m.Opcode = r.Opcode
	if r.Opcode == dns.OpcodeQuery {
		m.RecursionDesired = r.RecursionDesired
		m.CheckingDisabled = r.CheckingDisabled
	}
	if len(r.Question) > 0 {
		m.Question = r.Question[:1:1]
	}
	client, tcp := remote(w)
	limit := dns.MinMsgSize
	if tcp {
		limit = dns.MaxMsgSize
	}
	z := s.zone.Load()
	if s.rrl != nil && !tcp && !client.IsLoopback() && (z == nil || !z.plan.Mgmt().Contains(client)) {
		rp.limited, rp.client = true, client
	}

	opt, nopt := edns0(r)
	if nopt > 1 {
		return s.write(w, rp, dns.RcodeFormatError, limit)
	}
	if opt != nil {
		rp.opt.Hdr = dns.RR_Header{Name: ".", Rrtype: dns.TypeOPT, Class: uint16(s.cfg.UDPSize)}
		if opt.Do() {
			rp.opt.SetDo() // RFC 3225 §3: copy the DO bit
		}
		rp.extra[0] = &rp.opt
		m.Extra = rp.extra[:]
		if !tcp {
			limit = min(max(int(opt.UDPSize()), dns.MinMsgSize), s.cfg.UDPSize)
		}
		if opt.Version() != 0 {
			return s.write(w, rp, dns.RcodeBadVers, limit)
		}
	}
	if t := r.IsTsig(); t != nil {
		// Without keys, miekg/dns checks nothing: every signature is
		// then one by a key we do not have.
		err := dns.ErrSecret
		if s.keys != nil {
			err = w.TsigStatus()
		}
		if err != nil {
			return s.tsigFailed(w, r, rp, t, err, limit)
		}
		k, _ := s.keys.key(t)
		rp.signWith = &k
	}
	switch r.Opcode {
	case dns.OpcodeQuery:
	case dns.OpcodeNotify:
		s.m.refused[refusedNotify].Inc()
		return s.write(w, rp, dns.RcodeRefused, limit)
	default:
		return s.write(w, rp, dns.RcodeNotImplemented, limit)
	}
	if len(r.Question) != 1 {
		return s.write(w, rp, dns.RcodeFormatError, limit)
	}
	q := r.Question[0]
	switch q.Qtype {
	case dns.TypeOPT, 0:
		return s.write(w, rp, dns.RcodeFormatError, limit)
	}
	if q.Qclass != dns.ClassINET && q.Qclass != dns.ClassANY {
		s.m.refused[refusedClass].Inc()
		return s.write(w, rp, dns.RcodeRefused, limit)
	}
	xfr := q.Qtype == dns.TypeAXFR || q.Qtype == dns.TypeIXFR
	switch {
	case xfr && !allowed(s.cfg.AllowTransfer, client):
		s.m.refused[refusedTransfer].Inc()
		return s.write(w, rp, dns.RcodeRefused, limit)
	case xfr && s.keys != nil && rp.signWith == nil:
		s.m.refused[refusedUnsigned].Inc()
		return s.write(w, rp, dns.RcodeRefused, limit)
	case !xfr && !allowed(s.allowList(z), client):
		s.m.refused[refusedClient].Inc()
		return s.write(w, rp, dns.RcodeRefused, limit)
	}

	qname := strings.ToLower(q.Name) // no copy when already lower case
	if z == nil {
		// No testbed yet: the reverse zone is not even known. Names that
		// may be ours fail rather than being forwarded or refused.
		if inZone(qname, s.cfg.Zone) || inZone(qname, "ip6.arpa.") {
			return s.write(w, rp, dns.RcodeServerFailure, limit)
		}
		return s.outside(w, r, rp, tcp, limit)
	}
	var ans answer
	switch {
	case inZone(qname, z.fwd.name):
		if xfr {
			return s.xfr(w, r, rp, z, false, qname == z.fwd.name, tcp, limit)
		}
		ans = z.lookupForward(&rp.scratch, q.Name, qname, q.Qtype)
	case inZone(qname, z.rev.name):
		if xfr {
			return s.xfr(w, r, rp, z, true, qname == z.rev.name, tcp, limit)
		}
		ans = z.lookupReverse(&rp.scratch, q.Name, qname, q.Qtype)
	default:
		return s.outside(w, r, rp, tcp, limit)
	}
	m.Authoritative = true
	m.Answer, m.Ns = ans.answer, ans.ns
	if len(ans.extra) > 0 {
		// The glue goes before the OPT record, in a fresh slice: the
		// zone's must not be appended to.
		m.Extra = append(append(make([]dns.RR, 0, len(ans.extra)+len(m.Extra)), ans.extra...), m.Extra...)
	}
	return s.write(w, rp, ans.rcode, limit)
}

// allowList returns the clients allowed to query: the zone's (which
// defaults to its /48 and loopback), or before the first testbed the
// configured list or loopback.
func (s *Server) allowList(z *Zone) []netip.Prefix {
	switch {
	case z != nil:
		return z.allow
	case len(s.cfg.Allow) > 0:
		return s.cfg.Allow
	}
	return loopback()
}

// write finishes rp.msg with rcode, truncates it to limit and sends it,
// signed when the request was, compressed, and within the response-rate
// limit.
func (s *Server) write(w dns.ResponseWriter, rp *reply, rcode, limit int) (int, bool) {
	m := &rp.msg
	m.Rcode = rcode
	if rp.limited {
		switch s.rrl.take(rp.client, s.now()) {
		case rateDrop:
			s.m.limited[0].Inc()
			return rcode, false
		case rateSlip:
			s.m.limited[1].Inc()
			m.Truncated = true
			m.Answer, m.Ns = nil, nil
			m.Extra = m.Extra[:0:0]
			if rp.opt.Hdr.Rrtype == dns.TypeOPT {
				m.Extra = rp.extra[:]
			}
		}
	}
	if rp.signWith != nil {
		return s.writeSigned(w, rp, rcode, limit)
	}
	m.Compress = true
	b, err := m.PackBuffer(rp.buf)
	if err == nil && len(b) > limit {
		// Rare: most answers are a record or two. Truncate compresses,
		// then drops records until the answer fits.
		m.Truncate(limit)
		b, err = m.PackBuffer(rp.buf)
	}
	if err != nil {
		s.log.Error("pack dns answer", "question", questionString(m), "err", err)
		return rcode, false
	}
	rp.buf = b
	if _, err := w.Write(b); err != nil {
		s.log.Debug("write dns answer", "client", w.RemoteAddr().String(), "err", err)
	}
	return rcode, true
}

// writeSigned sends rp.msg signed with the request's key (RFC 8945
// §5.3): the response writer computes the MAC over the request's.
func (s *Server) writeSigned(w dns.ResponseWriter, rp *reply, rcode, limit int) (int, bool) {
	m := &rp.msg
	m.Compress = true
	k := rp.signWith
	room := limit - dns.Len(&dns.TSIG{Hdr: hdr(k.Name, dns.TypeTSIG, 0), Algorithm: k.Algorithm, MAC: strings.Repeat("00", 64)})
	if m.Len() > room {
		m.Truncate(room)
	}
	sign(m, *k, s.now()) // appends: every Extra here has len == cap, so never into the zone's slices
	if err := w.WriteMsg(m); err != nil {
		s.log.Debug("write signed dns answer", "client", w.RemoteAddr().String(), "err", err)
	}
	return rcode, true
}

// tsigFailed answers a request whose signature does not verify: NOTAUTH
// with a TSIG record that carries the error and no MAC, unsigned (RFC
// 8945 §5.2), so that the client learns why without our key being used
// for a message its sender may have forged.
func (s *Server) tsigFailed(w dns.ResponseWriter, r *dns.Msg, rp *reply, t *dns.TSIG, err error, limit int) (int, bool) {
	code, reason := tsigError(err)
	s.m.tsigFailed.WithLabelValues(reason).Inc()
	s.log.Debug("dns tsig failed", "client", w.RemoteAddr().String(), "key", t.Hdr.Name, "err", err)
	m := &rp.msg
	m.Answer, m.Ns = nil, nil
	m.Extra = append(append([]dns.RR(nil), m.Extra...), &dns.TSIG{
		Hdr: dns.RR_Header{Name: t.Hdr.Name, Rrtype: dns.TypeTSIG, Class: dns.ClassANY}, Algorithm: t.Algorithm,
		TimeSigned: uint64(s.now().Unix()), Fudge: tsigFudge, OrigId: r.Id, Error: code,
	})
	return s.write(w, rp, dns.RcodeNotAuth, limit)
}

func questionString(m *dns.Msg) string {
	if len(m.Question) == 0 {
		return ""
	}
	return m.Question[0].String()
}

// remote returns the client's address (IPv4-mapped ones as IPv4) and
// whether the query came over TCP.
func remote(w dns.ResponseWriter) (netip.Addr, bool) {
	if u, ok := w.(interface{ addrPort() (netip.AddrPort, bool) }); ok {
		ap, tcp := u.addrPort()
		return ap.Addr().Unmap(), tcp
	}
	switch a := w.RemoteAddr().(type) {
	case *net.UDPAddr:
		return a.AddrPort().Addr().Unmap(), false
	case *net.TCPAddr:
		return a.AddrPort().Addr().Unmap(), true
	case nil:
		return netip.Addr{}, false
	default:
		ap, _ := netip.ParseAddrPort(a.String())
		return ap.Addr().Unmap(), a.Network() == "tcp"
	}
}

// edns0 returns the request's OPT record and how many it has.
func edns0(r *dns.Msg) (*dns.OPT, int) {
	var opt *dns.OPT
	n := 0
	for _, rr := range r.Extra {
		if o, ok := rr.(*dns.OPT); ok {
			opt = o
			n++
		}
	}
	return opt, n
}

// outside answers a name outside our zones: forwarded when upstreams are
// configured and the client asks for recursion, else REFUSED.
func (s *Server) outside(w dns.ResponseWriter, r *dns.Msg, rp *reply, tcp bool, limit int) (int, bool) {
	if len(s.cfg.Forward) == 0 || !r.RecursionDesired || r.Question[0].Qtype == dns.TypeAXFR || r.Question[0].Qtype == dns.TypeIXFR || rp.signWith != nil {
		s.m.refused[refusedZone].Inc()
		return s.write(w, rp, dns.RcodeRefused, limit)
	}
	if d, ok := w.(interface{ detach() dns.ResponseWriter }); ok {
		return s.forwardAsync(d.detach(), r, rp, tcp, limit)
	}
	return s.forward(w, r, rp, tcp, limit)
}

// forwardAsync forwards in a goroutine of its own, for serveUDP, whose
// goroutine answers every client of a socket and must not wait for an
// upstream. Past maxForwards in flight, or once shutting down, the answer
// is SERVFAIL.
func (s *Server) forwardAsync(w dns.ResponseWriter, r *dns.Msg, rp *reply, tcp bool, limit int) (int, bool) {
	s.mu.Lock()
	ok := !s.closed
	if ok {
		select {
		case s.forwards <- struct{}{}:
			s.bg.Add(1)
		default:
			ok = false
		}
	}
	s.mu.Unlock()
	if !ok {
		return s.write(w, rp, dns.RcodeServerFailure, limit)
	}
	go func() {
		defer s.bg.Done()
		if rcode, sent := s.forward(w, r, rp, tcp, limit); sent {
			s.m.query(qtype(r), rcode)
		}
		<-s.forwards
		s.putReply(rp)
	}()
	return rcodeDetached, false
}

// forward asks the upstream resolvers in order, over the client's
// transport, and relays the first answer. The upstream query is a fresh
// message with a random id, not the client's: the client's EDNS options
// (cookies...) are meant for us.
func (s *Server) forward(w dns.ResponseWriter, r *dns.Msg, rp *reply, tcp bool, limit int) (int, bool) {
	q := new(dns.Msg)
	q.Id = dns.Id()
	q.RecursionDesired = true
	q.CheckingDisabled = r.CheckingDisabled
	q.Question = []dns.Question{r.Question[0]}
	do := rp.opt.Do()
	q.SetEdns0(uint16(s.cfg.UDPSize), do)
	c := &dns.Client{Net: "udp", Timeout: s.cfg.ForwardTimeout}
	if tcp {
		c.Net = "tcp"
	}
	for _, up := range s.cfg.Forward {
		ctx, cancel := context.WithTimeout(s.ctx, s.cfg.ForwardTimeout)
		resp, _, err := c.ExchangeContext(ctx, q, up.String())
		cancel()
		if err != nil {
			s.log.Debug("forward dns query", "upstream", up.String(), "question", r.Question[0].String(), "err", err)
			continue
		}
		// Relay the upstream's sections and flags under the client's id,
		// question and OPT record.
		m := &rp.msg
		m.Authoritative = resp.Authoritative
		m.RecursionAvailable = resp.RecursionAvailable
		m.AuthenticatedData = resp.AuthenticatedData
		m.Truncated = resp.Truncated
		m.Answer, m.Ns = resp.Answer, resp.Ns
		extra := m.Extra // our OPT, if the client sent one
		m.Extra = nil
		for _, rr := range resp.Extra {
			if rr.Header().Rrtype != dns.TypeOPT {
				m.Extra = append(m.Extra, rr)
			}
		}
		m.Extra = append(m.Extra, extra...)
		rcode := resp.Rcode
		if rcode > 0xf && len(extra) == 0 {
			rcode = dns.RcodeServerFailure // an extended rcode needs an OPT record the client did not send
		}
		return s.write(w, rp, rcode, limit)
	}
	return s.write(w, rp, dns.RcodeServerFailure, limit)
}

// xfr serves a zone transfer over TCP: AXFR (RFC 5936), and IXFR (RFC
// 1995) with the changes since the client's serial when the journal
// reaches back to it, the SOA alone when the client is current, and the
// whole zone otherwise. Over UDP an IXFR gets the SOA alone, telling the
// client to retry over TCP (RFC 1995 §2); an AXFR is REFUSED. A transfer
// of a name other than a zone apex is NOTAUTH (RFC 5936 §2.2.1).
func (s *Server) xfr(w dns.ResponseWriter, r *dns.Msg, rp *reply, z *Zone, reverse, atApex, tcp bool, limit int) (int, bool) {
	a := &z.fwd
	if reverse {
		a = &z.rev
	}
	switch {
	case !atApex:
		return s.write(w, rp, dns.RcodeNotAuth, limit)
	case !tcp && r.Question[0].Qtype == dns.TypeIXFR:
		rp.msg.Authoritative = true
		rp.msg.Answer = a.soa
		return s.write(w, rp, dns.RcodeSuccess, limit)
	case !tcp:
		s.m.refused[refusedTransfer].Inc()
		return s.write(w, rp, dns.RcodeRefused, limit)
	}
	kind := transferAXFR
	produce := func(emit func([]dns.RR) bool) bool { return z.transfer(reverse, emit) }
	var from uint32
	if r.Question[0].Qtype == dns.TypeIXFR {
		kind = transferIXFRFull
		var ok bool
		from, ok = ixfrSerial(r, a.name)
		var changes []*delta
		switch {
		case !ok:
			// No SOA of the client's: RFC 1995 asks for one; the whole zone
			// serves any client.
		case !serialGreater(z.serial, from):
			kind = transferCurrent
			produce = func(emit func([]dns.RR) bool) bool { return emit(a.soa) }
		default:
			if changes, ok = z.chain(from); ok {
				kind = transferIXFR
				produce = func(emit func([]dns.RR) bool) bool { return z.incremental(reverse, changes, emit) }
			}
		}
	}
	ch := make(chan *dns.Envelope)
	stop := make(chan struct{})
	go func() {
		defer close(ch)
		produce(func(rrs []dns.RR) bool {
			select {
			case ch <- &dns.Envelope{RR: rrs}:
				return true
			case <-stop:
				return false
			}
		})
	}()
	tr := new(dns.Transfer)
	err := tr.Out(w, r, ch)
	close(stop)
	for range ch { // wait for the producer
	}
	if err != nil {
		s.log.Warn("zone transfer failed", "zone", a.name, "kind", transferNames[kind], "client", w.RemoteAddr().String(), "err", err)
		return dns.RcodeSuccess, false
	}
	s.m.transfers[kind].Inc()
	log := s.log.Info
	if kind == transferCurrent {
		log = s.log.Debug
	}
	log("zone transferred", "zone", a.name, "kind", transferNames[kind], "serial", z.serial, "client_serial", from,
		"client", w.RemoteAddr().String(), "signed", rp.signWith != nil)
	return dns.RcodeSuccess, true
}

// ixfrSerial returns the serial of the client's SOA in an IXFR request's
// authority section (RFC 1995 §3).
func ixfrSerial(r *dns.Msg, zone string) (uint32, bool) {
	for _, rr := range r.Ns {
		if soa, ok := rr.(*dns.SOA); ok && strings.EqualFold(soa.Hdr.Name, zone) {
			return soa.Serial, true
		}
	}
	return 0, false
}
