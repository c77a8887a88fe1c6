package registry

import (
	"bufio"
	"bytes"
	"compress/gzip"
	cryptorand "crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/confine-project/mgmtnet/addressing"
	"github.com/confine-project/mgmtnet/mesh"
)

// PathPrefix is where Server serves the API: the controller's "/api/".
const PathPrefix = "/api/"

// Server serves a testbed File read-only over the registry REST API, as
// the controller v1.0 does (or v0.11.2 to v0.11.9 for dialect "v0"): the
// base resource at PathPrefix with a Link header naming the collections,
// the node, server, host and island collections and their members, the
// controller's pagination, ETags, 304s and gzip (see respond). Only GET
// and HEAD are allowed.
//
// URIs in the bodies are absolute, built from the request's Host (and
// https when the request came over TLS). Each member is serialized once
// per File, with a placeholder where the base URL goes, and the base is
// put in as the body is written. So a plain request costs the same
// whatever its Host: any number of Host headers cannot make the server
// render the testbed again, nor hold a copy per Host. Gzipped bodies are
// kept for the first gzipCacheBases bases that ask; a request with yet
// another Host is compressed for itself and not kept.
type Server struct {
	// DefaultPerPage, when positive, paginates lists that do not ask for
	// a page size. The controller's default is 0 (unpaginated); tests set
	// it to drive clients through several pages. Set it before serving.
	DefaultPerPage int
	// Links are more relations of the base resource (the change feed of
	// a database registry), after the collections. Set them before
	// serving.
	Links []Link

	log     *slog.Logger
	cur     atomic.Pointer[served]
	renders atomic.Int64 // Files rendered, for tests
}

// Link is one relation of the base resource: Path is relative to the
// base URL.
type Link struct {
	Rel, Path string
}

// NewServer returns a server of f, which should have passed Validate.
// A nil logger discards.
func NewServer(f *File, logger *slog.Logger) *Server {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	s := &Server{log: logger}
	s.SetFile(f)
	return s
}

// SetFile atomically replaces the served testbed. Requests in flight
// finish with the old one.
func (s *Server) SetFile(f *File) {
	if f == nil {
		f = &File{}
	}
	s.cur.Store(&served{file: f})
}

// File returns the served testbed. It must not be modified.
func (s *Server) File() *File { return s.cur.Load().file }

// served is one File with its rendered bodies, made on first use, and
// the gzipped bodies it served.
type served struct {
	file *File
	once sync.Once
	r    *rendered
	gz   gzipCache
}

func (s *Server) rendered(sv *served) *rendered {
	sv.once.Do(func() {
		s.renders.Add(1)
		sv.r = render(sv.file)
	})
	return sv.r
}

// rendered holds a File's collections, independent of the base URL.
type rendered struct {
	// placeholder stands for the JSON-escaped base URL in the templates.
	// It is random, so that no string of the File can contain it (the
	// File is trusted, but a placeholder met in its data would be
	// replaced too).
	placeholder []byte
	lists       map[string]*renderedList // by collection name: "nodes"
}

// renderedList is one collection: each member's JSON, sorted by id.
type renderedList struct {
	resource string // "node"
	ids      []uint64
	elems    []template
	// size and n are the sums over elems, and digest a hash of their
	// digests: for the unpaginated list.
	size, n int
	digest  [16]byte
}

// template is a body with the rendered's placeholder standing, n times,
// for the base URL.
type template struct {
	b []byte
	n int
	// digest is a hash of b's parts between placeholders, so that it
	// stays the same across renders, with their different placeholders:
	// ETags survive a reload of an unchanged File.
	digest [16]byte
}

func newTemplate(b, placeholder []byte) template {
	t := template{b: b}
	h := sha256.New()
	var lb [binary.MaxVarintLen64]byte
	for rest := b; ; {
		i := bytes.Index(rest, placeholder)
		part := rest
		if i >= 0 {
			part = rest[:i]
		}
		h.Write(binary.AppendUvarint(lb[:0], uint64(len(part))))
		h.Write(part)
		if i < 0 {
			break
		}
		t.n++
		rest = rest[i+len(placeholder):]
	}
	var sum [sha256.Size]byte
	t.digest = [16]byte(h.Sum(sum[:0]))
	return t
}

// size is the template's length with base in place.
func (t *template) size(placeholder, base []byte) int {
	return len(t.b) + t.n*(len(base)-len(placeholder))
}

// write writes the template with base in place of the placeholder.
func (t *template) write(w *bufio.Writer, placeholder, base []byte) error {
	b := t.b
	for range t.n {
		i := bytes.Index(b, placeholder)
		w.Write(b[:i])
		w.Write(base)
		b = b[i+len(placeholder):]
	}
	_, err := w.Write(b)
	return err
}

// Wire shapes the server writes.
type (
	outRef struct {
		URI string `json:"uri"`
		ID  uint64 `json:"id"`
	}
	outAddress struct {
		Addr   string  `json:"addr"`
		Port   int     `json:"port"`
		Island *outRef `json:"island"`
	}
	outTinc struct {
		Name      string       `json:"name"`
		PubKey    string       `json:"pubkey"`
		Addresses []outAddress `json:"addresses"`
	}
	outTincServer struct {
		outTinc
		IsActive bool `json:"is_active"`
	}
	outTincClient struct {
		Name   string `json:"name"`
		PubKey string `json:"pubkey"`
	}
	outMgmtNet struct {
		Addr    string `json:"addr"`
		Backend string `json:"backend"`
	}
	// outMgmtNetV0 is mgmt_net of v0.11.x, which kept the pre-2015
	// fields (tinc_client, tinc_server, native) next to v1's top-level
	// "tinc" ("#157 compatibility").
	outMgmtNetV0 struct {
		Addr       string         `json:"addr"`
		Backend    string         `json:"backend"`
		TincClient *outTincClient `json:"tinc_client"`
		TincServer *outTincServer `json:"tinc_server"`
		Native     *struct{}      `json:"native"`
	}
	outMember struct {
		URI        string             `json:"uri"`
		ID         uint64             `json:"id"`
		Name       string             `json:"name"`
		Island     *outRef            `json:"island"`
		MgmtNet    any                `json:"mgmt_net"`
		Tinc       json.RawMessage    `json:"tinc"` // "null" when no key
		Properties *map[string]string `json:"properties,omitempty"`
		// Gateways is mgmtnet's addition to the controller's member
		// (v1 only): the gateways the testbed's assignment gives a member
		// that is not a gateway (mesh.Assignment), best first. Clients
		// compute it themselves; this makes it visible.
		Gateways []string `json:"mgmtnet_gateways,omitempty"`
	}
	outIsland struct {
		URI         string `json:"uri"`
		ID          uint64 `json:"id"`
		Name        string `json:"name"`
		Description string `json:"description"`
	}
)

// Link relations of the controller's own resources (not the registry's).
const relPrefixController = "http://confine-project.eu/rel/controller/"

// profile is the controller's media type of a resource: the v1 schema, or
// for dialect v0 the v0 schema of the v0.11.2 to v0.11.9 releases, whose
// shapes the v0 dialect serves. A list's resource is "resource-list",
// whatever it lists.
func (f *File) profile(resource string) string {
	v := "v1"
	if f.Dialect == DialectV0 {
		v = "v0"
	}
	return `application/json; profile="http://confine-project.eu/schema/registry/` + v + `/` + resource + `"`
}

// render serializes f's collections, with a placeholder for the base URL.
func render(f *File) *rendered {
	var random [16]byte
	cryptorand.Read(random[:])
	base := "@base-" + hex.EncodeToString(random[:]) + "@"
	r := &rendered{placeholder: []byte(base), lists: map[string]*renderedList{}}
	mgmtAddr := f.mgmtAddrFunc()
	assigned := f.assignment()
	for _, g := range f.groups() {
		ms := sortedByID(g.members)
		l := &renderedList{resource: g.resource, ids: make([]uint64, len(ms)), elems: make([]template, len(ms))}
		for i := range ms {
			m := &ms[i]
			o := f.outMember(g, m, base, mgmtAddr, assigned)
			l.ids[i] = m.ID
			l.elems[i] = newTemplate(mustJSON(o), r.placeholder)
		}
		l.sum()
		r.lists[g.name] = l
	}
	isl := slices.Clone(f.Islands)
	slices.SortFunc(isl, func(a, b FileIsland) int {
		if a.ID < b.ID {
			return -1
		}
		if a.ID > b.ID {
			return 1
		}
		return 0
	})
	l := &renderedList{resource: "island", ids: make([]uint64, len(isl)), elems: make([]template, len(isl))}
	for i, is := range isl {
		l.ids[i] = is.ID
		l.elems[i] = newTemplate(mustJSON(outIsland{URI: base + "islands/" + strconv.FormatUint(is.ID, 10) + "/", ID: is.ID, Name: is.Name, Description: is.Description}), r.placeholder)
	}
	l.sum()
	r.lists["islands"] = l
	return r
}

// outMember is a member as the server renders it, with base (the base URL
// or its placeholder) in its URIs. assigned, when not nil, gives a
// member's gateways.
func (f *File) outMember(g group, m *FileMember, base string, mgmtAddr func(addressing.Kind, *FileMember) string, assigned *mesh.Assignment) outMember {
	ref := func(id uint64) *outRef {
		if id == 0 {
			return nil
		}
		return &outRef{URI: base + "islands/" + strconv.FormatUint(id, 10) + "/", ID: id}
	}
	o := outMember{
		URI:    base + g.name + "/" + strconv.FormatUint(m.ID, 10) + "/",
		ID:     m.ID,
		Name:   m.Name,
		Island: ref(m.Island),
	}
	if g.kind != addressing.KindHost {
		p := m.Properties
		if p == nil {
			p = map[string]string{}
		}
		o.Properties = &p
	}
	backend := m.Backend
	if backend == "" {
		backend = "tinc"
	}
	addr := mgmtAddr(g.kind, m)
	var t *outTinc
	if m.Tinc != nil {
		t = &outTinc{Name: m.Tinc.Name, PubKey: m.Tinc.PubKey, Addresses: []outAddress{}}
		for _, a := range m.Tinc.Addresses {
			port := a.Port
			if port == 0 {
				port = 655
			}
			t.Addresses = append(t.Addresses, outAddress{Addr: a.Addr, Port: port, Island: ref(a.Island)})
		}
	}
	if t != nil && f.Dialect != DialectV0 && assigned != nil {
		o.Gateways, _ = assigned.Of(t.Name)
	}
	if f.Dialect == DialectV0 {
		mn := outMgmtNetV0{Addr: addr, Backend: backend}
		switch {
		case t != nil && len(t.Addresses) > 0:
			mn.TincServer = &outTincServer{outTinc: *t, IsActive: true}
			if backend == "tinc" {
				mn.Backend = "tinc_server"
			}
		default:
			if t != nil {
				mn.TincClient = &outTincClient{Name: t.Name, PubKey: t.PubKey}
			}
			if backend == "tinc" {
				mn.Backend = "tinc_client"
			}
		}
		o.MgmtNet = mn
	} else {
		o.MgmtNet = outMgmtNet{Addr: addr, Backend: backend}
	}
	o.Tinc = mustJSON(t) // "null" for nil
	return o
}

// MemberRenderer returns a function that renders one member of f (of
// collection "nodes", "servers" or "hosts") as the server's lists do,
// with base (see BaseURL) in its URIs, but without "gateways", which
// depends on the whole testbed: what the change feed gives. f needs no
// members, only its prefix and dialect.
func (f *File) MemberRenderer(base string) func(collection string, m *FileMember) ([]byte, error) {
	mgmtAddr := f.mgmtAddrFunc()
	groups := map[string]group{}
	for _, g := range f.groups() {
		groups[g.name] = g
	}
	return func(collection string, m *FileMember) ([]byte, error) {
		g, ok := groups[collection]
		if !ok {
			return nil, fmt.Errorf("render a member of %q: no such collection", collection)
		}
		return json.Marshal(f.outMember(g, m, base, mgmtAddr, nil))
	}
}

// sum sets the list's totals.
func (l *renderedList) sum() {
	l.size, l.n = 0, 0
	for i := range l.elems {
		l.size += len(l.elems[i].b)
		l.n += l.elems[i].n
	}
	l.digest = digestOf(l.elems)
}

// digestOf hashes the digests of elems.
func digestOf(elems []template) [16]byte {
	h := sha256.New()
	for i := range elems {
		h.Write(elems[i].digest[:])
	}
	return [16]byte(h.Sum(nil))
}

// arraySize is the length of elems as a JSON array with base in place.
func arraySize(elems []template, size, n int, placeholder, base []byte) int {
	return 2 + max(len(elems)-1, 0) + size + n*(len(base)-len(placeholder))
}

// writeArray writes elems as a JSON array with base in place.
func writeArray(w *bufio.Writer, elems []template, placeholder, base []byte) error {
	w.WriteByte('[')
	for i := range elems {
		if i > 0 {
			w.WriteByte(',')
		}
		if err := elems[i].write(w, placeholder, base); err != nil {
			return err
		}
	}
	return w.WriteByte(']')
}

// mustJSON encodes values that cannot fail to encode (no channels,
// functions or cyclic values).
func mustJSON(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic(fmt.Sprintf("registry: encode %T: %v", v, err))
	}
	return b
}

// etagOf is a strong ETag: a hash of the body.
func etagOf(body []byte) string {
	sum := sha256.Sum256(body)
	return `"` + hex.EncodeToString(sum[:16]) + `"`
}

// etagFor is a strong ETag of a templated body: a hash of the base and the
// templates' digest, which between them fix every byte.
func etagFor(base []byte, digest [16]byte) string {
	h := sha256.New()
	h.Write(binary.AppendUvarint(nil, uint64(len(base))))
	h.Write(base)
	h.Write(digest[:])
	return `"` + hex.EncodeToString(h.Sum(nil)[:16]) + `"`
}

// ServeHTTP serves the registry API under PathPrefix.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	status, n := s.serve(w, r)
	s.log.Debug("registry request", "method", r.Method, "uri", r.URL.RequestURI(), "status", status, "bytes", n, "took", time.Since(start))
}

// allowed is the Allow header: this server only reads.
const allowed = "GET, HEAD"

func (s *Server) serve(w http.ResponseWriter, r *http.Request) (status, n int) {
	sv := s.cur.Load()
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", allowed)
		return writeError(w, r, http.StatusMethodNotAllowed, fmt.Sprintf("Method %q not allowed.", r.Method))
	}
	path := r.URL.Path
	if !strings.HasPrefix(path, PathPrefix) {
		if path+"/" == PathPrefix {
			return redirectSlash(w, r)
		}
		return writeError(w, r, http.StatusNotFound, "Not found.")
	}
	base := BaseURL(r)
	rest := strings.TrimPrefix(path, PathPrefix)
	if rest == "" {
		root := sv.file.root(base)
		link := sv.file.links(base)
		for _, l := range s.Links {
			link += fmt.Sprintf(`, <%s%s>; rel="%s"`, base, l.Path, l.Rel)
		}
		return s.respond(w, r, sv, answer{key: "base|" + base, contentType: sv.file.profile("base"), link: link,
			etag: etagOf(root), size: len(root), write: func(bw *bufio.Writer) error {
				_, err := bw.Write(root)
				return err
			}})
	}
	parts := strings.Split(rest, "/")
	if parts[len(parts)-1] != "" {
		// Django's APPEND_SLASH: /api/nodes -> /api/nodes/.
		if len(parts) <= 2 {
			return redirectSlash(w, r)
		}
		return writeError(w, r, http.StatusNotFound, "Not found.")
	}
	parts = parts[:len(parts)-1]
	if len(parts) > 2 {
		return writeError(w, r, http.StatusNotFound, "Not found.")
	}
	switch parts[0] {
	case "nodes", "servers", "hosts", "islands":
	default:
		return writeError(w, r, http.StatusNotFound, "Not found.")
	}
	rd := s.rendered(sv)
	l := rd.lists[parts[0]]
	// The base as it goes into JSON strings.
	jsonBase := mustJSON(base)
	jsonBase = jsonBase[1 : len(jsonBase)-1]
	if len(parts) == 2 {
		id, err := strconv.ParseUint(parts[1], 10, 64)
		if err != nil {
			return writeError(w, r, http.StatusNotFound, "Not found.")
		}
		i, ok := slices.BinarySearch(l.ids, id)
		if !ok {
			return writeError(w, r, http.StatusNotFound, "Not found.")
		}
		t := &l.elems[i]
		link := baseLinks(base) + fmt.Sprintf(`, <%s%s/>; rel="%s%s-list"`, base, parts[0], relPrefixV1, l.resource)
		return s.respond(w, r, sv, answer{key: parts[0] + "/" + parts[1] + "|" + string(jsonBase), contentType: sv.file.profile(l.resource),
			link: link, etag: etagFor(jsonBase, t.digest), size: t.size(rd.placeholder, jsonBase), write: func(bw *bufio.Writer) error {
				return t.write(bw, rd.placeholder, jsonBase)
			}})
	}
	return s.serveList(w, r, sv, base, parts[0], rd, l, jsonBase)
}

// BaseURL is the base URL of the API as a request reached it: the
// request's Host (localhost when it has none), https when it came over
// TLS. URIs in the bodies are built from it.
func BaseURL(r *http.Request) string {
	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
	}
	host := r.Host
	if host == "" {
		host = "localhost"
	}
	return scheme + "://" + host + PathPrefix
}

// baseLinks are the links to the base resource that the controller puts
// on every list and member.
func baseLinks(base string) string {
	return fmt.Sprintf(`<%s>; rel="%sbase", <%s>; rel="%sbase"`, base, relPrefixV1, base, relPrefixController)
}

// links is the base resource's Link header: the base itself, then each
// collection by its relation, as the controller v1 renders them. (The
// controller also links its token endpoint and its other collections,
// which this server does not serve.)
func (f *File) links(base string) string {
	links := []string{fmt.Sprintf(`<%s>; rel="%sbase"`, base, relPrefixV1)}
	for _, c := range []string{"node", "server", "island", "host"} {
		links = append(links, fmt.Sprintf(`<%s%ss/>; rel="%s%s-list"`, base, c, relPrefixV1, c))
	}
	return strings.Join(links, ", ")
}

// root is the base resource. It is small enough to render per request.
func (f *File) root(base string) []byte {
	return mustJSON(map[string]any{
		"uri":               base,
		"testbed_params":    map[string]string{"mgmt_ipv6_prefix": f.MgmtPrefix.String()},
		"testbed_resources": []any{},
		"confine_params": map[string]string{
			"debug_ipv6_prefix": addressing.DefaultDebugPrefix().String(),
			"priv_ipv6_prefix":  addressing.DefaultPrivatePrefix().String(),
		},
	})
}

// serveList serves a collection the way the controller's lists answer:
// per_page (an integer; less than 1 means 1; anything else, or none, the
// server's default, which is everything on one page) and page (an
// integer; none or not one means 1; out of range means the last page), a
// plain JSON array, and a Link header with the base, then "first" and
// "last", and "prev" and "next" where they exist, on every list, paginated
// or not. Like the controller's, the links repeat per_page when the
// request gave it, and set page.
func (s *Server) serveList(w http.ResponseWriter, r *http.Request, sv *served, base, name string, rd *rendered, l *renderedList, jsonBase []byte) (int, int) {
	q := r.URL.Query()
	perPage, givenPerPage := s.DefaultPerPage, false
	if n, err := strconv.Atoi(q.Get("per_page")); err == nil {
		perPage, givenPerPage = max(1, n), true
	}
	if perPage <= 0 {
		perPage = max(1, len(l.elems))
	}
	pages := max(1, (len(l.elems)+perPage-1)/perPage)
	page := 1
	if n, err := strconv.Atoi(q.Get("page")); err == nil {
		page = n
		if page < 1 || page > pages {
			page = pages
		}
	}
	listURL := base + name + "/"
	link := func(p int, rel string) string {
		if givenPerPage {
			return fmt.Sprintf(`<%s?per_page=%d&page=%d>; rel="%s"`, listURL, perPage, p, rel)
		}
		return fmt.Sprintf(`<%s?page=%d>; rel="%s"`, listURL, p, rel)
	}
	links := []string{baseLinks(base), link(1, "first"), link(pages, "last")}
	if page > 1 {
		links = append(links, link(page-1, "prev"))
	}
	if page < pages {
		links = append(links, link(page+1, "next"))
	}
	lo := (page - 1) * perPage
	hi := min(lo+perPage, len(l.elems))
	elems, size, n, digest := l.elems, l.size, l.n, l.digest
	if lo != 0 || hi != len(l.elems) {
		elems, size, n = l.elems[lo:hi], 0, 0
		for i := range elems {
			size += len(elems[i].b)
			n += elems[i].n
		}
		digest = digestOf(elems)
	}
	return s.respond(w, r, sv, answer{key: fmt.Sprintf("%s/?%d,%d|%s", name, lo, hi, jsonBase), contentType: sv.file.profile("resource-list"),
		link: strings.Join(links, ", "), etag: etagFor(jsonBase, digest), size: arraySize(elems, size, n, rd.placeholder, jsonBase),
		write: func(bw *bufio.Writer) error {
			return writeArray(bw, elems, rd.placeholder, jsonBase)
		}})
}

// answer is one 200 before the controller's middleware has seen it: key
// names its bytes in the gzip cache (the same key, the same bytes, within
// one File).
type answer struct {
	key, contentType, link, etag string
	size                         int
	write                        func(*bufio.Writer) error
}

// maxWriteBuffer bounds the buffer between a body's many small pieces and
// the connection: large enough that a big list takes few system calls.
const maxWriteBuffer = 1 << 20

// gzipMinSize is the smallest body Django's GZipMiddleware compresses.
const gzipMinSize = 200

// acceptsGzip is Django 1.6's test of Accept-Encoding: the word "gzip"
// anywhere, q-values ignored.
var acceptsGzip = regexp.MustCompile(`\bgzip\b`)

// respond writes a 200, or a 304, as the 2015 controller's middleware
// does it (Django 1.6, GZipMiddleware listed ahead of CommonMiddleware, so
// that CommonMiddleware sees the response first on the way out):
//
//  1. CommonMiddleware (USE_ETAGS) tags the uncompressed body, and answers
//     304 when If-None-Match, as a whole string, equals that tag: no list,
//     no W/, no "*". The 304 is a fresh response: no ETag, Content-Type,
//     Vary or Link.
//  2. GZipMiddleware, for a body of at least 200 bytes, adds Accept-Encoding
//     to Vary and, when the client accepts gzip and the compressed body is
//     shorter, sends that instead, with its Content-Length, and the tag as
//     "<tag>;gzip".
//
// So a client that sends a compressed answer's tag back unchanged never
// gets a 304, as against the real controller. The tags are hashes of the
// body, 32 hex digits like Django's MD5, though not MD5.
func (s *Server) respond(w http.ResponseWriter, r *http.Request, sv *served, resp answer) (int, int) {
	h := w.Header()
	if r.Header.Get("If-None-Match") == resp.etag {
		w.WriteHeader(http.StatusNotModified)
		return http.StatusNotModified, 0
	}
	h.Set("Content-Type", resp.contentType)
	h.Set("Allow", allowed)
	if resp.link != "" {
		h.Set("Link", resp.link)
	}
	vary := "Accept, Cookie"
	if resp.size >= gzipMinSize {
		vary += ", Accept-Encoding"
	}
	h.Set("Vary", vary)
	if resp.size >= gzipMinSize && acceptsGzip.MatchString(r.Header.Get("Accept-Encoding")) {
		if gz := sv.gz.get(resp.key, resp.size, resp.write); gz != nil {
			h.Set("ETag", strings.TrimSuffix(resp.etag, `"`)+`;gzip"`)
			h.Set("Content-Encoding", "gzip")
			h.Set("Content-Length", strconv.Itoa(len(gz)))
			w.WriteHeader(http.StatusOK)
			if r.Method == http.MethodHead {
				return http.StatusOK, 0
			}
			n, _ := w.Write(gz)
			return http.StatusOK, n
		}
	}
	h.Set("ETag", resp.etag)
	h.Set("Content-Length", strconv.Itoa(resp.size))
	w.WriteHeader(http.StatusOK)
	if r.Method == http.MethodHead {
		return http.StatusOK, 0
	}
	cw := &countingWriter{w: w}
	bw := bufio.NewWriterSize(cw, min(max(resp.size, 16), maxWriteBuffer))
	if resp.write(bw) == nil {
		bw.Flush()
	}
	return http.StatusOK, cw.n
}

// countingWriter counts the bytes written through it.
type countingWriter struct {
	w io.Writer
	n int
}

func (c *countingWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += n
	return n, err
}

// gzipCacheBytes bounds the compressed bodies one File keeps: a 66 000-node
// list with real keys compresses to about 35 MB, and the few Host names and
// pages clients use fit beside it. gzipCacheBases bounds the bases (scheme
// and Host) whose bodies are kept: a registry has a name or two and an
// address or two, and a client that makes up Host headers must not evict
// theirs.
const (
	gzipCacheBytes = 128 << 20
	gzipCacheBases = 4
)

// gzipCache holds compressed bodies by key, compressed once each (Django
// compresses every answer again; a list of 66 000 nodes takes a second of
// CPU to compress). The oldest go first past gzipCacheBytes. Keys end in
// "|<base>".
type gzipCache struct {
	mu    sync.Mutex
	m     map[string]*gzipEntry
	order []string
	bytes int
	bases map[string]bool
}

// gzipEntry is one key's compressed body, made once.
type gzipEntry struct {
	once    sync.Once
	b       []byte // nil: not shorter than the body, so not compressed
	counted int    // len(b) once in gzipCache.bytes; under gzipCache.mu
}

// compress returns the body that write writes, of size bytes, gzipped as
// Django's compress_string does (level 6); nil when that is not shorter.
func compress(size int, write func(*bufio.Writer) error) []byte {
	var buf bytes.Buffer
	zw, _ := gzip.NewWriterLevel(&buf, 6)
	bw := bufio.NewWriterSize(zw, min(max(size, 16), maxWriteBuffer))
	if write(bw) != nil || bw.Flush() != nil || zw.Close() != nil || buf.Len() >= size {
		return nil
	}
	return buf.Bytes()
}

// get returns the compressed body of key, or nil when compressing does not
// make it shorter (Django then sends it as it is).
func (c *gzipCache) get(key string, size int, write func(*bufio.Writer) error) []byte {
	c.mu.Lock()
	if c.m == nil {
		c.m, c.bases = map[string]*gzipEntry{}, map[string]bool{}
	}
	e, ok := c.m[key]
	if !ok {
		base := key[strings.LastIndexByte(key, '|')+1:]
		if !c.bases[base] && len(c.bases) >= gzipCacheBases {
			c.mu.Unlock()
			return compress(size, write)
		}
		c.bases[base] = true
		e = &gzipEntry{}
		c.m[key] = e
		c.order = append(c.order, key)
	}
	c.mu.Unlock()
	e.once.Do(func() {
		e.b = compress(size, write)
		if e.b == nil {
			return
		}
		c.mu.Lock()
		defer c.mu.Unlock()
		if c.m[key] != e {
			return // evicted while it was compressed
		}
		e.counted = len(e.b)
		c.bytes += e.counted
		for c.bytes > gzipCacheBytes && len(c.order) > 1 {
			old := c.order[0]
			c.order = c.order[1:]
			if oe := c.m[old]; oe != e {
				c.bytes -= oe.counted
				delete(c.m, old)
			} else {
				c.order = append(c.order, old)
			}
		}
	})
	return e.b
}

// writeError writes the controller's JSON error: {"detail": "..."}.
func writeError(w http.ResponseWriter, r *http.Request, status int, detail string) (int, int) {
	body := mustJSON(map[string]string{"detail": detail})
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(status)
	if r.Method == http.MethodHead {
		return status, 0
	}
	n, _ := w.Write(body)
	return status, n
}

func redirectSlash(w http.ResponseWriter, r *http.Request) (int, int) {
	u := *r.URL
	u.Path += "/"
	http.Redirect(w, r, u.RequestURI(), http.StatusMovedPermanently)
	return http.StatusMovedPermanently, 0
}

var _ http.Handler = (*Server)(nil)
