// Package gateway is the gateway daemon: it keeps a tinc net directory in
// sync with the testbed registry, drives tincd (signalling it, or running
// and supervising it), and reports what it knows over a status socket and
// Prometheus metrics.
//
// One goroutine (Daemon.Run) owns all state. Registry polls, the full
// resync timer, file-system events, SIGHUP, status requests and tincd's
// exits and log lines reach it over channels. A reconcile fetches with
// ETags, validates (mesh.Build), guards against mass deletion, writes only
// changed host files (tincgen.Sync), then reloads tincd once, and saves the
// last-known-good snapshot that the daemon falls back on when the registry
// is down at start.
//
// The package does not render or parse tinc files (tincgen), talk the
// registry protocol (mesh/registry) or touch the kernel itself (vpn). It
// never deletes host files on --cleanup, and it never forces past the
// mass-deletion guard.
package gateway
