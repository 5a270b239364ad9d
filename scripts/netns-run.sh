#!/usr/bin/env bash
# Run a command inside a new, private network namespace: only `lo`, brought up, nothing else.
#
#   scripts/netns-run.sh CMD [ARGS...]
#
# This workplace lets tests reach only loopback addresses, or addresses inside network namespaces
# the run itself created. The control-plane harness gives pods routed IPs (198.18.N.K, a `local`
# route plus an nftables NAT: devtools/controlplane/network.py), so everything that talks to pod
# IPs (harness, kubelet, API server, tests, scenario, demo) runs in here, and the route and the NAT
# exist only in this namespace: they vanish with it. network.py refuses to add them anywhere else.
#
# Nothing in here reaches the network: build and download (go build, pip, npm) BEFORE entering.
# Needs root (or CAP_SYS_ADMIN) and util-linux's `unshare`; `ip` from iproute2.
#
# Sets HOTSWAP_NETNS=<inode of the new namespace> and HOTSWAP_NETNS_PARENT=<inode of the one it
# was started from>: network.py routes pod IPs only where /proc/self/ns/net is HOTSWAP_NETNS and
# differs from HOTSWAP_NETNS_PARENT (and from pid 1's where that is readable).
set -euo pipefail

if [[ $# -eq 0 ]]; then
  echo "usage: $0 CMD [ARGS...]" >&2
  exit 2
fi
for tool in unshare ip; do
  command -v "$tool" >/dev/null || { echo "netns-run.sh: '$tool' is required (util-linux, iproute2)" >&2; exit 1; }
done

parent="$(stat -L -c %i /proc/self/ns/net)"
export HOTSWAP_NETNS_PARENT="$parent"
# shellcheck disable=SC2016  # expanded by the inner shell, inside the namespace
exec unshare --net -- bash -c '
  set -euo pipefail
  ip link set lo up
  HOTSWAP_NETNS="$(stat -L -c %i /proc/self/ns/net)"
  if [[ "$HOTSWAP_NETNS" == "$HOTSWAP_NETNS_PARENT" ]]; then
    echo "netns-run.sh: unshare --net left us in the parent namespace" >&2
    exit 1
  fi
  export HOTSWAP_NETNS
  exec "$@"
' netns-run "$@"
