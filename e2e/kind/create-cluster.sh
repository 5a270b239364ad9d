#!/usr/bin/env bash
# Create the kind cluster (one node), with the host's model registry folder mounted into the node.
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
need kind kubectl docker

mkdir -p "$HOTSWAP_E2E_WORK/registry"
chmod 755 "$HOTSWAP_E2E_WORK" "$HOTSWAP_E2E_WORK/registry"
if kind get clusters 2>/dev/null | grep -qx "$HOTSWAP_E2E_CLUSTER"; then
  log "kind cluster $HOTSWAP_E2E_CLUSTER exists: reusing it"
else
  log "creating kind cluster $HOTSWAP_E2E_CLUSTER"
  kindpy cluster-config >"$HOTSWAP_E2E_WORK/kind-config.yaml"
  kind create cluster --name "$HOTSWAP_E2E_CLUSTER" --config "$HOTSWAP_E2E_WORK/kind-config.yaml" --wait 180s
fi
kubectl --context "$CONTEXT" get nodes -o wide
