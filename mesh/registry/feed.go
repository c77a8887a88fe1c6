package registry

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/confine-project/mgmtnet/addressing"
	"github.com/confine-project/mgmtnet/mesh"
)

// The change feed: an extension of the CONFINE v1 API that "mgmtnet
// registry serve --db" offers and the 2015 controller does not. The base
// resource links it by a relation of its own (RelChanges), so clients use
// it only where it exists and poll with ETags elsewhere.
//
//	GET <feed>?since=V&wait=S
//
// answers what changed after version V of the registry's testbed, waiting
// up to S seconds (at most MaxFeedWait) for a change when there is none
// yet:
//
//	{"version": 43, "changes": [
//	  {"op": "put", "collection": "nodes", "id": 31, "member": {...}},
//	  {"op": "remove", "collection": "nodes", "id": 32}]}
//
// A put's member is as the collection's list gives it, but without
// "gateways", which depends on the whole testbed. Without since, the
// answer is the current version and no changes: a reader asks for it
// before it reads the collections, and then follows the feed from it
// (changes the collections already showed come again, and putting a
// member as it is changes nothing). A version the feed cannot answer from
// (older than a whole import, or newer than the registry's) gets 410 Gone:
// the reader reads everything again.

// RelChanges is the link relation of the change feed in the base
// resource's Link header.
const RelChanges = "https://github.com/confine-project/mgmtnet/rel/changes"

// MaxFeedWait is the longest wait a feed request may ask for.
const MaxFeedWait = 55 * time.Second

// Feed operations.
const (
	FeedPut    = "put"
	FeedRemove = "remove"
)

// FeedAnswer is the feed's JSON.
type FeedAnswer struct {
	Version uint64       `json:"version"`
	Changes []FeedChange `json:"changes"`
}

// FeedChange is one member put or removed.
type FeedChange struct {
	Op         string          `json:"op"`
	Collection string          `json:"collection"`
	ID         uint64          `json:"id"`
	Member     json.RawMessage `json:"member,omitempty"`
}

// ErrFeedGone is wrapped by Changes' error when the registry cannot answer
// from the version given (410 Gone): read everything again.
var ErrFeedGone = errors.New("the registry's change feed cannot answer from that version")

// MemberRef names a member by kind and id.
type MemberRef struct {
	Kind addressing.Kind
	ID   uint64
}

// FeedResult is one answer of the change feed, decoded and checked as the
// collections are: a member that does not decode is a Problem (and is
// neither put nor removed), and the others go on.
type FeedResult struct {
	Version  uint64
	Put      []mesh.Candidate
	Removed  []MemberRef
	Problems []mesh.Problem
	// Dialect is DialectV0 when a member had the pre-2015 shape.
	Dialect string
}

// feedCollections maps the feed's collection names to the kinds.
var feedCollections = map[string]addressing.Kind{"servers": addressing.KindServer, "nodes": addressing.KindNode, "hosts": addressing.KindHost}

// maxFeedBytes bounds one feed answer: as large as a whole fetch may be
// (a reader far behind gets most of the testbed).
func (c *Client) maxFeedBytes() int64 { return c.opts.MaxBodyBytes }

// Changes asks the feed at feedURL (Snapshot.Feed) what changed after
// version since, waiting up to wait (at most MaxFeedWait, and less than
// the client's Timeout, which bounds the wait for the answer's headers)
// for a change. An answer with Version == since changed nothing.
func (c *Client) Changes(ctx context.Context, feedURL string, since uint64, wait time.Duration) (*FeedResult, error) {
	return c.changes(ctx, feedURL, &since, wait)
}

// FeedVersion asks the feed for the registry's current version.
func (c *Client) FeedVersion(ctx context.Context, feedURL string) (uint64, error) {
	r, err := c.changes(ctx, feedURL, nil, 0)
	if err != nil {
		return 0, err
	}
	return r.Version, nil
}

// LongPollWait is the wait that a reader following the feed should ask
// for: as long as the client's Timeout allows, with room for the answer.
func (c *Client) LongPollWait() time.Duration {
	return max(min(MaxFeedWait, c.opts.Timeout-5*time.Second, c.opts.Timeout*3/4), time.Second)
}

func (c *Client) changes(ctx context.Context, feedURL string, since *uint64, wait time.Duration) (*FeedResult, error) {
	u, err := url.Parse(feedURL)
	if err != nil {
		return nil, fmt.Errorf("registry change feed %q: %w", feedURL, err)
	}
	q := u.Query()
	if since != nil {
		q.Set("since", strconv.FormatUint(*since, 10))
		if wait = min(wait, MaxFeedWait, c.opts.Timeout-time.Second); wait >= time.Second {
			q.Set("wait", strconv.Itoa(int(wait/time.Second)))
		}
	}
	u.RawQuery = q.Encode()
	target := u.String()
	ctx, cancel := context.WithTimeoutCause(ctx, c.opts.FetchTimeout, &fetchTimeoutError{c.opts.FetchTimeout})
	defer cancel()
	var ans FeedAnswer
	st := &fetchState{}
	_, err = c.get(ctx, st, target, "", func(r *limitedBody) error {
		ans = FeedAnswer{}
		dec := json.NewDecoder(r)
		if err := dec.Decode(&ans); err != nil {
			if r.err != nil {
				return r.err
			}
			var tooBig *bodyTooLargeError
			if errors.As(err, &tooBig) {
				return err
			}
			return fmt.Errorf("get %s: the change feed's answer is not its JSON: %w", target, err)
		}
		return discardBody(r)
	})
	if err != nil {
		var se *statusErr
		if errors.As(err, &se) && se.code == http.StatusGone {
			return nil, fmt.Errorf("%w: %w", ErrFeedGone, err)
		}
		return nil, err
	}
	if since != nil && ans.Version < *since {
		return nil, fmt.Errorf("%w: get %s: the registry went back from version %d to %d", ErrFeedGone, target, *since, ans.Version)
	}
	res := &FeedResult{Version: ans.Version, Dialect: DialectV1}
	decoders := map[string]*memberDecoder{}
	for i, ch := range ans.Changes {
		kind, ok := feedCollections[ch.Collection]
		if !ok {
			res.Problems = append(res.Problems, mesh.Problem{ID: ch.ID,
				Reason: fmt.Sprintf("change feed %s: change %d: collection %q: want nodes, servers or hosts", target, i, ch.Collection)})
			continue
		}
		switch ch.Op {
		case FeedRemove:
			res.Removed = append(res.Removed, MemberRef{Kind: kind, ID: ch.ID})
		case FeedPut:
			md := decoders[ch.Collection]
			if md == nil {
				md = newMemberDecoder(kind, target, c.log)
				decoders[ch.Collection] = md
			}
			before, problems := len(md.Candidates), len(md.Problems)
			md.add(ch.Member)
			if len(md.Problems) > problems && md.Problems[problems].ID == 0 {
				// A member that did not even give its id: the change's.
				md.Problems[problems].ID = ch.ID
			}
			if len(md.Candidates) == before {
				continue // a problem, or an exact duplicate
			}
			if got := md.Candidates[before].ID; got != ch.ID {
				md.Candidates = md.Candidates[:before]
				res.Problems = append(res.Problems, mesh.Problem{Kind: kind, ID: ch.ID,
					Reason: fmt.Sprintf("change feed %s: change %d: the member's id is %d, not %d", target, i, got, ch.ID)})
			}
		default:
			res.Problems = append(res.Problems, mesh.Problem{Kind: kind, ID: ch.ID,
				Reason: fmt.Sprintf("change feed %s: change %d: op %q: want put or remove", target, i, ch.Op)})
		}
	}
	for _, name := range []string{"servers", "hosts", "nodes"} {
		if md := decoders[name]; md != nil {
			res.Put = append(res.Put, md.Candidates...)
			res.Problems = append(res.Problems, md.Problems...)
			if md.V0 {
				res.Dialect = DialectV0
			}
		}
	}
	return res, nil
}
