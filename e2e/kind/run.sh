#!/usr/bin/env bash
# The whole kind path: create the cluster, build and load the image, install, run the scenario.
# Each step is its own script and may be run alone; a step already done is cheap to repeat.
# Arguments go to the scenario (python -m e2e kind --help). The cluster is kept afterwards:
# look around with `kubectl --context kind-hotswap-e2e -n hotswap-e2e get rrm,pods`, remove it
# with e2e/kind/down.sh.
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
need docker kind kubectl helm

here="$(dirname "${BASH_SOURCE[0]}")"
"$here/create-cluster.sh"
if [[ "${SKIP_BUILD:-0}" != 1 ]]; then
  "$here/build-image.sh"
fi
"$here/install.sh"

log "scenario: v1, load, roll v2, broken v3 and its rollback, kubectl wait"
status=0
(cd "$REPO" && "$PY" -m e2e kind "$@") || status=$?
if ((status != 0)); then
  log "scenario failed ($status): operator and agent logs follow"
  kc logs --selector app.kubernetes.io/component=operator --tail=200 || true
  kc logs --selector app.kubernetes.io/component=reranker --container agent --tail=50 --prefix || true
fi
exit "$status"
