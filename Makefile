# mfaflow — one workspace, one module per deployable and shared part.
# `make run` starts the dev stack; `make test` runs every module's tests with the race detector.

MODULES := pkg events services/initiation services/status services/device-registry services/notifier mobile-bridge devstack deploy tests
SHELL   := /bin/bash
GO      ?= go
BIN     := bin
# Extra flags for go test, e.g. make test TESTFLAGS='-run TestEndToEnd -v'
TESTFLAGS ?=

# with-ferretdb is shell code for a recipe (one shell): unless MFA_MONGODB_URI is set, it builds
# tools/ferretdb (FerretDB on SQLite), starts it and exports MFA_MONGODB_URI for what the recipe
# runs next; $(1) are extra flags (-dir DIR keeps the data across runs, else a temp dir). The
# server reads its standard input from a pipe (fd 3) this shell holds, so it stops when the shell
# ends, however the recipe ends; the EXIT trap closes the pipe and waits for it, killing it after
# 10 s. It ignores SIGINT, so a Ctrl-C stops what uses it first. Commands that may outlive the
# recipe's shell get 3>&- so that they do not hold the pipe open.
define with-ferretdb
if [ -z "$$MFA_MONGODB_URI" ]; then \
	mkdir -p $(BIN) && (cd tools/ferretdb && GOWORK=off $(GO) build -o ../../$(BIN)/ferretdb .) || exit 1; \
	urifile=$$(mktemp -u); \
	exec 3> >(exec ./$(BIN)/ferretdb -stdin -uri-file $$urifile $(1) >/dev/null); fpid=$$!; \
	trap 'exec 3>&-; for i in $$(seq 200); do kill -0 $$fpid 2>/dev/null || break; sleep 0.05; done; kill $$fpid 2>/dev/null; rm -f $$urifile' EXIT; \
	for i in $$(seq 600); do [ -s $$urifile ] && break; kill -0 $$fpid 2>/dev/null || break; sleep 0.05; done; \
	[ -s $$urifile ] || { echo "tools/ferretdb did not start"; exit 1; }; \
	export MFA_MONGODB_URI=$$(cat $$urifile); \
	echo "== MongoDB: FerretDB (tools/ferretdb, SQLite) at $$MFA_MONGODB_URI"; \
else echo "== MongoDB: MFA_MONGODB_URI from the environment"; fi
endef

.PHONY: run build test soak lint bench bench-load tidy clean help

help: ## list targets
	@grep -E '^[a-z-]+:.*##' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

run: ## build and start the dev stack (embedded NATS + JetStream; KV storage, or MongoDB with MFA_STORE=mongo: on MFA_MONGODB_URI, else on tools/ferretdb with its data in .mfaflow/ferretdb)
	@mkdir -p $(BIN)
	$(GO) build -o $(BIN)/mfaflow-dev ./devstack
	@if [ "$$MFA_STORE" = mongo ]; then $(call with-ferretdb,-dir "$${MFA_DATA_DIR:-.mfaflow}/ferretdb"); fi; \
	./$(BIN)/mfaflow-dev 3>&-

build: ## build every binary into bin/
	@mkdir -p $(BIN)
	$(GO) build -o $(BIN)/mfaflow-dev ./devstack
	$(GO) build -o $(BIN)/initiation ./services/initiation
	$(GO) build -o $(BIN)/status ./services/status
	$(GO) build -o $(BIN)/device-registry ./services/device-registry
	$(GO) build -o $(BIN)/notifier ./services/notifier
	$(GO) build -o $(BIN)/mobile-bridge ./mobile-bridge
	$(GO) build -o $(BIN)/companion ./mobile-bridge/cmd/companion
	$(GO) build -o $(BIN)/healthcheck ./deploy/healthcheck

test: ## run every module's tests with -race (MongoDB tests on MFA_MONGODB_URI, else on an embedded FerretDB)
	@set -o pipefail; log=$$(mktemp); status=0; \
	$(call with-ferretdb); \
	for m in $(MODULES); do \
		echo "== $$m"; \
		(cd $$m && $(GO) test -race -count=1 $(TESTFLAGS) ./...) 2>&1 | tee -a $$log || status=1; \
	done; \
	echo "packages: $$(grep -c '^ok ' $$log) passed, $$(grep -c '^FAIL[[:space:]]' $$log) failed"; \
	rm -f $$log; exit $$status

soak: ## fault test across processes on both backends (KV, then MongoDB on MFA_MONGODB_URI or an embedded FerretDB): 3-node NATS cluster, 2 replicas of every service (notifier included, mailing a real SMTP server), email and device enrollments + email, TOTP and push sign-ins, two rounds of kill -9 (MFA_SOAK_FLOWS=n to change; make test runs a short one)
	@$(call with-ferretdb); \
	cd tests && MFA_SOAK=long $(GO) test -count=1 -run '^TestSoak$$' -v -timeout 30m . 3>&-

STATICCHECK := honnef.co/go/tools/cmd/staticcheck@v0.8.2

lint: ## gofmt, go mod tidy -diff, go vet, staticcheck and the layering check over every module
	@out=$$(gofmt -l $(MODULES)); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	@set -e; for m in $(MODULES); do echo "== vet $$m"; (cd $$m && $(GO) mod tidy -diff && $(GO) vet ./... && $(GO) run $(STATICCHECK) ./...); done
	@cd tests && $(GO) test -count=1 -run TestLayering ./...

bench: ## run the benchmark suite
	@set -e; for m in $(MODULES); do \
		(cd $$m && $(GO) test -run='^$$' -bench=. -benchmem ./...) | grep -Ev '^(PASS$$|ok\s|\?\s)' || true; \
	done

bench-load: ## load-test the dev stack in-process against a bare net/http server (about 2.5 min; figures are indicative)
	$(GO) run ./devstack/cmd/bench-load

tidy: ## go mod tidy in every module
	@set -e; for m in $(MODULES); do (cd $$m && $(GO) mod tidy); done

clean: ## remove binaries and the dev stack's data
	rm -rf $(BIN) .mfaflow
