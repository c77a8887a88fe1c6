// Package dnsinterop tests "mgmtnet dns" as the primary of real BIND 9
// and Knot DNS secondaries, all on loopback: the secondaries transfer both
// zones with TSIG, pass their own zone checks, answer as mgmtnet does, and
// follow a registry change through NOTIFY and IXFR; a secondary with a
// wrong key gets nothing.
package dnsinterop
