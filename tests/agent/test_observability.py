"""The agent's request ids, access log format setting and metrics without *_created series."""

from __future__ import annotations

import re

import pytest
from hotswap_agent.settings import load_settings

from tests.agent.agent_fakes import AUTH, ClientFactory


async def test_request_id_echoed_on_every_answer(agent_client: ClientFactory) -> None:
    client = await agent_client()
    ok = await client.get("/v1/status", headers={**AUTH, "X-Request-Id": "op-7"})
    assert ok.status == 200 and ok.headers["X-Request-Id"] == "op-7"
    refused = await client.get("/v1/status", headers={"X-Request-Id": "op-8"})
    assert refused.status == 401 and refused.headers["X-Request-Id"] == "op-8"
    metrics = await (await client.get("/metrics")).text()
    assert "_created" not in metrics


@pytest.mark.parametrize(
    "value", ["x" * 129, "a b", "caf\u00e9", "", "a\tb"], ids=["129", "space", "latin1", "empty", "tab"]
)
async def test_hostile_request_ids_are_replaced(agent_client: ClientFactory, value: str) -> None:
    """An X-Request-Id the logs cannot carry as it is gets a fresh id; the call itself is answered."""
    client = await agent_client()
    resp = await client.get("/v1/status", headers={**AUTH, "X-Request-Id": value})
    assert resp.status == 200
    echoed = resp.headers["X-Request-Id"]
    assert echoed != value and re.fullmatch(r"[0-9a-f]{16,64}", echoed), echoed


def test_log_format_setting(token_files) -> None:  # type: ignore[no-untyped-def]
    agent, admin = token_files
    base = ["--token-file", str(agent), "--server-admin-token-file", str(admin)]
    assert load_settings(base, environ={}).log_format == "text"
    assert load_settings([*base, "--log-format", "json"], environ={}).log_format == "json"
    assert load_settings(base, environ={"HOTSWAP_AGENT_LOG_FORMAT": "json"}).log_format == "json"
