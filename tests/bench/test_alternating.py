"""One-client loads that alternate each request between servers (bench.load's ``targets``).

At one client the servers differ by a few percent while this machine drifts by 10-20%, so they
are measured in one load, request by request; these tests hold that load to its promises.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import asdict, dataclass, field
from typing import Any

import pytest
from aiohttp import web
from hotswap_contract.wire import VERSION_HEADER
from pytest_aiohttp import AiohttpServer

from bench.load import (
    Endpoint,
    LoadResult,
    LoadSpec,
    Record,
    in_flight_rate,
    per_target,
    run_load,
    throughput,
)
from bench.workload import make_workload


@dataclass
class Seen:
    """What the fake servers received: (server, body) in arrival order, and the most at once."""

    arrivals: list[tuple[str, bytes]] = field(default_factory=list)
    in_flight: int = 0
    most_at_once: int = 0


def _fake_tei(name: str, seen: Seen) -> web.Application:
    """A /rerank that answers in TEI's shape after a few milliseconds, long enough that a second
    request sent before the first was answered would overlap it."""

    async def rerank(request: web.Request) -> web.Response:
        body = await request.read()
        seen.arrivals.append((name, body))
        seen.in_flight += 1  # across both servers: one client means one request anywhere
        seen.most_at_once = max(seen.most_at_once, seen.in_flight)
        try:
            await asyncio.sleep(0.005)
        finally:
            seen.in_flight -= 1
        texts = json.loads(body)["texts"]
        answer = [{"index": i, "score": 0.5} for i in range(len(texts))]
        return web.json_response(answer, headers={VERSION_HEADER: name})

    app = web.Application()
    app.router.add_post("/rerank", rerank)
    return app


async def test_one_client_alternates_between_two_real_servers(aiohttp_server: AiohttpServer) -> None:
    seen = Seen()
    a = await aiohttp_server(_fake_tei("a", seen))
    b = await aiohttp_server(_fake_tei("b", seen))
    urls = [str(s.make_url("")).rstrip("/") for s in (a, b)]
    spec = LoadSpec(
        url=urls[0], clients=1, docs=3, min_s=0.4, min_measured=20, warmup_s=0.1, max_s=20,
        warm_wave=True, targets=tuple(Endpoint(u) for u in urls),
    )  # fmt: skip
    # The load generator is a separate process; the fake servers answer on this loop meanwhile.
    result = await asyncio.to_thread(run_load, spec)

    names = [name for name, _ in seen.arrivals]
    assert names == ["a", "b"] * (len(names) // 2) + ["a"] * (len(names) % 2)  # strictly alternate
    assert seen.most_at_once == 1
    bodies = {n: [body for name, body in seen.arrivals if name == n] for n in ("a", "b")}
    common = min(len(bodies["a"]), len(bodies["b"]))
    expected = make_workload().bodies(3)
    assert bodies["a"][:common] == bodies["b"][:common] == [expected[j % 64] for j in range(common)]

    split = per_target(result)
    assert [s.spec.url for s in split] == urls and all(s.in_flight and not s.spec.targets for s in split)
    for t, (part, name) in enumerate(zip(split, ("a", "b"), strict=True)):
        assert part.records and all(r.target == t and r.version == name for r in part.records)
        assert len(part.ok()) >= spec.min_measured  # min_measured holds per target
        assert throughput(part) > 0
    assert abs(len(split[0].records) - len(split[1].records)) <= 1
    assert len(split[0].records) + len(split[1].records) == len(result.records) == len(names)


def _split(records: list[Record], warm_at: float) -> LoadResult:
    spec = LoadSpec(url="", clients=1, docs=3, min_s=0, min_measured=0, warmup_s=0, max_s=0)
    return LoadResult(spec, 0.0, max(r.end for r in records), records, warm_at=warm_at, in_flight=True)


def test_in_flight_rate_counts_only_the_time_a_request_was_out() -> None:
    records = [
        Record(0.0, 0.1, 200, 3, "v1", 0, 0),  # before the warm-up ended: not counted
        Record(1.0, 1.1, 200, 3, "v1", 0, 0),
        Record(1.1, 1.6, 500, 3, "v1", 0, 0),  # failed: neither its pairs nor its time
        Record(5.0, 5.1, 200, 3, "v1", 0, 0),  # the gap meanwhile was another server's
    ]
    result = _split(records, warm_at=0.5)
    assert throughput(result) == pytest.approx(30.0)  # 6 pairs in 0.2 s of flight
    assert in_flight_rate([]) == 0.0
    # The same records as an ordinary load: pairs over the wall-clock window, far lower.
    ordinary = LoadResult(result.spec, 0.0, 5.1, records, warm_at=0.5)
    assert throughput(ordinary) < 5.0


def test_targets_need_one_client_and_survive_the_trip_to_the_generator() -> None:
    two = (Endpoint("http://a"), Endpoint("http://b", "infinity", "m"))
    with pytest.raises(ValueError, match="one client"):
        LoadSpec(url="", clients=2, docs=3, min_s=0, min_measured=0, warmup_s=0, max_s=0, targets=two)
    spec = LoadSpec(url="", clients=1, docs=3, min_s=0, min_measured=0, warmup_s=0, max_s=0, targets=two)
    as_json: dict[str, Any] = json.loads(json.dumps(asdict(spec)))  # as bench.load's main gets it
    assert LoadSpec(**as_json) == spec and LoadSpec(**as_json).targets[1].api == "infinity"
    assert spec.endpoints == two
    plain = LoadSpec(url="http://c", clients=4, docs=3, min_s=0, min_measured=0, warmup_s=0, max_s=0)
    assert plain.endpoints == (Endpoint("http://c"),)


def test_record_rebuilt_from_an_old_row_defaults_to_the_first_target() -> None:
    # The parent rebuilds records with Record(*row); rows without a target are an ordinary load's.
    row: list[Any] = [0.0, 1.0, 200, 3, "v1", 2]
    assert Record(*row).target == 0
