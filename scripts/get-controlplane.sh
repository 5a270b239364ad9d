#!/usr/bin/env bash
# Build the real Kubernetes control plane (etcd, kube-apiserver, kube-controller-manager,
# kube-scheduler) from Go modules, once, and print the folder that holds the binaries.
#
# There are no release downloads here (only package registries are reachable), so the binaries are
# built from the Go module proxy: devtools/controlplane/go.mod wraps k8s.io/kubernetes (its staging
# modules replaced with their published v0.Y.Z) and devtools/controlplane/etcd/go.mod wraps the etcd
# server. The result is cached outside the repository under a key made of the two releases and a
# hash of the module files and of this build recipe, so the second run is instant and offline.
#
#   scripts/get-controlplane.sh        # prints e.g. ~/.cache/hotswap/k8s/v1.37.2-etcd-v3.6.16-1a2b3c4d5e6f/bin
#   scripts/get-controlplane.sh --check   # prints the folder if it is built, else exits 3 (never builds)
#
# Environment:
#   HOTSWAP_CONTROLPLANE_BIN      use this folder instead (checked for the four binaries, printed as-is)
#   HOTSWAP_CONTROLPLANE_REBUILD  non-empty: rebuild even when the cache holds a complete build
#   XDG_CACHE_HOME                cache root (default ~/.cache)
#   GOFLAGS, GOPROXY, ...         passed to go as usual (GOFLAGS gets -mod=readonly appended)
#
# Progress goes to stderr, the bin folder to stdout (the last and only stdout line).
set -euo pipefail

check_only=""
case "${1:-}" in
  --check) check_only=1 ;;
  "") ;;
  *) echo "usage: $0 [--check]" >&2; exit 2 ;;
esac

BINARIES=(etcd kube-apiserver kube-controller-manager kube-scheduler)
# Bump when the build commands below change, so old builds are not reused under the new recipe.
RECIPE=1

here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
mod="$here/devtools/controlplane"

log() { echo "get-controlplane.sh: $*" >&2; }

check_bin_dir() {
  local dir="$1" b
  for b in "${BINARIES[@]}"; do
    [[ -x "$dir/$b" ]] || return 1
  done
}

if [[ -n "${HOTSWAP_CONTROLPLANE_BIN:-}" ]]; then
  check_bin_dir "$HOTSWAP_CONTROLPLANE_BIN" || {
    log "HOTSWAP_CONTROLPLANE_BIN=$HOTSWAP_CONTROLPLANE_BIN lacks one of: ${BINARIES[*]}"
    exit 1
  }
  echo "$HOTSWAP_CONTROLPLANE_BIN"
  exit 0
fi

# The releases come from the module files themselves, so the cache key cannot drift from them.
# (`go mod tidy` lists them in a require block, as `// indirect`, since only `tool` lines use them.)
modver() { sed -nE "s#^(require)?[[:space:]]*$1 (v[^ ]+).*#\2#p" "$2" | head -n 1; }
k8s_version="$(modver k8s.io/kubernetes "$mod/go.mod")"
etcd_version="$(modver go.etcd.io/etcd/server/v3 "$mod/etcd/go.mod")"
[[ -n "$k8s_version" && -n "$etcd_version" ]] || {
  log "cannot read the releases from $mod/go.mod and $mod/etcd/go.mod"
  exit 1
}
hash="$( (echo "recipe=$RECIPE"; cat "$mod/go.mod" "$mod/go.sum" "$mod/etcd/go.mod" "$mod/etcd/go.sum") \
  | sha256sum | cut -c1-12)"
key="$k8s_version-etcd-$etcd_version-$hash"
cache_root="${XDG_CACHE_HOME:-$HOME/.cache}/hotswap/k8s"
dest="$cache_root/$key"

# Fast path: no go, no network. ".complete" is written last, so a build that died half-way is
# never taken for a finished one.
if [[ -z "${HOTSWAP_CONTROLPLANE_REBUILD:-}" && -f "$dest/.complete" ]] && check_bin_dir "$dest/bin"; then
  echo "$dest/bin"
  exit 0
fi
if [[ -n "$check_only" ]]; then
  log "not built yet: $dest (run scripts/get-controlplane.sh)"
  exit 3
fi

command -v go >/dev/null || [[ -x /usr/local/go/bin/go ]] || {
  log "'go' is required (Go >= 1.26; see docs/controlplane.md)"
  exit 1
}
command -v go >/dev/null || PATH="/usr/local/go/bin:$PATH"

mkdir -p "$cache_root"
# One build at a time per key: a second caller waits for the first and then reuses its result.
exec 9>"$cache_root/.$key.lock"
if ! flock -n 9; then
  log "another build of $key is running; waiting for it"
  flock 9
  if [[ -z "${HOTSWAP_CONTROLPLANE_REBUILD:-}" && -f "$dest/.complete" ]] && check_bin_dir "$dest/bin"; then
    echo "$dest/bin"
    exit 0
  fi
fi

work="$(mktemp -d "$cache_root/.work.XXXXXX")"
trap 'rm -rf "$work"' EXIT

export GOFLAGS="${GOFLAGS:-} -mod=readonly"
export CGO_ENABLED=0  # kube-apiserver & co. are static in the official release as well

# Version stamps as hack/lib/version.sh sets them: without them the API server reports
# v0.0.0-master, and helm's kubeVersion checks and kubectl's skew warnings go wrong.
minor="$(cut -d. -f2 <<<"$k8s_version")"
k8s_ldflags="-s -w"
for pkg in k8s.io/client-go/pkg/version k8s.io/component-base/version; do
  k8s_ldflags+=" -X $pkg.gitVersion=$k8s_version -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor"
  k8s_ldflags+=" -X $pkg.gitTreeState=archive -X $pkg.buildDate=$(date -u +%Y-%m-%dT%H:%M:%SZ)"
done

total=${#BINARIES[@]}
i=0
started=$SECONDS
build() {
  local name="$1" dir="$2" pkg="$3" tags="$4" ldflags="$5"
  i=$((i + 1))
  local t0=$SECONDS out="$work/$name.log"
  local -a cmd=(go build -trimpath "-tags=$tags" "-ldflags=$ldflags" -o "$work/bin/$name" "$pkg")
  log "[$i/$total] building $name ($pkg) ..."
  if ! (cd "$dir" && "${cmd[@]}") >"$out" 2>&1; then
    log "FAILED: $name"
    log "  in:      $dir"
    log "  command: $(printf '%q ' "${cmd[@]}")"
    log "  GOFLAGS=$GOFLAGS CGO_ENABLED=$CGO_ENABLED"
    log "  last lines of its output:"
    tail -n 40 "$out" | sed 's/^/    /' >&2
    cp "$out" "$cache_root/last-failure-$name.log"
    log "  full output: $cache_root/last-failure-$name.log"
    exit 1
  fi
  log "[$i/$total] $name built in $((SECONDS - t0)) s"
}

log "building $key into $dest (first time only: 15-30 min on 2 cores, see docs/controlplane.md)"
mkdir -p "$work/bin"
build etcd "$mod/etcd" go.etcd.io/etcd/server/v3 "" "-s -w"
for b in kube-apiserver kube-controller-manager kube-scheduler; do
  build "$b" "$mod" "k8s.io/kubernetes/cmd/$b" "selinux,notest,grpcnotrace" "$k8s_ldflags"
done

"$work/bin/kube-apiserver" --version >&2
"$work/bin/etcd" --version | head -n 1 >&2

# Publish atomically: replace any older (incomplete or rebuilt) folder for this key.
rm -rf "$dest.old"
[[ -d "$dest" ]] && mv "$dest" "$dest.old"
mkdir -p "$work/publish"
mv "$work/bin" "$work/publish/bin"
printf '%s\n' "k8s=$k8s_version" "etcd=$etcd_version" "built=$(date -u +%FT%TZ)" \
  "seconds=$((SECONDS - started))" >"$work/publish/.complete"
mv "$work/publish" "$dest"
rm -rf "$dest.old"
log "done in $((SECONDS - started)) s"
echo "$dest/bin"
