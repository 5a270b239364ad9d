"""The CUDA swap path on a real device (skipped without one): pinned host copies, one side stream
for the server's life, no reserved-memory creep, one upload per swap, the per-swap device peak.

Run on a machine with a GPU: ``.venv/bin/pytest -q tests/server/test_swap_gpu.py -s``
(``-s`` prints the measured figures).
"""

from __future__ import annotations

import time

import pytest
import torch
from hotswap_server import swap as swap_module

from .conftest import AUTH

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

DOCS = ["Machine learning is a branch of AI.", "Bananas are yellow fruit."]


async def _state(admin) -> dict:  # type: ignore[no-untyped-def]
    return await (await admin.get("/admin/v1/state", headers=AUTH)).json()


async def test_inplace_on_cuda_one_stream_no_creep_peak_within_2_percent(make_clients) -> None:
    data, admin, state = await make_clients(model="minilm-ce-v1", swap_mode="inplace", device="cuda")
    swaps = state.swaps
    assert swaps.stream is not None
    active = swaps.active
    assert active.host is not None and active.host.pinned
    assert all(b.is_pinned() for b in active.host.buffers.values())
    r = await admin.post("/admin/v1/preload", json={"version": "v2", "path": "minilm-ce-v2"}, headers=AUTH)
    assert (await r.json())["compatible"] == "inplace"
    assert swaps.staged.host.pinned
    stream = swaps.stream
    for _ in range(3):  # warm: the first forwards and swaps settle the allocator
        await data.post("/rerank", json={"query": "q", "texts": DOCS})
    await admin.post("/admin/v1/activate", json={"version": "v2"}, headers=AUTH)
    torch.cuda.synchronize()
    reserved0 = torch.cuda.memory_reserved()
    allocated0 = torch.cuda.memory_allocated()
    # One upload of the weights, timed alone, for the pause target (pause <= 1.2 x upload + batch).
    live = swaps.active.module
    t0 = time.perf_counter()
    swap_module.upload(swaps.active.host, live, stream)
    upload_ms = (time.perf_counter() - t0) * 1000
    pauses, peaks = [], []
    for _ in range(20):
        body = await (await admin.post("/admin/v1/rollback", headers=AUTH)).json()
        assert body["mode"] == "inplace"
        pauses.append(body["pauseMs"])
        last = (await _state(admin))["lastSwap"]
        peaks.append(last["devicePeakBytes"] / last["deviceBeforeBytes"])
        r = await data.post("/rerank", json={"query": "q", "texts": DOCS})
        assert r.status == 200
    assert swaps.stream is stream  # one side stream for the server's life
    torch.cuda.synchronize()
    print(
        f"\nupload {upload_ms:.2f} ms of {swaps.active.nbytes / 2**20:.1f} MiB; pauses median "
        f"{sorted(pauses)[10]:.2f} max {max(pauses):.2f} ms; swap peak / before max {max(peaks):.4f}; "
        f"reserved {reserved0 / 2**20:.1f} -> {torch.cuda.memory_reserved() / 2**20:.1f} MiB; "
        f"allocated {allocated0 / 2**20:.1f} -> {torch.cuda.memory_allocated() / 2**20:.1f} MiB"
    )
    assert torch.cuda.memory_reserved() <= reserved0  # no creep, swap after swap
    assert torch.cuda.memory_allocated() <= allocated0
    assert max(peaks) <= 1.02  # an in-place swap allocates nothing on the device
    assert all(swaps.previous.host.holds(t) for t in swaps.previous.module.state_dict().values())


async def test_double_on_cuda_keeps_the_previous_pinned(make_clients) -> None:
    data, admin, state = await make_clients(model="minilm-ce-v1", swap_mode="double", device="cuda")
    swaps = state.swaps
    await admin.post("/admin/v1/preload", json={"version": "v2", "path": "minilm-ce-v2"}, headers=AUTH)
    reserved = []
    for i in range(6):
        if i == 0:
            body = await (await admin.post("/admin/v1/activate", json={"version": "v2"}, headers=AUTH)).json()
        else:
            body = await (await admin.post("/admin/v1/rollback", headers=AUTH)).json()
        assert body["mode"] == "double" and body["pauseMs"] == 0
        previous = swaps.previous
        assert previous.host.pinned and previous.module is previous.host.module
        assert next(previous.module.parameters()).device.type == "cpu"
        assert next(swaps.active.module.parameters()).device.type == "cuda"
        r = await data.post("/rerank", json={"query": "q", "texts": DOCS})
        assert r.status == 200
        torch.cuda.synchronize()
        reserved.append(torch.cuda.memory_reserved())
    print(f"\ndouble: reserved MiB per swap {[round(r / 2**20, 1) for r in reserved]}")
    assert max(reserved[2:]) <= max(reserved[:2])  # the cached blocks are reused, not grown
