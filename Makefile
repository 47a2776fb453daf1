# Run `make` (or `make help`) to list the targets.

GO       ?= go
FUZZTIME ?= 30s
FUZZPKGS := ./outbox/ ./outbox/webhook/ ./outbox/importer/
STATICCHECK := honnef.co/go/tools/cmd/staticcheck@v0.8.2

# Go files to check with gofmt, skipping build output, vendored code,
# testdata and hidden directories.
GOFILES_CMD := find . \( -name bin -o -name vendor -o -name testdata -o -name node_modules -o -name '.?*' \) -prune -o -type f -name '*.go' -print

.DEFAULT_GOAL := help
PG_MAJORS ?= 14 15 16 17 18
# test-matrix runs the minute-long network fault tests on this major only.
LONG_FAULTS_ON ?= 18
DURATION  ?= 30m
SEED      ?= 0

.PHONY: help build test test-matrix soak lint fuzz bench bench-go demo clean

help: ## List the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  %-12s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

build: ## Build bin/replicator
	$(GO) build -o bin/replicator ./cmd/replicator

test: ## Run all tests with the race detector (starts throwaway PostgreSQL clusters)
	$(GO) test -race -count=1 -timeout 20m ./...

test-matrix: ## Run `make test` on each PostgreSQL major of PG_MAJORS (14 15 16 17 18), one after another; the long network tests on LONG_FAULTS_ON (18) only
	@failed=""; \
	for v in $(PG_MAJORS); do \
		dir=$$(scripts/install-postgres.sh $$v) || exit 1; \
		echo "==> make test on PostgreSQL $$v ($$dir)"; \
		start=$$(date +%s); \
		long=0; if [ "$$v" = "$(LONG_FAULTS_ON)" ]; then long=1; fi; \
		if PG_BINDIR=$$dir USERSYNC_LONG_FAULTS=$$long $(MAKE) --no-print-directory test; then result=ok; else result=FAILED; failed="$$failed $$v"; fi; \
		echo "==> PostgreSQL $$v: $$result in $$(( $$(date +%s) - start ))s"; \
	done; \
	if [ -n "$$failed" ]; then echo "test-matrix: failed on PostgreSQL$$failed"; exit 1; fi

soak: build ## Run bin/replicator under load and random faults for DURATION (30m), then check the invariants; SEED=n replays
	$(GO) run ./scripts/soak -duration $(DURATION) -seed $(SEED) -bin bin/replicator

lint: ## Check formatting (gofmt), then run go vet and staticcheck
	@files=$$($(GOFILES_CMD) | xargs -r gofmt -l) || exit 1; \
	if [ -n "$$files" ]; then echo "gofmt -w needed on:"; echo "$$files"; exit 1; fi
	$(GO) vet ./...
	$(GO) run $(STATICCHECK) ./...

fuzz: ## Run each fuzz target (./outbox/...) for FUZZTIME (default 30s)
	@for pkg in $(FUZZPKGS); do \
		list=$$($(GO) test -list '^Fuzz' $$pkg) || { echo "$$list"; exit 1; }; \
		for target in $$(echo "$$list" | grep '^Fuzz'); do \
			echo "==> $$pkg $$target ($(FUZZTIME))"; \
			$(GO) test -run '^$$' -fuzz "^$$target\$$" -fuzztime $(FUZZTIME) $$pkg || exit 1; \
		done; \
	done

bench: build ## Measure the replicator against references (3-4 min); writes docs/benchmarks.md (BENCHFLAGS=-h lists the flags)
	$(GO) run ./scripts/bench -replicator bin/replicator $(BENCHFLAGS)

bench-go: ## Run the Go micro-benchmarks (go test -bench)
	$(GO) test -run '^$$' -bench . -benchmem ./...

demo: ## Run the replicator against a throwaway local database, with demo traffic
	$(GO) run ./cmd/replicator dev --demo

clean: ## Remove build output and coverage files
	rm -rf bin/ coverage.out coverage.html *.coverprofile
