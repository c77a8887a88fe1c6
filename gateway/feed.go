package gateway

import (
	"context"
	"sync/atomic"
	"time"

	"github.com/confine-project/mgmtnet/source"
)

// The change feed component: where the registry links a change feed
// (registry serve --db) and registry.feed is on, a goroutine waits on it
// (a long poll) and pokes the loop as soon as the registry has a change;
// the loop's reconcile then asks the feed what changed (source.Fetch) and
// applies it. The poll timer stays, as the fallback: against a registry
// without a feed, or one whose feed fails, the daemon polls as before.

// feedState is shared by the loop and the follower goroutine.
type feedState struct {
	// at is the feed the snapshot in use follows (nil for none): the
	// loop sets it after every reconcile (publishFeed), the follower
	// reads it.
	at atomic.Pointer[feedCursor]
	// poke tells the loop that the registry has a change; moved tells the
	// follower that at changed.
	poke, moved chan struct{}
}

// feedCursor is a feed and the version the snapshot in use holds.
type feedCursor struct {
	src     *source.Source // whose client asks (a config reload makes a new one)
	url     string
	version uint64
}

// publishFeed tells the follower which feed and version the snapshot in
// use follows. The loop calls it after each reconcile.
func (d *Daemon) publishFeed() {
	url, v := d.hosts.src.FeedVersion()
	old := d.feed.at.Load()
	var cur *feedCursor
	if url != "" {
		cur = &feedCursor{src: d.hosts.src, url: url, version: v}
	}
	if old == nil && cur == nil || old != nil && cur != nil && *old == *cur {
		return
	}
	d.feed.at.Store(cur)
	if cur == nil {
		v = 0
	}
	d.m.feedVersion.Set(float64(v))
	select {
	case d.feed.moved <- struct{}{}:
	default:
	}
}

// followFeed waits on the feed until ctx ends, and pokes the loop when the
// registry has a change. After a poke it waits for the loop to move on
// (or for a poll interval, when applying the change failed and the loop
// did not), so that a change the loop cannot apply is not asked for in a
// tight loop. A failing feed is asked again after 1 s, doubling up to the
// poll interval.
func (d *Daemon) followFeed(ctx context.Context) {
	backoff := source.Backoff{Min: time.Second, Max: time.Minute}
	failing := false
	for {
		cur := d.feed.at.Load()
		if cur == nil {
			select {
			case <-ctx.Done():
				return
			case <-d.feed.moved:
			}
			continue
		}
		changed, err := cur.src.WaitChange(ctx, cur.url, cur.version)
		if ctx.Err() != nil {
			return
		}
		if err != nil {
			if !failing {
				d.log.Warn("registry change feed fails; polling until it answers", "feed", cur.url, "err", err)
			}
			failing = true
			d.m.feedErrors.Inc()
			if !d.sleepFeed(ctx, backoff.Next(true, d.cfg.Poll.Interval.D())) {
				return
			}
			continue
		}
		if failing {
			d.log.Info("registry change feed answers again", "feed", cur.url)
			failing = false
		}
		if !changed {
			continue
		}
		d.log.Debug("registry change feed has a change; syncing", "feed", cur.url, "since", cur.version)
		select {
		case d.feed.poke <- struct{}{}:
		default:
		}
		if !d.sleepFeed(ctx, d.cfg.Poll.Interval.D()) {
			return
		}
	}
}

// sleepFeed waits for d, or until the feed cursor moves; false when ctx
// ended.
func (d *Daemon) sleepFeed(ctx context.Context, wait time.Duration) bool {
	t := time.NewTimer(wait)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-d.feed.moved:
	case <-t.C:
	}
	return true
}
