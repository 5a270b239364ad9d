#!/usr/bin/env bash
# Install into the kind cluster: the models server (serves published versions over http inside
# the cluster), then the chart with e2e/kind/values.yaml and the boot version (v1, published here).
# The chart's RerankerModel is off (model.create=false): the scenario applies its own.
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
need kubectl helm

log "namespace $HOTSWAP_E2E_NAMESPACE and the models server"
kubectl --context "$CONTEXT" create namespace "$HOTSWAP_E2E_NAMESPACE" --dry-run=client -o yaml |
  kubectl --context "$CONTEXT" apply -f -
kindpy models-server | kc apply -f -
kc rollout status deployment/hotswap-models --timeout=180s

log "publishing the boot version (generates the test models on first use)"
kindpy values >"$HOTSWAP_E2E_WORK/values-generated.yaml"
cat "$HOTSWAP_E2E_WORK/values-generated.yaml"

log "helm upgrade --install $HOTSWAP_E2E_RELEASE"
helm upgrade --install "$HOTSWAP_E2E_RELEASE" "$REPO/helm/hotswap" \
  --kube-context "$CONTEXT" --namespace "$HOTSWAP_E2E_NAMESPACE" --create-namespace \
  --values "$REPO/e2e/kind/values.yaml" --values "$HOTSWAP_E2E_WORK/values-generated.yaml" \
  --wait --timeout 15m
kc get pods -o wide
