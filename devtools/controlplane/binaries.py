"""Where the control-plane binaries are: built by scripts/get-controlplane.sh into a cache."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "get-controlplane.sh"
BINARIES = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler")


class NotBuilt(RuntimeError):
    """The binaries are not built (and building was not asked for)."""


def bin_dir(*, build: bool = False) -> Path:
    """The folder holding etcd, kube-apiserver, kube-controller-manager and kube-scheduler.

    ``HOTSWAP_CONTROLPLANE_BIN`` wins. Otherwise the script answers from its cache; with
    ``build=True`` it builds on a miss (minutes, its progress on stderr), else :class:`NotBuilt`.
    """
    env_dir = os.environ.get("HOTSWAP_CONTROLPLANE_BIN")
    if env_dir:
        path = Path(env_dir)
        missing = [b for b in BINARIES if not os.access(path / b, os.X_OK)]
        if missing:
            raise NotBuilt(f"HOTSWAP_CONTROLPLANE_BIN={env_dir} lacks {', '.join(missing)}")
        return path
    argv = [str(SCRIPT)] if build else [str(SCRIPT), "--check"]
    proc = subprocess.run(argv, stdout=subprocess.PIPE, stderr=None if build else subprocess.PIPE, text=True)
    if proc.returncode != 0:
        why = (proc.stderr or "").strip() if not build else f"{SCRIPT} failed (exit {proc.returncode})"
        raise NotBuilt(why or f"{SCRIPT} --check: exit {proc.returncode}")
    return Path(proc.stdout.strip().splitlines()[-1])
