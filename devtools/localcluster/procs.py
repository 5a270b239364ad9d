"""The local cluster's child processes: the control plane's :class:`devtools.controlplane.procs.Proc`.

One implementation for both harnesses: each child leads its own process group, dies with the
harness (``PR_SET_PDEATHSIG``), and a watchdog kills every group still registered, grandchildren
included, if the harness is SIGKILLed. The local cluster adds only the repository on
``PYTHONPATH``: ``devtools`` is not installed, and its children run ``python -m devtools...``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from devtools import dev_env
from devtools.controlplane import procs


class Proc(procs.Proc):
    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        log: Path,
        cwd: Path | None = None,
    ) -> None:
        super().__init__(name, argv, env=dev_env(env), log=log, cwd=cwd)
