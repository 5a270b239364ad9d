"""``POST /admin/v1/score``: a named version scores cases through the same tokenizer and scoring code
as live traffic; a staged (or previous) version on its own copy, never the live model or the queue."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hotswap_contract.admin import ScoreResult

from tests.server.conftest import AUTH
from tests.server.expected import reference_scores

CASES = [
    ("what is a reranker?", ["A reranker scores query-document pairs.", "Bananas are yellow."]),
    ("how do neural networks learn", ["Backpropagation updates weights.", "Football match", "Bananas"]),
]
BODY_CASES = [{"query": q, "documents": d} for q, d in CASES]


def sigmoid(raw: np.ndarray) -> np.ndarray:
    return 1 / (1 + np.exp(-raw.astype(np.float64)))


async def score(admin: Any, version: str, cases: list[dict[str, Any]] = BODY_CASES) -> tuple[int, Any]:
    resp = await admin.post("/admin/v1/score", json={"version": version, "cases": cases}, headers=AUTH)
    return resp.status, await resp.json()


async def test_staged_version_scored_off_the_live_path(
    make_clients: Any, testmodels_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data, admin, state = await make_clients()
    resp = await admin.post("/admin/v1/preload", json={"version": "v2", "path": "tiny-xlmr-v2"}, headers=AUTH)
    assert resp.status == 200, await resp.text()
    queued: list[Any] = []
    real_score = state.engine.score

    async def counting(query: str, docs: list[str], *rest: Any) -> Any:
        queued.append(query)
        return await real_score(query, docs, *rest)

    monkeypatch.setattr(state.engine, "score", counting)
    live_before = state.engine.active
    status, body = await score(admin, "v2")
    assert status == 200, body
    result = ScoreResult.model_validate(body)
    assert (result.version, result.slot, result.device) == ("v2", "staged", "cpu")
    want = reference_scores(testmodels_dir / "tiny-xlmr-v2", CASES)
    for got, ref in zip(result.cases, want, strict=True):
        np.testing.assert_allclose(got.scores, sigmoid(ref), atol=1e-4)
        assert got.tokens > 0
    assert queued == []  # the request queue was not used
    assert state.engine.active is live_before and state.swaps.active is not None
    assert state.swaps.active.version == "v1" and state.swaps.staged is not None
    # the data plane still answers with v1 meanwhile and after
    resp = await data.post("/v1/rerank", json={"query": "q", "documents": ["a"]})
    assert resp.headers["X-Hotswap-Model-Version"] == "v1"


async def test_active_and_previous_versions(make_clients: Any, testmodels_dir: Path) -> None:
    _, admin, _ = await make_clients()
    status, body = await score(admin, "v1")
    assert status == 200 and body["slot"] == "active"
    want_v1 = reference_scores(testmodels_dir / "tiny-xlmr-v1", CASES)
    for got, ref in zip(body["cases"], want_v1, strict=True):
        np.testing.assert_allclose(got["scores"], sigmoid(ref), atol=1e-3)
    await admin.post("/admin/v1/preload", json={"version": "v2", "path": "tiny-xlmr-v2"}, headers=AUTH)
    assert (await admin.post("/admin/v1/activate", json={"version": "v2"}, headers=AUTH)).status == 200
    status, body = await score(admin, "v1")
    assert status == 200 and body["slot"] == "previous"
    for got, ref in zip(body["cases"], want_v1, strict=True):
        np.testing.assert_allclose(got["scores"], sigmoid(ref), atol=1e-4)


async def test_refusals(make_clients: Any) -> None:
    _, admin, state = await make_clients()
    status, body = await score(admin, "v9")
    assert (status, body["error_type"]) == (404, "not_loaded")
    long_query = [{"query": "word " * 3000, "documents": ["a"]}]
    await admin.post("/admin/v1/preload", json={"version": "v2", "path": "tiny-xlmr-v2"}, headers=AUTH)
    status, body = await score(admin, "v2", long_query)
    assert status == 413, body
    state.swaps.operation = "activate"  # another control operation runs
    try:
        status, body = await score(admin, "v2")
        assert (status, body["error_type"]) == (409, "operation_in_progress")
    finally:
        state.swaps.operation = None


async def test_lone_surrogates_are_cleaned(make_clients: Any) -> None:
    _, admin, _ = await make_clients()
    status, body = await score(admin, "v1", [{"query": "q", "documents": ["\ud800 x", "\ufffd x"]}])
    assert status == 200, body
    first, second = body["cases"][0]["scores"]
    assert first == pytest.approx(second, abs=1e-5)


def test_device_copy_is_independent_and_equal(testmodels_dir: Path) -> None:
    """The CUDA path's copy, exercised on CPU: same outputs, own tensors, the source untouched."""
    import torch
    from hotswap_server.modelload import load_version
    from hotswap_server.scoring import runner_for
    from hotswap_server.swap import device_copy

    loaded = load_version("v1", testmodels_dir / "tiny-xlmr-v1", torch.float32)
    copy = device_copy(loaded.module, torch.device("cpu"))
    source_ptrs = {p.data_ptr() for p in loaded.module.parameters()}
    assert not source_ptrs & {p.data_ptr() for p in copy.parameters()}
    q, d = ["what is a reranker?"] * 2, ["A reranker scores pairs.", "Bananas."]
    want, _ = runner_for(loaded).score(q, d)
    got, _ = runner_for(replace(loaded, module=copy)).score(q, d)
    np.testing.assert_allclose(got, want, atol=1e-6)
    tied = [n for n, p in copy.named_parameters(remove_duplicate=False)]
    assert len(tied) == len(list(loaded.module.named_parameters(remove_duplicate=False)))
