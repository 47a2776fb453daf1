# Run `make` (or `make help`) to list the targets.

GO       ?= go
FUZZTIME ?= 30s
FUZZPKGS := ./outbox/ ./outbox/webhook/ ./outbox/importer/
STATICCHECK := honnef.co/go/tools/cmd/staticcheck@v0.8.2

# Go files to check with gofmt, skipping build output, vendored code,
# testdata and hidden directories.
GOFILES_CMD := find . \( -name bin -o -name vendor -o -name testdata -o -name node_modules -o -name '.?*' \) -prune -o -type f -name '*.go' -print

.DEFAULT_GOAL := help
.PHONY: help build test lint fuzz bench bench-go demo clean

help: ## List the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  %-9s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

build: ## Build bin/replicator
	$(GO) build -o bin/replicator ./cmd/replicator

test: ## Run all tests with the race detector (starts throwaway PostgreSQL clusters)
	$(GO) test -race -count=1 -timeout 20m ./...

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
