# Bosun: a drop-in Kubernetes node agent. `make help` lists the targets.
SHELL := /bin/bash
.DEFAULT_GOAL := help

# Which node agent the local cluster runs: bosun (default) or upstream (the
# reference kubelet, built from the pinned k8s.io/kubernetes in tools/).
KUBELET ?= bosun
# The agents `make test` runs the e2e suite against, one after the other.
# Tests of one agent's internals skip on the other.
E2E_AGENTS ?= upstream bosun
# Which e2e tests run against each agent (go test -run; empty: all). make test
# runs them all against Bosun and, against the upstream kubelet, a slice that
# covers the drop-in surface (join, node API, exec/attach/logs/port-forward,
# pods, volumes); make e2e-compare runs every test against both agents.
E2E_RUN_upstream ?= ^Test(Join|Smoke|Kubectl|NodeAPI|ExecAndAttach|Logs$$|PortForward|PodEnvironment|PodRejectedByNodeAdmission|PodReadinessSetBack|PrometheusScrapesNodes)
E2E_RUN_bosun ?=

BIN := _output/bin
GO ?= go
GOLANGCI_LINT_VERSION ?= v2.6.2

.PHONY: help
help: ## List the targets
	@grep -hE '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-12s %s\n", $$1, $$2}'

.PHONY: build
build: ## Build the bosun binary into _output/bin
	$(GO) build -trimpath -o $(BIN)/bosun ./cmd/bosun

.PHONY: deps
deps: ## Install the node software from Debian when missing
	@hack/install-deps.sh

.PHONY: tools
tools: ## Build the pinned upstream control plane, kubelet, kube-proxy, kubectl, etcd, agnhost, CoreDNS, busybox, containerd 2 and runc
	@hack/build-tools.sh etcd kube-apiserver kube-controller-manager kube-scheduler kubectl kubelet kube-proxy agnhost nnp coredns metrics-server prometheus sample-apiserver etcd-static busybox hostpath-proxy sample-device-plugin $(if $(filter containerd2,$(RUNTIME)),runtime)

.PHONY: harness
harness:
	@$(GO) build -o $(BIN)/cluster ./hack/cluster

# How many nodes make up starts: node 1 is the machine, the others network
# namespaces on it, each with its own containerd and node agent.
NODES ?= 1

# The container runtime: containerd2 (containerd 2.2 and runc 1.5, built from
# tools/runtime) or containerd1 (Debian's 1.6).
RUNTIME ?= containerd2

# The nodes' KubeletConfiguration: seed (the guide's) or hardened
# (deploy/kubelet-config.yaml).
PROFILE ?= seed

# The nodes' maxPods instead of the profile's (make bench sets it for its
# 250-pod batch); empty keeps the profile's.
MAX_PODS ?=

# The nodes' containerLogMaxSize (make bench sets it, so that its 256 MiB log
# is not rotated while written); empty keeps the default, 10Mi.
LOG_MAX_SIZE ?=

.PHONY: up
up: deps build tools harness ## Start the cluster (KUBELET=bosun|upstream|mixed, NODES=n, RUNTIME=containerd2|containerd1, PROFILE=seed|hardened, MAX_PODS=, LOG_MAX_SIZE=)
	@KUBELET=$(KUBELET) NODES=$(NODES) RUNTIME=$(RUNTIME) PROFILE=$(PROFILE) MAX_PODS=$(MAX_PODS) LOG_MAX_SIZE=$(LOG_MAX_SIZE) $(BIN)/cluster up

.PHONY: down
down: harness ## Stop the cluster and clean the machine
	@$(BIN)/cluster down

.PHONY: status
status: harness ## Tell whether the cluster is up and its node Ready
	@KUBELET=$(KUBELET) $(BIN)/cluster status

.PHONY: test
test: test-unit test-e2e ## Every test: unit, then e2e against the local cluster

.PHONY: test-unit
test-unit: ## Unit tests (and the packages: built, installed with dpkg into a throw-away root, unit verified)
	$(GO) test -count=1 ./...
	cd hack/package && $(GO) test -count=1 ./...

# The packages' version.
PACKAGE_VERSION ?= 0.1.0

.PHONY: package
package: ## Build the .deb and .rpm (bosun, bosun.service, example configs) into _output/packages
	$(GO) build -trimpath -ldflags '-s -w' -o _output/package/bosun ./cmd/bosun
	cd hack/package && $(GO) run . -root ../.. -bin ../../_output/package/bosun -version $(PACKAGE_VERSION) -out ../../_output/packages

.PHONY: test-e2e
test-e2e: ## e2e tests against the local cluster per agent, the fast conformance subset, a short crash loop, make bench's slice, a mixed two-node cluster, make up after every process was killed (SKIP_CONFORMANCE=, SKIP_CHAOS=, SKIP_BENCH=, SKIP_ROTATION=, SKIP_CLUSTER=, SKIP_CRASH=)
	@rm -rf _output/steps; rc=0; for agent in $(E2E_AGENTS); do \
	  echo ">>> e2e against KUBELET=$$agent"; \
	  if ! hack/step.sh up-$$agent $(MAKE) --no-print-directory up KUBELET=$$agent; then rc=1; continue; fi; \
	  run=; [ "$$agent" = upstream ] && run='$(E2E_RUN_upstream)'; [ "$$agent" = bosun ] && run='$(E2E_RUN_bosun)'; \
	  hack/step.sh e2e-$$agent $(GO) test -count=1 -tags e2e -timeout 30m -v $${run:+-run "$$run"} ./test/e2e/ || rc=1; \
	  if [ -z "$(SKIP_BENCH)" ]; then \
	    echo ">>> e2e: make bench's slice, 10 pods at once with their start's phases and the node API (KUBELET=$$agent)"; \
	    hack/step.sh bench-$$agent $(GO) run ./hack/bench -short || rc=1; \
	  fi; \
	  if [ "$$agent" = bosun ] && [ -z "$(SKIP_CONFORMANCE)" ]; then \
	    echo ">>> e2e: the fast NodeConformance subset (hack/conformance/fast.txt) against KUBELET=bosun"; \
	    hack/step.sh build-e2e-tools hack/build-tools.sh e2e.test ginkgo && \
	    hack/step.sh conformance-fast env KUBELET=bosun SUITE=fast OUT=_output/conformance/fast/bosun PROCS=4 STRICT=1 hack/conformance.sh || rc=1; \
	  fi; \
	  if [ "$$agent" = bosun ] && [ -z "$(SKIP_CHAOS)" ]; then \
	    echo ">>> e2e: crash loop, $(TEST_KILLS) kills (make chaos runs $(KILLS))"; \
	    $(GO) build -o $(BIN)/chaos ./hack/chaos && hack/step.sh chaos $(BIN)/chaos -kills $(TEST_KILLS) -out _output/reliability/short/chaos.json || rc=1; \
	  fi; \
	done; \
	if [ -z "$(SKIP_ROTATION)" ]; then \
	  echo ">>> e2e: client certificate rotation with 3-minute certificates (KUBELET=bosun)"; \
	  $(MAKE) --no-print-directory down >/dev/null; \
	  if CLUSTER_SIGNING_DURATION=3m hack/step.sh up-rotation $(MAKE) --no-print-directory up KUBELET=bosun; then \
	    hack/step.sh e2e-rotation $(GO) test -count=1 -tags e2e -timeout 10m -v -run 'TestClientCertRotation' ./test/e2e/ || rc=1; \
	  else rc=1; fi; \
	  $(MAKE) --no-print-directory down >/dev/null; \
	fi; \
	if [ -z "$(SKIP_CLUSTER)" ]; then \
	  echo ">>> e2e: a two-node cluster, Bosun and the upstream kubelet side by side (KUBELET=mixed NODES=2)"; \
	  if hack/step.sh up-mixed $(MAKE) --no-print-directory up KUBELET=mixed NODES=2; then \
	    hack/step.sh e2e-mixed $(GO) test -count=1 -tags e2e -timeout 15m -v -run 'TestCluster|TestPrometheusScrapesNodes' ./test/e2e/ || rc=1; \
	  else rc=1; fi; \
	fi; \
	if [ -z "$(SKIP_CRASH)" ]; then \
	  echo ">>> e2e: every cluster process killed at once (as a session's end leaves the machine), then make up, make down, nothing left"; \
	  $(BIN)/cluster crash; \
	  if hack/step.sh up-after-crash $(MAKE) --no-print-directory up KUBELET=bosun NODES=1; then hack/step.sh status-after-crash $(BIN)/cluster status || rc=1; else rc=1; fi; \
	  $(MAKE) --no-print-directory down >/dev/null; \
	  hack/step.sh leftovers $(BIN)/cluster leftovers || rc=1; \
	else $(MAKE) --no-print-directory down >/dev/null; fi; \
	if [ -s _output/steps/failed ]; then echo; echo ">>> what failed in make test-e2e:"; cat _output/steps/failed; fi; exit $$rc

.PHONY: e2e-compare
e2e-compare: ## The whole e2e suite against the upstream kubelet, then Bosun: the side-by-side check of every test
	@$(MAKE) --no-print-directory test-e2e E2E_RUN_upstream= E2E_RUN_bosun= SKIP_CONFORMANCE=1 SKIP_CHAOS=1 SKIP_BENCH=1 SKIP_ROTATION=1 SKIP_CLUSTER=1 SKIP_CRASH=1

# Which conformance suite make conformance runs: node (NodeConformance),
# certified (every [Conformance] spec, on a 2-node cluster), resize (the
# in-place resize specs), userns (the user namespace specs), storage (upstream's
# storage test suites against the test CSI driver, on one node), dra (upstream's
# DRA specs, GA ones) or fast.
SUITE ?= node
CONFORMANCE_NODES = $(if $(filter command line environment,$(origin NODES)),$(NODES),$(if $(filter certified,$(SUITE)),2,1))

.PHONY: conformance
conformance: ## Upstream conformance specs against the node agents (SUITE=node|certified|resize|userns|storage|dra|fast, KUBELET=, PROCS=, FOCUS=, SKIP=, PASSES=)
	@$(MAKE) --no-print-directory up KUBELET=$(KUBELET) NODES=$(CONFORMANCE_NODES)
	@hack/build-tools.sh e2e.test ginkgo
	@KUBELET=$(KUBELET) SUITE=$(SUITE) hack/conformance.sh

# How many times make chaos kills the node agent, and the short slice in make test.
KILLS ?= 50
TEST_KILLS ?= 5
# make reliability's kills of the upstream kubelet: each takes longer (it
# leaves deleted pods' sandboxes until its minutely garbage collection).
UPSTREAM_KILLS ?= 20

.PHONY: chaos
chaos: up ## kill -9 the node agent KILLS times at random moments, checking certs, duplicates and leaks after each
	@$(GO) build -o $(BIN)/chaos ./hack/chaos
	@$(BIN)/chaos -kills $(KILLS) -out _output/reliability/$(KUBELET)/chaos.json

.PHONY: reliability
reliability: ## Drop-in scenarios and the crash loop against both agents -> docs/reliability.md (KILLS=, UPSTREAM_KILLS=)
	@rm -rf _output/reliability/upstream _output/reliability/bosun
	@rc=0; for agent in upstream bosun; do \
	  $(MAKE) --no-print-directory up KUBELET=$$agent || exit 1; \
	  tests='TestDropIn(KillRestartNoFlips|APIServerOutage)'; [ "$$agent" = bosun ] && tests='TestDropIn'; \
	  RELIABILITY_MEASURE=1 $(GO) test -count=1 -tags e2e -timeout 30m -v -run "$$tests" ./test/e2e/ || rc=1; \
	  kills=$(KILLS); [ "$$agent" = upstream ] && kills=$(UPSTREAM_KILLS); \
	  $(MAKE) --no-print-directory chaos KUBELET=$$agent KILLS=$$kills || rc=1; \
	done; \
	$(MAKE) --no-print-directory reliability-doc; exit $$rc

# How long make fuzz runs each fuzz target; their seed corpora run in make test.
FUZZTIME ?= 30s
FUZZ_TARGETS := internal/config:FuzzDecode internal/config:FuzzFlags internal/podsource:FuzzDecodeStatic \
  internal/volumes:FuzzWriteAtomicKeys internal/volumes:FuzzSubPath internal/server:FuzzVarLogsPath \
  internal/server:FuzzLogOptionsFromQuery

.PHONY: fuzz
fuzz: ## Run every fuzz target for FUZZTIME (default 30s): config decoder and flags, static pods, atomic writer keys, subPath, /logs/ paths, log queries
	@set -e; for t in $(FUZZ_TARGETS); do \
	  pkg=$${t%%:*}; name=$${t#*:}; echo ">>> $$name ($$pkg, $(FUZZTIME))"; \
	  $(GO) test -run='^$$' -fuzz="^$$name\$$" -fuzztime=$(FUZZTIME) ./$$pkg; \
	done

.PHONY: reliability-doc
reliability-doc: ## Regenerate docs/reliability.md from the latest records of both agents
	$(GO) run ./hack/reliability docs/reliability.md _output/reliability

.PHONY: conformance-doc
conformance-doc: ## Regenerate docs/conformance.md from the latest runs of each suite and agent
	$(GO) run ./hack/conformance doc docs/conformance.md $(foreach s,certified node resize userns storage dra fast,$(foreach a,upstream bosun,_output/conformance/$(s)/$(a)))

.PHONY: metrics-doc
metrics-doc: ## docs/metrics-families.md: each node metrics family's type and labels, Bosun and upstream side by side (a mixed two-node cluster)
	@$(MAKE) --no-print-directory up KUBELET=mixed NODES=2
	@rm -f _output/metrics/families.md
	@$(GO) test -count=1 -tags e2e -timeout 10m -run 'TestClusterMetricFamiliesMatchUpstream' ./test/e2e/
	@test -s _output/metrics/families.md || { echo "the test wrote no _output/metrics/families.md" >&2; exit 1; }
	@cp _output/metrics/families.md docs/metrics-families.md && echo "docs/metrics-families.md updated"

.PHONY: bench
bench: deps build tools harness ## Bosun vs the upstream kubelet, side by side (ROUNDS=, WINDOW=, SIZES=, BIG=)
	$(GO) run ./hack/bench
	@cp _output/bench/report.md docs/performance.md && cp _output/bench/startup.svg docs/performance-startup.svg && echo "docs/performance.md and docs/performance-startup.svg updated"

.PHONY: verify
verify: ## gofmt, go vet, golangci-lint
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { gofmt -l $$(git ls-files '*.go'); echo "gofmt needed"; exit 1; }
	$(GO) vet ./...
	$(GO) vet -tags e2e ./test/e2e/
	@test -x $(BIN)/golangci-lint || GOBIN=$(CURDIR)/$(BIN) $(GO) install github.com/golangci/golangci-lint/v2/cmd/golangci-lint@$(GOLANGCI_LINT_VERSION)
	$(BIN)/golangci-lint run ./...
