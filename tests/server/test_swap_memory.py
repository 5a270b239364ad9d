"""In-place swaps keep the live tensors' storage and do not grow memory; double swaps do not pause."""

from __future__ import annotations

import gc
from pathlib import Path

import pytest
from hotswap_server.devices import anon_bytes

from .conftest import AUTH

DOCS = ["Machine learning is a branch of AI.", "Bananas are yellow fruit."]


def _pointers(state) -> dict[str, int]:  # type: ignore[no-untyped-def]
    return {n: p.data_ptr() for n, p in state.swaps.active.module.named_parameters()}


async def _scores(data) -> list[float]:  # type: ignore[no-untyped-def]
    body = await (
        await data.post("/rerank", json={"query": "what is AI", "texts": DOCS, "raw_scores": True})
    ).json()
    return [i["score"] for i in sorted(body, key=lambda i: i["index"])]


async def test_inplace_keeps_storage_and_memory_over_50_swaps(make_clients, testmodels_dir: Path) -> None:
    data, admin, state = await make_clients(model="minilm-ce-v1", swap_mode="inplace")
    model_bytes = state.swaps.active.nbytes
    pointers = _pointers(state)
    v1_scores = await _scores(data)
    r = await admin.post("/admin/v1/preload", json={"version": "v2", "path": "minilm-ce-v2"}, headers=AUTH)
    assert r.status == 200 and (await r.json())["compatible"] == "inplace"
    gc.collect()
    before = anon_bytes()
    r = await admin.post("/admin/v1/activate", json={"version": "v2"}, headers=AUTH)
    swap = await r.json()
    assert swap["mode"] == "inplace" and swap["pauseMs"] >= 0
    gc.collect()
    after_one = anon_bytes()
    assert _pointers(state) == pointers  # the live parameters were overwritten, not reallocated
    v2_scores = await _scores(data)
    assert v2_scores != pytest.approx(v1_scores, abs=1e-3)
    assert after_one - before < 0.10 * model_bytes, (after_one - before, model_bytes)

    for _ in range(50):
        r = await admin.post("/admin/v1/rollback", headers=AUTH)
        assert r.status == 200
    gc.collect()
    after_many = anon_bytes()
    assert _pointers(state) == pointers
    # 50 rollbacks from v2 land on v2 again (each one exchanges active and previous)
    assert await _scores(data) == pytest.approx(v2_scores, abs=1e-5)
    assert after_many - before < 0.10 * model_bytes, (after_many - before, model_bytes)
    state_body = await (await admin.get("/admin/v1/state", headers=AUTH)).json()
    assert state_body["lastSwap"]["mode"] == "inplace"
    assert state_body["previous"]["version"] == "v1"


async def test_double_swap_routes_to_a_new_module_without_pause(make_clients) -> None:
    _data, admin, state = await make_clients(model="tiny-xlmr-v1", swap_mode="double")
    old_module = state.swaps.active.module
    await admin.post("/admin/v1/preload", json={"version": "v2", "path": "tiny-xlmr-v2"}, headers=AUTH)
    swap = await (await admin.post("/admin/v1/activate", json={"version": "v2"}, headers=AUTH)).json()
    assert swap["mode"] == "double" and swap["pauseMs"] == 0
    assert state.swaps.active.module is not old_module
    # The previous version is its own host copy (nothing is copied back from the live module).
    previous = state.swaps.previous
    assert previous is not None and previous.module is not old_module
    assert previous.host is not None and previous.module is previous.host.module
    assert all(previous.host.holds(t) for t in previous.module.state_dict().values())


async def test_other_architecture_is_a_full_replace(make_clients) -> None:
    data, admin, _state = await make_clients(model="tiny-xlmr-v1", swap_mode="inplace")
    r = await admin.post(
        "/admin/v1/preload", json={"version": "wide", "path": "tiny-xlmr-wide-v1"}, headers=AUTH
    )
    assert (await r.json())["compatible"] == "replace"
    swap = await (await admin.post("/admin/v1/activate", json={"version": "wide"}, headers=AUTH)).json()
    assert swap["mode"] == "replace"
    r = await data.post("/rerank", json={"query": "q", "texts": DOCS})
    assert r.status == 200 and r.headers["X-Hotswap-Model-Version"] == "wide"
    r = await admin.post("/admin/v1/rollback", headers=AUTH)
    assert (await r.json())["active"]["version"] == "v1"
