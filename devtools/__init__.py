"""Development tools: harnesses, fakes and model generators for tests, the demo and the benchmarks.

Never installed: the wheel and the image hold only the three processes and their contract
(``tests/packaging/test_wheel.py`` checks). Everything here imports the product, never the reverse.
Processes started from here run with :func:`dev_env`, which puts the repository on ``PYTHONPATH``
so that ``python -m devtools...`` works from any working directory.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def dev_env(base: Mapping[str, str] | None = None) -> dict[str, str]:
    """``base`` (default: this process's environment) with the repository first on ``PYTHONPATH``."""
    env = dict(os.environ if base is None else base)
    parts = [str(REPO), *(p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p and p != str(REPO))]
    env["PYTHONPATH"] = os.pathsep.join(parts)
    return env
