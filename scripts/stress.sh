#!/usr/bin/env bash
# make stress: boots the two-gateway egress testbed STRESS_BOOTS times under
# "stress-ng --cpu 2" and counts the boots in which a node did not reach
# both gateways (TestStressBoot in test/e2e). STRESS_TOPOLOGY=legacy boots
# the 2015 topology instead, for the before figure. Output: stress.txt.
set -euo pipefail
boots=${STRESS_BOOTS:-60}
topology=${STRESS_TOPOLOGY:-tunnel-server}
go=${GO:-go}
mkdir -p bin
# Compile first, so that the load does not slow the build.
"$go" test -c -o bin/e2e.test ./test/e2e/
stress-ng --cpu 2 --quiet &
load=$!
trap 'kill "$load" 2>/dev/null || true; wait "$load" 2>/dev/null || true' EXIT
echo "stress: $boots boots, topology $topology, under stress-ng --cpu 2 (pid $load), $(nproc) cores, $(date -u +%FT%TZ)" | tee stress.txt
set +e
MGMTNET_REQUIRE_E2E=1 MGMTNET_STRESS_BOOTS=$boots MGMTNET_STRESS_TOPOLOGY=$topology \
  bin/e2e.test -test.run '^TestStressBoot$' -test.count=1 -test.timeout 6h 2>&1 | tee -a stress.txt | grep --line-buffered '^stress:'
rc=${PIPESTATUS[0]}
exit "$rc"
