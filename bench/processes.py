"""Starting the servers under test as real processes on loopback, and talking to them.

``hotswap-server`` starts the way tests/server/serverproc.py starts it (``python -m
hotswap_server``, an admin token file, free ports), except that ``--torch-threads`` is left at
torch's default: the benchmark measures the server as it ships.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .models import REPO, ModelSet

TOKEN = "bench-admin-token-0123456789"
START_TIMEOUT_S = 600.0  # a bge-m3-sized model loads, validates and pins 1 GB before /readyz


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _env() -> dict[str, str]:
    path = os.environ.get("PYTHONPATH", "")
    return {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "PYTHONPATH": f"{REPO}{os.pathsep}{path}" if path else str(REPO),
    }


def http_json(method: str, url: str, body: Any = None, token: str | None = None, timeout: float = 120) -> Any:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method)
    req.add_header("Content-Type", "application/json")
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return json.loads(r.read())
    except urllib.error.HTTPError as e:
        raise RuntimeError(f"{method} {url}: HTTP {e.code}: {e.read()[:500]!r}") from None


@dataclass
class Server:
    name: str
    proc: subprocess.Popen[bytes]
    url: str
    admin_url: str | None
    log_path: Path
    ready_path: str = "/readyz"  # answers 200 once the server serves
    api: str = "tei"  # what its /rerank takes (LoadSpec.api)
    model: str = ""  # the served model's name, where the API names it

    def admin(self, method: str, path: str, body: Any = None, timeout: float = 300) -> Any:
        assert self.admin_url is not None, f"{self.name} has no admin plane"
        return http_json(method, self.admin_url + path, body, TOKEN, timeout)

    def log_tail(self, lines: int = 40) -> str:
        text = self.log_path.read_text(errors="replace").splitlines()
        return "\n".join(text[-lines:])

    def wait_ready(self, timeout: float = START_TIMEOUT_S) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                with urllib.request.urlopen(self.url + self.ready_path, timeout=2) as r:
                    if r.status == 200:
                        return
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            time.sleep(0.1)
        raise TimeoutError(f"{self.name} not ready after {timeout:.0f}s:\n{self.log_tail()}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@contextmanager
def running(
    name: str,
    cmd: list[str],
    workdir: Path,
    port: int,
    admin_port: int | None,
    wait: bool,
    env: dict[str, str] | None = None,
    **server: Any,
) -> Iterator[Server]:
    """Start ``cmd`` (its output to a log in ``workdir``) and stop it on exit; ``server``: the
    :class:`Server` fields beyond the URLs (``ready_path``, ``api``, ``model``)."""
    log_path = workdir / f"{name}-{port}.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env or _env(), cwd=REPO)
    admin_url = f"http://127.0.0.1:{admin_port}" if admin_port else None
    srv = Server(name, proc, f"http://127.0.0.1:{port}", admin_url, log_path, **server)
    try:
        if wait:
            srv.wait_ready()
        yield srv
    finally:
        srv.stop()


@contextmanager
def hotswap_server(
    models: ModelSet, workdir: Path, device: str, swap_mode: str, max_batch_size: int, wait: bool = True
) -> Iterator[Server]:
    """``hotswap-server`` serving ``models.v1`` as version ``v1``; ``models.v2`` can be preloaded.

    ``wait=False`` returns while it starts (call :meth:`Server.wait_ready`): servers start in parallel.
    """
    port, admin_port = free_port(), free_port()
    token_file = workdir / f"admin-token-{port}"
    token_file.write_text(TOKEN)
    cmd = [
        sys.executable, "-m", "hotswap_server",
        "--host", "127.0.0.1", "--port", str(port),
        "--admin-port", str(admin_port), "--admin-token-file", str(token_file),
        "--models-root", str(models.root), "--model", str(models.v1_path), "--version", "v1",
        "--swap-mode", swap_mode, "--device", device, "--dtype", models.dtype,
        "--max-batch-size", str(max_batch_size), "--log-level", "WARNING",
    ]  # fmt: skip
    with running(f"hotswap-server-{swap_mode}", cmd, workdir, port, admin_port, wait) as server:
        yield server


@contextmanager
def baseline_server(models: ModelSet, workdir: Path, device: str, wait: bool = True) -> Iterator[Server]:
    port = free_port()
    cmd = [
        sys.executable, "-m", "bench.baseline_server", "--port", str(port),
        "--model", str(models.v1_path), "--device", device, "--dtype", models.dtype,
    ]  # fmt: skip
    with running("baseline-lock", cmd, workdir, port, None, wait) as server:
        yield server
