"""Host copies (one flat buffer per version, kept from preload), one-upload swaps and their
recovery, the config in the in-place signature, the finite check after the cast, and the
device-independent decisions of the GPU path, all on CPU."""

from __future__ import annotations

import asyncio
import json
import shutil
from pathlib import Path

import pytest
import torch
from hotswap_server import swap as swap_module
from hotswap_server.devices import DOUBLE_HEADROOM, Placement, activation_peak_bytes, double_fits
from hotswap_server.engine import model_threads
from hotswap_server.errors import BackendError, InvalidModel
from hotswap_server.loaded import HostCopy
from hotswap_server.modelload import load_version
from safetensors.torch import load_file, save_file

from .conftest import AUTH

DOCS = ["Machine learning is a branch of AI.", "Bananas are yellow fruit."]


def _live(state) -> dict[str, torch.Tensor]:  # type: ignore[no-untyped-def]
    return state.swaps.active.module.state_dict()


def _equal_to(live: dict[str, torch.Tensor], host: HostCopy) -> bool:
    return all(torch.equal(t, host.views[n]) for n, t in live.items())


def _snapshot(host: HostCopy) -> dict[torch.dtype, torch.Tensor]:
    return {dt: b.clone() for dt, b in host.buffers.items()}


def _same(host: HostCopy, snap: dict[torch.dtype, torch.Tensor]) -> bool:
    # Bit-identical: compare the raw bytes, not the float values (NaN != NaN, -0.0 == 0.0).
    return all(torch.equal(host.buffers[dt].view(torch.uint8), snap[dt].view(torch.uint8)) for dt in snap)


def _modified_copy(src: Path, dst: Path, config: dict | None = None, weight: float | None = None) -> Path:
    shutil.copytree(src, dst)
    if config:
        path = dst / "config.json"
        path.write_text(json.dumps({**json.loads(path.read_text()), **config}))
    if weight is not None:
        tensors = load_file(str(dst / "model.safetensors"))
        name = next(n for n, t in tensors.items() if t.is_floating_point() and t.ndim == 2)
        tensors[name] = tensors[name].clone()
        tensors[name].view(-1)[0] = weight
        out = dst / "model.safetensors"
        # The loader's pickle sniff reads a first byte of 0x80 as a pickle; a valid file whose
        # header length ends in 0x80 would be refused, so pad the metadata past such lengths.
        for pad in range(8):
            save_file(tensors, str(out), metadata={"pad": "x" * pad})
            if out.read_bytes()[:1] not in (b"\x80", b"P"):
                break
    return dst


# --- loading --------------------------------------------------------------------------------------
def test_load_goes_straight_into_one_flat_buffer(testmodels_dir: Path) -> None:
    loaded = load_version("v1", testmodels_dir / "tiny-xlmr-v1", torch.float32)
    host = loaded.host
    assert host is not None and host.module is loaded.module and not host.pinned
    assert list(host.buffers) == [torch.float32]  # one allocation for every weight
    sd = loaded.module.state_dict()
    assert all(host.holds(t) for t in sd.values())  # the module's tensors are views into it
    assert host.nbytes == loaded.nbytes


def test_finite_check_runs_after_the_cast(testmodels_dir: Path, tmp_path: Path) -> None:
    folder = _modified_copy(testmodels_dir / "tiny-xlmr-v1", tmp_path / "big", weight=1e6)
    # 1e6 is finite in float32 and bfloat16 (max ~3.4e38) but inf in float16 (max 65504).
    assert load_version("f32", folder, torch.float32).host is not None
    assert load_version("bf16", folder, torch.bfloat16).host is not None
    with pytest.raises(InvalidModel, match=r"non-finite .* in float16"):
        load_version("f16", folder, torch.float16)


# --- decisions of the GPU path, device-independent -----------------------------------------------
def test_gpu_forwards_run_on_one_thread_cpu_keeps_its_concurrency() -> None:
    assert model_threads(on_cpu=False, cpu_threads=8) == 1
    assert model_threads(on_cpu=True, cpu_threads=8) == 8
    assert model_threads(on_cpu=True, cpu_threads=0) == 1


def test_double_needs_room_for_the_copy_and_the_activation_peak() -> None:
    gib = 1 << 30
    assert double_fits(free_bytes=3 * gib, model_bytes=2 * gib, activation_peak=0)
    # The same free memory no longer fits once forwards peaked 1 GiB above the weights.
    assert not double_fits(free_bytes=3 * gib, model_bytes=2 * gib, activation_peak=gib)
    assert not double_fits(free_bytes=int(2 * gib * DOUBLE_HEADROOM), model_bytes=2 * gib, activation_peak=0)
    assert activation_peak_bytes(Placement(torch.device("cpu"), torch.float32)) == 0


def test_upload_keeps_storage_and_never_writes_the_source(testmodels_dir: Path) -> None:
    v1 = load_version("v1", testmodels_dir / "tiny-xlmr-v1", torch.float32)
    v2 = load_version("v2", testmodels_dir / "tiny-xlmr-v2", torch.float32)
    assert v1.host is not None and v2.host is not None
    live = swap_module.device_copy(v1.module, torch.device("cpu"))
    pointers = {n: t.data_ptr() for n, t in live.state_dict().items()}
    snaps = _snapshot(v1.host), _snapshot(v2.host)
    swap_module.upload(v2.host, live, None)
    assert _equal_to(live.state_dict(), v2.host)
    assert {n: t.data_ptr() for n, t in live.state_dict().items()} == pointers
    swap_module.upload(v1.host, live, None)
    assert _equal_to(live.state_dict(), v1.host)
    assert _same(v1.host, snaps[0]) and _same(v2.host, snaps[1])


# --- swaps on a server -------------------------------------------------------------------------------
async def _scores(data) -> list[float]:  # type: ignore[no-untyped-def]
    r = await data.post("/rerank", json={"query": "what is AI", "texts": DOCS, "raw_scores": True})
    assert r.status == 200
    return [i["score"] for i in sorted(await r.json(), key=lambda i: i["index"])]


async def test_host_copies_stay_bit_identical_over_100_inplace_swaps(make_clients) -> None:
    data, admin, state = await make_clients(model="tiny-xlmr-v1", swap_mode="inplace")
    v1 = state.swaps.active
    r = await admin.post("/admin/v1/preload", json={"version": "v2", "path": "tiny-xlmr-v2"}, headers=AUTH)
    assert (await r.json())["compatible"] == "inplace"
    v2 = state.swaps.staged
    assert v1.host is not None and v2.host is not None and v1.host is not v2.host
    snaps = {"v1": _snapshot(v1.host), "v2": _snapshot(v2.host)}
    hosts = {"v1": v1.host, "v2": v2.host}
    pointers = {n: t.data_ptr() for n, t in _live(state).items()}
    scores = {"v1": await _scores(data)}
    r = await admin.post("/admin/v1/activate", json={"version": "v2"}, headers=AUTH)
    assert (await r.json())["mode"] == "inplace"
    scores["v2"] = await _scores(data)
    assert scores["v2"] != pytest.approx(scores["v1"], abs=1e-3)
    for i in range(99):
        r = await admin.post("/admin/v1/rollback", headers=AUTH)
        body = await r.json()
        assert r.status == 200 and body["mode"] == "inplace", body
        want = "v1" if i % 2 == 0 else "v2"
        assert state.swaps.active.version == want and state.swaps.active.host is hosts[want]
        if i % 10 == 0:
            assert await _scores(data) == pytest.approx(scores[want], abs=1e-6)
    # 100 swaps in all, ending on v1: live equals v1's host copy bit for bit, storage unchanged,
    # and neither host copy ever changed.
    assert state.swaps.active.version == "v1" and state.swaps.previous.version == "v2"
    assert _equal_to(_live(state), hosts["v1"])
    assert {n: t.data_ptr() for n, t in _live(state).items()} == pointers
    assert _same(hosts["v1"], snaps["v1"]) and _same(hosts["v2"], snaps["v2"])
    assert state.swaps.previous.module is hosts["v2"].module


async def test_a_copy_failing_half_way_is_retried_from_the_host_copy(make_clients, monkeypatch) -> None:
    data, admin, state = await make_clients(model="tiny-xlmr-v1", swap_mode="inplace")
    await admin.post("/admin/v1/preload", json={"version": "v2", "path": "tiny-xlmr-v2"}, headers=AUTH)
    v2_host = state.swaps.staged.host
    real = swap_module._copy_chunk
    calls = {"n": 0}

    def flaky(dst: torch.Tensor, src: torch.Tensor) -> None:
        calls["n"] += 1
        if calls["n"] == 10:  # half-way through the first attempt: 9 tensors already hold v2
            raise RuntimeError("injected copy fault")
        real(dst, src)

    monkeypatch.setattr(swap_module, "_copy_chunk", flaky)
    r = await admin.post("/admin/v1/activate", json={"version": "v2"}, headers=AUTH)
    assert r.status == 200 and (await r.json())["mode"] == "inplace"
    assert calls["n"] > 10  # the retry ran
    assert state.swaps.active.version == "v2" and _equal_to(_live(state), v2_host)
    r = await data.post("/rerank", json={"query": "q", "texts": DOCS})
    assert r.headers["X-Hotswap-Model-Version"] == "v2"


async def test_a_copy_that_keeps_failing_puts_the_live_model_back(make_clients, monkeypatch) -> None:
    data, admin, state = await make_clients(model="tiny-xlmr-v1", swap_mode="inplace")
    v1_host = state.swaps.active.host
    v1_scores = await _scores(data)
    await admin.post("/admin/v1/preload", json={"version": "v2", "path": "tiny-xlmr-v2"}, headers=AUTH)
    v2_host = state.swaps.staged.host
    real = swap_module._copy_chunk
    copied = {"n": 0}

    def broken_v2(dst: torch.Tensor, src: torch.Tensor) -> None:
        if v2_host.holds(src):  # every upload of v2 dies half-way; v1's own upload works
            copied["n"] += 1
            if copied["n"] % 10 == 0:
                raise RuntimeError("injected copy fault")
        real(dst, src)

    monkeypatch.setattr(swap_module, "_copy_chunk", broken_v2)
    r = await admin.post("/admin/v1/activate", json={"version": "v2"}, headers=AUTH)
    assert r.status == 500
    assert "restored" in (await r.json())["error"]
    assert copied["n"] == 20  # two attempts, each stopped half-way
    # Fully on v1 again (not a mix), still staged v2, serving v1.
    assert state.swaps.active.version == "v1" and _equal_to(_live(state), v1_host)
    assert state.swaps.staged is not None and state.swaps.staged.version == "v2"
    assert await _scores(data) == pytest.approx(v1_scores, abs=1e-6)
    monkeypatch.setattr(swap_module, "_copy_chunk", real)
    r = await admin.post("/admin/v1/activate", json={"version": "v2"}, headers=AUTH)
    assert r.status == 200 and _equal_to(_live(state), v2_host)


def test_upload_recovering_raises_when_nothing_to_restore(testmodels_dir: Path, monkeypatch) -> None:
    v1 = load_version("v1", testmodels_dir / "tiny-xlmr-v1", torch.float32)
    assert v1.host is not None
    live = swap_module.device_copy(v1.module, torch.device("cpu"))

    def dead(dst: torch.Tensor, src: torch.Tensor) -> None:
        raise RuntimeError("injected")

    monkeypatch.setattr(swap_module, "_copy_chunk", dead)
    with pytest.raises(BackendError, match="upload failed"):
        swap_module.upload_recovering(live, v1.host, None, None)


# --- the config in the in-place signature -----------------------------------------------------------
async def test_a_changed_layer_norm_eps_is_a_full_replace(
    make_clients, testmodels_dir: Path, tmp_path: Path
) -> None:
    root = tmp_path / "models"
    root.mkdir()
    shutil.copytree(testmodels_dir / "tiny-xlmr-v1", root / "base")
    _modified_copy(testmodels_dir / "tiny-xlmr-v1", root / "same")
    _modified_copy(testmodels_dir / "tiny-xlmr-v1", root / "eps", config={"layer_norm_eps": 1e-3})
    data, admin, state = await make_clients(model="base", models_root=root, swap_mode="inplace")
    r = await admin.post("/admin/v1/preload", json={"version": "same", "path": "same"}, headers=AUTH)
    assert (await r.json())["compatible"] == "inplace"  # the same config swaps in place
    r = await admin.post("/admin/v1/preload", json={"version": "eps", "path": "eps"}, headers=AUTH)
    assert (await r.json())["compatible"] == "replace"
    old_module = state.swaps.active.module
    swap = await (await admin.post("/admin/v1/activate", json={"version": "eps"}, headers=AUTH)).json()
    assert swap["mode"] == "replace"
    live = state.swaps.active.module
    assert live is not old_module
    eps = {m.eps for m in live.modules() if isinstance(m, torch.nn.LayerNorm)}
    assert eps == {1e-3}  # the new config serves, not the old one
    r = await data.post("/rerank", json={"query": "q", "texts": DOCS})
    assert r.status == 200 and r.headers["X-Hotswap-Model-Version"] == "eps"
    swap = await (await admin.post("/admin/v1/rollback", headers=AUTH)).json()
    assert swap["mode"] == "replace" and swap["active"]["version"] == "v1"


async def test_replace_without_room_drops_the_old_copy_and_puts_it_back_on_failure(
    make_clients, monkeypatch
) -> None:
    """The tight replace (CUDA without room for two copies) run directly on CPU: a failed upload of
    the new version uploads the old one again from its host copy."""
    data, admin, state = await make_clients(model="tiny-xlmr-v1", swap_mode="inplace")
    swaps = state.swaps
    v1 = swaps.active
    v1_scores = await _scores(data)
    await admin.post("/admin/v1/preload", json={"version": "wide", "path": "tiny-xlmr-wide-v1"}, headers=AUTH)
    wide = swaps.staged
    real = swaps._to_device_sync

    def failing(loaded):  # type: ignore[no-untyped-def]
        if loaded.version == "wide":
            raise RuntimeError("injected out of memory")
        return real(loaded)

    monkeypatch.setattr(swaps, "_to_device_sync", failing)
    with pytest.raises(BackendError, match="restored"):
        await swaps._replace_tight(state.engine.active, wide)
    assert swaps.active.version == "v1" and swaps.active.module is not v1.module
    assert _equal_to(_live(state), v1.host)
    assert await _scores(data) == pytest.approx(v1_scores, abs=1e-6)
    monkeypatch.setattr(swaps, "_to_device_sync", real)
    outgoing, mode, _pause = await swaps._replace_tight(state.engine.active, wide)
    assert mode == "replace" and outgoing.module is v1.host.module
    assert swaps.active.version == "wide" and _equal_to(_live(state), wide.host)
    r = await data.post("/rerank", json={"query": "q", "texts": DOCS})
    assert r.headers["X-Hotswap-Model-Version"] == "wide"


async def test_admin_state_parses_and_has_no_device_figures_on_cpu(make_clients) -> None:
    from hotswap_contract.admin import AdminState

    _data, admin, _state = await make_clients(model="tiny-xlmr-v1", swap_mode="inplace")
    await admin.post("/admin/v1/preload", json={"version": "v2", "path": "tiny-xlmr-v2"}, headers=AUTH)
    await admin.post("/admin/v1/activate", json={"version": "v2"}, headers=AUTH)
    body = await (await admin.get("/admin/v1/state", headers=AUTH)).json()
    parsed = AdminState.model_validate(body)
    assert parsed.last_swap is not None and parsed.last_swap.mode == "inplace"
    assert parsed.last_swap.device_peak_bytes is None and "devicePeakBytes" not in body["lastSwap"]
    with_device = {**body["lastSwap"], "deviceBeforeBytes": 10, "devicePeakBytes": 12}
    parsed = AdminState.model_validate({**body, "lastSwap": with_device})
    assert parsed.last_swap is not None and parsed.last_swap.device_peak_bytes == 12


async def test_loading_runs_in_the_background_at_a_lower_priority(make_clients) -> None:
    """The preload thread yields the CPU to forwards: one intra-op thread and a nice value
    LOADER_NICE above the server's (capped at 19), while serving threads keep theirs."""
    import os
    import threading

    _data, _admin, state = await make_clients(model="tiny-xlmr-v1")

    def probe() -> tuple[int, int]:
        return os.getpriority(os.PRIO_PROCESS, threading.get_native_id()), torch.get_num_threads()

    loop = asyncio.get_running_loop()
    nice, threads = await loop.run_in_executor(state.swaps._loader, probe)
    mine = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    assert threads == 1
    assert nice == min(19, mine + swap_module.LOADER_NICE)
