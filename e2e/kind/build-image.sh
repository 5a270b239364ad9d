#!/usr/bin/env bash
# Build the image from the repository's Dockerfile (CPU torch by default) and load it into the
# kind node; the chart runs it with imagePullPolicy Never. Extra arguments go to `docker build`,
# e.g. --build-arg TORCH_INDEX=... (see the Dockerfile).
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
need docker kind

log "docker build -t $HOTSWAP_E2E_IMAGE $REPO"
docker build -t "$HOTSWAP_E2E_IMAGE" "$@" "$REPO"
log "kind load docker-image $HOTSWAP_E2E_IMAGE"
kind load docker-image "$HOTSWAP_E2E_IMAGE" --name "$HOTSWAP_E2E_CLUSTER"
