"""Swaps under concurrent load against a real server process: no failure, no mixed versions."""

from __future__ import annotations

import asyncio
import random
from pathlib import Path

import aiohttp
import numpy as np
import pytest

from .expected import reference_scores
from .serverproc import TOKEN, run_server

TOPICS = ["machine learning", "fresh fruit", "football", "cooking pasta", "neural networks", "apples"]
CLIENTS = 16
SWAPS = 6


def make_requests() -> list[tuple[str, list[str]]]:
    rng = random.Random(7)
    requests = []
    for n_docs in (1, 3, 5, 10, 17):  # 10 and 17 documents span several batches of 4 pairs
        query = f"tell me about {rng.choice(TOPICS)}"
        docs = [
            f"{rng.choice(TOPICS)} is {rng.choice(['great', 'popular', 'hard', 'new'])} today"
            for _ in range(n_docs)
        ]
        requests.append((query, docs))
    return requests


@pytest.fixture(scope="module")
def expected(testmodels_dir: Path) -> dict[str, list[np.ndarray]]:
    reqs = make_requests()
    return {
        "v1": reference_scores(testmodels_dir / "tiny-xlmr-v1", reqs),
        "v2": reference_scores(testmodels_dir / "tiny-xlmr-v2", reqs),
    }


async def _client(
    session: aiohttp.ClientSession, url: str, stop: asyncio.Event, seen: list, seed: int
) -> None:
    rng = random.Random(seed)
    reqs = make_requests()
    for _ in range(400):  # bounded: the swapper normally ends the loop long before this
        if stop.is_set():
            return
        k = rng.randrange(len(reqs))
        query, docs = reqs[k]
        async with session.post(
            f"{url}/rerank", json={"query": query, "texts": docs, "raw_scores": True}
        ) as r:
            body = await r.json()
            seen.append((k, r.status, r.headers.get("X-Hotswap-Model-Version"), body))


# threads=2: two CPU forwards overlap on the model threads; the in-place copy must wait for both.
@pytest.mark.parametrize(("mode", "threads"), [("inplace", 1), ("double", 1), ("inplace", 2)])
async def test_swaps_under_load_fail_nothing_and_never_mix_versions(
    tmp_path: Path, testmodels_dir: Path, expected: dict, mode: str, threads: int
) -> None:
    with run_server(
        tmp_path, testmodels_dir, "--model", str(testmodels_dir / "tiny-xlmr-v1"), "--version", "v1",
        "--swap-mode", mode, "--max-batch-size", "4", "--torch-threads", str(threads),
    ) as server:  # fmt: skip
        seen: list = []
        stop = asyncio.Event()
        auth = {"Authorization": f"Bearer {TOKEN}"}
        async with aiohttp.ClientSession() as session:
            clients = [
                asyncio.create_task(_client(session, server.url, stop, seen, seed)) for seed in range(CLIENTS)
            ]
            swaps = []
            try:
                async with session.post(
                    f"{server.admin_url}/admin/v1/preload",
                    json={"version": "v2", "path": "tiny-xlmr-v2"},
                    headers=auth,
                ) as r:
                    assert r.status == 200, await r.text()
                for i in range(SWAPS):
                    # Let some traffic through on each version before swapping again.
                    target = len(seen) + 3 * CLIENTS
                    async with asyncio.timeout(60):
                        while len(seen) < target:
                            await asyncio.sleep(0.01)
                    route = "activate" if i == 0 else "rollback"
                    async with session.post(
                        f"{server.admin_url}/admin/v1/{route}",
                        json={"version": "v2"} if i == 0 else {},
                        headers=auth,
                    ) as r:
                        assert r.status == 200, await r.text()
                        swaps.append(await r.json())
            finally:
                stop.set()
                await asyncio.gather(*clients)

    assert [s["mode"] for s in swaps] == [mode] * SWAPS
    assert all(s["pauseMs"] >= 0 for s in swaps)
    assert [s["active"]["version"] for s in swaps] == ["v2", "v1", "v2", "v1", "v2", "v1"]
    failures = [(s, body) for _, s, _, body in seen if s != 200]
    assert not failures, f"non-2xx responses: {failures[:3]}"
    versions = {v for _, _, v, _ in seen}
    assert versions == {"v1", "v2"}
    for k, _, version, body in seen:
        got = np.zeros(len(body), dtype=np.float32)
        for item in body:
            got[item["index"]] = item["score"]
        want, other = expected[version][k], expected["v2" if version == "v1" else "v1"][k]
        # Every pair of the response matches the version its header names...
        np.testing.assert_allclose(got, want, atol=1e-3, err_msg=f"request {k} stated {version}")
        # ...and the two versions are far apart on these inputs, so a mixed response could not pass.
        assert np.max(np.abs(want - other)) > 0.1
