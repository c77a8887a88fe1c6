// Package tinc drives a tinc 1.0 daemon: the one place where mgmtnet finds,
// starts, signals and stops tincd, and the one applier that turns rendered
// host files into a running mesh (change-only sync, tinc.conf check, then
// SIGHUP or restart).
//
// A Controller is one tincd: Daemonized (tinc 1.0 detaches itself; found
// by its pid file, as on a node), Foreground's Process (a child run with
// -D, supervised by the gateway daemon), or PidFile (someone else's tincd,
// only signalled). Every stop follows one policy (StopPid): SIGTERM, so
// that tinc-down runs, then SIGKILL after DefaultKillAfter (5 s).
//
// It touches only processes it can identify as tincd through their pid
// file and /proc, and never renders or parses tinc files itself (that is
// tincgen).
package tinc
