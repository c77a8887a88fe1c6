package tinc

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"

	"github.com/confine-project/mgmtnet/tincgen"
)

// Action is what a tincd needs for the files it runs on to take effect.
// Greater values include the smaller ones.
type Action uint8

// The actions, in the order Applier.Need merges them.
const (
	ActionNone    Action = iota // nothing changed
	ActionReload                // one SIGHUP: tinc 1.0 re-reads tinc.conf and the host files
	ActionRestart               // stop and start: a new Name, TunnelServer, or own Subnets without TunnelServer
)

func (a Action) String() string {
	switch a {
	case ActionReload:
		return "reload"
	case ActionRestart:
		return "restart"
	}
	return "none"
}

// Applier is the one path from rendered host files to a running tincd:
// Sync writes the files that changed, Need records what else changed, and
// Deliver checks tinc.conf and sends the SIGHUP or restart they call for.
// An action whose delivery failed stays pending, so the next Deliver sends
// it again: a revoked member must not keep its access because one SIGHUP
// failed. It is not safe for concurrent use.
type Applier struct {
	// Dir is the tinc net's directory (tinc.conf).
	Dir string
	// Hosts is the hosts directory Sync writes; default Dir/hosts.
	Hosts string
	// Ctl is its tincd.
	Ctl Controller
	// StartStopped makes Deliver start a tincd that does not run (a
	// node's boot). Otherwise a stopped tincd needs nothing: it reads the
	// files when it starts.
	StartStopped bool

	pending Action
}

// HostsDir is Hosts, else Dir/hosts.
func (a *Applier) HostsDir() string {
	if a.Hosts != "" {
		return a.Hosts
	}
	return filepath.Join(a.Dir, "hosts")
}

// Sync writes the files of src into HostsDir, change-only
// (tincgen.SyncSource, which renders them one at a time), and needs
// ActionReload when any file was written or removed.
func (a *Applier) Sync(src tincgen.Source, o tincgen.SyncOptions) (tincgen.Report, error) {
	rep, err := tincgen.Sync(a.HostsDir(), src, o)
	if err != nil {
		return rep, err
	}
	if rep.Changed() && !o.DryRun {
		a.Need(ActionReload)
	}
	return rep, nil
}

// Need records that tincd needs at least x.
func (a *Applier) Need(x Action) { a.pending = max(a.pending, x) }

// Pending is what the next Deliver would do to a running tincd.
func (a *Applier) Pending() Action { return a.pending }

// Deliver sends what is pending. It reports what it did: ActionReload or
// ActionRestart, or ActionNone (nothing pending, or tincd stopped and StartStopped
// unset), and started when it started a stopped tincd. On an error the
// action stays pending, except ErrUnmanaged (no later try can do better).
func (a *Applier) Deliver(ctx context.Context) (done Action, started bool, err error) {
	if !a.Ctl.State().Running {
		if !a.StartStopped {
			a.pending = ActionNone
			return ActionNone, false, nil
		}
		if err := a.Ctl.Start(ctx); err != nil {
			return ActionNone, false, fmt.Errorf("start tincd: %w", err)
		}
		a.pending = ActionNone
		return ActionNone, true, nil
	}
	switch a.pending {
	case ActionRestart:
		err := a.Ctl.Restart(ctx)
		if errors.Is(err, ErrUnmanaged) {
			a.pending = ActionNone
			return ActionNone, false, err
		}
		if err != nil {
			return ActionNone, false, fmt.Errorf("restart tincd: %w", err)
		}
	case ActionReload:
		if err := Reload(a.Dir, a.Ctl); err != nil {
			return ActionNone, false, err
		}
	default:
		return ActionNone, false, nil
	}
	done, a.pending = a.pending, ActionNone
	return done, false, nil
}
