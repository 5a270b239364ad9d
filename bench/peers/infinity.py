"""Infinity (``infinity-emb``), the best-known open reranker server, as a peer in ``make bench``.

It pins transformers 4.x, which this project's environment does not have, so it lives in its own
virtual environment, ``.cache/bench/infinity-venv``, built once by :func:`ensure_venv` and reused
while its key (the pins below and the interpreter's version) is the same. torch goes in first,
pinned to the project's version, so that pip never picks another one for Infinity. Only PyPI is
reachable and there is no hub: Infinity serves the bench's own model from its local folder, with
the hub and telemetry switched off (:func:`server_env`).

``python -m bench.peers.infinity`` builds (or checks) the environment and prints where it is.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..models import REPO, ModelSet
from ..processes import Server, free_port, running

VERSION = "0.0.78"
# torch first (the project's pin, from pip's cache here), then Infinity and what pip resolved for it
# on top of that torch (checked: `pip check` clean, it serves the bench's model).
TORCH_PIN = "torch==2.13.0"
PINS: tuple[str, ...] = (
    f"infinity-emb[server,torch]=={VERSION}",
    "transformers==4.57.6",  # Infinity takes transformers >4.34,<=5.0: the last 4.x
    "sentence-transformers==3.4.1",  # ^3.0.1: the last 3.x
    "numpy==1.26.4",  # Infinity requires numpy<2: the last 1.x
)
CACHE = REPO / ".cache" / "bench"
VENV = CACHE / "infinity-venv"
KEY_FILE = "hotswap-bench-key.json"
INSTALL_TIMEOUT_S = 1800.0
START_TIMEOUT_S = 300.0
SERVED_NAME = "bench-reranker"


class Unavailable(Exception):
    """Infinity cannot be measured; the message says why (it goes into the report)."""


def venv_key(python_version: str | None = None) -> str:
    """What the environment was built from: a change of pins or interpreter rebuilds it."""
    version = python_version or f"{sys.version_info.major}.{sys.version_info.minor}"
    text = "\n".join([f"python{version}", TORCH_PIN, *PINS])
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def install_commands(venv: Path, python: str = "python3") -> list[list[str]]:
    """The commands that build the environment, in order: torch alone and pinned, then Infinity."""
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "--disable-pip-version-check"]
    return [
        [python, "-m", "venv", str(venv)],
        [*pip, TORCH_PIN],
        [*pip, TORCH_PIN, *PINS],  # torch named again: the resolver must keep it, never move it
    ]


@dataclass(frozen=True)
class Env:
    venv: Path
    built: bool  # False: reused as it was
    install_s: float  # the build's time (0 when reused)
    versions: dict[str, str]


def _installed(venv: Path) -> dict[str, Any] | None:
    try:
        data: dict[str, Any] = json.loads((venv / KEY_FILE).read_text())
    except (OSError, ValueError):
        return None
    if data.get("key") != venv_key() or not (venv / "bin" / "infinity_emb").exists():
        return None
    return data


def ensure_venv(venv: Path = VENV, log: Callable[[str], None] = print) -> Env:
    """Build the environment unless one with this key is there; :class:`Unavailable` if it fails."""
    found = _installed(venv)
    if found is not None:
        return Env(venv, False, 0.0, found.get("versions", {}))
    if venv.exists():
        shutil.rmtree(venv)
    venv.parent.mkdir(parents=True, exist_ok=True)
    log_path = venv.parent / "infinity-install.log"
    log(f"infinity: building {venv} (torch first, then infinity-emb {VERSION}); log in {log_path} ...")
    t0 = time.monotonic()
    with open(log_path, "w") as out:
        for cmd in install_commands(venv):
            out.write("$ " + " ".join(cmd) + "\n")
            out.flush()
            try:
                rc = subprocess.run(
                    cmd, stdout=out, stderr=subprocess.STDOUT, timeout=INSTALL_TIMEOUT_S, check=False
                ).returncode
            except (OSError, subprocess.TimeoutExpired) as e:
                raise Unavailable(f"install failed: {' '.join(cmd[-3:])}: {e}") from None
            if rc != 0:
                tail = _last_error(log_path)
                raise Unavailable(f"install failed (`pip install` exit {rc}): {tail}")
    seconds = time.monotonic() - t0
    versions = _versions(venv)
    (venv / KEY_FILE).write_text(json.dumps({"key": venv_key(), "install_s": seconds, "versions": versions}))
    log(f"infinity: environment built in {seconds:.0f} s: {versions}")
    return Env(venv, True, seconds, versions)


def _last_error(log_path: Path) -> str:
    lines = [ln.strip() for ln in log_path.read_text(errors="replace").splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("ERROR") or "error" in ln.lower()]
    return (errors or lines or ["no output"])[-1][:300]


def _versions(venv: Path) -> dict[str, str]:
    code = (
        "import importlib.metadata as m, json; print(json.dumps({n: m.version(n) for n in "
        "('infinity-emb', 'torch', 'transformers', 'sentence-transformers', 'numpy')}))"
    )
    out = subprocess.run(
        [str(venv / "bin" / "python"), "-c", code], capture_output=True, text=True, check=False
    )
    try:
        versions: dict[str, str] = json.loads(out.stdout)
    except ValueError:
        return {}
    return versions


def server_env(base: dict[str, str] | None = None) -> dict[str, str]:
    """No telemetry, no hub: the model comes from its folder. Nothing of this project's path leaks in."""
    env = {k: v for k, v in (os.environ if base is None else base).items() if k not in ("PYTHONPATH",)}
    env.update(
        DO_NOT_TRACK="1",
        INFINITY_ANONYMOUS_USAGE_STATS="0",
        HF_HUB_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        HF_HUB_DISABLE_TELEMETRY="1",
        HF_HOME=str(CACHE / "infinity-hf-home"),
    )
    return env


def server_command(
    venv: Path, model_dir: Path, port: int, device: str, dtype: str, batch_size: int
) -> list[str]:
    """``infinity_emb v2`` serving ``model_dir`` under :data:`SERVED_NAME` on loopback."""
    return [
        str(venv / "bin" / "infinity_emb"), "v2",
        "--model-id", str(model_dir),
        "--served-model-name", SERVED_NAME,
        "--engine", "torch",
        "--device", device,
        "--dtype", "float16" if dtype == "float16" else "float32",
        "--batch-size", str(batch_size),
        "--host", "127.0.0.1",
        "--port", str(port),
        "--log-level", "warning",
    ]  # fmt: skip


@contextmanager
def infinity_server(
    env: Env, models: ModelSet, workdir: Path, device: str, batch_size: int, wait: bool = True
) -> Iterator[Server]:
    port = free_port()
    cmd = server_command(env.venv, models.v1_path, port, device, models.dtype, batch_size)
    with running(
        "infinity",
        cmd,
        workdir,
        port,
        None,
        wait,
        env=server_env(),
        ready_path="/health",
        api="infinity",
        model=SERVED_NAME,
    ) as server:
        yield server


def rerank(server: Server, query: str, docs: Sequence[str], timeout: float = 60) -> list[float]:
    """Infinity's scores for ``docs``, in the documents' order."""
    body = {"query": query, "documents": list(docs), "model": server.model, "return_documents": False}
    req = urllib.request.Request(server.url + "/rerank", data=json.dumps(body).encode(), method="POST")
    req.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(req, timeout=timeout) as r:
        results = json.loads(r.read())["results"]
    scores = [0.0] * len(docs)
    for item in results:
        scores[int(item["index"])] = float(item["relevance_score"])
    return scores


def ranking(scores: Sequence[float]) -> list[int]:
    return sorted(range(len(scores)), key=lambda i: -scores[i])


def same_order(
    server: Server, ours: Callable[[str, list[str]], list[float]], query: str, docs: list[str]
) -> dict[str, Any]:
    """Score one query against ``docs`` with Infinity and with our scorer: do they rank alike?"""
    theirs = rerank(server, query, docs)
    mine = ours(query, docs)
    return {
        "docs": len(docs),
        "same_order": ranking(theirs) == ranking(mine),
        "max_abs_diff": max(abs(a - b) for a, b in zip(theirs, mine, strict=True)),
        "infinity": theirs,
        "hotswap": mine,
    }


def main(argv: Sequence[str] | None = None) -> int:
    del argv
    try:
        env = ensure_venv()
    except Unavailable as e:
        print(f"infinity: not available: {e}", file=sys.stderr)
        return 1
    made = f"built in {env.install_s:.0f} s" if env.built else "reused"
    print(f"{env.venv} ({made}): {env.versions}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
