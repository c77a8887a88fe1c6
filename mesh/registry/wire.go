package registry

import (
	"bytes"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strconv"
	"strings"

	"github.com/confine-project/mgmtnet/addressing"
	"github.com/confine-project/mgmtnet/mesh"
)

// The wire types below mirror the controller's JSON. They are decoded
// leniently: unknown fields are ignored, because the controller adds fields
// (and real nodes carry dozens that do not concern the management network).

// wireRef is a reference to another resource: {"uri": ..., "id": ...}.
// A bare number is accepted too (some tools write island ids that way).
type wireRef struct {
	URI string `json:"uri"`
	ID  uint64 `json:"id"`
}

func (r *wireRef) UnmarshalJSON(b []byte) error {
	b = bytes.TrimSpace(b)
	if len(b) > 0 && b[0] != '{' {
		if string(b) == "null" {
			return nil
		}
		id, err := strconv.ParseUint(string(b), 10, 64)
		if err != nil {
			return fmt.Errorf("reference %s: want {\"uri\": ..., \"id\": N}, a number or null", quoteJSON(b))
		}
		r.ID = id
		return nil
	}
	type plain wireRef
	return json.Unmarshal(b, (*plain)(r))
}

// refID returns the id of a reference, 0 for none.
func refID(r *wireRef) uint64 {
	if r == nil {
		return 0
	}
	return r.ID
}

// wirePort is a tinc port: a JSON number, a numeric string, or null.
type wirePort int

func (p *wirePort) UnmarshalJSON(b []byte) error {
	s := string(bytes.TrimSpace(b))
	if s == "null" {
		*p = 0
		return nil
	}
	if uq, err := strconv.Unquote(s); err == nil {
		s = strings.TrimSpace(uq)
		if s == "" {
			*p = 0
			return nil
		}
	}
	n, err := strconv.ParseInt(s, 10, 32)
	if err != nil {
		return fmt.Errorf("port %s: want an integer", quoteJSON(b))
	}
	*p = wirePort(n)
	return nil
}

// wireAddress is one tinc address. v1 renders {"addr", "port", "island"};
// v0 controllers also rendered plain strings "1.2.3.4" or "1.2.3.4 655".
type wireAddress struct {
	Addr   string   `json:"addr"`
	Port   wirePort `json:"port"`
	Island *wireRef `json:"island"`
}

func (a *wireAddress) UnmarshalJSON(b []byte) error {
	b = bytes.TrimSpace(b)
	if len(b) > 0 && b[0] == '"' {
		var s string
		if err := json.Unmarshal(b, &s); err != nil {
			return err
		}
		f := strings.Fields(s)
		switch len(f) {
		case 1:
			a.Addr = f[0]
		case 2:
			a.Addr = f[0]
			n, err := strconv.ParseInt(f[1], 10, 32)
			if err != nil {
				return fmt.Errorf("address %q: port %q is not an integer", s, f[1])
			}
			a.Port = wirePort(n)
		default:
			return fmt.Errorf("address %q: want \"ADDR\" or \"ADDR PORT\"", s)
		}
		return nil
	}
	type plain wireAddress
	return json.Unmarshal(b, (*plain)(a))
}

// wireTinc is v1's "tinc" object, and v0's tinc_client/tinc_server.
type wireTinc struct {
	Name      string        `json:"name"`
	PubKey    string        `json:"pubkey"`
	Addresses []wireAddress `json:"addresses"`
	IsActive  *bool         `json:"is_active"` // v0 tinc_server only
}

// wireMgmtNet is "mgmt_net". TincClient and TincServer are v0's; they are
// kept raw so that their presence (even as null) marks the v0 shape.
type wireMgmtNet struct {
	Addr       string          `json:"addr"`
	Backend    string          `json:"backend"`
	TincClient json.RawMessage `json:"tinc_client"`
	TincServer json.RawMessage `json:"tinc_server"`
}

// wireMember is a node, server or host as the controller renders it.
type wireMember struct {
	URI        string                     `json:"uri"`
	ID         uint64                     `json:"id"`
	Name       string                     `json:"name"`
	Island     *wireRef                   `json:"island"`
	MgmtNet    *wireMgmtNet               `json:"mgmt_net"`
	Tinc       *wireTinc                  `json:"tinc"`
	Properties map[string]json.RawMessage `json:"properties"`
}

// isV0 reports whether the member has the pre-2015 mgmt_net shape.
func (m *wireMember) isV0() bool {
	return m.MgmtNet != nil && (m.MgmtNet.TincClient != nil || m.MgmtNet.TincServer != nil)
}

// candidate converts a decoded member into a mesh.Candidate of kind.
func (m *wireMember) candidate(kind addressing.Kind) (mesh.Candidate, error) {
	c := mesh.Candidate{Kind: kind, ID: m.ID, Name: m.Name, Island: refID(m.Island)}
	tinc := m.Tinc
	if m.MgmtNet != nil {
		c.MgmtAddr = m.MgmtNet.Addr
		c.Backend = m.MgmtNet.Backend
		if m.isV0() {
			switch c.Backend {
			case "tinc_client", "tinc_server":
				c.Backend = "tinc"
			}
			var client, server *wireTinc
			if err := decodeOptional(m.MgmtNet.TincServer, &server); err != nil {
				return c, fmt.Errorf("mgmt_net.tinc_server: %w", err)
			}
			if err := decodeOptional(m.MgmtNet.TincClient, &client); err != nil {
				return c, fmt.Errorf("mgmt_net.tinc_client: %w", err)
			}
			switch {
			case server != nil && (server.IsActive == nil || *server.IsActive):
				tinc = server
			case client != nil:
				tinc = client
			default:
				// Neither: no key registered, like v1's "tinc": null,
				// unless the object also carries a v1 tinc section.
			}
			if tinc != nil && tinc.PubKey == "" {
				// v0.11 renders tinc_client and tinc_server whether or
				// not a key is registered ("pubkey": null): no key, as
				// its top-level "tinc" (null then) says.
				tinc = m.Tinc
			}
		}
	}
	if tinc != nil {
		ct := &mesh.CandidateTinc{Name: tinc.Name, PubKey: tinc.PubKey}
		for _, a := range tinc.Addresses {
			ct.Addresses = append(ct.Addresses, mesh.CandidateAddress{Addr: a.Addr, Port: int(a.Port), Island: refID(a.Island)})
		}
		c.Tinc = ct
	}
	if len(m.Properties) > 0 {
		c.Properties = make(map[string]string, len(m.Properties))
		for k, raw := range m.Properties {
			var s string
			if err := json.Unmarshal(raw, &s); err != nil {
				// Not a string: keep the JSON text rather than drop the
				// member over a free-form annotation.
				s = string(raw)
			}
			c.Properties[k] = s
		}
	}
	return c, nil
}

// decodeOptional decodes raw into *dst unless it is absent or null.
func decodeOptional(raw json.RawMessage, dst **wireTinc) error {
	if raw == nil || string(bytes.TrimSpace(raw)) == "null" {
		return nil
	}
	t := new(wireTinc)
	if err := json.Unmarshal(raw, t); err != nil {
		return err
	}
	*dst = t
	return nil
}

// decoded is the result of decoding one collection's elements.
type decoded struct {
	Candidates []mesh.Candidate
	Problems   []mesh.Problem
	V0         bool // some element had the v0 mgmt_net shape
}

// memberDecoder decodes the elements of one collection, one at a time and
// each on its own: an element that does not decode becomes a mesh.Problem
// (with the id and tinc name when they can still be read) and the others
// go on.
//
// An element byte-identical to an earlier one of the collection is
// dropped: when a member is added or removed between two page requests the
// offsets shift, and a page may repeat the last element of the one before.
// Elements that differ but claim the same id or name are kept, for
// mesh.Build to reject both claimants.
type memberDecoder struct {
	kind addressing.Kind
	// defaultID is the id of an element that gives none (0: none).
	defaultID uint64
	source    string // names the collection in problem reasons, e.g. its URL
	log       *slog.Logger
	n         int // elements given to add, duplicates included
	dups      int // exact duplicates dropped
	// seen holds a digest of each element rather than its bytes, so as
	// not to keep a second copy of the collection. 128 bits of SHA-256
	// make a collision, which would drop a member, practically
	// impossible.
	seen map[[16]byte]struct{}
	// added are the digests added to seen since the last mark.
	added [][16]byte
	// sink, when set, takes the candidates instead of decoded.Candidates;
	// sunk counts them.
	sink Sink
	sunk int
	decoded
}

func newMemberDecoder(kind addressing.Kind, source string, log *slog.Logger) *memberDecoder {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &memberDecoder{kind: kind, source: source, log: log, seen: map[[16]byte]struct{}{}}
}

// add decodes the next element. It does not keep raw.
func (md *memberDecoder) add(raw json.RawMessage) {
	i := md.n
	md.n++
	sum := sha256.Sum256(raw)
	key := [16]byte(sum[:16])
	if _, dup := md.seen[key]; dup {
		md.dups++
		md.log.Debug("dropping an exact duplicate element (did pagination shift?)", "collection", md.source, "index", i)
		return
	}
	md.seen[key] = struct{}{}
	md.added = append(md.added, key)
	var m wireMember
	err := json.Unmarshal(raw, &m)
	var c mesh.Candidate
	if err == nil {
		c, err = m.candidate(md.kind)
	}
	if err != nil {
		md.Problems = append(md.Problems, elementProblem(md.kind, md.source, i, raw, err))
		return
	}
	if c.ID == 0 && md.defaultID != 0 {
		c.ID = md.defaultID
	}
	if m.isV0() {
		md.V0 = true
	}
	if md.sink != nil {
		md.sink.Add(&c)
		md.sunk++
		return
	}
	md.Candidates = append(md.Candidates, c)
}

// decoderMark is a memberDecoder's state before a page; see mark.
type decoderMark struct {
	n, dups, cands, probs, added, sunk int
	v0                                 bool
}

// mark records the state before a page, for rollback, and checkpoints the
// sink.
func (md *memberDecoder) mark() decoderMark {
	md.added = md.added[:0]
	if md.sink != nil {
		md.sink.Checkpoint()
	}
	return decoderMark{n: md.n, dups: md.dups, cands: len(md.Candidates), probs: len(md.Problems), v0: md.V0, sunk: md.sunk}
}

// rollback forgets every element added since m: a page whose transfer
// failed half-way is read again in full on the next attempt.
func (md *memberDecoder) rollback(m decoderMark) {
	for _, k := range md.added {
		delete(md.seen, k)
	}
	md.added = md.added[:0]
	if md.sink != nil {
		md.sink.Rollback()
		md.sunk = m.sunk
	}
	clear(md.Candidates[m.cands:])
	clear(md.Problems[m.probs:])
	md.n, md.dups, md.V0 = m.n, m.dups, m.v0
	md.Candidates, md.Problems = md.Candidates[:m.cands], md.Problems[:m.probs]
}

// members is how many elements have been kept: candidates and problems.
func (md *memberDecoder) members() int { return len(md.Candidates) + md.sunk + len(md.Problems) }

// elementProblem describes an element that failed to decode, recovering
// what it can of its identity.
func elementProblem(kind addressing.Kind, source string, i int, raw json.RawMessage, err error) mesh.Problem {
	p := mesh.Problem{Kind: kind, Reason: fmt.Sprintf("undecodable object #%d in %s: %v", i, source, err)}
	var probe struct {
		ID   json.RawMessage `json:"id"`
		Tinc struct {
			Name json.RawMessage `json:"name"`
		} `json:"tinc"`
	}
	if json.Unmarshal(raw, &probe) != nil {
		// Try the id alone: tinc may be the broken part.
		var idOnly struct {
			ID json.RawMessage `json:"id"`
		}
		if json.Unmarshal(raw, &idOnly) != nil {
			return p
		}
		probe.ID = idOnly.ID
	}
	if id, err := strconv.ParseUint(string(probe.ID), 10, 64); err == nil {
		p.ID = id
	}
	var name string
	if json.Unmarshal(probe.Tinc.Name, &name) == nil && mesh.ValidTincName(name) {
		p.TincName = name
	}
	return p
}

// baseObject is what the client reads of the registry's base resource.
type baseObject struct {
	TestbedParams struct {
		MgmtIPv6Prefix string `json:"mgmt_ipv6_prefix"`
	} `json:"testbed_params"`
}

// decodeBase decodes the base resource, one JSON object, from r.
func decodeBase(url string, r io.Reader, base *baseObject) error {
	cr := &countingReader{r: r}
	dec := newCappedDecoder(&spaceSqueezer{r: cr})
	if err := dec.Decode(base); err != nil {
		return fmt.Errorf("decode %s: want the registry's base object: %w", url, describeJSONError(cr.n, err))
	}
	if _, err := dec.Token(); err != io.EOF {
		if err != nil && !isSyntaxError(err) {
			return fmt.Errorf("decode %s: %w", url, err)
		}
		return fmt.Errorf("decode %s: want the registry's base object: data after it at byte %d", url, dec.InputOffset())
	}
	return nil
}

// decodeList decodes the JSON array that r streams element by element and
// passes each element to add, which must not keep it: the next element
// reuses its bytes. So neither the body nor its elements are ever all in
// memory at once: only the element being decoded is.
func decodeList(url string, r io.Reader, add func(json.RawMessage)) error {
	cr := &countingReader{r: r}
	bad := func(err error) error {
		return fmt.Errorf("decode %s: want a JSON array of objects: %w", url, describeJSONError(cr.n, err))
	}
	dec := newCappedDecoder(&spaceSqueezer{r: cr})
	tok, err := dec.Token()
	if err != nil {
		return bad(err)
	}
	if d, ok := tok.(json.Delim); !ok || d != '[' {
		return fmt.Errorf("decode %s: want a JSON array of objects, not %s", url, describeToken(tok))
	}
	var raw json.RawMessage
	for dec.More() {
		if err := dec.Decode(&raw); err != nil {
			return bad(err)
		}
		add(raw)
	}
	if _, err := dec.Token(); err != nil { // the closing ']'
		return bad(err)
	}
	if _, err := dec.Token(); err != io.EOF {
		if err != nil && !isSyntaxError(err) {
			return bad(err) // a read error, or the limit
		}
		return fmt.Errorf("decode %s: want a JSON array of objects: data after the array at byte %d", url, dec.InputOffset())
	}
	return nil
}

// decodeObject decodes a singleton resource: one JSON object, which it
// passes to add.
func decodeObject(url string, r io.Reader, add func(json.RawMessage)) error {
	cr := &countingReader{r: r}
	dec := newCappedDecoder(&spaceSqueezer{r: cr})
	var raw json.RawMessage
	if err := dec.Decode(&raw); err != nil {
		return fmt.Errorf("decode %s: want a JSON object: %w", url, describeJSONError(cr.n, err))
	}
	if b := bytes.TrimSpace(raw); len(b) == 0 || b[0] != '{' {
		return fmt.Errorf("decode %s: want a JSON object, not %s", url, truncate(b))
	}
	if _, err := dec.Token(); err != io.EOF {
		if err != nil && !isSyntaxError(err) {
			return fmt.Errorf("decode %s: %w", url, err)
		}
		return fmt.Errorf("decode %s: want a JSON object: data after it at byte %d", url, dec.InputOffset())
	}
	add(raw)
	return nil
}

// MaxElementBytes bounds one JSON value the client decodes: the base
// object, or one member of a list. A member as the controller renders it
// is 1 to 3 KB (a key of 16384 bits is 3 KB of PEM), so 1 MiB leaves room
// for hundreds of addresses and properties, while a single endless member
// (a gzip bomb of one string) costs no more than that to refuse: the
// decoder holds each value whole before it decodes it.
const MaxElementBytes = 1 << 20

// elementTooLargeError is a JSON value over MaxElementBytes.
type elementTooLargeError struct{ at int64 }

func (e *elementTooLargeError) Error() string {
	return fmt.Sprintf("a JSON value from byte %d on is over %s (MaxElementBytes)", e.at, formatBytes(MaxElementBytes))
}

// cappedReader feeds a json.Decoder and fails once the decoder holds more
// than MaxElementBytes of one value: the bytes it was given past the start
// of the value it is reading (InputOffset).
type cappedReader struct {
	r   io.Reader
	dec *json.Decoder
	n   int64
}

func (c *cappedReader) Read(p []byte) (int, error) {
	if start := c.dec.InputOffset(); c.n-start > MaxElementBytes {
		return 0, &elementTooLargeError{at: start}
	}
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

// newCappedDecoder returns a json.Decoder of r that holds at most about
// MaxElementBytes of one value.
func newCappedDecoder(r io.Reader) *json.Decoder {
	c := &cappedReader{r: r}
	c.dec = json.NewDecoder(c)
	return c.dec
}

// isSyntaxError reports whether err is about the JSON rather than reading
// it.
func isSyntaxError(err error) bool {
	var se *json.SyntaxError
	return errors.As(err, &se)
}

// spaceSqueezer passes JSON through with every run of whitespace outside
// strings cut to its first byte, which changes no value. json.Decoder
// keeps all the whitespace before a value in its buffer and scans it again
// on every refill: without this, an answer of a few hundred MB of blanks
// (a gzip bomb of 1 MB) would cost as much memory and minutes of CPU.
type spaceSqueezer struct {
	r                        io.Reader
	inString, escaped, space bool
}

func (s *spaceSqueezer) Read(p []byte) (int, error) {
	for {
		n, err := s.r.Read(p)
		w := 0
		for _, c := range p[:n] {
			switch {
			case s.inString:
				switch {
				case s.escaped:
					s.escaped = false
				case c == '\\':
					s.escaped = true
				case c == '"':
					s.inString = false
				}
			case c == ' ' || c == '\t' || c == '\n' || c == '\r':
				if s.space {
					continue
				}
				s.space = true
			default:
				s.space = false
				s.inString = c == '"'
			}
			p[w] = c
			w++
		}
		if w > 0 || n == 0 || err != nil {
			return w, err
		}
	}
}

// countingReader counts the bytes read through it.
type countingReader struct {
	r io.Reader
	n int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

// describeToken names the kind of a JSON token.
func describeToken(tok json.Token) string {
	switch t := tok.(type) {
	case json.Delim:
		if t == '{' {
			return "an object"
		}
		return fmt.Sprintf("%q", rune(t))
	case string:
		return "a string"
	case float64, json.Number:
		return "a number"
	case bool:
		return "a boolean"
	case nil:
		return "null"
	}
	return fmt.Sprintf("%T", tok)
}

// describeJSONError makes input that ends early say so; n is how many
// bytes were read.
func describeJSONError(n int64, err error) error {
	if err != nil && (errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || strings.Contains(err.Error(), "unexpected end of JSON input")) {
		return fmt.Errorf("truncated JSON after %d bytes: %w", n, err)
	}
	return err
}

// quoteJSON quotes a JSON value of the registry for an error message,
// shortened: a string as its Go-quoted value, anything else as its
// Go-quoted text, so that no line break or escape code reaches a terminal.
func quoteJSON(b []byte) string {
	var s string
	if json.Unmarshal(b, &s) == nil {
		return strconv.Quote(truncate([]byte(s)))
	}
	return strconv.Quote(truncate(b))
}

// truncate shortens b for an error message.
func truncate(b []byte) string {
	const max = 40
	if len(b) > max {
		return string(b[:max]) + "..."
	}
	return string(b)
}
