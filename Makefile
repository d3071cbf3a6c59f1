# natwall. `sudo make demo` shows it working; `sudo make test` runs the suite.
GO        ?= go
MULTIARCH := $(shell $(CC) -print-multiarch 2>/dev/null || echo $$(uname -m)-linux-gnu)
BPF_CFLAGS := -I/usr/include/$(MULTIARCH)
BIN       := bin/natwall
VERSION   := $(shell git describe --always --dirty 2>/dev/null || echo dev)
LDFLAGS   := -X github.com/natwall/natwall/controlplane.Version=$(VERSION)

.PHONY: all build generate check-generated deps demo test test-short fuzz bench bench-quick clean

all: build

build:
	$(GO) build -ldflags '$(LDFLAGS)' -o $(BIN) ./cmd/natwall

# Regenerates the bpf2go bindings and objects (committed, so that a plain
# `go build` needs no clang).
generate:
	BPF_CFLAGS='$(BPF_CFLAGS)' $(GO) generate ./dataplane/ ./test/bench/

# Fails when the committed objects differ from a fresh generation.
check-generated:
	.ci/check-generated

deps:
	@test/install-deps.sh

demo: deps build
	$(BIN) demo

# Root is required: the suite loads XDP programs and builds network
# namespaces. CI=true turns every would-be skip into a failure. Packages run
# one at a time: test/bench saturates both CPUs, and the lab tests' packet
# captures must not lose packets to it.
test: deps
	$(GO) vet ./...
	$(GO) test -count=1 -p 1 -timeout 12m ./...

test-short:
	$(GO) test -count=1 -short ./...

# A short run of every fuzz target; FUZZTIME=10m for a nightly run.
FUZZTIME ?= 20s
fuzz:
	@for pkg in $$($(GO) list ./...); do \
	  for t in $$($(GO) test -list '^Fuzz' $$pkg | grep '^Fuzz'); do \
	    echo "== $$pkg $$t"; $(GO) test -run '^$$' -fuzz "^$$t$$" -fuzztime $(FUZZTIME) $$pkg || exit 1; \
	  done; \
	done

# Benchmarks against Linux forwarding, iptables and nftables; root, and
# a quiet machine. They write docs/benchmarks.md and its JSON.
bench: deps
	$(GO) run ./test/bench/cmd/natwall-bench -json docs/benchmarks.json -markdown docs/benchmarks.md

# A few minutes, for development: prints the table only.
bench-quick: deps
	$(GO) run ./test/bench/cmd/natwall-bench -quick

clean:
	rm -rf bin
