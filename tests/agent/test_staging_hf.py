"""Staging from hf://org/name@revision through huggingface_hub against a fake hub endpoint on loopback.

There is no hub here: ``agent_fakes.make_hub_app`` answers the four requests huggingface_hub makes
(repo info, tree, resolve HEAD and GET), so this proves the wiring (endpoint, revision, the
``.cache`` bookkeeping kept out of the version), not compatibility with the real hub.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web
from hotswap_contract.digest import folder_digest

from tests.agent.agent_fakes import AUTH, ClientFactory, make_hub_app, run_op, write_model


@pytest.fixture
async def hub(sources_root: Path) -> AsyncIterator[str]:
    repo = write_model(sources_root / "hub" / "reranker", "hub-model", size=100_000)
    runner = web.AppRunner(make_hub_app({"acme/reranker": repo}), shutdown_timeout=0.2)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    await runner.cleanup()


async def test_snapshot(agent_client: ClientFactory, hub: str, sources_root: Path, models_root: Path) -> None:
    client = await agent_client(allow=("hf://acme/",), environ={"HF_ENDPOINT": hub})  # as a mirror is set
    expected = folder_digest(sources_root / "hub" / "reranker")
    op = await run_op(
        client, "stage", {"version": "v1", "uri": "hf://acme/reranker@main", "sha256": expected}
    )
    assert op["state"] == "succeeded", op
    assert op["progress"]["bytesTotal"] == op["progress"]["bytesDone"] == op["result"]["bytes"]
    assert not (models_root / "v1" / ".cache").exists()
    assert folder_digest(models_root / "v1") == expected


async def test_missing_repo_and_refusals(agent_client: ClientFactory, hub: str, models_root: Path) -> None:
    client = await agent_client("--hf-endpoint", hub, allow=("hf://acme/",))
    op = await run_op(client, "stage", {"version": "v1", "uri": "hf://acme/nothing@main"})
    assert (op["state"], op["errorType"], op["sourceFault"]) == ("failed", "source_unavailable", "gone")
    resp = await client.post("/v1/stage", json={"version": "v1", "uri": "hf://other/reranker@main"},
                             headers=AUTH)  # fmt: skip
    assert resp.status == 403
    assert [p.name for p in models_root.iterdir()] == [".hotswap"]
