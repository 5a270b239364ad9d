"""The batching engine with stand-in runners: pinning, pauses, bucketing, errors."""

from __future__ import annotations

import asyncio
import threading
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from hotswap_server.engine import Engine, Slot
from hotswap_server.errors import NotReady
from hotswap_server.metrics import ServerMetrics
from hotswap_server.scoring import AdmittedTokens


class FakeRunner:
    """Scores every pair with a constant; can hold the model thread at a batch boundary."""

    def __init__(self, value: float) -> None:
        self.value = value
        self.batches: list[list[str]] = []
        self.hold = threading.Event()
        self.hold.set()
        self.entered = threading.Event()

    def score(self, queries: list[str], docs: list[str]) -> tuple[np.ndarray, np.ndarray]:
        self.entered.set()
        self.hold.wait(10)
        self.batches.append(list(docs))
        return np.full(len(docs), self.value, dtype=np.float32), np.ones(len(docs), dtype=np.int64)


def _slot(version: str, runner: FakeRunner) -> Slot:
    slot = Slot(SimpleNamespace(version=version, kind="cross-encoder"), runner)  # type: ignore[arg-type]
    slot.idle.set()
    return slot


@pytest.fixture
async def engine():  # type: ignore[no-untyped-def]
    e = Engine(max_batch_size=4, max_queue_pairs=1000, metrics=ServerMetrics())
    e.start()
    yield e
    await e.stop()


async def test_a_job_larger_than_a_batch_finishes_on_the_version_it_started_on(engine: Engine) -> None:
    old, new = FakeRunner(1.0), FakeRunner(2.0)
    slot = _slot("v1", old)
    engine.set_active(slot)
    old.hold.clear()
    job = asyncio.create_task(engine.score("q", [f"d{i}" for i in range(10)]))
    await asyncio.to_thread(old.entered.wait, 10)  # first batch of 4 is on the model thread

    def swap() -> None:
        slot.runner = new
        slot.loaded = SimpleNamespace(version="v2", kind="cross-encoder")  # type: ignore[assignment]

    swapping = asyncio.create_task(engine.exclusive(swap))
    late = asyncio.create_task(engine.score("q", ["late"]))  # arrives during the pause
    await asyncio.sleep(0)
    old.hold.set()
    scored = await job
    _, pause = await swapping
    assert scored.version == "v1" and np.all(scored.raw == 1.0)  # all 10 pairs on v1, in 3 batches
    assert sum(len(b) for b in old.batches) == 10
    late_scored = await late
    assert late_scored.version == "v2" and late_scored.raw.tolist() == [2.0]
    assert pause > 0


async def test_double_mode_old_slot_finishes_its_jobs(engine: Engine) -> None:
    a, b = FakeRunner(1.0), FakeRunner(2.0)
    engine.set_active(_slot("v1", a))
    a.hold.clear()
    job = asyncio.create_task(engine.score("q", [f"d{i}" for i in range(8)]))
    await asyncio.to_thread(a.entered.wait, 10)
    old = engine.set_active(_slot("v2", b))
    fresh = asyncio.create_task(engine.score("q", ["x"]))
    a.hold.set()
    assert (await job).version == "v1"
    assert (await fresh).version == "v2"
    assert old is not None
    await asyncio.wait_for(Engine.wait_idle(old), 5)


async def test_batches_bucket_by_length_without_starving_the_oldest(engine: Engine) -> None:
    r = FakeRunner(0.0)
    r.hold.clear()
    engine.set_active(_slot("v1", r))
    first = asyncio.create_task(engine.score("q", ["seed"]))
    await asyncio.to_thread(r.entered.wait, 10)
    docs = ["x" * n for n in (500, 1, 400, 2, 300, 3, 200, 4)]
    job = asyncio.create_task(engine.score("q", docs))
    # score() queues its pairs before its first await: one turn of the loop and all 8 wait
    # behind the held batch (a condition checked, not a time guessed).
    await asyncio.sleep(0)
    assert engine.waiting_pairs == len(docs)
    r.hold.set()
    await first
    await job
    short = [b for b in r.batches if "seed" not in b]
    assert short[0] == ["x" * 200, "x" * 300, "x" * 400, "x" * 500]  # the window holding the oldest pair
    assert short[1] == ["x", "xx", "xxx", "xxxx"]


class FeatureRunner(FakeRunner):
    """Records the admission ids each batch was given (None: the runner tokenizes itself)."""

    def __init__(self) -> None:
        super().__init__(1.0)
        self.features: list[object] = []

    def score(self, queries, docs, features=None):  # type: ignore[no-untyped-def]
        self.features.append(features)
        return super().score(queries, docs)


def _admitted(loaded: object, *rows: list[int]) -> AdmittedTokens:
    return AdmittedTokens(loaded, [len(r) for r in rows], {"input_ids": list(rows)})  # type: ignore[arg-type]


async def test_admission_ids_reach_the_runner_only_from_the_version_that_scores(engine: Engine) -> None:
    r = FeatureRunner()
    slot = _slot("v1", r)
    engine.set_active(slot)
    await engine.score("q", ["a", "b"], _admitted(slot.loaded, [1, 2], [3, 4, 5]))
    assert r.features == [{"input_ids": [[1, 2], [3, 4, 5]]}]
    # Admitted by a version that is no longer the one scoring (a swap came between): tokenized again.
    await engine.score("q", ["a"], _admitted(SimpleNamespace(version="v0"), [9]))
    await engine.score("q", ["a"])  # truncation on: nothing admitted
    assert r.features[1:] == [None, None]
    # One batch of two requests: their ids in the batch's order; one request without: none at all.
    await _one_batch_behind_a_held_one(
        engine, r, [("c", _admitted(slot.loaded, [6])), ("d e", _admitted(slot.loaded, [7], [8, 8]))]
    )
    assert r.batches[-1] == ["c", "d", "e"]
    assert r.features[-1] == {"input_ids": [[6], [7], [8, 8]]}
    await _one_batch_behind_a_held_one(engine, r, [("f", _admitted(slot.loaded, [6])), ("g", None)])
    assert r.batches[-1] == ["f", "g"] and r.features[-1] is None


async def _one_batch_behind_a_held_one(
    engine: Engine, r: FakeRunner, requests: list[tuple[str, AdmittedTokens | None]]
) -> None:
    """Queue ``requests`` (space-separated documents, admission ids) while a seed batch holds the
    model thread, so that they wait together and form the next batch; then let all finish."""
    r.hold.clear()
    r.entered.clear()
    seed = asyncio.create_task(engine.score("q", ["seed"]))
    await asyncio.to_thread(r.entered.wait, 10)
    jobs = [asyncio.create_task(engine.score("q", docs.split(), admitted)) for docs, admitted in requests]
    await asyncio.sleep(0)
    assert engine.waiting_pairs == sum(len(docs.split()) for docs, _ in requests)
    r.hold.set()
    await asyncio.gather(seed, *jobs)


async def test_no_model_and_closing_are_503(engine: Engine) -> None:
    with pytest.raises(NotReady):
        await engine.score("q", ["a"])
    engine.set_active(_slot("v1", FakeRunner(0.0)))
    assert (await engine.score("q", ["a"])).version == "v1"
    assert await engine.drain(5)
    with pytest.raises(NotReady):
        await engine.score("q", ["a"])


async def test_a_failing_forward_fails_only_its_jobs(engine: Engine) -> None:
    class Broken(FakeRunner):
        def score(self, queries, docs):  # type: ignore[no-untyped-def]
            raise RuntimeError("CUDA out of memory")

    engine.set_active(_slot("v1", Broken(0.0)))
    with pytest.raises(Exception, match="model forward failed: RuntimeError"):
        await engine.score("q", ["a"])
    engine.set_active(_slot("v1", FakeRunner(1.0)))
    assert (await engine.score("q", ["a"])).raw.tolist() == [1.0]


async def test_concurrent_cpu_forwards_all_finish_before_an_inplace_copy(monkeypatch) -> None:
    """With two model threads, two batches run at once; the copy waits for both."""
    torch = pytest.importorskip("torch")
    monkeypatch.setattr(torch, "get_num_threads", lambda: 2)
    engine = Engine(max_batch_size=4, max_queue_pairs=1000, metrics=ServerMetrics())
    engine.start()
    try:
        running = 0
        peak = 0
        lock = threading.Lock()
        both_in = threading.Barrier(2, timeout=10)

        class Concurrent(FakeRunner):
            def score(self, queries, docs):  # type: ignore[no-untyped-def]
                nonlocal running, peak
                with lock:
                    running += 1
                    peak = max(peak, running)
                both_in.wait()  # proves two forwards overlap
                try:
                    return super().score(queries, docs)
                finally:
                    with lock:
                        running -= 1

        runner = Concurrent(1.0)
        slot = _slot("v1", runner)
        slot.loaded = SimpleNamespace(version="v1", kind="cross-encoder", module=torch.nn.Linear(1, 1))  # type: ignore[assignment]
        engine.set_active(slot)
        jobs = [asyncio.create_task(engine.score("q", [f"{k}-{i}" for i in range(4)])) for k in range(2)]
        await asyncio.sleep(0)
        seen_running: list[int] = []
        swapping = asyncio.create_task(engine.exclusive(lambda: seen_running.append(running)))
        results = await asyncio.gather(*jobs)
        await swapping
        assert peak == 2
        assert seen_running == [0]
        assert all(r.version == "v1" for r in results)
    finally:
        await engine.stop()


def _cpu_engine(monkeypatch: pytest.MonkeyPatch, max_batch_size: int) -> Engine:
    """An engine that sees two intra-op threads (two model threads, groups split in two)."""
    torch = pytest.importorskip("torch")
    monkeypatch.setattr(torch, "get_num_threads", lambda: 2)
    return Engine(max_batch_size=max_batch_size, max_queue_pairs=1000, metrics=ServerMetrics())


def _cpu_slot(runner: FakeRunner) -> Slot:
    import torch

    slot = _slot("v1", runner)
    slot.loaded = SimpleNamespace(version="v1", kind="cross-encoder", module=torch.nn.Linear(1, 1))  # type: ignore[assignment]
    return slot


class Recording(FakeRunner):
    """Records each batch with the engine's share of threads when it entered; holds batches whose
    first document starts with a held prefix until released."""

    def __init__(self, engine: Engine) -> None:
        super().__init__(1.0)
        self.engine = engine
        self.shares: list[int] = []
        self.lock = threading.Lock()
        self.held: dict[str, threading.Event] = {}
        self.arrived: dict[str, threading.Event] = {}

    def hold_prefix(self, prefix: str) -> None:
        self.held[prefix] = threading.Event()
        self.arrived[prefix] = threading.Event()

    def score(self, queries, docs):  # type: ignore[no-untyped-def]
        with self.lock:
            self.shares.append(self.engine.share)
        for prefix, gate in self.held.items():
            if docs[0].startswith(prefix):
                self.arrived[prefix].set()
                gate.wait(10)
        return super().score(queries, docs)


async def test_a_large_request_runs_as_one_single_thread_batch_per_thread(monkeypatch) -> None:
    engine = _cpu_engine(monkeypatch, max_batch_size=32)
    engine.start()
    try:
        runner = Recording(engine)
        both_in = threading.Barrier(2, timeout=10)
        plain_score = runner.score

        entered: list[int] = []

        def score(queries, docs):  # type: ignore[no-untyped-def]
            if len(docs) > 3:
                entered.append(engine.share)
                both_in.wait()  # the two halves run at the same time
            return plain_score(queries, docs)

        runner.score = score  # type: ignore[method-assign]
        engine.set_active(_cpu_slot(runner))
        scored = await engine.score("q", [f"{i:02d} " + "word " * 20 for i in range(32)])
        assert scored.raw.tolist() == [1.0] * 32
        assert sorted(len(b) for b in runner.batches) == [16, 16]
        assert entered == [1, 1]  # one intra-op thread each
        # A few short pairs are not split: on one core they would be slower than on both.
        runner.batches.clear()
        runner.shares.clear()
        await engine.score("q", ["a", "b", "c"])
        assert runner.batches == [["a", "b", "c"]]
        assert runner.shares == [2]
    finally:
        await engine.stop()


async def test_on_cpu_a_group_holds_one_full_batch_shared_between_the_threads(monkeypatch) -> None:
    # max_batch_size bounds the pairs in flight on CPU too: with 2 threads each batch holds at most
    # half of it (a pair costs as much on one core in a batch of 16 as in one of 32, and a shorter
    # batch is a shorter wait for a request that just missed it).
    engine = _cpu_engine(monkeypatch, max_batch_size=8)
    engine.start()
    try:
        runner = Recording(engine)
        engine.set_active(_cpu_slot(runner))
        long = "word " * 80
        requests = [engine.score("q", [f"{r}{i} {long}" for i in range(8)]) for r in "abc"]
        await asyncio.gather(*requests)
        assert [len(b) for b in runner.batches] == [4] * 6
        assert runner.shares[:2] == [1, 1]  # the first group's two batches ran together, one thread each
        assert {b[0][0] for b in runner.batches[:2]} == {"a"}  # a request's halves run side by side
    finally:
        await engine.stop()


async def test_a_thread_that_frees_waits_for_its_group_unless_a_full_batch_waits(monkeypatch) -> None:
    engine = _cpu_engine(monkeypatch, max_batch_size=8)  # a thread's batch: 4 pairs
    engine.start()
    try:
        runner = Recording(engine)
        runner.hold_prefix("held")
        engine.set_active(_cpu_slot(runner))
        # Eight long pairs: a group of two batches of four; the first is held on its thread.
        docs = [("held" if i < 4 else "free") + " " + "word " * 80 for i in range(8)]
        group = asyncio.create_task(engine.score("q", docs))
        await asyncio.to_thread(runner.arrived["held"].wait, 10)
        while len(runner.batches) < 1:  # the other half finishes: one thread is free
            await asyncio.sleep(0.01)
        small = asyncio.create_task(engine.score("q", ["small"]))
        for _ in range(20):
            await asyncio.sleep(0)
        assert engine.waiting_pairs == 1  # not started on the free thread: it waits for the group
        full = asyncio.create_task(engine.score("q", [f"full{i}" for i in range(4)]))
        while len(runner.batches) < 2:  # a full batch waits: it starts beside the held one
            await asyncio.sleep(0.01)
        assert runner.batches[1] == ["small", "full0", "full1", "full2"]
        runner.held["held"].set()
        await asyncio.gather(group, small, full)
        assert runner.batches[-1] == ["full3"]  # after the group that held it
    finally:
        await engine.stop()


async def test_a_group_waits_briefly_for_the_rest_of_the_last_one(engine: Engine, monkeypatch) -> None:
    import hotswap_server.engine as engine_module

    runner = Recording(engine)
    runner.hold_prefix("seed")
    engine.set_active(_slot("v1", runner))
    seed = asyncio.create_task(engine.score("q", ["seed"]))
    await asyncio.to_thread(runner.arrived["seed"].wait, 10)
    first = [asyncio.create_task(engine.score("q", [d])) for d in ("a", "b")]
    await asyncio.sleep(0)
    runner.held["seed"].set()
    await asyncio.gather(seed, *first)
    assert runner.batches[-1] == ["a", "b"]  # the last group: two pairs

    # One pair comes back: the engine waits for the second (bounded; here, made long)...
    monkeypatch.setattr(engine_module, "LINGER_SHARE", 1e6)
    monkeypatch.setattr(engine_module, "LINGER_MAX", 30.0)
    c = asyncio.create_task(engine.score("q", ["c"]))
    for _ in range(20):
        await asyncio.sleep(0)
    assert engine.waiting_pairs == 1
    d = asyncio.create_task(engine.score("q", ["d"]))
    await asyncio.gather(c, d)
    assert runner.batches[-1] == ["c", "d"]  # ... and both go in one batch

    # With no time to wait, a lone pair starts at once.
    monkeypatch.setattr(engine_module, "LINGER_MAX", 0.0)
    await engine.score("q", ["e"])
    assert runner.batches[-1] == ["e"]


class _Block(torch.nn.Module):
    """Records the intra-op threads it ran with; the first one starts a second forward beside it."""

    def __init__(self, engine: Engine, seen: list[int], current: list[int]) -> None:
        super().__init__()
        self.engine, self.seen, self.current = engine, seen, current

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen.append(self.current[0])
        if len(self.seen) == 1:
            self.engine._set_running(+1)  # another forward starts: this one's share halves
        return x


class _Stack(torch.nn.Module):
    def __init__(self, engine: Engine, seen: list[int], current: list[int]) -> None:
        super().__init__()
        self.embed = torch.nn.Identity()
        self.layers = torch.nn.ModuleList([_Block(engine, seen, current) for _ in range(3)])
        self.head = torch.nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.embed(x)
        for block in self.layers:
            x = block(x)
        return self.head(x)


def test_a_cpu_forward_follows_its_share_at_each_block_and_hooks_nothing_else(monkeypatch) -> None:
    current = [2]  # the calling thread's intra-op threads (torch's setting, faked: no real pool)
    monkeypatch.setattr(torch, "get_num_threads", lambda: current[0])
    monkeypatch.setattr(torch, "set_num_threads", lambda n: current.__setitem__(0, n))
    engine = Engine(max_batch_size=8, max_queue_pairs=64, metrics=ServerMetrics())
    try:
        assert engine.threads == 2
        seen: list[int] = []
        model = _Stack(engine, seen, current)
        engine._set_running(+1)  # this forward, alone: both threads
        engine._cpu_forward(model, lambda: model(torch.zeros(1)))
        assert seen == [2, 1, 1]  # the next block after the second forward started runs on one
        # Only the blocks carry the hook, once per model; no process-wide hook, nothing on the rest.
        assert not torch.nn.modules.module._global_forward_pre_hooks
        assert [len(b._forward_pre_hooks) for b in model.layers] == [1, 1, 1]
        assert not model._forward_pre_hooks and not model.embed._forward_pre_hooks
        engine._set_running(-2)  # both ended
        # The next forward on a thread left at one takes both back from its start; not hooked twice.
        seen.clear()
        current[0] = 1
        engine._set_running(+1)
        engine._cpu_forward(model, lambda: model(torch.zeros(1)))
        assert seen == [2, 1, 1] and [len(b._forward_pre_hooks) for b in model.layers] == [1, 1, 1]
        # Outside an engine forward (a validation on another thread) the hooks leave threads alone.
        assert engine.share == 1
        current[0] = 2
        model(torch.zeros(1))
        assert current[0] == 2
    finally:
        engine.model_thread.shutdown()
        engine.device_thread.shutdown()


def test_share_points_are_the_layers_of_a_real_model(testmodels_dir) -> None:
    from hotswap_server.engine import share_points
    from hotswap_server.modelload import load_version

    loaded = load_version("v1", testmodels_dir / "minilm-ce-v1", torch.float32)
    points = share_points(loaded.module)
    layers = loaded.module.config.num_hidden_layers
    assert len(points) == layers and all(type(p).__name__.endswith("Layer") for p in points)
