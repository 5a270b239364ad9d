"""The control API against a fake server: auth, one operation at a time, each operation's outcome."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient
from hotswap_agent.app import AGENT
from hotswap_contract.digest import folder_digest

from tests.agent.agent_fakes import (
    AGENT_TOKEN,
    AUTH,
    ClientFactory,
    FakeServer,
    run_op,
    status_of,
    wait_for,
    write_model,
)

CANARY = [
    {"query": "capital of france", "documents": ["bananas", "paris is the capital of france"], "expectTop": 1}
]


async def ready(client: TestClient, sources_root: Path, *versions: str, activate: bool = True) -> None:
    """Stage each version and, unless told otherwise, preload and activate it."""
    for v in versions:
        src = write_model(sources_root / v, v)
        assert (await run_op(client, "stage", {"version": v, "uri": src.as_uri()}))["state"] == "succeeded"
        if activate:
            assert (await run_op(client, "preload", {"version": v}))["state"] == "succeeded"
            assert (await run_op(client, "activate", {"version": v}))["state"] == "succeeded"


async def test_health_and_metrics_need_no_token(agent_client: ClientFactory) -> None:
    client = await agent_client()
    assert (await client.get("/healthz")).status == 200
    resp = await client.get("/metrics")
    text = await resp.text()
    assert resp.status == 200 and resp.content_type == "text/plain"
    assert (
        "# TYPE hotswap_agent_operations_total counter" in text and "hotswap_agent_server_reachable" in text
    )


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer wrong"}, {"Authorization": AGENT_TOKEN}, {"Authorization": f"Basic {AGENT_TOKEN}"},
     {"Authorization": f"Bearer {AGENT_TOKEN}-and-more"}, {"Authorization": f"Bearer {AGENT_TOKEN[:-1]}"},
     {"X-Token": AGENT_TOKEN}],
)  # fmt: skip
async def test_auth_refuses_and_changes_nothing(
    agent_client: ClientFactory, sources_root: Path, models_root: Path, fake_server: FakeServer, headers: dict
) -> None:
    client = await agent_client()
    src = write_model(sources_root / "v1", "one")
    requests = [
        ("get", "/v1/status", None),
        ("post", "/v1/stage", {"version": "v1", "uri": src.as_uri()}),
        ("post", "/v1/preload", {"version": "v1"}),
        ("post", "/v1/activate", {"version": "v1"}),
        ("post", "/v1/rollback", {"version": "v1"}),
        ("post", "/v1/verify", {"canary": []}),
        ("get", "/v1/nowhere", None),
    ]
    for method, path, body in requests:
        resp = await client.request(method, path, json=body, headers=headers)
        assert resp.status == 401, (path, resp.status)
        assert (await resp.json())["error_type"] == "unauthorized"
        assert resp.headers["WWW-Authenticate"] == "Bearer"
    assert [p.name for p in models_root.iterdir()] == [".hotswap"]
    assert fake_server.calls == []
    assert (await status_of(client))["operation"] is None


async def test_full_cycle_and_status_shape(
    agent_client: ClientFactory, sources_root: Path, fake_server: FakeServer
) -> None:
    client = await agent_client()
    await ready(client, sources_root, "v1", "v2")
    assert [c[0] for c in fake_server.calls] == ["preload", "activate", "preload", "activate"]
    assert fake_server.calls[0][1] == {
        "version": "v1",
        "path": "v1",
        "digest": folder_digest(sources_root / "v1"),
    }
    op = await run_op(client, "verify", {"canary": CANARY})
    assert op["state"] == "succeeded" and op["version"] == "v2"
    report = op["result"]["canaries"][0]
    assert report["ok"] and report["top"] == 1 and report["version"] == "v2" and len(report["scores"]) == 2
    status = await status_of(client)
    assert set(status) >= {"pod", "active", "previous", "staged", "onDisk", "operation", "lastError", "server",
                           "lastActivation", "history", "boot"}  # fmt: skip
    assert status["pod"] == "pod-a"
    assert status["active"] == {"version": "v2", "digest": folder_digest(sources_root / "v2")}
    assert status["previous"] == {"version": "v1", "digest": folder_digest(sources_root / "v1")}
    assert status["staged"] is None
    assert set(status["operation"]) >= {"id", "kind", "version", "state", "progress", "error", "startedAt",
                                        "finishedAt"}  # fmt: skip
    assert status["server"]["reachable"] is True and status["server"]["state"]["active"]["version"] == "v2"
    assert status["lastActivation"]["version"] == "v2" and status["lastActivation"]["fromVersion"] == "v1"
    kinds = [(h["kind"], h["version"]) for h in status["history"]]
    assert kinds[-3:] == [("preload", "v2"), ("activate", "v2"), ("verify", "v2")]
    metrics = await (await client.get("/metrics")).text()
    assert 'hotswap_agent_operations_total{kind="activate",result="succeeded"} 2.0' in metrics
    assert (
        "hotswap_agent_versions_on_disk 2.0" in metrics and "hotswap_agent_operation_running 0.0" in metrics
    )
    times = [(h["startedAt"], h["finishedAt"]) for h in status["history"]]
    assert all(a <= b for a, b in times) and [t[0] for t in times] == sorted(t[0] for t in times)
    # Where each operation spent its time, step by step (the rollout benchmark's phase columns).
    stages = [h for h in status["history"] if h["kind"] == "stage"]
    assert stages and {"downloading", "digest", "publishing"} <= set(stages[-1]["stepSeconds"])
    assert all(v >= 0 for h in status["history"] for v in h["stepSeconds"].values())
    assert "done" not in stages[-1]["stepSeconds"]


async def test_running_operation_is_returned_and_others_conflict(
    agent_client: ClientFactory, sources_root: Path, fake_server: FakeServer
) -> None:
    client = await agent_client()
    await ready(client, sources_root, "v1", activate=False)
    fake_server.preload_delay_s = 0.5
    first = await client.post("/v1/preload", json={"version": "v1"}, headers=AUTH)
    assert first.status == 202
    op = (await first.json())["operation"]
    assert op["state"] == "running" and op["kind"] == "preload"
    again = await client.post("/v1/preload", json={"version": "v1"}, headers=AUTH)
    assert again.status == 202 and (await again.json())["operation"]["id"] == op["id"]
    for path, body in [("/v1/activate", {"version": "v1"}), ("/v1/stage", {"version": "v2", "uri": "file:///x"}),
                       ("/v1/verify", {"canary": []})]:  # fmt: skip
        resp = await client.post(path, json=body, headers=AUTH)
        if path == "/v1/stage":
            assert resp.status == 403  # input is checked before the conflict: nothing to wait for
            continue
        assert resp.status == 409
        err = await resp.json()
        assert err["error_type"] == "operation_in_progress" and err["operation"]["id"] == op["id"]

    async def done() -> bool:
        return (await status_of(client))["operation"]["state"] == "succeeded"

    await wait_for(done)
    assert [c[0] for c in fake_server.calls] == ["preload"]  # the repeat did not preload twice


async def test_finished_operations_repeat_idempotently(
    agent_client: ClientFactory, sources_root: Path, fake_server: FakeServer
) -> None:
    client = await agent_client()
    await ready(client, sources_root, "v1")
    latest = (await status_of(client))["operation"]
    resp = await client.post("/v1/activate", json={"version": "v1"}, headers=AUTH)
    assert resp.status == 200 and (await resp.json())["operation"]["id"] == latest["id"]
    assert [c[0] for c in fake_server.calls] == ["preload", "activate"]
    # preload of the active version, activate of the active version: no-ops that touch nothing
    op = await run_op(client, "preload", {"version": "v1"})
    assert op["result"]["noop"] is True
    fake_server.active = None  # the server lost its model (restarted): a repeat is not stale
    op = await run_op(client, "activate", {"version": "v1"})
    assert (op["state"], op["errorType"]) == ("failed", "not_staged")


async def test_preload_and_activate_errors(
    agent_client: ClientFactory, sources_root: Path, models_root: Path, fake_server: FakeServer
) -> None:
    client = await agent_client()
    resp = await client.post("/v1/preload", json={"version": "v7"}, headers=AUTH)
    assert resp.status == 404 and (await resp.json())["error_type"] == "not_on_disk"
    resp = await client.post("/v1/rollback", json={"version": "v7"}, headers=AUTH)
    assert resp.status == 404
    await ready(client, sources_root, "v1", activate=False)
    op = await run_op(client, "activate", {"version": "v1"})  # never an implicit load
    assert (op["state"], op["errorType"]) == ("failed", "not_staged")
    assert fake_server.calls == []
    (models_root / "v1" / "config.json").write_text("tampered")  # the server re-checks the digest
    op = await run_op(client, "preload", {"version": "v1"})
    assert (op["state"], op["errorType"]) == ("failed", "digest_mismatch")
    assert "server refused preload (422)" in op["error"]


async def test_rollback_uses_previous_or_preloads(
    agent_client: ClientFactory, sources_root: Path, fake_server: FakeServer
) -> None:
    client = await agent_client()
    await ready(client, sources_root, "v1", "v2", "v3")
    fake_server.calls.clear()
    op = await run_op(client, "rollback", {"version": "v2"})  # v2 is the server's previous
    assert op["state"] == "succeeded" and op["result"]["via"] == "rollback"
    assert [c[0] for c in fake_server.calls] == ["rollback"]
    fake_server.calls.clear()
    op = await run_op(client, "rollback", {"version": "v1"})  # only on disk: preload + activate
    assert op["state"] == "succeeded" and op["result"]["via"] == "preload+activate"
    assert [c[0] for c in fake_server.calls] == ["preload", "activate"]
    assert fake_server.active["version"] == "v1"
    status = await status_of(client)
    assert status["lastActivation"]["version"] == "v1" and status["lastActivation"]["kind"] == "rollback"
    resp = await client.post("/v1/rollback", json={"version": "v1"}, headers=AUTH)  # a repeat: same result
    assert resp.status == 200 and (await resp.json())["operation"]["id"] == op["id"]
    await run_op(client, "verify", {"canary": []})
    op = await run_op(client, "rollback", {"version": "v1"})  # asked anew: already there, nothing to do
    assert op["result"]["noop"] is True and [c[0] for c in fake_server.calls] == ["preload", "activate"]


async def test_verify_failures_are_reported(
    agent_client: ClientFactory, sources_root: Path, fake_server: FakeServer
) -> None:
    client = await agent_client()
    op = await run_op(client, "verify", {"canary": CANARY})
    assert (op["state"], op["errorType"]) == ("failed", "verify_failed")  # nothing active
    await ready(client, sources_root, "v1")
    wrong_top = [{**CANARY[0], "expectTop": 0}]
    op = await run_op(client, "verify", {"canary": wrong_top})
    assert op["state"] == "failed" and "ranked first, expected 0" in op["error"]
    assert op["result"]["canaries"][0]["scores"][1] > op["result"]["canaries"][0]["scores"][0]
    op = await run_op(client, "verify", {"canary": CANARY, "expectVersion": "v2"})
    assert op["state"] == "failed" and "scored by version 'v1', expected 'v2'" in op["error"]
    fake_server.header_override = "v0"
    op = await run_op(client, "verify", {"canary": []})  # the built-in probe still checks the header
    assert op["state"] == "failed" and "'v0'" in op["error"]
    fake_server.header_override, fake_server.nan_scores = None, True
    op = await run_op(client, "verify", {"canary": CANARY})
    assert op["state"] == "failed" and "not a finite number" in op["error"]
    fake_server.nan_scores = False
    op = await run_op(client, "verify", {"canary": CANARY})
    assert op["state"] == "succeeded"
    bad = await client.post("/v1/verify", json={"canary": [{"query": "q", "documents": [], "expectTop": 0}]},
                            headers=AUTH)  # fmt: skip
    assert bad.status == 400


async def test_server_unreachable(
    agent_client: ClientFactory, sources_root: Path, fake_server: FakeServer
) -> None:
    client = await agent_client()
    await ready(client, sources_root, "v1", activate=False)
    await fake_server.stop()
    status = await status_of(client)
    assert status["server"]["reachable"] is False and "unreachable" in status["server"]["error"]
    op = await run_op(client, "preload", {"version": "v1"})
    assert (op["state"], op["errorType"]) == ("failed", "server_unavailable")


async def test_unknown_route_is_json_404(agent_client: ClientFactory) -> None:
    client = await agent_client()
    resp = await client.get("/v1/nowhere", headers=AUTH)
    assert resp.status == 404 and (await resp.json())["error_type"] == "not_found"
    resp = await client.get("/v1/stage", headers=AUTH)
    assert resp.status == 405


async def test_shutdown_cancels_a_running_operation(
    agent_client: ClientFactory, sources_root: Path, fake_server: FakeServer
) -> None:
    client = await agent_client()
    await ready(client, sources_root, "v1", activate=False)
    fake_server.preload_delay_s = 5
    assert (await client.post("/v1/preload", json={"version": "v1"}, headers=AUTH)).status == 202
    agent = client.server.app[AGENT]
    await asyncio.wait_for(client.close(), timeout=5)
    assert agent.ops.latest is not None
    assert (agent.ops.latest.state, agent.ops.latest.error_type) == ("failed", "cancelled")
