#!/usr/bin/env bash
# Delete the kind cluster and the work folder (published versions, generated models).
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
need kind

kind delete cluster --name "$HOTSWAP_E2E_CLUSTER"
rm -rf "$HOTSWAP_E2E_WORK"
