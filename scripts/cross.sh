#!/usr/bin/env bash
# cross.sh builds static mgmtnet binaries for the platforms CONFINE nodes
# and servers run on, into bin/cross/mgmtnet-<os>-<arch>, and prints their
# sizes. Usage: scripts/cross.sh (from anywhere in the repository).
set -euo pipefail

cd "$(dirname "$0")/.."
out=bin/cross
mkdir -p "$out"

# os/arch plus the extra environment each target needs.
targets=(
	"linux amd64"
	"linux arm64"
	"linux arm GOARM=7"
	"linux mipsle GOMIPS=softfloat"
)

built=()
for t in "${targets[@]}"; do
	read -r goos goarch extra <<<"$t"
	bin="$out/mgmtnet-$goos-$goarch"
	echo "building $bin" >&2
	env CGO_ENABLED=0 GOOS="$goos" GOARCH="$goarch" ${extra:+"$extra"} \
		go build -trimpath -ldflags '-s -w' -o "$bin" ./cmd/mgmtnet
	built+=("$bin")
done

printf '%-32s %12s %8s\n' binary bytes MB
for bin in "${built[@]}"; do
	size=$(stat -c %s "$bin")
	printf '%-32s %12d %8.2f\n' "$bin" "$size" "$(awk -v s="$size" 'BEGIN { print s / 1048576 }')"
done
