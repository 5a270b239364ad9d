"""Test doubles for the agent: a fake model server (admin + data plane) and small helpers.

The fake follows docs/admin-api.md and the data plane's Cohere shape closely enough to drive
every agent operation; knobs let a test make it misbehave (NaN scores, a wrong version header).
"""

from __future__ import annotations

import asyncio
import hmac
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web
from hotswap_contract.admin import VersionRecord
from hotswap_contract.digest import folder_digest

from devtools.fakes.slots import ContractError, ServerSlots

ADMIN_TOKEN = "admin-token-0123456789"
AGENT_TOKEN = "agent-token-0123456789"
AUTH = {"Authorization": f"Bearer {AGENT_TOKEN}"}


def write_model(folder: Path, label: str, size: int = 2048) -> Path:
    """A small fake model folder whose content depends on ``label``."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(f'{{"label": "{label}"}}\n')
    (folder / "model.safetensors").write_bytes((label.encode() * (size // max(1, len(label)) + 1))[:size])
    (folder / "tokenizer").mkdir(exist_ok=True)
    (folder / "tokenizer" / "vocab.txt").write_text(f"hello\nworld\n{label}\n")
    return folder


def error(status: int, message: str, error_type: str) -> web.Response:
    return web.json_response({"error": message, "error_type": error_type}, status=status)


@dataclass
class FakeServer:
    models_root: Path
    slots: ServerSlots = field(default_factory=lambda: ServerSlots(swap_mode="auto", pause_ms=3.0))
    calls: list[tuple[str, Any]] = field(default_factory=list)
    nan_scores: bool = False
    header_override: str | None = None
    preload_delay_s: float = 0.0
    admin_url: str = ""
    data_url: str = ""
    _runners: list[web.AppRunner] = field(default_factory=list)

    # --- admin plane ------------------------------------------------------------------------
    @web.middleware
    async def _auth(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ):
        supplied = request.headers.get("Authorization", "").removeprefix("Bearer ").encode()
        if not hmac.compare_digest(supplied, ADMIN_TOKEN.encode()):
            return error(401, "unauthorized", "unauthorized")
        return await handler(request)

    def _record(self, version: str, path: Path) -> dict[str, Any]:
        return VersionRecord(
            version=version,
            path=str(path),
            digest=folder_digest(path),
            kind="cross-encoder",
            architecture="XLMRobertaForSequenceClassification",
            dtype="float32",
            device="cpu",
            loaded_at="2026-01-01T00:00:00+00:00",
        ).wire()

    # The slots as plain records, for tests that look at or set what the "server" holds.
    @property
    def active(self) -> dict[str, Any] | None:
        return self.slots.active.wire() if self.slots.active else None

    @active.setter
    def active(self, record: dict[str, Any] | None) -> None:
        self.slots.active = VersionRecord.model_validate(record) if record else None

    @property
    def previous(self) -> dict[str, Any] | None:
        return self.slots.previous.wire() if self.slots.previous else None

    async def state(self, request: web.Request) -> web.Response:
        return web.json_response(self.slots.admin_state().wire())

    async def preload(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.calls.append(("preload", body))
        if self.preload_delay_s:
            await asyncio.sleep(self.preload_delay_s)
        path = Path(body["path"])
        path = (path if path.is_absolute() else self.models_root / path).resolve()
        if not path.is_relative_to(self.models_root.resolve()):
            return error(403, "path outside the models root", "forbidden")
        if not path.is_dir():
            return error(404, f"no folder {path}", "not_found")
        rec = self._record(body["version"], path)
        if body.get("digest") and body["digest"] != rec["digest"]:
            return error(422, "digest mismatch", "digest_mismatch")
        return self._answer(lambda: {"staged": self.slots.preload(VersionRecord.model_validate(rec)).wire()})

    async def activate(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.calls.append(("activate", body))
        return self._answer(lambda: self.slots.activate(body["version"]).wire())

    async def rollback(self, request: web.Request) -> web.Response:
        self.calls.append(("rollback", {}))
        return self._answer(lambda: self.slots.rollback().wire())

    def _answer(self, operation: Callable[[], dict[str, Any]]) -> web.Response:
        try:
            return web.json_response(operation())
        except ContractError as exc:
            return error(exc.status, exc.message, exc.error_type)

    async def discard(self, request: web.Request) -> web.Response:
        self.calls.append(("discard", {}))
        self.slots.discard()
        return web.json_response({"staged": None})

    # --- data plane -------------------------------------------------------------------------
    async def rerank(self, request: web.Request) -> web.Response:
        body = await request.json()
        if not self.active:
            return error(503, "no model active", "unavailable")
        words = set(body["query"].lower().split())
        results = []
        for i, doc in enumerate(body["documents"]):
            text = doc if isinstance(doc, str) else doc["text"]
            overlap = len(words & set(text.lower().replace(".", " ").split()))
            score = float("nan") if self.nan_scores else 1 / (1 + math.exp(-(overlap - 1)))
            results.append({"index": i, "relevance_score": score})
        results.sort(key=lambda r: -r["relevance_score"] if not math.isnan(r["relevance_score"]) else 0)
        version = self.header_override or self.active["version"]
        return web.Response(
            text=__import__("json").dumps({"id": "x", "results": results}),
            content_type="application/json",
            headers={"X-Hotswap-Model-Version": version},
        )

    async def start(self) -> FakeServer:
        admin = web.Application(middlewares=[self._auth])
        admin.router.add_get("/admin/v1/state", self.state)
        admin.router.add_post("/admin/v1/preload", self.preload)
        admin.router.add_post("/admin/v1/activate", self.activate)
        admin.router.add_post("/admin/v1/rollback", self.rollback)
        admin.router.add_post("/admin/v1/discard", self.discard)
        data = web.Application()
        data.router.add_post("/v1/rerank", self.rerank)
        urls = []
        for app in (admin, data):
            runner = web.AppRunner(app, shutdown_timeout=0.2)
            await runner.setup()
            site = web.TCPSite(runner, "127.0.0.1", 0)
            await site.start()
            self._runners.append(runner)
            port = runner.addresses[0][1]
            urls.append(f"http://127.0.0.1:{port}")
        self.admin_url, self.data_url = urls
        return self

    async def stop(self) -> None:
        for runner in self._runners:
            await runner.cleanup()


async def wait_for(
    predicate: Callable[[], Awaitable[Any]], timeout_s: float = 10.0, interval_s: float = 0.02
) -> Any:
    """Poll ``predicate`` until it returns something truthy, or fail after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    last: Any = None
    while time.monotonic() < deadline:
        last = await predicate()
        if last:
            return last
        await asyncio.sleep(interval_s)
    raise AssertionError(f"condition not met within {timeout_s}s (last value: {last!r})")


HF_COMMIT = "c0ffee" + "0" * 34


def make_hub_app(repos: dict[str, Path]) -> web.Application:
    """A minimal Hugging Face hub endpoint: repo info, recursive tree, resolve (HEAD and GET).

    Every revision of ``org/name`` resolves to commit ``HF_COMMIT`` serving the folder ``repos[...]``.
    It answers what ``huggingface_hub`` asks for; it is not a hub.
    """
    import hashlib
    import json

    def files(repo: str) -> list[tuple[str, Path]]:
        root = repos[repo]
        return sorted((p.relative_to(root).as_posix(), p) for p in root.rglob("*") if p.is_file())

    def repo_of(request: web.Request) -> str:
        repo = f"{request.match_info['org']}/{request.match_info['name']}"
        if repo not in repos:
            raise web.HTTPNotFound(headers={"X-Error-Code": "RepoNotFound"}, text='{"error": "Repository not found"}',
                                   content_type="application/json")  # fmt: skip
        return repo

    async def info(request: web.Request) -> web.Response:
        repo = repo_of(request)
        return web.json_response({"id": repo, "modelId": repo, "sha": HF_COMMIT, "private": False,
                                  "siblings": [{"rfilename": rel} for rel, _ in files(repo)]})  # fmt: skip

    async def tree(request: web.Request) -> web.Response:
        repo = repo_of(request)
        out = [{"type": "file", "oid": hashlib.sha1(p.read_bytes()).hexdigest(), "size": p.stat().st_size, "path": rel}
               for rel, p in files(repo)]  # fmt: skip
        return web.Response(text=json.dumps(out), content_type="application/json")

    async def resolve(request: web.Request) -> web.Response:
        p = repos[repo_of(request)] / request.match_info["path"]
        if not p.is_file():
            raise web.HTTPNotFound(headers={"X-Error-Code": "EntryNotFound"})
        data = p.read_bytes()
        headers = {"X-Repo-Commit": HF_COMMIT, "ETag": f'"{hashlib.sha1(data).hexdigest()}"',
                   "Content-Length": str(len(data))}  # fmt: skip
        return web.Response(body=None if request.method == "HEAD" else data, headers=headers)

    app = web.Application()
    app.router.add_get("/api/models/{org}/{name}/revision/{rev:.*}", info)
    app.router.add_get("/api/models/{org}/{name}/tree/{rev}{tail:.*}", tree)
    app.router.add_route("*", "/{org}/{name}/resolve/{rev}/{path:.*}", resolve)
    return app


def free_port(host: str = "127.0.0.1") -> int:
    import socket

    with socket.socket() as s:
        s.bind((host, 0))
        port: int = s.getsockname()[1]
        return port


@dataclass
class AgentProcess:
    """A real ``hotswap-agent`` process on loopback (``python -m hotswap_agent``)."""

    args: list[str]
    log_path: Path
    port: int = field(default_factory=free_port)
    proc: Any = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def spawn(self) -> None:
        import os
        import subprocess
        import sys

        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "hotswap_agent",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(self.port),
                    *self.args,
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )

    async def start(self, timeout_s: float = 20.0) -> AgentProcess:
        import aiohttp

        self.spawn()

        async def healthy() -> bool:
            if self.proc.poll() is not None:
                raise AssertionError(
                    f"agent exited {self.proc.returncode}: {self.log_path.read_text()[-2000:]}"
                )
            try:
                async with aiohttp.ClientSession() as s, s.get(f"{self.url}/healthz") as r:
                    return r.status == 200
            except aiohttp.ClientError:
                return False

        await wait_for(healthy, timeout_s, interval_s=0.05)
        return self

    def kill(self) -> None:
        import signal

        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=10)

    def stop(self) -> None:
        import subprocess

        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.kill()


ClientFactory = Callable[..., Awaitable[Any]]  # (*flags, allow=...) -> aiohttp TestClient


async def status_of(client: Any) -> dict[str, Any]:
    resp = await client.get("/v1/status", headers=AUTH)
    assert resp.status == 200, await resp.text()
    body: dict[str, Any] = await resp.json()
    return body


async def run_op(client: Any, kind: str, body: dict[str, Any], timeout_s: float = 15.0) -> dict[str, Any]:
    """POST an operation, then poll status until it has finished; return the finished operation."""
    resp = await client.post(f"/v1/{kind}", json=body, headers=AUTH)
    assert resp.status in (200, 202), f"{resp.status}: {await resp.text()}"
    op_id = (await resp.json())["operation"]["id"]

    async def finished() -> dict[str, Any] | None:
        op = (await status_of(client))["operation"]
        return op if op["id"] == op_id and op["state"] != "running" else None

    result: dict[str, Any] = await wait_for(finished, timeout_s)
    return result
