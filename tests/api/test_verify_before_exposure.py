"""Verify before exposure and the quality gate's scores, with real server and agent processes.

The server boots v1 through the agent; clients score without pause the whole time. A version that
ranks backwards (tiny-xlmr-inverted, staged as v3) fails its canary on the staged weights with
``canary_failed`` and the gate with ``quality_failed``: it never answers a single request. A good
version (tiny-xlmr-v2) passes both before it is activated.
"""

from __future__ import annotations

import asyncio
import json
import shutil
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from hotswap_contract.agent import EvaluateResult
from hotswap_contract.digest import folder_digest

from devtools.testmodels import CANARY
from tests.agent.agent_fakes import ADMIN_TOKEN, AUTH, AgentProcess, wait_for
from tests.agent.test_with_server import Load, ServerProcess, agent_status, server_available

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not server_available(), reason="hotswap_server.cli or devtools.testmodels missing"),
]

# CANARY as a labelled set: document 1 is the relevant one.
LABELLED = {"query": CANARY["query"], "documents": CANARY["documents"], "relevance": [0, 2, 0]}


async def run(session: aiohttp.ClientSession, agent: AgentProcess, kind: str, body: dict[str, Any]) -> dict:
    """POST an operation and wait for it to finish; the finished operation (succeeded or failed)."""
    async with session.post(f"{agent.url}/v1/{kind}", json=body, headers=AUTH) as resp:
        assert resp.status in (200, 202), await resp.text()
        op_id = (await resp.json())["operation"]["id"]

    async def finished() -> dict | None:
        op = (await agent_status(session, agent))["operation"]
        return op if op["id"] == op_id and op["state"] != "running" else None

    op: dict = await wait_for(finished, timeout_s=120, interval_s=0.05)
    return op


async def test_a_bad_version_is_caught_on_its_staged_weights(testmodels_dir: Path, tmp_path: Path) -> None:
    sources, models_root = tmp_path / "sources", tmp_path / "models"
    models_root.mkdir()
    for name, version in (("tiny-xlmr-v1", "v1"), ("tiny-xlmr-v2", "v2"), ("tiny-xlmr-inverted", "v3")):
        shutil.copytree(testmodels_dir / name, sources / version)
    admin_token, agent_token = tmp_path / "admin-token", tmp_path / "agent-token"
    admin_token.write_text(ADMIN_TOKEN)
    agent_token.write_text(AUTH["Authorization"].removeprefix("Bearer "))
    boot_file = tmp_path / "boot.json"
    boot_file.write_text(json.dumps({"version": "v1", "source": {"uri": (sources / "v1").as_uri()}}))
    server = ServerProcess(models_root, admin_token, tmp_path / "server.log")
    agent = AgentProcess(
        ["--token-file", str(agent_token), "--server-admin-token-file", str(admin_token),
         "--models-root", str(models_root), "--server-url", server.url, "--server-admin-url", server.admin_url,
         "--allow", sources.as_uri() + "/", "--boot-file", str(boot_file), "--boot-backoff-max", "1"],
        tmp_path / "agent.log",
    )  # fmt: skip
    try:
        await asyncio.gather(server.start(), agent.start())
        async with aiohttp.ClientSession() as session:

            async def booted() -> bool:
                return bool((await agent_status(session, agent))["boot"]["state"] == "done")

            await wait_for(booted, timeout_s=120, interval_s=0.1)
            async with Load.running(server.url) as load:
                # v3 ranks backwards: staged, its canary fails on the staged weights, then the gate.
                for version in ("v3", "v2"):
                    uri = (sources / version).as_uri()
                    digest = folder_digest(sources / version)
                    op = await run(
                        session, agent, "stage", {"version": version, "uri": uri, "sha256": digest}
                    )
                    assert op["state"] == "succeeded", op
                    assert (await run(session, agent, "preload", {"version": version}))[
                        "state"
                    ] == "succeeded"
                verify = {"canary": [CANARY], "staged": True, "expectVersion": "v2"}
                # v2 is staged now (preloading it discarded v3): it passes
                op = await run(session, agent, "verify", verify)
                assert op["state"] == "succeeded", op
                assert op["result"]["target"] == "staged" and op["result"]["canaries"][0]["top"] == 1
                op = await run(
                    session, agent, "evaluate", {"version": "v2", "set": [LABELLED], "k": 3, "maxDrop": 0.5}
                )
                result = EvaluateResult.model_validate(op["result"])
                assert op["state"] == "succeeded" and result.passed
                assert result.baseline is not None and result.baseline.version == "v1"
                assert result.baseline.score == pytest.approx(
                    1.0
                ) and result.candidate.score == pytest.approx(1.0)

                # v3 again: preloaded, verified staged -> canary_failed (the version's fault)
                assert (await run(session, agent, "preload", {"version": "v3"}))["state"] == "succeeded"
                op = await run(session, agent, "verify", {**verify, "expectVersion": "v3"})
                assert (op["state"], op["errorType"]) == ("failed", "canary_failed"), op
                assert op["result"]["canaries"][0]["top"] != 1 and "ranked first, expected 1" in op["error"]
                op = await run(
                    session, agent, "evaluate", {"version": "v3", "set": [LABELLED], "k": 3, "maxDrop": 0.1}
                )
                assert (op["state"], op["errorType"]) == ("failed", "quality_failed"), op
                result = EvaluateResult.model_validate(op["result"])
                # inverted: the relevant document ranks last of 3 -> nDCG@3 = 1 / log2(4)
                assert result.candidate.score == pytest.approx(0.5) and result.baseline is not None
                assert result.baseline.score == pytest.approx(1.0) and result.delta == pytest.approx(-0.5)
                # nothing staged under that name any more: a pod fault (not_staged), not the version's
                op = await run(session, agent, "verify", {**verify, "expectVersion": "v9"})
                assert (op["state"], op["errorType"]) == ("failed", "not_staged"), op
                status = await agent_status(session, agent)
                assert status["active"]["version"] == "v1"
                assert status["lastVerify"]["target"] == "staged"
            assert not load.errors, load.errors[:5]
            versions = {version for _, _, _, version in load.replies}
            assert versions == {"v1"}, versions  # the bad version answered 0 requests
            assert len(load.replies) > 20
    finally:
        agent.stop()
        server.stop()
