// Package authdns is the authoritative DNS server of the management network
// (design.md, "DNS for the management network"), built on
// github.com/miekg/dns.
//
// It answers for two zones made from one *mesh.Testbed:
//
//   - the forward zone (Config.Zone, e.g. "mgmt.community-lab.net."): AAAA
//     records for node-<id>, server-<id>, host-<id> and gateway-<id> of the
//     members present, and for each member's registry name when it is a
//     usable, unique label; sliver management names slice-<s>.node-<n> and
//     slice-<s>-iface-<i>.node-<n>, computed from the addressing plan for any
//     slice of a present node; SOA and NS at the apex;
//   - the reverse zone of the management /48 under ip6.arpa: PTR records for
//     every member address and every sliver management address of a present
//     node, computed with addressing.Plan.Reverse, never from a table of
//     addresses.
//
// Negative answers follow RFC 2308: NXDOMAIN for names that do not exist,
// NODATA for names that exist without the asked type and for empty
// non-terminals, both with the zone's SOA in the authority section. Names
// outside both zones are REFUSED, unless upstream resolvers are configured,
// in which case recursive queries are forwarded. Clients outside the allowed
// prefixes are REFUSED: the server is never an open resolver.
//
// A Zone is an immutable value with precomputed maps; Server.SetTestbed
// builds one and swaps it in atomically, so queries never wait for a
// rebuild, and keeps the difference from the last zone in the new one's
// journal. Zone transfers (over TCP, to allowed clients) carry the records
// of members: AXFR, and IXFR (RFC 1995) with the changes from the
// journal; sliver names are computed and are not transferred.
// Secondaries are sent NOTIFY when the snapshot changes; the SOA serial
// then grows (the time of the change, at least the last serial plus one,
// kept across restarts in ServerOptions.SerialFile). With TSIG keys
// (Config.TSIG, RFC 8945) transfers need a signature, NOTIFY is signed and
// signed queries are answered signed. TCP connections are capped and
// closed when idle; UDP answers to clients outside the management network
// may be rate-limited.
//
// Answering is built for throughput: answers are name-compressed and
// built in pooled buffers, and UDP on an address other than a wildcard is
// read and written in batches (recvmmsg, sendmmsg), one socket per CPU
// sharing the port (SO_REUSEPORT). On Linux those calls block on a socket
// taken out of the Go runtime's poller, which saves the runtime's thread
// switches at every batch (serveUDPRaw). TCP, and UDP on a wildcard
// address, are served by dns.Server.
//
// The package does not talk to the registry (Follow polls a source.Source,
// which does), write files other than the serial file its caller names,
// or pick the addresses it listens on: its caller (mgmtnet dns, the
// gateway daemon) does.
package authdns
