// Package source is the one way a snapshot of the testbed enters mgmtnet:
// fetch from the registry (conditional, with the ETags of the snapshot in
// use), validate (mesh.Build against the addressing plan and the grant
// policy), guard (mesh.Guard against a mass deletion), keep a
// last-known-good copy on disk, and back off while the registry fails.
//
// The gateway daemon, fetch-hosts, node-boot and the DNS server each make
// a Source from their own Config and hand what it yields to their
// appliers (tinc host files, the DNS zone). A Source never writes tinc
// files or signals tincd, and its snapshot becomes the one in use only
// when the caller Commits it, after its appliers took it.
package source
