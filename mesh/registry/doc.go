// Package registry speaks the CONFINE registry REST API (controller v1.0,
// and the shapes of releases v0.10 to v0.11.9) for the management network.
//
// The Client reads a registry: it discovers the member collections from the
// base resource's Link header, follows pagination, revalidates with ETags,
// retries transient failures (go-retryablehttp) and decodes servers, hosts
// and nodes leniently into mesh.Candidate values. An element that does not
// decode becomes a mesh.Problem; the others go on. It never lets a registry
// reached over https send it to http, and it bounds each fetch in bytes,
// pages and time.
//
// The Server serves a testbed File (a JSON description of islands,
// servers, nodes and hosts, or a Synthetic one of any size) read-only over
// the same API as the controller answers it (its middleware's ETags, 304s
// and gzip, its Link headers and pagination), so that the Client, the node
// firmware's scripts and tests meet what they meet in the field.
//
// The package does not validate members against the addressing plan, nor
// write tinc files, nor run DNS: mesh.Build validates candidates, and other
// packages act on the resulting mesh.Testbed. (The Server runs mesh.Build
// on its File only to show each member's gateways, mesh.Assignment.) The server implements no
// writes, authentication, or resources beyond those the management network
// needs.
package registry
