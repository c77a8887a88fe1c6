# mgmtnet: build, test, demo and benchmarks.
#
#   make demo    build mgmtnet and show it working (installs what it needs)
#   make test    the whole test suite (installs what it needs; run as root)
#   make bench   benchmarks, same flags every time
#   make check   gofmt, go vet and the repository's meta tests
#   make build   the binary, bin/mgmtnet

GO       ?= go
BIN      := bin/mgmtnet
GOFLAGS  ?=
BENCHCOUNT ?= 6
export CGO_ENABLED ?= 0

.PHONY: all build test demo bench check deps fuzz clean

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

bench: build
	$(GO) test -run='^$$' -bench=. -benchmem -count=$(BENCHCOUNT) ./... | tee bench.txt

demo: deps build
	@scripts/demo.sh $(BIN)

clean:
	rm -rf bin bench.txt
