"""A real agent process killed (SIGKILL) in the middle of a slow http download leaves nothing visible;
the next agent cleans the leftovers at start and the same staging request then succeeds."""

from __future__ import annotations

import asyncio
import os
import tarfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from hotswap_contract.digest import folder_digest

from tests.agent.agent_fakes import AUTH, AgentProcess, FakeServer, wait_for, write_model


class SlowTarball:
    def __init__(self, archive: Path) -> None:
        self.archive = archive
        self.slow = True
        self.url = ""
        self.runner: web.AppRunner | None = None

    async def serve(self, request: web.Request) -> web.StreamResponse:
        data = self.archive.read_bytes()
        resp = web.StreamResponse(headers={"Content-Length": str(len(data))})
        await resp.prepare(request)
        step = 32 << 10
        for i in range(0, len(data), step):
            await resp.write(data[i : i + step])
            if self.slow:
                await asyncio.sleep(0.05)  # ~640 KiB/s: the whole file takes seconds
        return resp

    async def start(self) -> SlowTarball:
        app = web.Application()
        app.router.add_get("/models/v1.tar.gz", self.serve)
        self.runner = web.AppRunner(app, shutdown_timeout=0.2)
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", 0).start()
        self.url = f"http://127.0.0.1:{self.runner.addresses[0][1]}/models/v1.tar.gz"
        return self


@pytest.fixture
async def slow_source(sources_root: Path) -> AsyncIterator[tuple[SlowTarball, Path]]:
    src = write_model(sources_root / "v1", "one", size=16)
    (src / "model.safetensors").write_bytes(os.urandom(3 << 20))  # incompressible: the tarball stays big
    archive = sources_root / "v1.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(src, arcname="v1")
    server = await SlowTarball(archive).start()
    yield server, src
    assert server.runner is not None
    await server.runner.cleanup()


async def get_status(session: aiohttp.ClientSession, agent: AgentProcess) -> dict[str, Any]:
    async with session.get(f"{agent.url}/v1/status", headers=AUTH) as resp:
        assert resp.status == 200
        body: dict[str, Any] = await resp.json()
        return body


async def test_kill_mid_download(
    slow_source: tuple[SlowTarball, Path],
    fake_server: FakeServer,
    models_root: Path,
    token_files: tuple[Path, Path],
    tmp_path: Path,
) -> None:
    server, src = slow_source
    args = [
        "--token-file", str(token_files[0]), "--server-admin-token-file", str(token_files[1]),
        "--models-root", str(models_root), "--server-url", fake_server.data_url,
        "--server-admin-url", fake_server.admin_url, "--allow", server.url.rsplit("/", 1)[0] + "/",
    ]  # fmt: skip
    body = {"version": "v1", "uri": server.url, "sha256": folder_digest(src)}
    first = await AgentProcess(args, tmp_path / "agent.log").start()
    try:
        async with aiohttp.ClientSession() as session:
            async with session.post(f"{first.url}/v1/stage", json=body, headers=AUTH) as resp:
                assert resp.status == 202

            async def downloading() -> bool:
                op = (await get_status(session, first))["operation"]
                assert op["state"] == "running", op
                progress = op["progress"]  # progress is visible while it downloads
                return 0 < progress["bytesDone"] < progress["bytesTotal"] == server.archive.stat().st_size

            await wait_for(downloading, timeout_s=10)
            first.kill()
    finally:
        first.kill()
    names = sorted(p.name for p in models_root.iterdir())
    assert [n for n in names if not n.startswith(".")] == []  # nothing visible
    assert any(n.startswith(".staging-v1-") for n in names)  # it really was killed mid-way

    server.slow = False
    second = await AgentProcess(args, tmp_path / "agent.log").start()
    try:
        assert sorted(p.name for p in models_root.iterdir()) == [".hotswap"]  # leftovers gone at start
        async with aiohttp.ClientSession() as session:
            async with session.post(f"{second.url}/v1/stage", json=body, headers=AUTH) as resp:
                assert resp.status == 202

            async def finished() -> dict[str, Any] | None:
                op = (await get_status(session, second))["operation"]
                return op if op["state"] != "running" else None

            op = await wait_for(finished, timeout_s=20)
        assert op["state"] == "succeeded", op
        assert sorted(p.name for p in models_root.iterdir()) == [".hotswap", "v1"]
        assert folder_digest(models_root / "v1") == folder_digest(src)
    finally:
        second.stop()
