#!/usr/bin/env bash
# The demo: the addressing plan of a small sample testbed, explained.
# (A later stage replaces this with a whole virtual testbed in namespaces.)
set -euo pipefail
bin=${1:-bin/mgmtnet}
if [ -t 1 ]; then b=$'\033[1m' n=$'\033[0m'; else b='' n=''; fi
say() { printf '\n%s== %s%s\n' "$b" "$*" "$n"; }
run() { printf '$ mgmtnet %s\n' "$*"; "$bin" "$@"; }

say "A CONFINE testbed's management network is one IPv6 /48 (Community-Lab: fdf5:5351:1dfd::/48)."
say "Node 31 (the firmware calls it 001f): its address, the /64 it announces over tinc, its names"
run plan node 001f
say "The main server is id 2 and tinc name 'server', so it stays P::2"
run plan server 2
say "A sliver of slice 5 on node 31: management, debug and private addresses"
run plan sliver --node 31 --slice 5
say "Every address maps back to exactly one member (the 2015 controller read P::2 as node 0)"
run plan reverse fdf5:5351:1dfd::2
run plan reverse fdf5:5351:1dfd:1f:1001::5
run plan reverse 100.64.0.31
say "An address outside the plan is reported as such (exit status 1)"
run plan reverse 2001:db8::1 || echo "(exit status $?)"
say "A small testbed: two servers, two hosts and five nodes, as a table and as JSON"
run plan testbed --servers 2-3 --hosts 1-2 --nodes 1-5
run plan testbed --nodes 1-2 --json
