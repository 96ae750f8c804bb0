# opencen build, test and demo entry points. Everything privileged runs as root
# in network namespaces the tests create and delete themselves.

# Go: the one on PATH, else where the official tarball, Debian's golang-go
# or golang.org/dl put it. sudo's secure_path has none of these, so
# `sudo make demo` finds Go here. A Go older than go.mod's fetches the
# right toolchain from the module proxy (GOTOOLCHAIN=auto, unless the
# environment says otherwise).
SUDO_HOME := $(if $(SUDO_USER),$(shell getent passwd $(SUDO_USER) | cut -d: -f6))
GO_CANDIDATES := $(shell command -v go 2>/dev/null) $(wildcard /usr/local/go/bin/go /usr/lib/go/bin/go \
	$(HOME)/go/bin/go $(HOME)/sdk/go*/bin/go $(if $(SUDO_HOME),$(SUDO_HOME)/go/bin/go $(SUDO_HOME)/sdk/go*/bin/go))
GO ?= $(firstword $(GO_CANDIDATES))
ifeq ($(GO),)
$(error Go not found on PATH nor in /usr/local/go/bin: install Go from https://go.dev/dl/ into /usr/local/go)
endif
export GOTOOLCHAIN ?= auto
# The tests run go themselves (go build, go list): the same Go.
export PATH := $(patsubst %/,%,$(dir $(GO))):$(PATH)
# No VCS stamp from go build: under sudo, git refuses a checkout another
# user owns, and the binaries carry their version from LDFLAGS below.
export GOFLAGS := $(strip $(filter-out -buildvcs=%,$(GOFLAGS)) -buildvcs=false)
BIN       := bin
PKGS      := ./...
# The end-to-end and privileged suites share two cores: run packages one at a
# time so shaping measurements are not disturbed by a parallel build.
TESTFLAGS ?= -count=1 -p 1 -timeout 25m

# What the binaries say of themselves (cend --version, cenctl version,
# opencen_build_info). safe.directory: under sudo, git refuses a checkout
# another user owns.
GIT     := git -c safe.directory=$(CURDIR)
VERSION := $(shell $(GIT) describe --tags --always --dirty 2>/dev/null || echo devel)
COMMIT  := $(shell $(GIT) rev-parse --short=12 HEAD 2>/dev/null || echo unknown)
LDFLAGS := -X github.com/opencen/opencen/internal/buildinfo.Version=$(VERSION) \
	-X github.com/opencen/opencen/internal/buildinfo.Commit=$(COMMIT)

.PHONY: all build deps test unit demo deb bench bench-dataplane bench-routing bench-shaping bench-agent bench-config lint generate fuzz clean

all: build

build:
	$(GO) build -ldflags "$(LDFLAGS)" -o $(BIN)/ ./cmd/...

# The Debian packages the demo and the tests run (scripts/deps.sh lists
# them by command): installed when missing and this runs as root, in one
# line; otherwise one line says what is missing.
deps:
	@sh scripts/deps.sh test

# The packages whose goroutines share the most state (the agent's loop,
# control socket and callbacks; the speaker's GoBGP events, batches and
# BFD) run their tests under the race detector, the rest without.
RACEPKGS  := ./agent/... ./routing/...
# Excluded from the race run, run without the detector: GoBGP 4.8.0 marks a
# peer's paths stale for graceful restart while an event watcher reads the
# same flag (table.Path MarkStale/IsStale), a race inside GoBGP that
# TestGracefulRestart provokes; osrg/gobgp#3658 makes the flag atomic, in
# no release yet.
RACESKIP  := ^TestGracefulRestart$$

# The test command of the README: unit, privileged and end-to-end tests.
test: deps build
	$(GO) vet $(PKGS)
	$(GO) test $(TESTFLAGS) $$($(GO) list $(PKGS) | grep -v -e '/agent$$' -e '/agent/' -e '/routing$$')
	$(GO) test -race $(TESTFLAGS) -skip '$(RACESKIP)' $(RACEPKGS)
	$(GO) test $(TESTFLAGS) -run '$(RACESKIP)' ./routing/

# Tests that need no root.
unit:
	$(GO) test -count=1 -short $(PKGS)

# The lab, measured end to end, then taken down (README, "What make demo does").
demo:
	@sh scripts/deps.sh demo
	@$(MAKE) --no-print-directory build
	./$(BIN)/cenctl demo --json opencen-demo.json --html opencen-demo.html

# The Debian package: both binaries, the systemd unit, man pages and shell
# completions made from the commands themselves, /etc/opencen with an
# example config, and the Prometheus rules and Grafana dashboard. nfpm is
# built at a pinned version into bin/tools (only the Go module proxy is
# needed). One package at a time in bin/: the older ones go.
NFPM_VERSION := v2.48.0
NFPM         := $(BIN)/tools/nfpm-$(NFPM_VERSION)
DEB_ARCH     ?= $(shell $(GO) env GOARCH)
# A Debian version from git describe: v1.2.0-3-gabc -> 1.2.0+3.gabc; a
# checkout without tags -> 0.0.0~gitHASH.
DEB_VERSION  ?= $(shell echo $(VERSION) | sed -E 's/^v//; s/^([0-9a-f]{7,})/0.0.0~git\1/; s/-/+/; s/-/./g')
deb: build $(NFPM)
	rm -rf $(BIN)/pkg $(BIN)/opencen_*.deb && mkdir -p $(BIN)/pkg/man $(BIN)/pkg/completions
	./$(BIN)/cend man $(BIN)/pkg/man && ./$(BIN)/cenctl man $(BIN)/pkg/man && gzip -9n $(BIN)/pkg/man/*.1
	for c in cend cenctl; do \
		./$(BIN)/$$c completion bash > $(BIN)/pkg/completions/$$c.bash && \
		./$(BIN)/$$c completion zsh > $(BIN)/pkg/completions/_$$c && \
		./$(BIN)/$$c completion fish > $(BIN)/pkg/completions/$$c.fish || exit 1; \
	done
	DEB_VERSION=$(DEB_VERSION) DEB_ARCH=$(DEB_ARCH) $(NFPM) package --config packaging/nfpm.yaml --packager deb --target $(BIN)/

$(NFPM):
	mkdir -p $(BIN)/tools
	GOBIN=$(CURDIR)/$(BIN)/tools/nfpm.build $(GO) install github.com/goreleaser/nfpm/v2/cmd/nfpm@$(NFPM_VERSION)
	mv $(BIN)/tools/nfpm.build/nfpm $@ && rmdir $(BIN)/tools/nfpm.build

# Every area's benchmarks below, in turn, then one report: each figure beside
# its baseline from the same run and its target (test/benchreport; the
# output is also kept in bench.log). BENCHFLAGS='--only routing --json r.json'.
BENCHFLAGS ?=
bench:
	$(GO) run ./test/benchreport --go $(GO) --markdown BENCHMARKS.md $(BENCHFLAGS)

bench-dataplane:
	$(GO) test -count=1 -run '^$$' -bench . -benchtime 1x ./dataplane/...

# The speaker's benchmarks, then the whole routing pipeline with real cend
# processes (100k prefixes from BIRD to a remote gateway's FIB; make bench
# reports it with the agent's, beside this area's GoBGP baseline).
bench-routing:
	$(GO) test -count=1 -run '^$$' -bench . -benchtime 1x ./routing/...
	$(GO) test -count=1 -run '^$$' -bench 'Pipeline100k' -benchtime 1x ./test/

bench-shaping:
	$(GO) test -count=1 -run '^$$' -bench . -benchtime 1x ./shaping/...

# With real cend processes: an idle cend with ten peers (memory, CPU), and
# the routing pipeline from BIRD to a remote gateway's FIB (100k prefixes).
bench-agent:
	$(GO) test -count=1 -run '^$$' -bench 'IdleAgent|Pipeline100k' -benchtime 1x ./test/

# cenctl validate of 100,000 networks, beside decoding its YAML alone.
bench-config:
	$(GO) test -count=1 -run '^$$' -bench Validate100k -benchtime 1x ./cmd/cenctl/

# Fuzz the config parser (FUZZTIME=2m for the issue's acceptance run).
FUZZTIME ?= 30s
fuzz:
	$(GO) test -run '^$$' -fuzz FuzzLoad -fuzztime $(FUZZTIME) ./config/

lint:
	$(GO) vet $(PKGS)
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi

generate:
	@sh scripts/deps.sh generate
	$(GO) generate ./...

clean:
	rm -rf $(BIN)
