package registryapi

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/confine-project/mgmtnet/mesh/registry"
	"github.com/confine-project/mgmtnet/registrydb"
)

// FeedPath is where the change feed is served, relative to the base: the
// base resource links it (registry.RelChanges; see Link).
const FeedPath = "changes/"

// Link is the base resource's link to the feed, for registry.Server.Links.
var Link = registry.Link{Rel: registry.RelChanges, Path: FeedPath}

// maxWaiters bounds the feed requests that wait at once; more are
// answered at once (with no change, or what there is), so that idle
// connections cannot hold the server's memory.
const maxWaiters = 4096

// versions tells the feed's waiting requests that the database has a new
// version: Notify closes the channel they wait on.
type versions struct {
	mu      sync.Mutex
	changed chan struct{}
	waiters int
}

// wait returns the channel that the next Notify closes, and false when
// too many requests wait already; done must be called after.
func (v *versions) wait() (<-chan struct{}, bool) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.waiters >= maxWaiters {
		return nil, false
	}
	if v.changed == nil {
		v.changed = make(chan struct{})
	}
	v.waiters++
	return v.changed, true
}

func (v *versions) done() {
	v.mu.Lock()
	v.waiters--
	v.mu.Unlock()
}

// Notify wakes the feed's waiting requests: the database may have a new
// version (this instance's write, or another's that a poll saw). Waking
// them when nothing changed costs one indexed read each.
func (h *Handler) Notify() {
	h.versions.mu.Lock()
	defer h.versions.mu.Unlock()
	if h.versions.changed != nil {
		close(h.versions.changed)
		h.versions.changed = nil
	}
}

// feed serves GET <base>changes/?since=V&wait=S (see registry.RelChanges).
func (h *Handler) feed(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Cache-Control", "no-store")
	q := r.URL.Query()
	ctx := r.Context()
	if q.Get("since") == "" {
		v, err := h.db.Version(ctx)
		if err != nil {
			h.log.Warn("registry feed failed", "err", err)
			detail(w, http.StatusServiceUnavailable, "The registry database does not answer; its log says why.")
			return
		}
		writeJSON(w, http.StatusOK, registry.FeedAnswer{Version: v, Changes: []registry.FeedChange{}})
		return
	}
	since, err := strconv.ParseUint(q.Get("since"), 10, 64)
	if err != nil {
		detail(w, http.StatusBadRequest, fmt.Sprintf("since: want a version, a non-negative integer, not %q", q.Get("since")))
		return
	}
	var wait time.Duration
	if s := q.Get("wait"); s != "" {
		n, err := strconv.ParseUint(s, 10, 32)
		if err != nil {
			detail(w, http.StatusBadRequest, fmt.Sprintf("wait: want seconds, a non-negative integer, not %q", s))
			return
		}
		wait = min(time.Duration(n)*time.Second, registry.MaxFeedWait)
	}
	deadline := time.NewTimer(wait)
	defer deadline.Stop()
	for {
		// The channel is taken before the read: a write between the read
		// and the wait closes it, and is not missed.
		woken, ok := h.versions.wait()
		c, err := h.db.Changes(ctx, since)
		if ok {
			defer h.versions.done()
		}
		switch {
		case errors.Is(err, registrydb.ErrFeedGone):
			detail(w, http.StatusGone, err.Error()+"; read the collections again")
			return
		case err != nil:
			h.log.Warn("registry feed failed", "since", since, "err", err)
			detail(w, http.StatusServiceUnavailable, "The registry database does not answer; its log says why.")
			return
		case c.Version > since || wait == 0 || !ok:
			h.writeChanges(w, r, c)
			return
		}
		select {
		case <-woken:
		case <-deadline.C:
			wait = 0
		case <-ctx.Done():
			return
		}
	}
}

// writeChanges renders c as the feed's JSON.
func (h *Handler) writeChanges(w http.ResponseWriter, r *http.Request, c *registrydb.Changes) {
	render := c.Head.MemberRenderer(registry.BaseURL(r))
	ans := registry.FeedAnswer{Version: c.Version, Changes: make([]registry.FeedChange, 0, len(c.Put)+len(c.Removed))}
	for _, rm := range c.Removed {
		ans.Changes = append(ans.Changes, registry.FeedChange{Op: registry.FeedRemove, Collection: collectionOf[rm.Kind], ID: rm.ID})
	}
	for _, p := range c.Put {
		b, err := render(collectionOf[p.Kind], &p.Member)
		if err != nil {
			h.log.Warn("registry feed: cannot render a member", "kind", p.Kind, "id", p.Member.ID, "err", err)
			detail(w, http.StatusInternalServerError, "The feed failed; the registry's log says why.")
			return
		}
		ans.Changes = append(ans.Changes, registry.FeedChange{Op: registry.FeedPut, Collection: collectionOf[p.Kind], ID: p.Member.ID, Member: b})
	}
	writeJSON(w, http.StatusOK, ans)
}

// collectionOf maps the database's kinds to the URL collections.
var collectionOf = map[string]string{registrydb.KindNode: "nodes", registrydb.KindServer: "servers", registrydb.KindHost: "hosts"}

func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		detail(w, http.StatusInternalServerError, "The answer did not encode.")
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	w.Write(b)
}
