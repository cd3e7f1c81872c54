# flagops: every target installs what it needs on a fresh machine (Python 3.11+, Go, bash).
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml dev/pyproject.toml constraints.txt | sha256sum | cut -c1-12)

.PHONY: help
help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-14s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml dev/pyproject.toml constraints.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[dev]' -e dev/
	@rm -f $(VENV)/.installed-* && touch $@

.PHONY: venv
venv: $(STAMP) ## create .venv with flagops and its dev tools

.PHONY: controlplane
controlplane: ## build etcd, kube-apiserver, controller-manager, scheduler, kubectl, kwok (cached)
	bash hack/controlplane/build.sh

.PHONY: prometheus
prometheus: ## fetch a real Prometheus server (Debian's package, unpacked into the cache)
	bash hack/prometheus/fetch.sh

.PHONY: node
node: ## build containerd and the sandbox binary, install runc, CNI plugins, buildah (real node; root)
	bash hack/node/build.sh

.PHONY: image
image: ## build the operator, Butler and sandbox images with buildah (cached by their inputs)
	bash hack/image/build.sh

.PHONY: argocd
argocd: ## build Argo CD (application-controller, repo-server) and fetch redis, for the GitOps tests (cached)
	bash hack/argocd/build.sh

.PHONY: cluster
cluster: venv ## start the local control plane and its real node (reuses a running one); prints the KUBECONFIG export
	@$(BIN)/python -m flagops_dev.devcluster up

.PHONY: cluster-down
cluster-down: venv ## stop the local control plane, leaving no process behind
	@$(BIN)/python -m flagops_dev.devcluster down

.PHONY: lint
lint: venv ## ruff, mypy --strict, import-linter layers, CRDs in sync with the models
	$(BIN)/ruff check operator dev tests examples benchmarks hack
	$(BIN)/ruff format --check operator dev tests examples benchmarks hack
	$(BIN)/mypy
	$(BIN)/lint-imports --no-cache
	$(BIN)/flagops crds --check

.PHONY: crds
crds: venv ## regenerate crds/ from the pydantic models
	$(BIN)/flagops crds

.PHONY: manifests
manifests: venv controlplane ## render manifests/ from the Helm chart, argocd/argocd-cm.yaml from the Lua files
	$(BIN)/python hack/render-manifests.py
	$(BIN)/python hack/render-argocd-cm.py

.PHONY: test
test: venv controlplane prometheus node image argocd lint ## everything CI runs: lint, unit and e2e tests on a real control plane
	$(BIN)/pytest

.PHONY: bench bench-quick
bench: venv controlplane ## run every benchmark (about 45 minutes on 2 cores) and print their results as JSON
	$(BIN)/python benchmarks/run.py all

bench-quick: venv controlplane ## the benchmarks at smaller sizes: a smoke run of a few minutes
	$(BIN)/python benchmarks/run.py all --quick

.PHONY: demo
demo: venv controlplane prometheus node image ## start the local control plane and show flagops at work
	bash hack/demo.sh

.PHONY: demo-gitops
demo-gitops: venv controlplane node image argocd ## flagops driven by a real Argo CD from a git repository
	bash hack/demo-gitops.sh
