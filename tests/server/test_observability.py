"""What an operator of the server sees: request ids, the access log, /info, metrics without noise."""

from __future__ import annotations

import json
import logging

import pytest
from hotswap_contract import logs
from hotswap_server import __version__

from .conftest import AUTH


async def test_request_id_is_echoed_or_made(make_clients) -> None:
    data, admin, _ = await make_clients()
    mine = await data.post(
        "/rerank", json={"query": "q", "texts": ["a"]}, headers={"X-Request-Id": "abc-123"}
    )
    assert mine.headers["X-Request-Id"] == "abc-123"
    made = await data.post("/rerank", json={"query": "q", "texts": ["a"]})
    assert len(made.headers["X-Request-Id"]) == 16 and made.headers["X-Request-Id"] != "abc-123"
    # An id that could forge a log line or a header is replaced, not echoed.
    forged = await data.post("/rerank", json={"query": "q", "texts": ["a"]}, headers={"X-Request-Id": "a b"})
    assert forged.headers["X-Request-Id"] != "a b"
    # Errors and the admin plane carry one too.
    bad = await data.post("/rerank", data=b"{", headers={"X-Request-Id": "err-1"})
    assert bad.status == 400 and bad.headers["X-Request-Id"] == "err-1"
    assert (await admin.get("/admin/v1/state", headers=AUTH)).headers["X-Request-Id"]


async def test_access_log_names_the_request_and_the_version_that_scored_it(
    make_clients, caplog: pytest.LogCaptureFixture
) -> None:
    data, _, _ = await make_clients()
    with caplog.at_level(logging.INFO, logger=logs.ACCESS_LOGGER):
        await data.post("/rerank", json={"query": "q", "texts": ["a"]}, headers={"X-Request-Id": "r-42"})
        await data.post("/rerank", json={"query": "q"})
    ok, refused = [r for r in caplog.records if r.name.startswith(logs.ACCESS_LOGGER)]
    assert (ok.request_id, ok.status, ok.version, ok.path) == ("r-42", 200, "v1", "/rerank")  # type: ignore[attr-defined]
    assert (refused.status, refused.version) == (422, None)  # type: ignore[attr-defined]


def test_json_log_format_is_one_object_a_line_with_the_fields() -> None:
    record = logging.makeLogRecord(
        {"name": "hotswap.access.server", "levelname": "INFO", "msg": "POST /rerank 200", "request_id": "r-1"}
    )
    line = logs.JsonFormatter().format(record)
    parsed = json.loads(line)
    assert parsed["message"] == "POST /rerank 200" and parsed["request_id"] == "r-1" and "\n" not in line
    assert logs.TextFormatter().format(record).endswith(" request_id=r-1")
    with pytest.raises(ValueError, match="log format"):
        logs.configure("INFO", "xml")


async def test_info_says_the_server_version_in_snake_case(make_clients) -> None:
    data, _, _ = await make_clients()
    info = await (await data.get("/info")).json()
    assert info["server_version"] == __version__ and info["version"] == "v1"
    assert info["swap_mode"] in ("inplace", "double", "auto")

    def keys(value: object) -> list[str]:
        if isinstance(value, dict):
            return [k for k, v in value.items() for k in [k, *keys(v)]]
        return []

    assert all(k == k.lower() for k in keys(info) if k not in ("LABEL_0",)), "one casing on the data plane"


async def test_metrics_split_queue_time_from_forward_time_and_have_no_created_series(make_clients) -> None:
    data, _, _ = await make_clients()
    await data.post("/rerank", json={"query": "q", "texts": ["a", "b"]})
    text = await (await data.get("/metrics")).text()
    assert "hotswap_queue_wait_seconds_count 1.0" in text
    assert "hotswap_forward_seconds_count" in text
    assert "_created" not in text
