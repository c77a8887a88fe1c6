# mgmtnet: build, test, demo and benchmarks.
#
#   make demo    build mgmtnet and show it working (installs what it needs)
#   make test    the whole test suite (installs what it needs; run as root)
#   make bench   benchmarks, same flags every time
#   make stress  the boot stress harness (not part of make test)
#   make scale   real tincd at N = 100, 200, 400 nodes, legacy vs tunnel-server (not part of make test)
#   make check   gofmt, go vet and the repository's meta tests
#   make build   the binary, bin/mgmtnet

GO       ?= go
BIN      := bin/mgmtnet
GOFLAGS  ?=
BENCHCOUNT ?= 6
export CGO_ENABLED ?= 0

.PHONY: all build test demo demo-down cross bench check deps fuzz clean stress scale

all: build

build:
	$(GO) build -trimpath -ldflags='-s -w' -o $(BIN) ./cmd/mgmtnet

# deps installs the system packages the tests and the demo use, when they
# are missing (Debian, as root), and downloads the Go modules.
deps:
	@scripts/install-deps.sh
	$(GO) mod download

check:
	@out=$$(gofmt -l .); if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	$(GO) test -count=1 ./test/meta/

# The end-to-end tests need root, tincd and iproute2. "make test" makes a
# missing prerequisite a failure, not a skip; MGMTNET_REQUIRE_E2E= make test
# lets them skip (with a message saying what is missing).
export MGMTNET_REQUIRE_E2E ?= 1
#
# The end-to-end tests run alongside the other packages' tests again: the
# node that was seen connected yet not reaching the server was tinc 1.0's
# packet-key race (README, Reliability), which the tunnel-server topology
# and the gateway's UDP watchdog bound.
test: deps check
	$(GO) test -count=1 -timeout 30m ./...

# fuzz runs every fuzz target for FUZZTIME each (the seed corpora already
# run in "make test").
FUZZTIME ?= 30s
fuzz:
	@for pkg in $$($(GO) list ./...); do \
	  for f in $$($(GO) test -list '^Fuzz' $$pkg | grep '^Fuzz'); do \
	    echo "== $$pkg $$f"; $(GO) test -run='^$$' -fuzz="^$$f\$$" -fuzztime=$(FUZZTIME) $$pkg || exit 1; \
	  done; \
	done

# bench: the Go benchmarks (-count=$(BENCHCOUNT), compare with benchstat),
# then fetch-hosts against a loopback registry at $(BENCH_NODES) nodes, the
# median of $(BENCH_RUNS) runs per figure next to the curl + cp -r baseline,
# then the gateway daemon with 66 530 members (RSS, CPU per idle poll,
# registry change to SIGHUP).
BENCH_NODES ?= 1000,10000,65520
BENCH_RUNS  ?= 5
bench: deps build
	$(GO) test -run='^$$' -bench=. -benchmem -count=$(BENCHCOUNT) ./... | tee bench.txt
	$(GO) run ./test/bench/fetchhosts -mgmtnet $(BIN) -nodes $(BENCH_NODES) -runs $(BENCH_RUNS) 2>/dev/null | tee -a bench.txt
	$(GO) run ./test/bench/gateway -mgmtnet $(BIN) -nodes 65520 2>/dev/null | tee -a bench.txt
	$(GO) run ./test/bench/feed -mgmtnet $(BIN) -nodes 65520 -runs 5 2>/dev/null | tee -a bench.txt
	$(GO) run ./test/bench/dns -mgmtnet $(BIN) -sizes 1000,66000 -runs 3 -duration 10s -mixes mix -rates 0,40000,10000,600 2>/dev/null | tee -a bench.txt

# stress: $(STRESS_BOOTS) boots of the two-gateway egress testbed under
# stress-ng --cpu 2, counting the boots in which a node did not reach both
# gateways (tinc 1.0's packet-key race; README, Reliability).
# STRESS_TOPOLOGY=legacy boots the 2015 topology for comparison.
STRESS_BOOTS ?= 60
STRESS_TOPOLOGY ?= tunnel-server
stress: deps
	@scripts/install-deps.sh stress
	STRESS_BOOTS=$(STRESS_BOOTS) STRESS_TOPOLOGY=$(STRESS_TOPOLOGY) GO=$(GO) scripts/stress.sh

# scale: real tincd 1.0 in network namespaces (root), for each of
# $(SCALE_TOPOLOGY) and each N in $(SCALE_N): $(SCALE_GATEWAYS) gateways
# and N nodes (most of them in one namespace, DeviceType = dummy). It
# times the connect phase and a gateway restart, and measures node CPU per
# remote join, node and gateway memory and connections, and reachability
# across gateways; a markdown table with a power-law fit goes to
# scale.txt, progress to stderr. The default takes about 15 to 25 minutes.
SCALE_N        ?= 100,200,400
SCALE_TOPOLOGY ?= legacy,tunnel-server
SCALE_GATEWAYS ?= 3
SCALE_CAPACITY ?= 0.75
SCALE_FLAGS    ?=
scale: deps
	$(GO) run ./test/bench/scale -n $(SCALE_N) -topology $(SCALE_TOPOLOGY) -gateways $(SCALE_GATEWAYS) -capacity $(SCALE_CAPACITY) $(SCALE_FLAGS) | tee scale.txt

# demo: a whole virtual testbed in network namespaces (root). KEEP=1 leaves
# it up; "make demo-down" removes it.
KEEP ?=
demo: deps build
	$(GO) run ./test/demo -mgmtnet $(BIN) $(if $(KEEP),-keep)

demo-down:
	$(GO) run ./test/demo -down

# cross: static binaries for the node platforms, with their sizes.
cross:
	@scripts/cross.sh

clean:
	rm -rf bin bench.txt stress.txt scale.txt
