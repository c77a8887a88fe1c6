// Package fetchhosts is the one-shot path from the registry to a tinc hosts
// directory that "mgmtnet fetch-hosts" runs: a snapshot from package
// source, one host file per member rendered by tincgen, written
// change-only by the tinc applier (tinc.Applier.Sync), with --reload one
// SIGHUP through tinc.Reload (which checks tinc.conf first), and a small
// state file that remembers the registry's ETags and a SIGHUP still owed
// between runs.
//
// It never writes or removes this host's own host file once it exists
// (node-boot or the gateway daemon owns it), nor files that are not
// member names.
package fetchhosts
