package authdns

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime/debug"
	"time"

	"github.com/confine-project/mgmtnet/mesh"
	"github.com/confine-project/mgmtnet/source"
)

// FollowOptions are Follow's settings.
type FollowOptions struct {
	// Poll is how often the registry is polled; default one minute.
	Poll time.Duration
	// RetryMin is the first wait after a failed poll (source.Backoff);
	// default 5 s.
	RetryMin time.Duration
	// OnFirstZone, when set, is called once, after the first zone is
	// loaded.
	OnFirstZone func(*Zone)
	Logger      *slog.Logger
}

// Follow keeps srv's zones in step with src until ctx ends: it polls
// (conditionally, with the ETags of the snapshot served; or, where the
// source follows the registry's change feed, waiting on the feed, which
// ends the wait as soon as the registry changes), swaps in the
// zone of every changed snapshot that the source validated and guarded,
// and keeps serving the last zone while the registry is down or answers
// garbage. Each failure is logged once until a poll succeeds again.
func Follow(ctx context.Context, src *source.Source, srv *Server, o FollowOptions) {
	if o.Poll <= 0 {
		o.Poll = time.Minute
	}
	if o.RetryMin <= 0 {
		o.RetryMin = 5 * time.Second
	}
	log := o.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	f := follower{src: src, srv: srv, log: log, first: o.OnFirstZone}
	backoff := source.Backoff{Min: o.RetryMin, Max: time.Hour}
	timer := time.NewTimer(0)
	defer timer.Stop()
	failing := false
	for {
		select {
		case <-ctx.Done():
			return
		case <-timer.C:
		}
		err := f.once(ctx)
		if ctx.Err() != nil {
			return
		}
		next := backoff.Next(err != nil, o.Poll)
		switch {
		case err != nil:
			what := "serving the last zone"
			if srv.Zone() == nil {
				what = "no zone yet: names of the zone get SERVFAIL"
			}
			if !failing {
				log.Warn("registry poll failed; "+what, "registry", src.URL(), "retry_in", next.Round(time.Second), "err", err)
			} else {
				log.Debug("registry poll failed again", "registry", src.URL(), "retry_in", next.Round(time.Second), "err", err)
			}
			failing = true
		case failing:
			log.Info("registry poll succeeded again", "registry", src.URL())
			failing = false
		}
		if err == nil {
			f.waitFeed(ctx, next)
			next = 0
		}
		timer.Reset(next)
	}
}

// waitFeed waits up to d on the change feed that the source follows, and
// returns at once when the registry has a change; without a feed, or when
// it fails, it waits d out.
func (f *follower) waitFeed(ctx context.Context, d time.Duration) {
	deadline := time.Now().Add(d)
	feed, v := f.src.FeedVersion()
	for feed != "" && time.Now().Before(deadline) {
		wctx, cancel := context.WithDeadline(ctx, deadline)
		changed, err := f.src.WaitChange(wctx, feed, v)
		cancel()
		if ctx.Err() != nil || changed {
			return
		}
		if err != nil {
			if time.Now().Before(deadline) {
				f.log.Debug("registry change feed failed; polling", "feed", feed, "err", err)
			}
			break
		}
	}
	t := time.NewTimer(time.Until(deadline))
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}

type follower struct {
	src     *source.Source
	srv     *Server
	log     *slog.Logger
	first   func(*Zone)
	refused string // version of the last snapshot the guard refused (logged once)
}

// once fetches and swaps in the zone of a changed snapshot. A snapshot the
// guard refuses is logged once per version and is not an error (the
// registry answered; the last zone is served).
func (f *follower) once(ctx context.Context) error {
	snap, err := f.src.Fetch(ctx)
	if errors.Is(err, mesh.ErrMassDeletion) {
		if f.refused != err.Error() {
			limit := fmt.Sprintf("%.0f%%", 100*f.src.Guard().Fraction())
			if f.src.Guard().Fraction() == 0.5 {
				limit = "half"
			}
			f.log.Error("registry snapshot refused: it would remove more than "+limit+" of the members (a broken registry?); serving the last zone. Run with --force to accept it",
				"err", err)
			f.refused = err.Error()
		}
		return nil
	}
	if err != nil {
		return err
	}
	if snap.NotModified {
		return nil
	}
	for _, n := range snap.Notes {
		f.log.Warn(n)
	}
	for _, p := range snap.Rejected {
		f.log.Warn("registry member rejected", "member", p.String())
	}
	for _, p := range snap.Skipped {
		f.log.Debug("registry member skipped", "member", p.String())
	}
	firstZone := f.srv.Zone() == nil
	if err := f.srv.SetTestbed(snap.Testbed); err != nil {
		return err
	}
	f.src.Commit(snap)
	f.refused = ""
	// The registry's answer, the candidates and the old zone are garbage
	// now: hand the memory back rather than keep the peak resident until
	// the next change.
	debug.FreeOSMemory()
	if firstZone && f.first != nil {
		f.first(f.srv.Zone())
	}
	return nil
}
