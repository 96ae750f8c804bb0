# opencen build, test and demo entry points. Everything privileged runs as root
# in network namespaces the tests create and delete themselves.
GO        ?= go
BIN       := bin
PKGS      := ./...
# The end-to-end and privileged suites share two cores: run packages one at a
# time so shaping measurements are not disturbed by a parallel build.
TESTFLAGS ?= -count=1 -p 1 -timeout 25m

.PHONY: all build test unit demo bench bench-dataplane bench-routing bench-shaping bench-agent lint generate fuzz clean

all: build

build:
	$(GO) build -o $(BIN)/ ./cmd/...

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
test: build
	$(GO) vet $(PKGS)
	$(GO) test $(TESTFLAGS) $$($(GO) list $(PKGS) | grep -v -e '/agent$$' -e '/agent/' -e '/routing$$')
	$(GO) test -race $(TESTFLAGS) -skip '$(RACESKIP)' $(RACEPKGS)
	$(GO) test $(TESTFLAGS) -run '$(RACESKIP)' ./routing/

# Tests that need no root.
unit:
	$(GO) test -count=1 -short $(PKGS)

# The lab, measured end to end, then taken down (README, "What make demo does").
demo: build
	./$(BIN)/cenctl demo --json opencen-demo.json --html opencen-demo.html

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

# Fuzz the config parser (FUZZTIME=2m for the issue's acceptance run).
FUZZTIME ?= 30s
fuzz:
	$(GO) test -run '^$$' -fuzz FuzzLoad -fuzztime $(FUZZTIME) ./config/

lint:
	$(GO) vet $(PKGS)
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi

generate:
	$(GO) generate ./...

clean:
	rm -rf $(BIN)
