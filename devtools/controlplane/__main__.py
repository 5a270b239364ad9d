"""``python -m devtools.controlplane up [--workdir DIR] [--no-kubelet]``: a control plane until Ctrl-C.

Prints the admin kubeconfig's path (``export KUBECONFIG=...``, then kubectl/helm as usual).
``python -m devtools.controlplane build`` builds (or finds) the binaries and prints their folder.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys
import tempfile
from pathlib import Path

from devtools.controlplane.binaries import NotBuilt, bin_dir
from devtools.controlplane.cluster import ControlPlane, ControlPlaneError
from devtools.controlplane.kubelet import KubeletConfig


async def _up(args: argparse.Namespace) -> int:
    workdir = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="hotswap-controlplane-"))
    bins = bin_dir(build=args.build)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    kubelet = None if args.no_kubelet else KubeletConfig(node_name=args.node_name)
    async with ControlPlane.start(workdir, bin_dir=bins, kubelet=kubelet, pod_network=args.pod_network) as cp:
        print(f"control plane ready: {cp.url} (workdir {workdir}, logs in {cp.logs})", file=sys.stderr)
        print(f"  export KUBECONFIG={cp.kubeconfig}", file=sys.stderr)
        print(cp.kubeconfig, flush=True)
        await stop.wait()
        print("stopping ...", file=sys.stderr)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devtools.controlplane")
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="run a control plane (and a process kubelet) until Ctrl-C")
    up.add_argument(
        "--workdir", help="folder for certificates, etcd data, logs (default: a new temporary one)"
    )
    up.add_argument("--no-kubelet", action="store_true", help="no node: API server and controllers only")
    up.add_argument("--node-name", default="hotswap-node")
    up.add_argument("--pod-network", default="auto", choices=["auto", "routed", "loopback"])
    up.add_argument("--build", action="store_true", help="build the binaries first if they are not cached")
    sub.add_parser("build", help="build (or find) the binaries; print their folder")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        if args.command == "build":
            print(bin_dir(build=True))
            return 0
        with contextlib.suppress(KeyboardInterrupt):
            return asyncio.run(_up(args))
        return 130
    except NotBuilt as exc:
        print(
            f"control-plane binaries: {exc}\n(build them with scripts/get-controlplane.sh, or pass --build)",
            file=sys.stderr,
        )
        return 2
    except ControlPlaneError as exc:
        print(f"control plane failed: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
