"""Hostile input against the agent's API: each answered with its precise 4xx, no operation started,
and an innocent status read at the same moment still answered."""

from __future__ import annotations

import asyncio
import gzip
import json
from pathlib import Path
from typing import Any

import pytest

from tests.agent.agent_fakes import AGENT_TOKEN, AUTH, ClientFactory, FakeServer, status_of

JSON = {"Content-Type": "application/json"}
AUTH_JSON = {**AUTH, **JSON}
CANARY = {"query": "q", "documents": ["a", "b"]}
LABELLED = {"query": "q", "documents": ["a", "b"], "relevance": [1, 0]}


def body(value: Any) -> bytes:
    return json.dumps(value).encode()


def deep(n: int) -> bytes:
    return b"[" * n + b"]" * n


CASES: list[tuple[str, str, str, bytes | None, dict[str, str], int, str]] = [
    # (id, method, path, body, headers, status, error_type)
    ("no-token", "GET", "/v1/status", None, {}, 401, "unauthorized"),
    ("wrong-scheme", "POST", "/v1/preload", body({"version": "v1"}), {"Authorization": f"Token {AGENT_TOKEN}"}, 401, "unauthorized"),
    ("unknown-path-no-token", "GET", "/v1/nothing", None, {}, 401, "unauthorized"),
    ("unknown-path", "GET", "/v1/nothing", None, AUTH, 404, "not_found"),
    ("nul-in-url", "POST", "/v1/stage%00", b"{}", AUTH_JSON, 404, "not_found"),
    ("int-5000-digits", "POST", "/v1/preload", b'{"version": ' + b"9" * 5000 + b"}", AUTH_JSON, 400, "bad_request"),
    ("nested-10000", "POST", "/v1/activate", deep(10_000), AUTH_JSON, 400, "bad_request"),
    ("nested-objects-10000", "POST", "/v1/verify", b'{"a":' * 10_000 + b"1" + b"}" * 10_000, AUTH_JSON, 400, "bad_request"),
    ("nan", "POST", "/v1/verify", b'{"canary": [{"query": "q", "documents": ["a"], "expectTop": NaN}]}', AUTH_JSON, 400, "bad_request"),
    ("not-utf8", "POST", "/v1/preload", b'{"version": "\xff"}', AUTH_JSON, 400, "bad_request"),
    ("broken-gzip", "POST", "/v1/preload", body({"version": "v1"}), {**AUTH_JSON, "Content-Encoding": "gzip"}, 400, "bad_request"),
    ("gzip-bomb", "POST", "/v1/preload", gzip.compress(b" " * (4 << 20)), {**AUTH_JSON, "Content-Encoding": "gzip"}, 400, "bad_request"),
    ("over-1-mib", "POST", "/v1/verify", b'{"canary": [], "x": "' + b"a" * (1 << 20) + b'"}', AUTH_JSON, 400, "bad_request"),
    ("unknown-field", "POST", "/v1/activate", body({"version": "v1", "force": True}), AUTH_JSON, 400, "bad_request"),
    ("array-body", "POST", "/v1/activate", b"[]", AUTH_JSON, 400, "bad_request"),
    ("surrogate-in-uri", "POST", "/v1/stage", b'{"version": "v2", "uri": "file:///tmp/\\ud800"}', AUTH_JSON, 400, "bad_request"),
    ("surrogate-in-canary", "POST", "/v1/verify", b'{"canary": [{"query": "\\udc00", "documents": ["a"]}]}', AUTH_JSON, 400, "bad_request"),
    ("surrogate-in-key", "POST", "/v1/verify", b'{"\\ud800": 1}', AUTH_JSON, 400, "bad_request"),
    ("nul-in-uri", "POST", "/v1/stage", body({"version": "v2", "uri": "file:///tmp/v2\x00"}), AUTH_JSON, 422, "invalid_source"),
    ("uri-bad-port", "POST", "/v1/stage", body({"version": "v2", "uri": "http://h:99999/"}), AUTH_JSON, 422, "invalid_source"),
    ("uri-metadata", "POST", "/v1/stage", body({"version": "v2", "uri": "http://169.254.169.254/v2"}), AUTH_JSON, 403, "source_not_allowed"),
    ("sha256-number", "POST", "/v1/stage", body({"version": "v2", "uri": "file:///tmp/v2", "sha256": 5}), AUTH_JSON, 400, "bad_request"),
    ("version-trailing-newline-stage", "POST", "/v1/stage", body({"version": "v2\n", "uri": "file:///tmp/v2"}), AUTH_JSON, 422, "invalid_version"),
    ("version-trailing-newline-preload", "POST", "/v1/preload", body({"version": "v2\n"}), AUTH_JSON, 422, "invalid_version"),
    ("version-trailing-newline-activate", "POST", "/v1/activate", body({"version": "v2\n"}), AUTH_JSON, 422, "invalid_version"),
    ("version-trailing-newline-rollback", "POST", "/v1/rollback", body({"version": "v2\n"}), AUTH_JSON, 422, "invalid_version"),
    ("version-trailing-newline-verify", "POST", "/v1/verify", body({"canary": [], "expectVersion": "v2\n"}), AUTH_JSON, 422, "invalid_version"),
    ("version-trailing-newline-evaluate", "POST", "/v1/evaluate", body({"version": "v2\n", "set": [LABELLED]}), AUTH_JSON, 422, "invalid_version"),
    ("version-dot-dot", "POST", "/v1/preload", body({"version": ".."}), AUTH_JSON, 422, "invalid_version"),
    ("version-64-chars", "POST", "/v1/preload", body({"version": "a" * 64}), AUTH_JSON, 422, "invalid_version"),
    ("version-number", "POST", "/v1/preload", body({"version": 2}), AUTH_JSON, 422, "invalid_version"),
    ("verify-staged-not-bool", "POST", "/v1/verify", body({"canary": [], "staged": "yes"}), AUTH_JSON, 400, "bad_request"),
    ("verify-17-canaries", "POST", "/v1/verify", body({"canary": [CANARY] * 17}), AUTH_JSON, 400, "bad_request"),
    ("verify-expect-top-out-of-range", "POST", "/v1/verify", body({"canary": [{**CANARY, "expectTop": 2}]}), AUTH_JSON, 400, "bad_request"),
    ("evaluate-no-relevant-document", "POST", "/v1/evaluate", body({"version": "v2", "set": [{**LABELLED, "relevance": [0, 0]}]}), AUTH_JSON, 400, "bad_request"),
    ("evaluate-misaligned-relevance", "POST", "/v1/evaluate", body({"version": "v2", "set": [{**LABELLED, "relevance": [1]}]}), AUTH_JSON, 400, "bad_request"),
    ("evaluate-negative-relevance", "POST", "/v1/evaluate", body({"version": "v2", "set": [{**LABELLED, "relevance": [1, -1]}]}), AUTH_JSON, 400, "bad_request"),
    ("evaluate-empty-set", "POST", "/v1/evaluate", body({"version": "v2", "set": []}), AUTH_JSON, 400, "bad_request"),
    ("evaluate-unknown-metric", "POST", "/v1/evaluate", body({"version": "v2", "set": [LABELLED], "metric": "map"}), AUTH_JSON, 400, "bad_request"),
    ("evaluate-k-zero", "POST", "/v1/evaluate", body({"version": "v2", "set": [LABELLED], "k": 0}), AUTH_JSON, 400, "bad_request"),
    ("evaluate-unknown-field", "POST", "/v1/evaluate", body({"version": "v2", "set": [LABELLED], "gate": 1}), AUTH_JSON, 400, "bad_request"),
    ("preload-not-on-disk", "POST", "/v1/preload", body({"version": "v9"}), AUTH_JSON, 404, "not_on_disk"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("method", "path", "data", "headers", "status", "error_type"),
    [pytest.param(*case[1:], id=case[0]) for case in CASES],
)
async def test_agent_hostile(
    agent_client: ClientFactory, fake_server: FakeServer, method: str, path: str, data: bytes | None,
    headers: dict[str, str], status: int, error_type: str,
) -> None:  # fmt: skip
    client = await agent_client()

    async def hostile() -> tuple[int, Any, str]:
        resp = await client.request(method, path, data=data, headers=headers)
        return resp.status, resp.headers, await resp.text()

    (got, got_headers, text), innocent = await asyncio.gather(hostile(), status_of(client))
    assert got == status, text
    assert json.loads(text)["error_type"] == error_type
    if status == 401:
        assert got_headers["WWW-Authenticate"] == "Bearer"
    assert innocent["pod"] == "pod-a"
    assert (await status_of(client))["operation"] is None  # nothing started
    assert fake_server.calls == []


@pytest.mark.parametrize(
    ("method", "path", "allow"),
    [("GET", "/v1/stage", "POST"), ("POST", "/v1/status", "GET,HEAD"), ("DELETE", "/v1/evaluate", "POST"),
     ("POST", "/healthz", "GET,HEAD")],
)  # fmt: skip
async def test_wrong_method_keeps_allow(
    agent_client: ClientFactory, method: str, path: str, allow: str
) -> None:
    client = await agent_client()
    resp = await client.request(method, path, headers=AUTH)
    assert resp.status == 405
    assert set(resp.headers["Allow"].split(",")) == set(allow.split(","))


@pytest.mark.parametrize("header", [b"Bearer \xff\xfe", b"Bearer caf\xe9", b"\x80"])
async def test_undecodable_authorization_is_401(agent_client: ClientFactory, header: bytes) -> None:
    client = await agent_client()
    port = client.server.port
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(
        b"GET /v1/status HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAuthorization: " + header + b"\r\n\r\n"
    )
    await writer.drain()
    data = await asyncio.wait_for(reader.read(), 30)
    writer.close()
    head, _, rest = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 401") and b"WWW-Authenticate: Bearer" in head, data[:300]
    assert b'"unauthorized"' in rest


async def test_surrogate_uri_never_reaches_an_operation(
    agent_client: ClientFactory, sources_root: Path
) -> None:
    """Before: 202, then the stage operation crashed with a bare `internal` error."""
    client = await agent_client()
    raw = b'{"version": "v2", "uri": "' + sources_root.as_uri().encode() + b'/\\ud800"}'
    resp = await client.post("/v1/stage", data=raw, headers=AUTH_JSON)
    assert resp.status == 400
    assert (await status_of(client))["history"] == []
