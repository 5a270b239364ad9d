"""Cold start with and without the model cache: a real server and agent, the real MiniLM model.

A pod's cold start is measured three times, each with a fresh models volume (a new pod) and new
server and agent processes booting ``minilm-v1`` from a bandwidth-limited loopback http source
(a tarball, ``HOTSWAP_COLDSTART_MBPS`` MB/s, 50 by default, about an S3 or hub download):

1. no cache;
2. the cache enabled but empty (the first pod: it downloads and publishes);
3. the cache warm (a restarted or added pod: it copies, no download).

Figures: ``stage`` is the boot operation's stage step, from the agent's own log (the boot
operation starts once the server's admin plane answers; the stage ends when the version is on the
models volume: download + extract + digest, or copy + digest); ``ready`` is from the processes'
start until the server's /readyz answers 200 (server start with torch, stage, load, activate). The
cache sits on another file system than the models volumes (/dev/shm when there is one), so a hit
is a copy, as between two Kubernetes volumes, not a hard link. It runs in the suite (about two
minutes: three server starts) and asserts the downloads (1, 1, 0) and that a warm cache stages
faster; ``-s`` prints the figures; docs/operations.md ("Model cache") quotes a run.
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import re
import shutil
import tarfile
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from hotswap_contract.digest import folder_digest

from tests.agent.agent_fakes import ADMIN_TOKEN, AUTH, AgentProcess, wait_for
from tests.agent.test_with_server import ServerProcess, server_available

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not server_available(), reason="hotswap_server.cli or devtools.testmodels is missing"),
]

MODEL = "minilm-v1"
MBPS = float(os.environ.get("HOTSWAP_COLDSTART_MBPS", "50"))


@pytest.fixture
async def slow_source(testmodels_dir: Path) -> AsyncIterator[tuple[str, Counter[str], str]]:
    """(url of the tarball, download counter, digest) served at MBPS megabytes a second."""
    src = testmodels_dir / MODEL
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for p in sorted(src.iterdir()):
            tar.add(p, arcname=f"{MODEL}/{p.name}")
    data = buf.getvalue()
    hits: Counter[str] = Counter()
    chunk = 1 << 20

    async def serve(request: web.Request) -> web.StreamResponse:
        hits[request.path] += 1
        resp = web.StreamResponse(headers={"Content-Length": str(len(data))})
        await resp.prepare(request)
        started = time.monotonic()
        for i in range(0, len(data), chunk):
            await resp.write(data[i : i + chunk])
            ahead = (i + chunk) / (MBPS * 1e6) - (time.monotonic() - started)
            if ahead > 0:
                await asyncio.sleep(ahead)
        await resp.write_eof()
        return resp

    app = web.Application()
    app.router.add_get(f"/models/{MODEL}.tar", serve)
    runner = web.AppRunner(app, shutdown_timeout=0.2)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    yield f"http://127.0.0.1:{runner.addresses[0][1]}/models/{MODEL}.tar", hits, folder_digest(src)
    await runner.cleanup()


async def cold_start(tmp: Path, uri: str, digest: str, cache_dir: Path | None) -> dict[str, float]:
    """One pod's boot: fresh models volume, server and agent started together; seconds."""
    tmp.mkdir(parents=True)
    models = tmp / "models"
    models.mkdir()
    admin_token, agent_token = tmp / "admin-token", tmp / "agent-token"
    admin_token.write_text(ADMIN_TOKEN)
    agent_token.write_text(AUTH["Authorization"].removeprefix("Bearer "))
    boot = tmp / "boot.json"
    boot.write_text(json.dumps({"version": "v1", "source": {"uri": uri, "sha256": digest}}))
    server = ServerProcess(models, admin_token, tmp / "server.log")
    args = ["--token-file", str(agent_token), "--server-admin-token-file", str(admin_token),
            "--models-root", str(models), "--server-url", server.url, "--server-admin-url", server.admin_url,
            "--allow", uri.rsplit("/", 1)[0] + "/", "--boot-file", str(boot), "--boot-backoff-initial", "0.2",
            "--boot-backoff-max", "0.5"]  # fmt: skip
    if cache_dir is not None:
        args += ["--cache-dir", str(cache_dir), "--cache-max-bytes", "1Gi"]
    agent = AgentProcess(args, tmp / "agent.log")
    started = time.monotonic()
    marks: dict[str, float] = {}
    try:
        server.spawn()
        agent.spawn()
        async with aiohttp.ClientSession() as session:

            async def progress() -> bool:
                if "stage" not in marks and (models / "v1").is_dir():
                    marks["stage"] = time.monotonic() - started
                try:
                    async with session.get(f"{server.url}/readyz") as resp:
                        if resp.status == 200:
                            marks["ready"] = time.monotonic() - started
                            return True
                except aiohttp.ClientError:
                    pass
                for proc, log in ((server.proc, server.log_path), (agent.proc, agent.log_path)):
                    if proc.poll() is not None:
                        raise AssertionError(f"exited: {log.read_text()[-3000:]}")
                return False

            await wait_for(progress, timeout_s=300, interval_s=0.02)
            async with session.get(f"{agent.url}/v1/status", headers=AUTH) as resp:
                status = await resp.json()
        assert status["active"] == {"version": "v1", "digest": digest}
        log = agent.log_path.read_text()
        begun = re.search(
            r"^(\S+ \S+) INFO hotswap_agent.operations: operation \w+ started: boot v1", log, re.M
        )
        staged = re.search(r"^(\S+ \S+) INFO hotswap_agent.staging: staged v1 ", log, re.M)
        assert begun and staged, log[-3000:]
        at = [datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S,%f") for m in (begun, staged)]
        return {"stage": (at[1] - at[0]).total_seconds(), "ready": marks["ready"]}
    finally:
        agent.stop()
        server.stop()


async def test_cold_start_with_and_without_the_cache(
    slow_source: tuple[str, Counter[str], str], tmp_path: Path
) -> None:
    uri, hits, digest = slow_source
    shm = Path("/dev/shm")
    cache = Path(tempfile.mkdtemp(dir=shm)) / "cache" if shm.is_dir() else tmp_path / "cache"
    runs: dict[str, dict[str, float]] = {}
    try:
        runs["no cache"] = await cold_start(tmp_path / "pod-0", uri, digest, None)
        assert sum(hits.values()) == 1
        runs["cache, empty"] = await cold_start(tmp_path / "pod-1", uri, digest, cache)
        assert sum(hits.values()) == 2 and (cache / f"sha256-{digest}").is_dir()
        runs["cache, warm"] = await cold_start(tmp_path / "pod-2", uri, digest, cache)
        assert sum(hits.values()) == 2  # the restarted pod did not download
        size = sum(p.stat().st_size for p in (cache / f"sha256-{digest}").rglob("*") if p.is_file())
        print(f"\n{MODEL}: {size / 1e6:.1f} MB, source at {MBPS:g} MB/s")
        for name, m in runs.items():
            print(f"{name:>13}: stage {m['stage']:.2f} s, ready {m['ready']:.2f} s")
        assert runs["cache, warm"]["stage"] < runs["cache, empty"]["stage"]
    finally:
        shutil.rmtree(cache.parent if cache.parent != tmp_path else cache, ignore_errors=True)
