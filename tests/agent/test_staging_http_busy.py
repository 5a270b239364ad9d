"""A throttled http source (429 / 503) is asked again after its Retry-After, a few times, before
the stage fails with ``source_unavailable`` (which the operator retries with its own backoff)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web
from hotswap_agent.http_source import BUSY_RETRIES, retry_after
from hotswap_agent.manifest import build_manifest

from tests.agent.agent_fakes import ClientFactory, run_op, write_model


@pytest.fixture
async def busy_source(tmp_path: Path) -> AsyncIterator[tuple[str, dict[str, int]]]:
    src = write_model(tmp_path / "www" / "v1", "one", size=20_000)
    (src / "manifest.json").write_text(json.dumps(build_manifest(src)))
    hits: dict[str, int] = {}

    async def serve(request: web.Request) -> web.StreamResponse:
        mode, name = request.match_info["mode"], request.match_info["name"]
        hits[mode] = hits.get(mode, 0) + 1
        if mode == "throttled" and hits[mode] <= 2:
            return web.Response(status=429, headers={"Retry-After": "0"})
        if mode == "down":
            return web.Response(status=503)
        return web.FileResponse(src / name)

    app = web.Application()
    app.router.add_get("/{mode}/v1/{name:.*}", serve)
    runner = web.AppRunner(app, shutdown_timeout=0.2)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    yield f"http://127.0.0.1:{runner.addresses[0][1]}", hits
    await runner.cleanup()


async def test_a_throttled_source_is_asked_again(
    agent_client: ClientFactory, busy_source: tuple[str, dict[str, int]]
) -> None:
    base, hits = busy_source
    client = await agent_client(allow=(base + "/",))
    op = await run_op(client, "stage", {"version": "v1", "uri": f"{base}/throttled/v1/"})
    assert op["state"] == "succeeded", (op["error"], op["errorType"])
    op = await run_op(client, "stage", {"version": "v2", "uri": f"{base}/down/v1/"})
    assert (op["state"], op["errorType"]) == ("failed", "source_unavailable") and "503" in op["error"]
    assert op["sourceFault"] == "transient"  # the operator tries again later, with its own backoff
    assert hits["down"] == 1 + BUSY_RETRIES


def test_retry_after() -> None:
    assert retry_after("2", 0) == 2.0 and retry_after("600", 0) == 10.0
    assert retry_after(None, 0) == 0.5 and retry_after(None, 2) == 2.0
    assert retry_after("Wed, 21 Oct 2015 07:28:00 GMT", 1) == 1.0
