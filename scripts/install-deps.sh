#!/usr/bin/env bash
# Installs the Debian packages mgmtnet's tests and demo use, when missing.
# Safe to run repeatedly; does nothing when everything is there.
# "install-deps.sh stress" also installs what "make stress" needs.
set -euo pipefail

# command -> Debian package
declare -A need=(
  [tincd]=tinc
  [nft]=nftables
  [ip]=iproute2
  [ping]=iputils-ping
  [dig]=dnsutils
  [curl]=curl
  [/usr/bin/time]=time
  [dnsperf]=dnsperf
  [dnsmasq]=dnsmasq-base
  [tcpdump]=tcpdump
  [busybox]=busybox
  # DNS interop (real secondaries) and the DNS benchmark's other servers
  [named]=bind9
  [named-checkzone]=bind9-utils
  [knotd]=knot
  [kzonecheck]=knot-dnssecutils
  [nsd]=nsd
)
if [ "${1:-}" = stress ]; then
  need[stress-ng]=stress-ng
fi
missing=()
for cmd in "${!need[@]}"; do
  PATH=$PATH:/usr/sbin:/sbin command -v "$cmd" >/dev/null 2>&1 || missing+=("${need[$cmd]}")
done
# The registry database tests run a PostgreSQL server of their own (as
# nobody, in a temporary directory): the server binaries, and no cluster of
# the system's.
if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
  missing+=(postgresql)
fi
if ! command -v go >/dev/null 2>&1 && [ ! -x /usr/local/go/bin/go ]; then
  missing+=(golang-go)
fi
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi
if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null 2>&1; then
  echo "install-deps: missing packages: ${missing[*]}; run as root on Debian, or install them yourself" >&2
  exit 1
fi
echo "install-deps: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
if [[ " ${missing[*]} " == *" postgresql "* ]] && [ ! -e /etc/postgresql-common/createcluster.d/50-mgmtnet.conf ]; then
  # Installing postgresql would create and start a system cluster; the
  # tests need only the binaries.
  mkdir -p /etc/postgresql-common/createcluster.d
  echo "create_main_cluster = false" > /etc/postgresql-common/createcluster.d/50-mgmtnet.conf
fi
# Servers (bind9, knot, nsd) are installed for the tests, which start their
# own on loopback: their system services must not start, or take port 53.
policy=/usr/sbin/policy-rc.d
made_policy=
if [ ! -e "$policy" ]; then
  printf '#!/bin/sh\nexit 101\n' > "$policy"
  chmod 755 "$policy"
  made_policy=1
fi
trap '[ -n "$made_policy" ] && rm -f "$policy"' EXIT
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
  for unit in named.service knot.service nsd.service; do
    if [[ " ${missing[*]} " == *" $(case $unit in named*) echo bind9;; knot*) echo knot;; nsd*) echo nsd;; esac) "* ]]; then
      systemctl disable --now "$unit" >/dev/null 2>&1 || true
    fi
  done
fi
