# mfaflow — one workspace, one module per deployable and shared part.
# `make run` starts the dev stack; `make test` runs every module's tests with the race detector.

MODULES := pkg events services/initiation services/status services/device-registry mobile-bridge devstack deploy tests
SHELL   := /bin/bash
GO      ?= go
BIN     := bin
# Extra flags for go test, e.g. make test TESTFLAGS='-run TestEndToEnd -v'
TESTFLAGS ?=

.PHONY: run build test soak lint bench bench-load tidy clean help

help: ## list targets
	@grep -E '^[a-z-]+:.*##' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

run: ## build and start the dev stack (all services, embedded NATS + JetStream; KV storage, or MongoDB with MFA_STORE=mongo MFA_MONGODB_URI=…)
	@mkdir -p $(BIN)
	$(GO) build -o $(BIN)/mfaflow-dev ./devstack
	./$(BIN)/mfaflow-dev

build: ## build every binary into bin/
	@mkdir -p $(BIN)
	$(GO) build -o $(BIN)/mfaflow-dev ./devstack
	$(GO) build -o $(BIN)/initiation ./services/initiation
	$(GO) build -o $(BIN)/status ./services/status
	$(GO) build -o $(BIN)/device-registry ./services/device-registry
	$(GO) build -o $(BIN)/mobile-bridge ./mobile-bridge
	$(GO) build -o $(BIN)/companion ./mobile-bridge/cmd/companion
	$(GO) build -o $(BIN)/healthcheck ./deploy/healthcheck

test: ## run every module's tests with -race (MongoDB tests on MFA_MONGODB_URI, else on an embedded FerretDB)
	@set -o pipefail; log=$$(mktemp); status=0; \
	if [ -z "$$MFA_MONGODB_URI" ]; then \
		mkdir -p $(BIN) && (cd tools/ferretdb && GOWORK=off $(GO) build -o ../../$(BIN)/ferretdb .) || exit 1; \
		urifile=$$(mktemp -u); ./$(BIN)/ferretdb -uri-file $$urifile >/dev/null & fpid=$$!; \
		trap 'kill $$fpid 2>/dev/null; wait $$fpid 2>/dev/null; rm -f $$urifile' EXIT; \
		for i in $$(seq 600); do [ -s $$urifile ] && break; kill -0 $$fpid 2>/dev/null || break; sleep 0.05; done; \
		[ -s $$urifile ] || { echo "tools/ferretdb did not start"; exit 1; }; \
		export MFA_MONGODB_URI=$$(cat $$urifile); \
		echo "== MongoDB tests on FerretDB (tools/ferretdb, SQLite) at $$MFA_MONGODB_URI"; \
	else echo "== MongoDB tests on MFA_MONGODB_URI from the environment"; fi; \
	for m in $(MODULES); do \
		echo "== $$m"; \
		(cd $$m && $(GO) test -race -count=1 $(TESTFLAGS) ./...) 2>&1 | tee -a $$log || status=1; \
	done; \
	echo "packages: $$(grep -c '^ok ' $$log) passed, $$(grep -c '^FAIL[[:space:]]' $$log) failed"; \
	rm -f $$log; exit $$status

soak: ## fault test across processes: 3-node NATS cluster, 2 replicas of every service, 400 enrollments + sign-ins, two rounds of kill -9 (MFA_SOAK_FLOWS=n to change; make test runs a short one)
	cd tests && MFA_SOAK=long $(GO) test -count=1 -run '^TestSoak$$' -v -timeout 20m .

STATICCHECK := honnef.co/go/tools/cmd/staticcheck@v0.8.2

lint: ## gofmt, go mod tidy -diff, go vet, staticcheck and the layering check over every module
	@out=$$(gofmt -l $(MODULES)); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	@set -e; for m in $(MODULES); do echo "== vet $$m"; (cd $$m && $(GO) mod tidy -diff && $(GO) vet ./... && $(GO) run $(STATICCHECK) ./...); done
	@cd tests && $(GO) test -count=1 -run TestLayering ./...

bench: ## run the benchmark suite
	@set -e; for m in $(MODULES); do \
		(cd $$m && $(GO) test -run='^$$' -bench=. -benchmem ./...) | grep -Ev '^(PASS$$|ok\s|\?\s)' || true; \
	done

bench-load: ## load-test the dev stack in-process against a bare net/http server (about 1.5 min; figures are indicative)
	$(GO) run ./devstack/cmd/bench-load

tidy: ## go mod tidy in every module
	@set -e; for m in $(MODULES); do (cd $$m && $(GO) mod tidy); done

clean: ## remove binaries and the dev stack's data
	rm -rf $(BIN) .mfaflow
