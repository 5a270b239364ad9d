"""Hostile input against the server's data and admin planes: each answered with its precise 4xx,
while an innocent request sent at the same moment still gets the right scores.

The corpus covers encodings (lone surrogates, bytes that are not UTF-8, broken Content-Encoding),
sizes (5000-digit integers, bodies and document counts over the limits), depth (JSON nested 10,000
deep), header bytes (an Authorization header that is not UTF-8), path shapes (unknown paths, wrong
methods, NUL and over-long preload paths) and version ids ("v2\\n"). One server for the module.
"""

from __future__ import annotations

import asyncio
import gzip
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import pytest_asyncio
from aiohttp.test_utils import TestClient, TestServer
from hotswap_server.app import create_admin_app, create_data_app, create_state
from hotswap_server.settings import Settings
from hotswap_server.state import ServerState

from .conftest import wait_ready
from .expected import reference_scores
from .serverproc import TOKEN

pytestmark = pytest.mark.asyncio(loop_scope="module")

AUTH = {"Authorization": f"Bearer {TOKEN}"}
JSON = {"Content-Type": "application/json"}
INNOCENT = ("what is a reranker?", ["A reranker scores query-document pairs.", "Bananas are yellow."])
MAX_DOCUMENTS = 64
MAX_BODY = 256 * 1024


@dataclass
class Server:
    data: TestClient
    admin: TestClient
    state: ServerState
    reference: np.ndarray
    root: Path
    extra: dict[str, Any] = field(default_factory=dict)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def server(testmodels_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Server]:
    token = tmp_path_factory.mktemp("hostile") / "token"
    token.write_text(TOKEN)
    settings = Settings(
        model=testmodels_dir / "tiny-xlmr-v1",
        version="v1",
        models_root=testmodels_dir,
        admin_token_file=token,
        torch_threads=1,
        max_documents=MAX_DOCUMENTS,
        max_body_bytes=MAX_BODY,
    )
    state = create_state(settings)
    data = TestClient(TestServer(create_data_app(state)))
    admin = TestClient(TestServer(create_admin_app(state)))
    await data.start_server()
    await admin.start_server()
    await wait_ready(state)
    (reference,) = reference_scores(testmodels_dir / "tiny-xlmr-v1", [INNOCENT])
    yield Server(data, admin, state, reference, testmodels_dir)
    await admin.close()
    await data.close()


async def innocent(server: Server) -> None:
    """A TEI rerank with raw scores: 200 and the scores the model gives these pairs alone."""
    query, docs = INNOCENT
    resp = await server.data.post("/rerank", json={"query": query, "texts": docs, "raw_scores": True})
    assert resp.status == 200, await resp.text()
    got = np.empty(len(docs), dtype=np.float32)
    for item in await resp.json():
        got[item["index"]] = item["score"]
    np.testing.assert_allclose(got, server.reference, atol=1e-3)


async def send(
    client: TestClient, method: str, path: str, body: bytes | None, headers: dict[str, str]
) -> Any:
    resp = await client.request(method, path, data=body, headers=headers)
    text = await resp.text()
    return resp.status, resp.headers, text


async def raw_request(port: int, request: bytes) -> tuple[int, bytes, bytes]:
    """Send bytes as they are (headers aiohttp's client would refuse to send); (status, head, body)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(request)
    await writer.drain()
    data = await asyncio.wait_for(reader.read(), 30)
    writer.close()
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), head, body


def deep(n: int) -> bytes:
    return b"[" * n + b"]" * n


def big_int(digits: int) -> bytes:
    return b"9" * digits


# --- data plane ----------------------------------------------------------------------------------
TEI = b'{"query": "q", "texts": ["a", "b"]}'
DATA_CASES: list[tuple[str, str, str, bytes | None, dict[str, str], int, str | None]] = [
    # (id, method, path, body, headers, status, error_type)
    ("int-5000-digits", "POST", "/rerank", b'{"query": "q", "texts": ["a"], "x": ' + big_int(5000) + b"}", JSON, 400, "Validation"),
    ("int-5000-digits-top-n", "POST", "/v1/rerank", b'{"query": "q", "documents": ["a"], "top_n": ' + big_int(5000) + b"}", JSON, 400, "Validation"),
    ("nested-10000-arrays", "POST", "/rerank", deep(10_000), JSON, 400, "Validation"),
    ("nested-10000-objects", "POST", "/v2/rerank", b'{"a":' * 10_000 + b"1" + b"}" * 10_000, JSON, 400, "Validation"),
    ("nan-literal", "POST", "/v1/rerank", b'{"query": "q", "documents": ["a"], "top_n": NaN}', JSON, 400, "Validation"),
    ("not-utf8", "POST", "/rerank", b'{"query": "\xff\xfe", "texts": ["a"]}', JSON, 400, "Validation"),
    # JSON's own encoding detection (RFC 4627: UTF-8, -16 or -32) is kept: such a body is scored.
    ("utf16-body", "POST", "/rerank", TEI.decode().encode("utf-16"), JSON, 200, None),
    ("truncated-json", "POST", "/rerank", TEI[:-2], JSON, 400, "Validation"),
    ("empty-body", "POST", "/rerank", b"", JSON, 400, "Validation"),
    ("array-body", "POST", "/rerank", b"[1, 2]", JSON, 422, "Validation"),
    ("string-body", "POST", "/v1/rerank", b'"query"', JSON, 422, "Validation"),
    ("no-documents", "POST", "/rerank", b'{"query": "q", "texts": []}', JSON, 422, "Validation"),
    ("number-document", "POST", "/rerank", b'{"query": "q", "texts": [1]}', JSON, 422, "Validation"),
    ("null-query", "POST", "/v1/rerank", b'{"query": null, "documents": ["a"]}', JSON, 422, "Validation"),
    ("document-object-without-text", "POST", "/v2/rerank", b'{"query": "q", "documents": [{"t": "a"}]}', JSON, 422, "Validation"),
    ("top-n-zero", "POST", "/v1/rerank", b'{"query": "q", "documents": ["a"], "top_n": 0}', JSON, 422, "Validation"),
    ("too-many-documents", "POST", "/rerank", b'{"query": "q", "texts": [' + b",".join([b'"d"'] * (MAX_DOCUMENTS + 1)) + b"]}", JSON, 413, "Validation"),
    ("body-over-limit", "POST", "/rerank", b'{"query": "q", "texts": ["' + b"a" * MAX_BODY + b'"]}', JSON, 413, "Validation"),
    ("query-too-long", "POST", "/rerank", b'{"query": "' + b"word " * 2000 + b'", "texts": ["a"]}', JSON, 413, "Validation"),
    ("document-too-long-no-truncate", "POST", "/rerank", b'{"query": "q", "texts": ["' + b"word " * 2000 + b'"], "truncate": false}', JSON, 413, "Validation"),
    ("broken-gzip", "POST", "/rerank", TEI, {**JSON, "Content-Encoding": "gzip"}, 400, "Validation"),
    ("gzip-bomb", "POST", "/rerank", gzip.compress(b" " * (8 * MAX_BODY)), {**JSON, "Content-Encoding": "gzip"}, 413, "Validation"),
    ("unknown-path", "GET", "/admin/v1/state", None, {}, 404, "not_found"),
    ("nul-in-path", "GET", "/info%00", None, {}, 404, "not_found"),
    ("dot-dot-path", "GET", "/x/../../readyz/..", None, {}, 404, "not_found"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("method", "path", "body", "headers", "status", "error_type"),
    [pytest.param(*case[1:], id=case[0]) for case in DATA_CASES],
)
async def test_data_plane_hostile(
    server: Server, method: str, path: str, body: bytes | None, headers: dict[str, str], status: int,
    error_type: str | None,
) -> None:  # fmt: skip
    (got, _, text), _ = await asyncio.gather(send(server.data, method, path, body, headers), innocent(server))
    assert got == status, text
    if error_type is not None:
        assert f'"error_type": "{error_type}"' in text


@pytest.mark.parametrize("path", ["/rerank", "/v1/rerank", "/v2/rerank"])
async def test_wrong_method_keeps_allow(server: Server, path: str) -> None:
    resp = await server.data.get(path)
    assert resp.status == 405 and resp.headers["Allow"] == "POST"
    assert (await resp.json())["error_type"] == "method_not_allowed"


@pytest.mark.parametrize(
    ("field", "text", "cleaned"),
    [
        ("texts", "\ud800 lone high surrogate", "\ufffd lone high surrogate"),
        ("texts", "low \udc00 surrogate", "low \ufffd surrogate"),
        ("texts", "\udc00\ud800 reversed pair", "\ufffd\ufffd reversed pair"),
        ("query", "\udfff?", "\ufffd?"),
    ],
)
async def test_lone_surrogates_are_cleaned_not_refused(
    server: Server, field: str, text: str, cleaned: str
) -> None:
    """A lone surrogate (JSON's \\ud800 escape) is scored as U+FFFD: the same score as the cleaned text."""

    async def scores(value: str) -> tuple[list[float], Any]:
        body = {"query": "q", "texts": ["plain document", value], "raw_scores": True, "return_text": True}
        if field == "query":
            body = {
                "query": value,
                "texts": ["plain document", "other"],
                "raw_scores": True,
                "return_text": True,
            }
        resp = await server.data.post("/rerank", json=body)
        assert resp.status == 200, await resp.text()
        items = sorted(await resp.json(), key=lambda i: i["index"])
        return [i["score"] for i in items], items

    (hostile, items), (clean, _), _ = await asyncio.gather(scores(text), scores(cleaned), innocent(server))
    assert hostile == pytest.approx(clean, abs=1e-4)
    if field == "texts":
        assert items[1]["text"] == cleaned  # the text echoed is the text scored


async def test_surrogates_batched_with_innocent_requests(server: Server) -> None:
    """The issue's case: many concurrent requests, some with lone surrogates: none fails."""
    poison = {"query": "q", "texts": ["ok", "\ud800 broken", "\udfff"]}
    tasks = [innocent(server) for _ in range(24)]
    replies = [server.data.post("/rerank", json=poison) for _ in range(8)]
    results = await asyncio.gather(*tasks, *replies)
    for resp in results[24:]:
        assert resp.status == 200


@pytest.mark.parametrize(
    "header",
    [b"Bearer \xff\xfe", b"Bearer caf\xe9", b"\xff", b"Basic \x80"],
    ids=["not-utf8", "latin1", "only-bytes", "basic-bytes"],
)
async def test_undecodable_header_bytes(server: Server, header: bytes) -> None:
    """Header bytes that are not UTF-8: 401 on the admin plane, ignored on the data plane."""
    request = (
        b"GET /admin/v1/state HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAuthorization: "
        + header
        + b"\r\n\r\n"
    )
    assert server.admin.server.port is not None and server.data.server.port is not None
    (status, head, body), _ = await asyncio.gather(
        raw_request(server.admin.server.port, request), innocent(server)
    )
    assert status == 401 and b"WWW-Authenticate: Bearer" in head and b'"unauthorized"' in body
    body_bytes = b'{"query": "q", "texts": ["a"]}'
    request = (
        b"POST /rerank HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: application/json\r\n"
        b"X-Request-Id: \xff\xfe\r\nAuthorization: " + header + b"\r\nContent-Length: "
        + str(len(body_bytes)).encode() + b"\r\n\r\n" + body_bytes
    )  # fmt: skip
    status, _, body = await raw_request(server.data.server.port, request)
    assert status == 200, body


@pytest.mark.parametrize(
    ("value", "echoed"),
    [
        (b"r-1", b"r-1"),
        (b"x" * 128, b"x" * 128),
        (b"x" * 129, None),  # too long for the logs
        (b"x" * 6000, None),
        (b"a b", None),  # a space would split the text log's key=value
        (b"a\tb", None),
        (b"caf\xc3\xa9", None),  # UTF-8, not ASCII
        (b"\x7f", 400),  # refused by aiohttp's HTTP parser itself: a clear 400, nothing scored
        (b"", None),
        (b"%0d%0aSet-Cookie:x", b"%0d%0aSet-Cookie:x"),  # printable: kept as it is, still one header
    ],
    ids=["sane", "128", "129", "6000", "space", "tab", "utf8", "del", "empty", "encoded-crlf"],
)
async def test_hostile_request_ids(server: Server, value: bytes, echoed: bytes | int | None) -> None:
    """X-Request-Id: echoed when sane, otherwise replaced by a fresh id; the request is scored
    either way, and another client's request is not touched."""
    body = b'{"query": "q", "texts": ["a"]}'
    request = (
        b"POST /rerank HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: application/json\r\n"
        b"X-Request-Id: " + value + b"\r\nContent-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body
    )
    assert server.data.server.port is not None
    (status, head, text), _ = await asyncio.gather(
        raw_request(server.data.server.port, request), innocent(server)
    )
    if isinstance(echoed, int):
        assert status == echoed, text
        return
    assert status == 200, text
    ids = [
        line.split(b":", 1)[1].strip()
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"x-request-id:")
    ]
    assert len(ids) == 1, head
    if echoed is not None:
        assert ids[0] == echoed
    else:
        assert ids[0] != value and re.fullmatch(rb"[0-9a-f]{16,64}", ids[0]), ids
    assert b"Set-Cookie" not in head.replace(b"X-Request-Id: %0d%0aSet-Cookie:x", b"")


# --- admin plane ---------------------------------------------------------------------------------
def preload(version: str, path: str) -> bytes:
    import json

    return json.dumps({"version": version, "path": path}).encode()


ADMIN_CASES: list[tuple[str, str, str, bytes | None, dict[str, str], int, str]] = [
    ("no-token", "GET", "/admin/v1/state", None, {}, 401, "unauthorized"),
    ("wrong-scheme", "GET", "/admin/v1/state", None, {"Authorization": f"Basic {TOKEN}"}, 401, "unauthorized"),
    ("wrong-token", "POST", "/admin/v1/rollback", b"{}", {"Authorization": "Bearer nope"}, 401, "unauthorized"),
    ("unknown-path-no-token", "GET", "/admin/v1/nothing", None, {}, 401, "unauthorized"),
    ("unknown-path", "GET", "/admin/v1/nothing", None, AUTH, 404, "not_found"),
    ("data-path-on-admin", "POST", "/rerank", TEI, AUTH, 404, "not_found"),
    ("nul-in-url", "GET", "/admin/v1/state%00", None, AUTH, 404, "not_found"),
    ("int-5000-digits", "POST", "/admin/v1/preload", b'{"version": ' + big_int(5000) + b"}", AUTH, 400, "Validation"),
    ("nested-10000", "POST", "/admin/v1/activate", deep(10_000), AUTH, 400, "Validation"),
    ("nan", "POST", "/admin/v1/activate", b'{"version": NaN}', AUTH, 400, "Validation"),
    ("not-utf8", "POST", "/admin/v1/activate", b'{"version": "\xff"}', AUTH, 400, "Validation"),
    ("broken-gzip", "POST", "/admin/v1/discard", b"{}", {**AUTH, "Content-Encoding": "gzip"}, 400, "Validation"),
    ("array-body", "POST", "/admin/v1/activate", b"[]", AUTH, 422, "Validation"),
    ("version-trailing-newline-preload", "POST", "/admin/v1/preload", preload("v2\n", "tiny-xlmr-v2"), AUTH, 422, "Validation"),
    ("version-trailing-newline-activate", "POST", "/admin/v1/activate", b'{"version": "v2\\n"}', AUTH, 422, "Validation"),
    ("version-trailing-newline-score", "POST", "/admin/v1/score", b'{"version": "v1\\n", "cases": [{"query": "q", "documents": ["a"]}]}', AUTH, 422, "Validation"),
    ("version-upper-case", "POST", "/admin/v1/activate", b'{"version": "V2"}', AUTH, 422, "Validation"),
    ("version-surrogate", "POST", "/admin/v1/activate", b'{"version": "\\ud800"}', AUTH, 422, "Validation"),
    ("version-64-chars", "POST", "/admin/v1/activate", b'{"version": "' + b"a" * 64 + b'"}', AUTH, 422, "Validation"),
    ("version-number", "POST", "/admin/v1/activate", b'{"version": 2}', AUTH, 422, "Validation"),
    ("path-nul", "POST", "/admin/v1/preload", preload("v2", "tiny-xlmr-v2\x00x"), AUTH, 422, "Validation"),
    ("path-surrogate", "POST", "/admin/v1/preload", b'{"version": "v2", "path": "\\ud800"}', AUTH, 422, "Validation"),
    ("path-5000-chars", "POST", "/admin/v1/preload", preload("v2", "a" * 5000), AUTH, 422, "Validation"),
    ("path-name-too-long", "POST", "/admin/v1/preload", preload("v2", "a" * 300), AUTH, 422, "Validation"),
    ("path-number", "POST", "/admin/v1/preload", b'{"version": "v2", "path": 5}', AUTH, 422, "Validation"),
    ("path-outside", "POST", "/admin/v1/preload", preload("v2", "/etc"), AUTH, 403, "forbidden"),
    ("path-dot-dot", "POST", "/admin/v1/preload", preload("v2", "../../../../etc"), AUTH, 403, "forbidden"),
    # Outside and missing: still 403, whatever the checkout's depth (CI once answered 404 here).
    ("path-dot-dot-missing", "POST", "/admin/v1/preload", preload("v2", "../no-such-folder-outside"), AUTH, 403, "forbidden"),
    ("path-dot-dot-deep", "POST", "/admin/v1/preload", preload("v2", "../" * 64 + "no-such-folder"), AUTH, 403, "forbidden"),
    ("path-in-and-out", "POST", "/admin/v1/preload", preload("v2", "tiny-xlmr-v2/../../x"), AUTH, 403, "forbidden"),
    ("path-missing", "POST", "/admin/v1/preload", preload("v2", "no-such-model"), AUTH, 404, "not_found"),
    ("path-through-a-file", "POST", "/admin/v1/preload", preload("v2", "tiny-xlmr-v2/config.json/x"), AUTH, 404, "not_found"),
    ("digest-not-hex", "POST", "/admin/v1/preload", b'{"version": "v2", "path": "tiny-xlmr-v2", "digest": "\\ud800"}', AUTH, 422, "Validation"),
    ("activate-not-staged", "POST", "/admin/v1/activate", b'{"version": "v9"}', AUTH, 409, "not_staged"),
    ("score-unknown-version", "POST", "/admin/v1/score", b'{"version": "v9", "cases": [{"query": "q", "documents": ["a"]}]}', AUTH, 404, "not_loaded"),
    ("score-no-cases", "POST", "/admin/v1/score", b'{"version": "v1", "cases": []}', AUTH, 422, "Validation"),
    ("score-empty-documents", "POST", "/admin/v1/score", b'{"version": "v1", "cases": [{"query": "q", "documents": []}]}', AUTH, 422, "Validation"),
    ("score-too-many-pairs", "POST", "/admin/v1/score", b'{"version": "v1", "cases": [' + b",".join([b'{"query": "q", "documents": [' + b",".join([b'"d"'] * 1000) + b"]}"] * 5) + b"]}", AUTH, 422, "Validation"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("method", "path", "body", "headers", "status", "error_type"),
    [pytest.param(*case[1:], id=case[0]) for case in ADMIN_CASES],
)
async def test_admin_plane_hostile(
    server: Server, method: str, path: str, body: bytes | None, headers: dict[str, str], status: int,
    error_type: str,
) -> None:  # fmt: skip
    headers = {**JSON, **headers} if body is not None else headers
    (got, got_headers, text), _ = await asyncio.gather(
        send(server.admin, method, path, body, headers), innocent(server)
    )
    assert got == status, text
    assert f'"error_type": "{error_type}"' in text
    if status == 401:
        assert got_headers["WWW-Authenticate"].startswith("Bearer")
    state = server.state.swaps.state()
    assert state["active"]["version"] == "v1" and state["operation"] is None


@pytest.mark.parametrize(
    ("method", "path", "allow"),
    [
        ("GET", "/admin/v1/preload", "POST"),
        ("POST", "/admin/v1/state", "GET,HEAD"),
        ("PUT", "/admin/v1/score", "POST"),
    ],
)
async def test_admin_wrong_method_keeps_allow(server: Server, method: str, path: str, allow: str) -> None:
    resp = await server.admin.request(method, path, headers=AUTH)
    assert resp.status == 405
    assert set(resp.headers["Allow"].split(",")) == set(allow.split(","))


async def test_admin_openapi_needs_no_token(server: Server) -> None:
    resp = await server.admin.get("/admin/v1/openapi.json")
    assert resp.status == 200
    doc = await resp.json()
    assert "/admin/v1/score" in doc["paths"] and "/rerank" not in doc["paths"]
    data_doc = await (await server.data.get("/openapi.json")).json()
    assert not any(p.startswith("/admin/") for p in data_doc["paths"])


async def test_model_folders_the_loader_trips_on_are_422(tmp_path: Path, testmodels_dir: Path) -> None:
    """A model folder whose content makes the loader raise: 422 invalid_model with the reason, not 500."""
    import os
    import shutil

    root = tmp_path / "models"
    root.mkdir()
    shutil.copytree(testmodels_dir / "tiny-xlmr-v2", root / "with-link")
    os.symlink("/etc/hostname", root / "with-link" / "extra.txt")
    shutil.copytree(testmodels_dir / "tiny-xlmr-v2", root / "with-fifo")
    os.mkfifo(root / "with-fifo" / "pipe")
    folders = {
        "modules-path-number": (
            "modules.json",
            '[{"type": "sentence_transformers.models.Transformer", "path": 5}]',
        ),
        "architectures-numbers": ("config.json", '{"architectures": [5]}'),
        "config-nested-deep": ("config.json", "[" * 100_000),
        "config-int-5000-digits": ("config.json", '{"a": ' + "9" * 5000 + "}"),
    }
    for name, (file, text) in folders.items():
        (root / name).mkdir()
        (root / name / file).write_text(text)
    token = tmp_path / "token"
    token.write_text(TOKEN)
    state = create_state(Settings(models_root=root, admin_token_file=token, torch_threads=1))
    async with TestClient(TestServer(create_admin_app(state))) as admin:
        for i, name in enumerate(["with-link", "with-fifo", *folders, "."]):
            resp = await admin.post(
                "/admin/v1/preload", json={"version": f"v{i}", "path": name}, headers=AUTH
            )
            body = await resp.json()
            assert (resp.status, body["error_type"]) == (422, "invalid_model"), (name, body)
