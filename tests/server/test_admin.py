"""Admin plane: preload validation, refusals that leave the live model untouched, 409s, paths."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest
from hotswap_contract.digest import folder_digest

from .conftest import AUTH

PAIRS = {
    "query": "what is machine learning",
    "texts": ["Machine learning is AI.", "Bananas are fruit."],
    "raw_scores": True,
}


async def _scores(data) -> tuple[str, list]:  # type: ignore[no-untyped-def]
    r = await data.post("/rerank", json=PAIRS)
    assert r.status == 200
    return r.headers["X-Hotswap-Model-Version"], await r.json()


@pytest.mark.parametrize(
    ("variant", "reason"),
    [
        ("broken-nan", "non-finite"),
        ("broken-shape", "shape"),
        ("broken-pickle", "pickle"),
        ("broken-truncated", "past the"),
        ("broken-header", "past the"),
        ("broken-keys", "missing"),
    ],
)
async def test_broken_variant_refused_and_live_model_keeps_serving(
    make_clients, variant: str, reason: str
) -> None:
    data, admin, state = await make_clients()
    before = await _scores(data)
    r = await admin.post("/admin/v1/preload", json={"version": "bad", "path": variant}, headers=AUTH)
    assert r.status == 422
    err = await r.json()
    assert err["error_type"] == "invalid_model" and reason in err["error"], err
    assert state.swaps.staged is None
    assert await _scores(data) == before
    r = await admin.post("/admin/v1/activate", json={"version": "bad"}, headers=AUTH)
    assert r.status == 409 and (await r.json())["error_type"] == "not_staged"
    assert await _scores(data) == before


async def test_preload_paths_stay_inside_the_models_root(
    make_clients, testmodels_dir: Path, tmp_path: Path
) -> None:
    _, admin, _ = await make_clients()
    link = testmodels_dir / f".escape-{os.getpid()}"
    link.symlink_to(tmp_path)
    try:
        for path, status in [
            ("/etc", 403),
            ("../", 403),
            (link.name, 403),
            ("no-such-model", 404),
            ("", 422),
        ]:
            r = await admin.post("/admin/v1/preload", json={"version": "v9", "path": path}, headers=AUTH)
            assert r.status == status, (path, await r.text())
    finally:
        link.unlink()


@pytest.mark.parametrize(
    "body", [{"version": "Bad_Version", "path": "tiny-xlmr-v2"}, {"path": "tiny-xlmr-v2"}, {"version": "v2"}]
)
async def test_preload_bad_body_is_4xx(make_clients, body: dict) -> None:
    _, admin, _ = await make_clients()
    r = await admin.post("/admin/v1/preload", json=body, headers=AUTH)
    assert 400 <= r.status < 500 and r.status != 404


async def test_preload_is_idempotent_and_checks_the_digest(make_clients, testmodels_dir: Path) -> None:
    _, admin, state = await make_clients()
    digest = folder_digest(testmodels_dir / "tiny-xlmr-v2")
    r = await admin.post(
        "/admin/v1/preload", json={"version": "v2", "path": "tiny-xlmr-v2", "digest": "0" * 64}, headers=AUTH
    )
    assert r.status == 422 and (await r.json())["error_type"] == "digest_mismatch"
    body = {"version": "v2", "path": "tiny-xlmr-v2", "digest": digest}
    first = await (await admin.post("/admin/v1/preload", json=body, headers=AUTH)).json()
    staged = state.swaps.staged
    second = await (await admin.post("/admin/v1/preload", json=body, headers=AUTH)).json()
    assert first == second and state.swaps.staged is staged
    assert first["staged"]["digest"] == digest
    # Where the preload spent its time, phase by phase, kept with the version.
    phases = first["staged"]["loadPhasesMs"]
    assert list(phases) == ["digest", "read", "build", "check"] and all(v >= 0 for v in phases.values())
    state_body = await (await admin.get("/admin/v1/state", headers=AUTH)).json()
    assert state_body["staged"]["loadPhasesMs"] == phases
    assert set(state_body["active"]["loadPhasesMs"]) == set(phases)  # the boot version's own


async def test_second_control_operation_is_409(make_clients) -> None:
    _, admin, state = await make_clients()
    preload = asyncio.create_task(
        admin.post("/admin/v1/preload", json={"version": "v2", "path": "minilm-ce-v2"}, headers=AUTH)
    )
    async with asyncio.timeout(10):
        while state.swaps.operation is None:
            await asyncio.sleep(0.005)
    r = await admin.post("/admin/v1/rollback", headers=AUTH)
    assert r.status == 409 and (await r.json())["error_type"] == "operation_in_progress"
    await preload


async def test_rollback_without_previous_and_discard(make_clients) -> None:
    _, admin, state = await make_clients()
    r = await admin.post("/admin/v1/rollback", headers=AUTH)
    assert r.status == 409 and (await r.json())["error_type"] == "no_previous"
    await admin.post("/admin/v1/preload", json={"version": "v2", "path": "tiny-xlmr-v2"}, headers=AUTH)
    assert state.swaps.staged is not None
    r = await admin.post("/admin/v1/discard", headers=AUTH)
    assert r.status == 200 and state.swaps.staged is None
    r = await admin.post("/admin/v1/activate", json={"version": "v2"}, headers=AUTH)
    assert r.status == 409  # never an implicit load


async def test_boot_through_admin_plane_on_an_empty_server(make_clients) -> None:
    data, admin, _ = await make_clients(model=None)
    assert (await data.get("/readyz")).status == 503
    await admin.post("/admin/v1/preload", json={"version": "v1", "path": "tiny-xlmr-v1"}, headers=AUTH)
    r = await admin.post("/admin/v1/activate", json={"version": "v1"}, headers=AUTH)
    assert (await r.json())["mode"] == "initial"
    assert (await data.get("/readyz")).status == 200
    version, _ = await _scores(data)
    assert version == "v1"


async def test_a_version_id_names_one_content(make_clients) -> None:
    _, admin, _ = await make_clients()
    r = await admin.post("/admin/v1/preload", json={"version": "v1", "path": "tiny-xlmr-v2"}, headers=AUTH)
    assert r.status == 409 and (await r.json())["error_type"] == "version_conflict"
    r = await admin.post("/admin/v1/preload", json={"version": "v1", "path": "tiny-xlmr-v1"}, headers=AUTH)
    assert r.status == 200 and (await r.json())["compatible"] == "active"
