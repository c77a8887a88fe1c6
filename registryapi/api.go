// Package registryapi is the registry's write API over HTTP, in front of
// the read API (registry.Server): token authentication as the 2015
// controller had it ("Authorization: Token <key>", tokens from
// registrydb), roles, and writes to a member checked as clients check
// what the registry serves (registrydb.Check), each audited.
//
// POST /api-token-auth/ with a user's username and password (a form or
// JSON; users from registrydb.CreateUser) answers {"token": "<key>"}, a new
// token of the user's role, as the controller's did; bad credentials get
// 400 {"non_field_errors": [...]}.
//
// POST /api/{nodes,servers,hosts}/ adds a member (an operator's token):
// its "id" and the fields a PATCH takes, and "backend"; 201 with the member.
// PATCH /api/{nodes,servers,hosts}/ID/ changes the fields a JSON object
// gives ("name", "island", "properties", "tinc": {"pubkey", "addresses"};
// "tinc": null removes the key); DELETE removes the member. An operator's
// token may do everything. A node admin's may set only the "tinc" pubkey
// of its nodes, a host owner's only that of its hosts: names, islands,
// properties (egress and DNS-service grants among them) and tinc
// addresses (which make a member a gateway) are the operator's. A
// missing or bad token gets 401, a role that may not 403, input that a
// client would reject 400 with the client's reason, an unknown member
// 404; the answers are the controller's {"detail": "..."}.
//
// POST /api/{nodes,hosts}/ID/ctl/enrol/ with {"token", "pubkey"} (or
// POST /api/ctl/enrol/, for the member the invite names: mgmtnet join)
// enrols a member with a one-time invite (registrydb.CreateInvite): no API token,
// the invite is the credential; the key is checked like any write; an
// unknown, spent or expired invite gets 403 saying which.
//
// GET /api/changes/?since=V&wait=S is the change feed (registry.RelChanges,
// which the base resource links when the server sets Link): what changed
// after version V, from the database (registrydb.Changes), so that every
// instance sharing a database gives the same answer; a request with
// nothing to tell waits up to S seconds for a write (Notify wakes it).
package registryapi

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"slices"
	"strconv"
	"strings"

	"github.com/confine-project/mgmtnet/mesh/registry"
	"github.com/confine-project/mgmtnet/registrydb"
)

// maxBody bounds a write's JSON: a member with a 16384-bit key and many
// addresses is a few KB.
const maxBody = 64 << 10

// Handler serves writes itself and hands reads to the read API.
type Handler struct {
	db   *registrydb.DB
	read http.Handler
	log  *slog.Logger
	// versions wakes the feed's waiting requests.
	versions versions
	// logins holds a place per password check running (maxLogins).
	logins chan struct{}
	// Written, when set, is called after each successful write with the
	// new version (the server then serves it at once).
	Written func(ctx context.Context, version uint64)
}

// New returns the API of db in front of read. A nil logger discards.
func New(db *registrydb.DB, read http.Handler, logger *slog.Logger) *Handler {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return &Handler{db: db, read: read, log: logger, logins: make(chan struct{}, maxLogins)}
}

// collections maps a URL collection to the database's kind.
var collections = map[string]string{"nodes": registrydb.KindNode, "servers": registrydb.KindServer, "hosts": registrydb.KindHost}

func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path == TokenAuthPath {
		if r.Method != http.MethodPost {
			w.Header().Set("Allow", "POST")
			detail(w, http.StatusMethodNotAllowed, fmt.Sprintf("Method %q not allowed.", r.Method))
			return
		}
		h.login(w, r)
		return
	}
	if r.Method == http.MethodGet && r.URL.Path == registry.PathPrefix+FeedPath {
		h.feed(w, r)
		return
	}
	if r.Method == http.MethodGet || r.Method == http.MethodHead {
		h.read.ServeHTTP(w, r)
		return
	}
	if kind, id, ok := enrolPath(r.URL.Path); ok && r.Method == http.MethodPost {
		h.enrol(w, r, kind, id)
		return
	}
	if r.URL.Path == registry.PathPrefix+EnrolPath && r.Method == http.MethodPost {
		h.enrol(w, r, "", 0)
		return
	}
	if kind, ok := collectionPath(r.URL.Path); ok && r.Method == http.MethodPost {
		h.create(w, r, kind)
		return
	}
	kind, id, ok := memberPath(r.URL.Path)
	if !ok || (r.Method != http.MethodPatch && r.Method != http.MethodDelete) {
		w.Header().Set("Allow", "GET, HEAD, PATCH, DELETE")
		detail(w, http.StatusMethodNotAllowed, fmt.Sprintf("Method %q not allowed.", r.Method))
		return
	}
	tok, err := h.authenticate(r)
	if err != nil {
		w.Header().Set("WWW-Authenticate", "Token")
		detail(w, http.StatusUnauthorized, "Invalid token.")
		return
	}
	actor := actorOf(tok)
	var (
		version uint64
		changed []byte // the member after a PATCH
	)
	switch r.Method {
	case http.MethodDelete:
		if tok.Role != registrydb.RoleOperator {
			detail(w, http.StatusForbidden, "You do not have permission to perform this action.")
			return
		}
		version, err = h.db.DeleteMember(r.Context(), actor, kind, id)
	case http.MethodPatch:
		var m registry.FileMember
		if m, version, err = h.patch(r, tok, actor, kind, id); err == nil {
			changed, err = json.Marshal(m)
		}
	}
	if h.writeFailed(w, r, err) {
		return
	}
	h.log.Info("registry write", "method", r.Method, "path", r.URL.Path, "actor", actor, "version", version)
	h.Notify()
	if h.Written != nil {
		h.Written(r.Context(), version)
	}
	if r.Method == http.MethodDelete {
		w.WriteHeader(http.StatusNoContent)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusOK)
	w.Write(changed)
}

// memberPath parses /api/<collection>/<id>/.
func memberPath(path string) (kind string, id uint64, ok bool) {
	rest, found := strings.CutPrefix(path, registry.PathPrefix)
	if !found {
		return "", 0, false
	}
	parts := strings.Split(strings.TrimSuffix(rest, "/"), "/")
	if len(parts) != 2 {
		return "", 0, false
	}
	kind, ok = collections[parts[0]]
	if !ok {
		return "", 0, false
	}
	id, err := strconv.ParseUint(parts[1], 10, 64)
	return kind, id, err == nil
}

// collectionPath parses /api/<collection>/.
func collectionPath(path string) (kind string, ok bool) {
	rest, found := strings.CutPrefix(path, registry.PathPrefix)
	if !found {
		return "", false
	}
	kind, ok = collections[strings.TrimSuffix(rest, "/")]
	return kind, ok && strings.HasSuffix(rest, "/")
}

// createBody is a new member: its id, and what a PATCH may set.
type createBody struct {
	ID      uint64 `json:"id"`
	Backend string `json:"backend"`
	patchBody
}

// create serves POST /api/<collection>/: an operator adds a member,
// checked as any write; 201 with the member and its Location.
func (h *Handler) create(w http.ResponseWriter, r *http.Request, kind string) {
	tok, err := h.authenticate(r)
	if err != nil {
		w.Header().Set("WWW-Authenticate", "Token")
		detail(w, http.StatusUnauthorized, "Invalid token.")
		return
	}
	if tok.Role != registrydb.RoleOperator {
		detail(w, http.StatusForbidden, "Only an operator may add members.")
		return
	}
	actor := actorOf(tok)
	body, err := io.ReadAll(io.LimitReader(r.Body, maxBody+1))
	if err != nil || len(body) > maxBody {
		detail(w, http.StatusBadRequest, fmt.Sprintf("read the body: at most %d bytes of JSON", maxBody))
		return
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	var c createBody
	if err := dec.Decode(&c); err != nil {
		detail(w, http.StatusBadRequest, fmt.Sprintf("want a JSON object of id, name, island, properties, backend and tinc: %v", err))
		return
	}
	if c.ID == 0 {
		detail(w, http.StatusBadRequest, "id: want the new member's id, 1 or more")
		return
	}
	m := registry.FileMember{ID: c.ID, Backend: c.Backend}
	if err := applyPatch(&m, &c.patchBody, true); err != nil {
		detail(w, http.StatusBadRequest, err.Error())
		return
	}
	version, warnings, err := h.db.PutMember(r.Context(), actor, kind, m, true)
	if h.writeFailed(w, r, err) {
		return
	}
	h.log.Info("registry write", "method", r.Method, "path", r.URL.Path, "actor", actor, "version", version, "warnings", warnings)
	h.Notify()
	if h.Written != nil {
		h.Written(r.Context(), version)
	}
	got, err := h.db.Member(r.Context(), kind, c.ID)
	if err != nil {
		detail(w, http.StatusInternalServerError, "The write succeeded but does not read back; the registry's log says why.")
		return
	}
	w.Header().Set("Location", registry.BaseURL(r)+strings.TrimPrefix(r.URL.Path, registry.PathPrefix)+strconv.FormatUint(c.ID, 10)+"/")
	writeJSON(w, http.StatusCreated, got)
}

// writeFailed answers a write's error, if any, and reports whether there
// was one: 403 for a role that may not, 404 for no such member, 400 for
// input a client would reject (or a member that exists already), 500 for
// the rest (logged).
func (h *Handler) writeFailed(w http.ResponseWriter, r *http.Request, err error) bool {
	var fe forbiddenError
	switch {
	case err == nil:
		return false
	case errors.As(err, &fe):
		detail(w, http.StatusForbidden, fe.Error())
	case errors.Is(err, registrydb.ErrNotFound):
		detail(w, http.StatusNotFound, "Not found.")
	case errors.Is(err, registrydb.ErrRejected), errors.Is(err, registrydb.ErrExists), errors.As(err, new(badInput)):
		detail(w, http.StatusBadRequest, err.Error())
	default:
		h.log.Warn("registry write failed", "method", r.Method, "path", r.URL.Path, "err", err)
		detail(w, http.StatusInternalServerError, "The write failed; the registry's log says why.")
	}
	return true
}

// actorOf names a token in the audit log: "token:<id> (<name>)".
func actorOf(tok registrydb.Token) string {
	actor := fmt.Sprintf("token:%d", tok.ID)
	if tok.Name != "" {
		actor += " (" + tok.Name + ")"
	}
	return actor
}

// authenticate reads "Authorization: Token <key>".
func (h *Handler) authenticate(r *http.Request) (registrydb.Token, error) {
	scheme, key, ok := strings.Cut(r.Header.Get("Authorization"), " ")
	if !ok || !strings.EqualFold(scheme, "Token") {
		return registrydb.Token{}, registrydb.ErrBadToken
	}
	return h.db.Authenticate(r.Context(), key)
}

// badInput is a request body that is not a member's JSON.
type badInput struct{ error }

// forbiddenError is a write the token's role may not make.
type forbiddenError struct{ msg string }

func (f forbiddenError) Error() string { return f.msg }

// patchBody is what a PATCH may change; an absent field stays.
type patchBody struct {
	Name       *string            `json:"name"`
	Island     *json.RawMessage   `json:"island"`
	Properties *map[string]string `json:"properties"`
	Tinc       *json.RawMessage   `json:"tinc"`
}

type patchTinc struct {
	PubKey    *string                 `json:"pubkey"`
	Addresses *[]registry.FileAddress `json:"addresses"`
}

// patch applies a PATCH body to the member, as the token's role allows.
func (h *Handler) patch(r *http.Request, tok registrydb.Token, actor, kind string, id uint64) (registry.FileMember, uint64, error) {
	body, err := io.ReadAll(io.LimitReader(r.Body, maxBody+1))
	if err != nil {
		return registry.FileMember{}, 0, badInput{fmt.Errorf("read the body: %w", err)}
	}
	if len(body) > maxBody {
		return registry.FileMember{}, 0, badInput{fmt.Errorf("the body is over %d bytes", maxBody)}
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	var p patchBody
	if err := dec.Decode(&p); err != nil {
		return registry.FileMember{}, 0, badInput{fmt.Errorf("want a JSON object of name, island, properties and tinc: %w", err)}
	}
	operator := tok.Role == registrydb.RoleOperator
	if !operator {
		own := map[string]string{registrydb.RoleNodeAdmin: registrydb.KindNode, registrydb.RoleHostOwner: registrydb.KindHost}[tok.Role]
		if own != kind || !slices.Contains(tok.Scope, fmt.Sprintf("%s %d", kind, id)) {
			return registry.FileMember{}, 0, forbiddenError{fmt.Sprintf("This token may not write %s %d.", kind, id)}
		}
		if p.Name != nil || p.Island != nil || p.Properties != nil {
			return registry.FileMember{}, 0, forbiddenError{"Only an operator may set name, island or properties (egress and DNS-service grants among them)."}
		}
	}
	m, err := h.db.Member(r.Context(), kind, id)
	if err != nil {
		return registry.FileMember{}, 0, err
	}
	if err := applyPatch(&m, &p, operator); err != nil {
		return registry.FileMember{}, 0, err
	}
	v, _, err := h.db.PutMember(r.Context(), actor, kind, m, false)
	if err != nil {
		return registry.FileMember{}, 0, err
	}
	m, err = h.db.Member(r.Context(), kind, id)
	return m, v, err
}

// applyPatch sets on m what p gives. operator: addresses may be set.
func applyPatch(m *registry.FileMember, p *patchBody, operator bool) error {
	if p.Name != nil {
		m.Name = *p.Name
	}
	if p.Island != nil {
		var isl *uint64
		if err := json.Unmarshal(*p.Island, &isl); err != nil {
			return badInput{fmt.Errorf("island: want an id or null: %w", err)}
		}
		m.Island = 0
		if isl != nil {
			m.Island = *isl
		}
	}
	if p.Properties != nil {
		m.Properties = *p.Properties
	}
	if p.Tinc == nil {
		return nil
	}
	if string(bytes.TrimSpace(*p.Tinc)) == "null" {
		m.Tinc = nil
		return nil
	}
	var t patchTinc
	td := json.NewDecoder(bytes.NewReader(*p.Tinc))
	td.DisallowUnknownFields()
	if err := td.Decode(&t); err != nil {
		return badInput{fmt.Errorf("tinc: want pubkey and addresses: %w", err)}
	}
	if t.Addresses != nil && !operator {
		return forbiddenError{"Only an operator may set tinc addresses (they make a member a gateway)."}
	}
	if m.Tinc == nil {
		m.Tinc = &registry.FileTinc{}
	}
	if t.PubKey != nil {
		m.Tinc.PubKey = *t.PubKey
	}
	if t.Addresses != nil {
		m.Tinc.Addresses = *t.Addresses
	}
	return nil
}

// detail writes the controller's error object.
func detail(w http.ResponseWriter, status int, msg string) {
	b, _ := json.Marshal(map[string]string{"detail": msg})
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	w.Write(b)
}

// EnrolPath is where a node or host enrols with an invite, relative to the
// member's URI: the controller's "ctl" endpoints' form.
const EnrolPath = "ctl/enrol/"

// enrolPath parses /api/<nodes|hosts>/<id>/ctl/enrol/.
func enrolPath(path string) (kind string, id uint64, ok bool) {
	rest, found := strings.CutSuffix(path, "/"+EnrolPath)
	if !found {
		return "", 0, false
	}
	kind, id, ok = memberPath(rest + "/")
	return kind, id, ok && (kind == registrydb.KindNode || kind == registrydb.KindHost)
}

// EnrolRequest is the body of an enrolment: the invite's key and the
// member's public key (PEM).
type EnrolRequest struct {
	Token  string `json:"token"`
	PubKey string `json:"pubkey"`
	// Collection, at POST /api/ctl/enrol/, is the collection the
	// enrolling member expects to be in ("hosts" for mgmtnet join): an
	// invite for another is refused, and stays unspent.
	Collection string `json:"collection,omitempty"`
}

// enrol spends an invite: the member gets its key. No API token: the
// invite is the credential.
func (h *Handler) enrol(w http.ResponseWriter, r *http.Request, kind string, id uint64) {
	var req EnrolRequest
	dec := json.NewDecoder(io.LimitReader(r.Body, maxBody))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		detail(w, http.StatusBadRequest, fmt.Sprintf("want a JSON object of token and pubkey: %v", err))
		return
	}
	var (
		m       registry.FileMember
		version uint64
		err     error
	)
	if kind == "" {
		// POST /api/ctl/enrol/: the invite names the member.
		want := ""
		if req.Collection != "" {
			if want = collections[req.Collection]; want == "" {
				detail(w, http.StatusBadRequest, fmt.Sprintf("collection %q: want nodes or hosts", req.Collection))
				return
			}
		}
		kind, m, version, err = h.db.EnrolInvite(r.Context(), want, req.Token, req.PubKey)
	} else {
		m, version, err = h.db.Enrol(r.Context(), kind, id, req.Token, req.PubKey)
	}
	switch {
	case errors.Is(err, registrydb.ErrInviteUnknown), errors.Is(err, registrydb.ErrInviteSpent), errors.Is(err, registrydb.ErrInviteExpired):
		detail(w, http.StatusForbidden, err.Error())
		return
	case errors.Is(err, registrydb.ErrRejected):
		detail(w, http.StatusBadRequest, err.Error())
		return
	case errors.Is(err, registrydb.ErrNotFound):
		detail(w, http.StatusNotFound, "Not found.")
		return
	case err != nil:
		h.log.Warn("registry enrolment failed", "path", r.URL.Path, "err", err)
		detail(w, http.StatusInternalServerError, "The enrolment failed; the registry's log says why.")
		return
	}
	h.log.Info("registry enrolment", "member", fmt.Sprintf("%s %d", kind, id), "version", version)
	h.Notify()
	if h.Written != nil {
		h.Written(r.Context(), version)
	}
	writeJSON(w, http.StatusOK, EnrolAnswer{Collection: collectionOf[kind], ID: m.ID, Member: m})
}

// EnrolAnswer is what an enrolment answers: the member enrolled, by its
// collection and id, as the registry database holds it.
type EnrolAnswer struct {
	Collection string              `json:"collection"`
	ID         uint64              `json:"id"`
	Member     registry.FileMember `json:"member"`
}
