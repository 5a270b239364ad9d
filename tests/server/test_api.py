"""Data plane conformance (TEI and Cohere/Jina shapes), limits and error paths, in process."""

from __future__ import annotations

import asyncio
import threading

import numpy as np
import pytest

from .conftest import AUTH

AI_DOCS = [
    "Bananas are a yellow fruit rich in potassium.",
    "Machine learning is a branch of artificial intelligence.",
    "Neural networks learn representations from data.",
]


async def test_tei_rerank_sorted_with_scores_and_version_header(make_clients) -> None:
    data, _, _ = await make_clients()
    r = await data.post("/rerank", json={"query": "what is AI", "texts": AI_DOCS, "return_text": True})
    assert r.status == 200
    assert r.headers["X-Hotswap-Model-Version"] == "v1"
    body = await r.json()
    assert sorted(item["index"] for item in body) == [0, 1, 2]
    scores = [item["score"] for item in body]
    assert scores == sorted(scores, reverse=True)
    assert all(0.0 < s < 1.0 for s in scores)  # sigmoid of the logit by default
    assert all(item["text"] == AI_DOCS[item["index"]] for item in body)
    # float32 on the wire: the shortest decimal that round-trips as float32
    assert all(repr(s) == str(np.float32(s)) for s in scores)


async def test_tei_raw_scores_are_the_logits(make_clients) -> None:
    data, _, _ = await make_clients()
    base = {"query": "what is AI", "texts": AI_DOCS}
    probs = {i["index"]: i["score"] for i in await (await data.post("/rerank", json=base)).json()}
    raw = {
        i["index"]: i["score"]
        for i in await (await data.post("/rerank", json={**base, "raw_scores": True})).json()
    }
    for i in range(3):
        assert probs[i] == pytest.approx(1 / (1 + np.exp(-raw[i])), abs=1e-6)
    assert "text" not in (await (await data.post("/rerank", json=base)).json())[0]


@pytest.mark.parametrize("route", ["/v1/rerank", "/v2/rerank"])
async def test_cohere_shape(make_clients, route: str) -> None:
    data, _, _ = await make_clients()
    docs = [AI_DOCS[0], {"text": AI_DOCS[1]}, AI_DOCS[2]]
    r = await data.post(route, json={"model": "m", "query": "what is AI", "documents": docs, "top_n": 2,
                                     "return_documents": True})  # fmt: skip
    assert r.status == 200
    body = await r.json()
    assert set(body) >= {"id", "model", "results", "meta", "usage"}
    assert body["model"] == "m"
    assert len(body["results"]) == 2
    first, second = body["results"]
    assert first["relevance_score"] >= second["relevance_score"]
    assert first["document"] == {"text": AI_DOCS[first["index"]]}
    assert body["usage"]["total_tokens"] > 0
    assert r.headers["X-Hotswap-Model-Version"] == "v1"


async def test_cohere_return_documents_defaults_per_api_version(make_clients) -> None:
    data, _, _ = await make_clients()
    req = {"query": "q", "documents": ["a", "b"]}
    v1 = await (await data.post("/v1/rerank", json=req)).json()
    v2 = await (await data.post("/v2/rerank", json=req)).json()
    assert "document" in v1["results"][0]
    assert "document" not in v2["results"][0]


async def test_max_tokens_per_doc_truncates_documents(make_clients) -> None:
    data, _, _ = await make_clients()
    long_doc = "machine learning " * 40
    full = await (await data.post("/v2/rerank", json={"query": "q", "documents": [long_doc]})).json()
    cut = await (
        await data.post("/v2/rerank", json={"query": "q", "documents": [long_doc], "max_tokens_per_doc": 4})
    ).json()
    assert cut["usage"]["total_tokens"] < full["usage"]["total_tokens"]


async def test_info_health_ready_metrics(make_clients) -> None:
    data, _, _ = await make_clients()
    info = await (await data.get("/info")).json()
    assert info["version"] == "v1" and info["kind"] == "cross-encoder" and info["device"] == "cpu"
    assert len(info["digest"]) == 64 and info["limits"]["max_documents"] == 1000
    assert (await data.get("/healthz")).status == 200
    assert (await data.get("/readyz")).status == 200
    await data.post("/rerank", json={"query": "q", "texts": ["a"]})
    text = await (await data.get("/metrics")).text()
    assert 'hotswap_requests_total{route="/rerank",status="200"}' in text
    assert "hotswap_batch_size_bucket" in text
    assert "hotswap_active_model_info{" in text and 'version="v1"' in text


async def test_empty_server_is_not_ready_and_refuses_scoring_with_503(make_clients) -> None:
    data, _, _ = await make_clients(model=None)
    assert (await data.get("/healthz")).status == 200
    assert (await data.get("/readyz")).status == 503
    r = await data.post("/rerank", json={"query": "q", "texts": ["a"]})
    assert r.status == 503
    assert (await r.json())["error_type"] == "Unhealthy"


@pytest.mark.parametrize(
    ("body", "status"),
    [
        (b"not json", 400),
        (b"[1, 2]", 422),
        (b'{"query": 1, "texts": ["a"]}', 422),
        (b'{"query": "q", "texts": "a"}', 422),
        (b'{"query": "q", "texts": [1]}', 422),
        (b'{"query": "q"}', 422),
        (b'{"query": "q", "texts": []}', 422),
        (b'{"query": "q", "texts": ["a"], "truncate": "yes"}', 422),
    ],
)
async def test_tei_bad_input_is_a_clear_4xx(make_clients, body: bytes, status: int) -> None:
    data, _, _ = await make_clients()
    r = await data.post("/rerank", data=body, headers={"Content-Type": "application/json"})
    assert r.status == status
    err = await r.json()
    assert set(err) == {"error", "error_type"} and err["error"]


@pytest.mark.parametrize(
    "body",
    [
        {"query": "q", "documents": [{"title": "no text"}]},
        {"query": "q", "documents": ["a"], "top_n": 0},
        {"query": "q", "documents": ["a"], "max_tokens_per_doc": -1},
        {"documents": ["a"]},
    ],
)
async def test_cohere_bad_input_is_422(make_clients, body: dict) -> None:
    data, _, _ = await make_clients()
    r = await data.post("/v2/rerank", json=body)
    assert r.status == 422, await r.text()


async def test_limits_documents_body_and_tokens_are_413(make_clients) -> None:
    data, _, _ = await make_clients(max_documents=4, max_body_bytes=2000)
    r = await data.post("/rerank", json={"query": "q", "texts": ["a"] * 5})
    assert r.status == 413 and "at most 4" in (await r.json())["error"]
    r = await data.post("/rerank", json={"query": "q", "texts": ["x" * 3000]})
    assert r.status == 413 and (await r.json())["error_type"] == "Validation"
    long_doc = "machine learning " * 100  # beyond the tiny model's 128 tokens
    r = await data.post("/rerank", json={"query": "q", "texts": [long_doc]})
    assert r.status == 413 and "truncate" in (await r.json())["error"]
    r = await data.post("/rerank", json={"query": "q", "texts": [long_doc], "truncate": True})
    assert r.status == 200


async def test_queue_full_is_429_and_nothing_else_fails(make_clients) -> None:
    data, _, state = await make_clients(max_queue_pairs=6, max_batch_size=2)
    # Hold the model thread so requests pile up deterministically.
    gate = threading.Event()
    blocker = asyncio.get_running_loop().run_in_executor(state.engine.model_thread, gate.wait, 30)
    body = {"query": "q", "texts": ["a", "b", "c"]}
    tasks = []
    try:
        for waiting in (1, 4):  # the engine takes a first batch of 2 pairs off the queue at once
            tasks.append(asyncio.create_task(data.post("/rerank", json=body)))
            async with asyncio.timeout(10):
                while state.engine.waiting_pairs != waiting:
                    await asyncio.sleep(0.005)
        over = await data.post("/rerank", json=body)  # 4 waiting + 3 > 6
        assert over.status == 429
        assert (await over.json())["error_type"] == "Overloaded"
    finally:
        gate.set()
        await blocker
    assert [(await t).status for t in tasks] == [200, 200]


async def test_unknown_route_and_method_are_json_errors(make_clients) -> None:
    data, _, _ = await make_clients()
    r = await data.get("/nope")
    assert r.status == 404 and (await r.json())["error_type"] == "not_found"
    r = await data.get("/rerank")
    assert r.status == 405


async def test_bi_encoder_scores_cosine_and_ranks_ai_first(make_clients) -> None:
    data, _, _ = await make_clients(model="minilm-v1")
    r = await data.post("/rerank", json={"query": "What is artificial intelligence?", "texts": AI_DOCS})
    body = await r.json()
    assert body[-1]["index"] == 0  # the fruit document ranks last
    assert all(-1.0 <= item["score"] <= 1.0 for item in body)
    assert (await (await data.get("/info")).json())["kind"] == "bi-encoder"


async def test_admin_needs_the_token(make_clients) -> None:
    _, admin, state = await make_clients()
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic x"}):
        r = await admin.get("/admin/v1/state", headers=headers)
        assert r.status == 401
        r = await admin.post(
            "/admin/v1/preload", json={"version": "v2", "path": "tiny-xlmr-v2"}, headers=headers
        )
        assert r.status == 401
    assert state.swaps.staged is None
    assert (await admin.get("/admin/v1/state", headers=AUTH)).status == 200


@pytest.mark.parametrize("route", ["/rerank", "/v2/rerank"])
async def test_query_longer_than_the_model_limit_is_413_not_500(make_clients, route: str) -> None:
    data, _, _ = await make_clients()
    long_query = "machine learning " * 200
    key = "texts" if route == "/rerank" else "documents"
    r = await data.post(route, json={"query": long_query, key: ["a"], "truncate": True})
    assert r.status == 413
    assert "query" in (await r.json())["error"]


@pytest.mark.parametrize("model", ["tiny-xlmr-v1", "tiny-bert-v1"])
async def test_a_request_is_tokenized_once_and_scored_as_if_twice(make_clients, model: str) -> None:
    """Truncation off: the engine pads the admission check's ids (the first batch is compared with
    the tokenizer's own); truncation on: the engine tokenizes. The scores are the same bits."""
    data, _, state = await make_clients(model)
    runner = state.engine.active.runner
    assert runner.collate_matches is None
    body = {"query": "what is AI", "texts": AI_DOCS, "raw_scores": True}
    once = await (await data.post("/rerank", json=body)).json()
    assert runner.collate_matches is True
    twice = await (await data.post("/rerank", json={**body, "truncate": True})).json()
    assert once == twice
