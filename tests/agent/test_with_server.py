"""Agent and server as real processes on loopback, the data plane under load the whole time.

The server starts empty; the agent boots it on v1 from its boot file. Then, with 8 clients
scoring without pause: stage v2 -> preload -> activate -> verify -> rollback to v1 -> verify.
Not one request may fail, every reply names the version that scored it, and requests sent
after the activation finished (and before the rollback began) are scored by v2.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from hotswap_contract.digest import folder_digest

from tests.agent.agent_fakes import ADMIN_TOKEN, AUTH, AgentProcess, free_port, wait_for

pytestmark = pytest.mark.slow

CLIENTS = 8
QUERY = {"query": "what is a reranker?", "documents": ["A reranker scores query-document pairs.",
         "Bananas are yellow.", "Cross-encoders read the query and the document together."]}  # fmt: skip


def server_available() -> bool:
    """The real server and its test-model generator (the ``testmodels_dir`` fixture) are there."""
    from importlib.util import find_spec

    return all(find_spec(m) is not None for m in ("hotswap_server.cli", "devtools.testmodels"))


@dataclass
class ServerProcess:
    models_root: Path
    token_file: Path
    log_path: Path
    port: int = field(default_factory=free_port)
    admin_port: int = field(default_factory=free_port)
    proc: Any = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def admin_url(self) -> str:
        return f"http://127.0.0.1:{self.admin_port}"

    def spawn(self) -> None:
        cmd = [
            sys.executable, "-m", "hotswap_server", "--host", "127.0.0.1", "--port", str(self.port),
            "--admin-host", "127.0.0.1", "--admin-port", str(self.admin_port),
            "--admin-token-file", str(self.token_file), "--models-root", str(self.models_root),
            "--torch-threads", "1",
        ]  # fmt: skip
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)

    async def start(self) -> ServerProcess:
        self.spawn()

        async def alive() -> bool:
            if self.proc.poll() is not None:
                raise AssertionError(f"server exited: {self.log_path.read_text()[-3000:]}")
            try:
                async with aiohttp.ClientSession() as s, s.get(f"{self.url}/healthz") as r:
                    return r.status == 200
            except aiohttp.ClientError:
                return False

        await wait_for(alive, timeout_s=120, interval_s=0.1)
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@dataclass
class Load:
    """CLIENTS tasks scoring in a loop; every reply recorded as (start, end, status, version)."""

    url: str
    replies: list[tuple[float, float, int, str | None]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    stop: asyncio.Event = field(default_factory=asyncio.Event)

    async def client(self, session: aiohttp.ClientSession) -> None:
        while not self.stop.is_set():
            started = time.monotonic()
            try:
                async with session.post(f"{self.url}/v1/rerank", json=QUERY) as resp:
                    body = await resp.json(content_type=None)
                    version = resp.headers.get("X-Hotswap-Model-Version")
                    if resp.status != 200 or len(body.get("results", [])) != 3:
                        self.errors.append(f"{resp.status}: {str(body)[:200]}")
                    self.replies.append((started, time.monotonic(), resp.status, version))
            except (aiohttp.ClientError, TimeoutError) as exc:
                self.errors.append(f"{type(exc).__name__}: {exc}")

    @staticmethod
    @contextlib.asynccontextmanager
    async def running(url: str) -> AsyncIterator[Load]:
        load = Load(url)
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as session:
            tasks = [asyncio.create_task(load.client(session)) for _ in range(CLIENTS)]
            try:
                yield load
            finally:
                load.stop.set()
                await asyncio.gather(*tasks)


async def agent_op(
    session: aiohttp.ClientSession, agent: AgentProcess, kind: str, body: dict[str, Any]
) -> dict:
    async with session.post(f"{agent.url}/v1/{kind}", json=body, headers=AUTH) as resp:
        assert resp.status in (200, 202), await resp.text()
        op_id = (await resp.json())["operation"]["id"]

    async def finished() -> dict | None:
        async with session.get(f"{agent.url}/v1/status", headers=AUTH) as resp:
            op = (await resp.json())["operation"]
        return op if op["id"] == op_id and op["state"] != "running" else None

    op: dict = await wait_for(finished, timeout_s=120, interval_s=0.05)
    assert op["state"] == "succeeded", op
    return op


async def agent_status(session: aiohttp.ClientSession, agent: AgentProcess) -> dict[str, Any]:
    async with session.get(f"{agent.url}/v1/status", headers=AUTH) as resp:
        assert resp.status == 200
        body: dict[str, Any] = await resp.json()
        return body


@pytest.mark.skipif(not server_available(), reason="hotswap_server.cli or .testmodels is not there yet")
async def test_stage_preload_activate_verify_rollback_under_load(
    testmodels_dir: Path, tmp_path: Path
) -> None:
    sources, models_root = tmp_path / "sources", tmp_path / "models"
    models_root.mkdir()
    for name, version in (("tiny-xlmr-v1", "v1"), ("tiny-xlmr-v2", "v2")):
        shutil.copytree(testmodels_dir / name, sources / version)
    digests = {v: folder_digest(sources / v) for v in ("v1", "v2")}
    admin_token, agent_token = tmp_path / "admin-token", tmp_path / "agent-token"
    admin_token.write_text(ADMIN_TOKEN)
    agent_token.write_text(AUTH["Authorization"].removeprefix("Bearer "))
    boot_file = tmp_path / "boot.json"
    boot_file.write_text(json.dumps({"version": "v1", "source": {"uri": (sources / "v1").as_uri(),
                                                                  "sha256": digests["v1"]}}))  # fmt: skip

    server = ServerProcess(models_root, admin_token, tmp_path / "server.log")
    agent = AgentProcess(
        ["--token-file", str(agent_token), "--server-admin-token-file", str(admin_token),
         "--models-root", str(models_root), "--server-url", server.url, "--server-admin-url", server.admin_url,
         "--allow", sources.as_uri() + "/", "--boot-file", str(boot_file), "--boot-backoff-max", "1",
         "--pod-name", "reranker-0"],
        tmp_path / "agent.log",
    )  # fmt: skip
    try:
        await asyncio.gather(server.start(), agent.start())
        async with aiohttp.ClientSession() as session:

            async def booted() -> dict | None:
                status = await agent_status(session, agent)
                return status if status["boot"]["state"] == "done" else None

            status = await wait_for(booted, timeout_s=120, interval_s=0.1)
            assert status["active"] == {"version": "v1", "digest": digests["v1"]}
            async with session.get(f"{server.url}/readyz") as resp:
                assert resp.status == 200

            async with Load.running(server.url) as load:
                await wait_for(lambda: _some(load), timeout_s=30)
                await agent_op(session, agent, "stage", {"version": "v2", "uri": (sources / "v2").as_uri(),
                                                         "sha256": digests["v2"]})  # fmt: skip
                await agent_op(session, agent, "preload", {"version": "v2"})
                op = await agent_op(session, agent, "activate", {"version": "v2"})
                assert op["result"]["fromVersion"] == "v1"
                activated_at = time.monotonic()
                op = await agent_op(session, agent, "verify", {"canary": [QUERY], "expectVersion": "v2"})
                assert op["result"]["ok"] and op["result"]["canaries"][0]["version"] == "v2"
                await wait_for(lambda: _some(load, after=activated_at), timeout_s=30)
                rollback_at = time.monotonic()
                op = await agent_op(session, agent, "rollback", {"version": "v1"})
                assert op["result"]["via"] == "rollback"  # v1 was the server's previous version
                op = await agent_op(session, agent, "verify", {"canary": [QUERY], "expectVersion": "v1"})
                assert op["result"]["ok"]
                verified_at = time.monotonic()
                await wait_for(lambda: _some(load, after=verified_at), timeout_s=30)
            status = await agent_status(session, agent)

        assert load.errors == [], load.errors[:5]
        assert len(load.replies) >= CLIENTS * 5
        assert {r[2] for r in load.replies} == {200}
        assert {r[3] for r in load.replies} == {"v1", "v2"}
        between = [r[3] for r in load.replies if r[0] > activated_at and r[1] < rollback_at]
        assert between and set(between) == {"v2"}
        assert status["active"] == {"version": "v1", "digest": digests["v1"]}
        assert status["previous"] == {"version": "v2", "digest": digests["v2"]}
        assert sorted(d["version"] for d in status["onDisk"]) == ["v1", "v2"]
        assert status["lastActivation"]["version"] == "v1" and status["lastActivation"]["kind"] == "rollback"
        # the only error allowed is the boot's wait for the server to come up
        assert status["lastError"] is None or status["lastError"]["type"] == "server_unavailable"
        assert all(h["state"] == "succeeded" for h in status["history"]), status["history"]
        print(f"{len(load.replies)} requests from {CLIENTS} clients, 0 failed; "
              f"{len(between)} scored by v2 between activation and rollback")  # fmt: skip
        kinds = [h["kind"] for h in status["history"]]
        assert kinds == ["boot", "stage", "preload", "activate", "verify", "rollback", "verify"]
    finally:
        agent.stop()
        server.stop()


async def _some(load: Load, after: float = 0.0) -> bool:
    """True once every client has had a reply that started after ``after``."""
    return sum(1 for r in load.replies if r[0] > after) >= CLIENTS
