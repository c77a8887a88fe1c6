package registry

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/confine-project/mgmtnet/addressing"
)

// PathPrefix is where Server serves the API: the controller's "/api/".
const PathPrefix = "/api/"

// maxCachedBases bounds how many distinct base URLs (Host headers) a
// Server keeps rendered bodies for; others are rendered per request.
const maxCachedBases = 8

// Server serves a testbed File read-only over the registry REST API, as
// the controller v1 does (or the pre-2015 controller for dialect "v0"):
// the base resource at PathPrefix with a Link header naming the
// collections, the node, server, host and island collections and their
// members, ?per_page=N&page=K pagination, strong ETags and 304s. Only GET
// and HEAD are allowed.
//
// URIs in the bodies are absolute, built from the request's Host (and
// https when the request came over TLS). Each collection is serialized
// once per File and base URL and then served from memory.
type Server struct {
	// DefaultPerPage, when positive, paginates lists that do not ask for
	// a page size. The controller's default is 0 (unpaginated); tests set
	// it to drive clients through several pages. Set it before serving.
	DefaultPerPage int

	log *slog.Logger
	cur atomic.Pointer[served]
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
	s.cur.Store(&served{file: f, byBase: map[string]*rendered{}})
}

// File returns the served testbed. It must not be modified.
func (s *Server) File() *File { return s.cur.Load().file }

// served is one File with its rendered bodies, per base URL.
type served struct {
	file   *File
	mu     sync.Mutex
	byBase map[string]*rendered
}

// rendered holds a File's bodies for one base URL.
type rendered struct {
	once  sync.Once
	root  []byte
	links string
	lists map[string]*renderedList // by collection name: "nodes"
}

// renderedList is one collection: each member's JSON, sorted by id, and
// the whole unpaginated array.
type renderedList struct {
	resource string // "node"
	ids      []uint64
	elems    [][]byte
	full     []byte
	fullETag string
}

func (sv *served) get(base string) *rendered {
	sv.mu.Lock()
	r, ok := sv.byBase[base]
	if !ok {
		r = &rendered{}
		if len(sv.byBase) < maxCachedBases {
			sv.byBase[base] = r
		}
	}
	sv.mu.Unlock()
	r.once.Do(func() { r.render(sv.file, base) })
	return r
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
	outMgmtNetV0 struct {
		Addr       string         `json:"addr"`
		Backend    string         `json:"backend"`
		TincClient *outTincClient `json:"tinc_client"`
		TincServer *outTincServer `json:"tinc_server"`
	}
	outMember struct {
		URI        string             `json:"uri"`
		ID         uint64             `json:"id"`
		Name       string             `json:"name"`
		Island     *outRef            `json:"island"`
		MgmtNet    any                `json:"mgmt_net"`
		Tinc       json.RawMessage    `json:"tinc,omitempty"` // v1 only; "null" when no key
		Properties *map[string]string `json:"properties,omitempty"`
	}
	outIsland struct {
		URI         string `json:"uri"`
		ID          uint64 `json:"id"`
		Name        string `json:"name"`
		Description string `json:"description"`
	}
)

func (f *File) relPrefix() string {
	if f.Dialect == DialectV0 {
		return relPrefixV0
	}
	return relPrefixV1
}

func (f *File) profile(resource string) string {
	if f.Dialect == DialectV0 {
		return `application/json; profile="http://confine-project.eu/schema/server/v0/` + resource + `"`
	}
	return `application/json; profile="http://confine-project.eu/schema/registry/v1/` + resource + `"`
}

func (r *rendered) render(f *File, base string) {
	root := map[string]any{
		"uri":            base,
		"testbed_params": map[string]string{"mgmt_ipv6_prefix": f.MgmtPrefix.String()},
		"confine_params": map[string]string{
			"debug_ipv6_prefix": addressing.DefaultDebugPrefix.String(),
			"priv_ipv6_prefix":  addressing.DefaultPrivatePrefix.String(),
		},
	}
	r.root = mustJSON(root)
	var links []string
	for _, c := range []string{"node", "server", "host", "island"} {
		links = append(links, fmt.Sprintf(`<%s%ss/>; rel="%s%s-list"`, base, c, f.relPrefix(), c))
	}
	r.links = strings.Join(links, ", ")

	ref := func(id uint64) *outRef {
		if id == 0 {
			return nil
		}
		return &outRef{URI: base + "islands/" + strconv.FormatUint(id, 10) + "/", ID: id}
	}
	r.lists = map[string]*renderedList{}
	for _, g := range f.groups() {
		ms := sortedByID(g.members)
		l := &renderedList{resource: g.resource, ids: make([]uint64, len(ms)), elems: make([][]byte, len(ms))}
		for i := range ms {
			m := &ms[i]
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
			addr := f.mgmtAddr(g.kind, m)
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
				o.Tinc = mustJSON(t) // "null" for nil
			}
			l.ids[i] = m.ID
			l.elems[i] = mustJSON(o)
		}
		l.full = joinArray(l.elems)
		l.fullETag = etagOf(l.full)
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
	l := &renderedList{resource: "island", ids: make([]uint64, len(isl)), elems: make([][]byte, len(isl))}
	for i, is := range isl {
		l.ids[i] = is.ID
		l.elems[i] = mustJSON(outIsland{URI: base + "islands/" + strconv.FormatUint(is.ID, 10) + "/", ID: is.ID, Name: is.Name, Description: is.Description})
	}
	l.full = joinArray(l.elems)
	l.fullETag = etagOf(l.full)
	r.lists["islands"] = l
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

func joinArray(elems [][]byte) []byte {
	n := 2 + len(elems)
	for _, e := range elems {
		n += len(e)
	}
	b := make([]byte, 0, n)
	b = append(b, '[')
	for i, e := range elems {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, e...)
	}
	return append(b, ']')
}

// etagOf is a strong ETag: a hash of the body.
func etagOf(body []byte) string {
	sum := sha256.Sum256(body)
	return `"` + hex.EncodeToString(sum[:16]) + `"`
}

// ServeHTTP serves the registry API under PathPrefix.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	status, n := s.serve(w, r)
	s.log.Debug("registry request", "method", r.Method, "uri", r.URL.RequestURI(), "status", status, "bytes", n, "took", time.Since(start))
}

func (s *Server) serve(w http.ResponseWriter, r *http.Request) (status, n int) {
	sv := s.cur.Load()
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		return writeError(w, r, http.StatusMethodNotAllowed, fmt.Sprintf("Method %q not allowed.", r.Method))
	}
	path := r.URL.Path
	if !strings.HasPrefix(path, PathPrefix) {
		if path+"/" == PathPrefix {
			return redirectSlash(w, r)
		}
		return writeError(w, r, http.StatusNotFound, "Not found.")
	}
	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
	}
	host := r.Host
	if host == "" {
		host = "localhost"
	}
	base := scheme + "://" + host + PathPrefix
	rest := strings.TrimPrefix(path, PathPrefix)
	if rest == "" {
		rd := sv.get(base)
		w.Header().Set("Link", rd.links)
		return writeBody(w, r, sv.file.profile("base"), rd.root, etagOf(rd.root))
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
	l := sv.get(base).lists[parts[0]]
	if len(parts) == 2 {
		id, err := strconv.ParseUint(parts[1], 10, 64)
		if err != nil {
			return writeError(w, r, http.StatusNotFound, "Not found.")
		}
		i, ok := slices.BinarySearch(l.ids, id)
		if !ok {
			return writeError(w, r, http.StatusNotFound, "Not found.")
		}
		return writeBody(w, r, sv.file.profile(l.resource), l.elems[i], etagOf(l.elems[i]))
	}
	return s.serveList(w, r, sv.file, base+parts[0]+"/", l)
}

func (s *Server) serveList(w http.ResponseWriter, r *http.Request, f *File, listURL string, l *renderedList) (int, int) {
	ct := f.profile(l.resource + "-list")
	q := r.URL.Query()
	perPage := s.DefaultPerPage
	if v := q.Get("per_page"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			return writeError(w, r, http.StatusBadRequest, fmt.Sprintf("Invalid per_page %q: want a positive integer.", v))
		}
		perPage = n
	}
	page := 1
	if v := q.Get("page"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			return writeError(w, r, http.StatusNotFound, "Invalid page.")
		}
		page = n
	}
	if perPage <= 0 {
		if page != 1 {
			return writeError(w, r, http.StatusNotFound, "Invalid page.")
		}
		return writeBody(w, r, ct, l.full, l.fullETag)
	}
	pages := max(1, (len(l.elems)+perPage-1)/perPage)
	if page > pages {
		return writeError(w, r, http.StatusNotFound, "Invalid page.")
	}
	link := func(p int, rel string) string {
		return fmt.Sprintf(`<%s?page=%d&per_page=%d>; rel="%s"`, listURL, p, perPage, rel)
	}
	links := []string{link(1, "first")}
	if page > 1 {
		links = append(links, link(page-1, "prev"))
	}
	if page < pages {
		links = append(links, link(page+1, "next"))
	}
	links = append(links, link(pages, "last"))
	w.Header().Set("Link", strings.Join(links, ", "))
	lo := (page - 1) * perPage
	hi := min(lo+perPage, len(l.elems))
	body := joinArray(l.elems[lo:hi])
	return writeBody(w, r, ct, body, etagOf(body))
}

// writeBody writes a 200 (or a 304 when If-None-Match matches etag).
func writeBody(w http.ResponseWriter, r *http.Request, contentType string, body []byte, etag string) (int, int) {
	h := w.Header()
	h.Set("ETag", etag)
	h.Set("Vary", "Accept")
	if etagMatches(r.Header.Values("If-None-Match"), etag) {
		w.WriteHeader(http.StatusNotModified)
		return http.StatusNotModified, 0
	}
	h.Set("Content-Type", contentType)
	h.Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(http.StatusOK)
	if r.Method == http.MethodHead {
		return http.StatusOK, 0
	}
	n, _ := w.Write(body)
	return http.StatusOK, n
}

// etagMatches implements If-None-Match's weak comparison (RFC 9110
// §13.1.2).
func etagMatches(values []string, etag string) bool {
	for _, v := range values {
		for _, t := range strings.Split(v, ",") {
			t = strings.TrimSpace(t)
			if t == "*" || strings.TrimPrefix(t, "W/") == etag {
				return true
			}
		}
	}
	return false
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
