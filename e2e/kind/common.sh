#!/usr/bin/env bash
# Sourced by the other scripts: settings (override any by exporting it first), tool checks, helpers.
# The defaults are also in e2e/backends/kind.py (DEFAULTS); a test keeps the two equal.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
export HOTSWAP_E2E_CLUSTER="${HOTSWAP_E2E_CLUSTER:-hotswap-e2e}"
export HOTSWAP_E2E_NAMESPACE="${HOTSWAP_E2E_NAMESPACE:-hotswap-e2e}"
export HOTSWAP_E2E_RELEASE="${HOTSWAP_E2E_RELEASE:-hotswap}"
export HOTSWAP_E2E_IMAGE="${HOTSWAP_E2E_IMAGE:-reranker-hotswap:e2e}"
export HOTSWAP_E2E_WORK="${HOTSWAP_E2E_WORK:-/tmp/hotswap-e2e}"
# The project's virtualenv (make setup): the scenario, the test-model generator, the builders.
PY="${PYTHON:-$REPO/.venv/bin/python}"
CONTEXT="kind-$HOTSWAP_E2E_CLUSTER"

log() { printf '\n==> %s\n' "$*" >&2; }

need() {
  local missing=()
  for tool in "$@"; do
    command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
  done
  if ((${#missing[@]})); then
    echo "missing: ${missing[*]} (see e2e/README.md)" >&2
    exit 2
  fi
  if [[ ! -x "$PY" ]]; then
    echo "no Python at $PY: run 'make setup' first, or set PYTHON" >&2
    exit 2
  fi
}

# The pure builders of e2e/backends/kind.py, run from the repository root.
kindpy() { (cd "$REPO" && "$PY" -m e2e.backends.kind "$@"); }

kc() { kubectl --context "$CONTEXT" --namespace "$HOTSWAP_E2E_NAMESPACE" "$@"; }
