"""Run a real ``hotswap-server`` process on loopback for tests that are about processes."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import requests

TOKEN = "test-admin-token-0123456789"


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


@dataclass
class ServerProcess:
    proc: subprocess.Popen[bytes]
    url: str
    admin_url: str
    log_path: Path

    @property
    def admin_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {TOKEN}"}

    def admin(self, method: str, path: str, **kwargs: object) -> requests.Response:
        return requests.request(
            method, self.admin_url + path, headers=self.admin_headers, timeout=60, **kwargs
        )  # type: ignore[arg-type]

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def wait_until(predicate, timeout: float, what: str, interval: float = 0.05):  # type: ignore[no-untyped-def]
    """Poll ``predicate`` until it returns a truthy value or the deadline passes."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout}s waiting for {what}")


@contextmanager
def run_server(tmp_path: Path, models_root: Path, *args: str, ready: bool = True) -> Iterator[ServerProcess]:
    port, admin_port = free_port(), free_port()
    token_file = tmp_path / f"admin-token-{port}"
    token_file.write_text(TOKEN)
    log_path = tmp_path / f"server-{port}.log"
    cmd = [
        sys.executable, "-m", "hotswap_server",
        "--host", "127.0.0.1", "--port", str(port),
        "--admin-port", str(admin_port), "--admin-token-file", str(token_file),
        "--models-root", str(models_root), "--torch-threads", "1", *args,
    ]  # fmt: skip
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
    server = ServerProcess(proc, f"http://127.0.0.1:{port}", f"http://127.0.0.1:{admin_port}", log_path)

    def up() -> bool:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}:\n{server.log()}")
        try:
            r = requests.get(server.url + ("/readyz" if ready else "/healthz"), timeout=5)
            return r.status_code == 200
        except (requests.ConnectionError, requests.Timeout):  # not listening yet, or busy loading
            return False

    try:
        wait_until(up, 120, "the server to come up")
        yield server
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
