"""The operator's agent client against a scripted session: URLs (IPv6 too), retries, deadlines."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hotswap_operator.agent_client import AgentClient, AgentRejected, Deadline, OperationFailed, TokenSource


class Reply:
    def __init__(self, status: int, body: Any) -> None:
        self.status = status
        self.body = body

    async def __aenter__(self) -> Reply:
        return self

    async def __aexit__(self, *exc: object) -> None:
        return None

    async def json(self, content_type: str | None = None) -> Any:
        return self.body

    async def text(self) -> str:
        return self.body if isinstance(self.body, str) else json.dumps(self.body)


class Session:
    """Answers each request from a script (by method and path); records the URLs asked for."""

    def __init__(self, script: dict[str, list[Reply]]) -> None:
        self.script = script
        self.urls: list[str] = []

    def _answer(self, method: str, url: str) -> Reply:
        self.urls.append(url)
        path = "/" + url.split("/", 3)[3]
        replies = self.script[f"{method} {path}"]
        return replies.pop(0) if len(replies) > 1 else replies[0]

    def request(self, method: str, url: str, **_: Any) -> Reply:
        return self._answer(method, url)

    def get(self, url: str, **_: Any) -> Reply:
        return self._answer("GET", url)


def client(session: Session, tmp_path: Path, **kw: Any) -> AgentClient:
    token = tmp_path / "token"
    token.write_text("t" * 20)
    return AgentClient(session, TokenSource(token), **kw)  # type: ignore[arg-type]


METRICS = 'hotswap_requests_total{route="/v1/rerank",code="200"} 7\n'


async def test_every_url_keeps_ipv6_brackets(tmp_path: Path) -> None:
    session = Session({"GET /metrics": [Reply(200, METRICS)], "GET /v1/status": [Reply(200, {})]})
    agents = client(session, tmp_path, port=9090, server_port=8080)
    assert await agents.server_metrics("fd00::7") == (7.0, 0.0)
    await agents.status("fd00::7")
    await agents.server_metrics("10.0.0.7")
    assert session.urls == [
        "http://[fd00::7]:8080/metrics",
        "http://[fd00::7]:9090/v1/status",
        "http://10.0.0.7:8080/metrics",
    ]


def op(state: str, **extra: Any) -> dict[str, Any]:
    return {"id": "op-1", "kind": "activate", "version": "v2", "state": state, **extra}


async def test_a_busy_agent_is_retried_then_the_operation_is_followed_to_its_end(tmp_path: Path) -> None:
    busy = Reply(409, {"error": "busy", "error_type": "operation_in_progress"})
    session = Session(
        {
            "POST /v1/activate": [busy, Reply(503, {"error": "starting"}), Reply(202, op("running"))],
            "GET /v1/status": [Reply(200, {"operation": op("succeeded", result={"mode": "inplace"})})],
        }
    )
    result = await client(session, tmp_path).run("10.0.0.1", "activate", {"version": "v2"}, timeout=10)
    assert result == {"mode": "inplace"}
    assert [u.rsplit("/", 1)[1] for u in session.urls] == ["activate", "activate", "activate", "status"]


async def test_a_refusal_is_final_and_a_lasting_outage_ends_at_the_deadline(tmp_path: Path) -> None:
    refused = Session({"POST /v1/activate": [Reply(400, {"error": "bad version", "error_type": "invalid"})]})
    with pytest.raises(AgentRejected, match="bad version"):
        await client(refused, tmp_path).run("10.0.0.1", "activate", {"version": "v2"}, timeout=10)
    assert len(refused.urls) == 1

    down = Session({"POST /v1/activate": [Reply(502, {"error": "down"})]})
    with pytest.raises(Deadline, match=r"activate did not finish within 0s: POST /v1/activate: 502 down"):
        await client(down, tmp_path).run("10.0.0.1", "activate", {"version": "v2"}, timeout=0.35)
    assert 2 <= len(down.urls) <= 3  # tries at 0, 0.1, 0.3s; a 0.4s wait would pass the deadline


@pytest.mark.parametrize("where", ["operation", "history"])
async def test_a_failed_operation_keeps_the_agents_error_type_and_source_fault(
    tmp_path: Path, where: str
) -> None:
    failed = {**op("failed"), "kind": "stage", "error": "GET http://r/v2 answered 502", "errorType":
              "source_unavailable", "sourceFault": "transient"}  # fmt: skip
    # Found as the current operation, or in history once another operation has started since.
    status = {"operation": failed} if where == "operation" else {"operation": {**op("running"), "id": "op-2"},
                                                                  "history": [failed]}  # fmt: skip
    session = Session({"POST /v1/stage": [Reply(202, op("running"))], "GET /v1/status": [Reply(200, status)]})
    with pytest.raises(OperationFailed) as caught:
        await client(session, tmp_path).run("10.0.0.1", "stage", {"version": "v2"}, timeout=10)
    assert (caught.value.error_type, caught.value.source_fault) == ("source_unavailable", "transient")
    assert caught.value.message == "GET http://r/v2 answered 502"
