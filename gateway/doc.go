// Package gateway is the gateway daemon: it keeps a tinc net directory in
// sync with the testbed registry, drives tincd (signalling it, or running
// and supervising it), and reports what it knows over a status socket and
// Prometheus metrics.
//
// One goroutine (Daemon.Run) owns all state. Registry polls, the full
// resync timer, file-system events, SIGHUP, status requests and tincd's
// exits and log lines reach it over channels. A reconcile takes a snapshot
// from source.Source (fetched with ETags, validated by mesh.Build, checked
// by mesh.Guard), hands it to the components (the DNS zone; the host
// files and tinc.conf through the tinc applier, change-only, then one
// SIGHUP or a restart; the egress kernel state), and Commits it once the
// host files took it, which saves it as the last-known-good snapshot that
// the daemon falls back on when the registry is down at start.
//
// The package leaves rendering and parsing tinc files to tincgen, the
// registry protocol to mesh/registry (through source), the egress table,
// route and forwarding to gateway/egress, the DNS service address on lo
// to gateway/loopback, and the address and MTU of tincd's interface to
// vpn; its own kernel work is the UDP watchdog's ICMPv6 pings. It never
// deletes host files on --cleanup (which removes the egress table and
// route and the DNS service address), and it never forces past the
// mass-deletion guard.
package gateway
