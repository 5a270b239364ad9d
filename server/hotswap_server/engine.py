"""The batching engine: requests in, batched forwards on one model thread, scores out.

Invariants (the heart of the hot swap):
- A job (one HTTP request) is *pinned* to a slot, and to the slot's version at that moment,
  when its first pair enters a batch. Every later pair of that job runs on the same slot.
- An in-place swap pauses pinning, lets pinned jobs finish (they may span many batches),
  then runs the weight copy on the model thread, where no forward can overlap it.
- In double mode a new slot becomes active while the old one finishes its pinned jobs.
So each job is scored by exactly one version, and ``Job.version`` names it.

On CPU the engine runs *groups*. When no forward runs, it takes what waits (up to one full batch
in all: ``max_batch_size`` bounds the pairs in flight, as it does on a GPU), splits it into as many
batches as there are threads, and starts them together on their own model threads, one intra-op
thread each. So a thread's batch holds at most ``max_batch_size / threads`` pairs: on one core a
pair costs as much in a batch of 16 as in one of 32 (``python -m bench.part_size``), and a batch
half as long halves what a request that just misses one waits for the next. One batch split across cores by
torch waits at every operator for its slowest core, so one core taken by the event loop, a client
or a neighbour stalls the whole forward; independent batches only slow down (``python -m
bench.split_forward`` on 2 cores, MiniLM, 71-token pairs: 32 pairs as two single-thread halves in
508-553 ms against 553-656 ms as one 2-thread forward, 24 pairs 387-422 against 483-496 ms). A part
is never made smaller than ``MIN_PART_CHARS``: a few pairs on one core are slower than on all.
The share of threads is re-read at every block (layer) a forward enters, so a batch left running
alone (the last of its group, or the drain before an in-place swap) takes every thread back within
a layer.

The next group starts only when the whole group has finished, not whenever one thread frees
(unless a thread's full batch waits: then it starts at once on the free thread). A thread that started on
whatever had come back first would run the one or two requests that came back first while the rest
waited for that forward to end, so latencies would spread (``make bench``, 8 clients with
3-document requests: p99 0.91x of Infinity's with groups, 1.02x and 1.60x in two runs before; see
docs/BENCHMARKS.md). For the same reason, when fewer pairs wait than the last group took, the
engine gives the rest a moment to come back before it starts: at most ``LINGER_SHARE`` of the
last group's duration and never more than ``LINGER_MAX``, so a lone request never waits for it.

On a GPU, and for a model whose device is unknown, a group is one batch, always on the same one
device thread (each thread that runs GPU forwards would get a cuBLAS workspace of its own).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from typing import Any, TypeVar

import numpy as np
import torch

from .errors import BackendError, NotReady, Overloaded, TokenizerError
from .metrics import ServerMetrics
from .modelload import LoadedVersion
from .scoring import AdmittedTokens, Features, Runner, runner_for

log = logging.getLogger(__name__)
T = TypeVar("T")
POOL_FACTOR = 4  # batches are picked by length from this many batches' worth of waiting pairs
# Pairs of about one length (padding would waste at most this share of a batch, judged by
# characters) are batched in arrival order, whole requests at a time: nothing to gain from sorting,
# and a request scored in one batch answers sooner and leaves nothing pinned for a swap to drain.
UNIFORM_WASTE = 0.15
# ... but a request is split rather than leave a batch less than this full.
MIN_FILL = 0.875
# A group is split into one batch per thread only while each part holds at least this many
# characters of pairs (about four 70-token pairs). ``python -m bench.split_forward``, 2 threads,
# MiniLM: split in two, 3 to 6 pairs were 2-14% slower than one forward on both threads, 8 to 12
# pairs within 5% either way, 16 pairs and more 2-25% faster.
MIN_PART_CHARS = 1500
# Before a group starts with fewer pairs than the last one took: wait for the rest at most this
# share of the last group's duration (a client's round trip is a few milliseconds), and at most
# LINGER_MAX, so the wait costs no request more than a few percent of its latency.
LINGER_SHARE = 0.05
LINGER_MAX = 0.02


# Exceptions that are not a forward's failure: they propagate. Anything else a forward raises fails
# its requests, BaseException included: a Rust panic in the tokenizer is a BaseException.
_CONTROL_FLOW = (asyncio.CancelledError, KeyboardInterrupt, SystemExit, GeneratorExit)


_model_thread = threading.local()  # .engine: the engine whose CPU forward this thread runs
# Models whose blocks carry the share hook. Weak: a model dropped after a swap is not kept alive.
_hooked: weakref.WeakSet[torch.nn.Module] = weakref.WeakSet()
_hooked_lock = threading.Lock()


def _follow_share(module: torch.nn.Module, args: object) -> None:
    """Forward pre-hook: a CPU forward of the engine uses its current share of threads."""
    engine = getattr(_model_thread, "engine", None)
    if engine is not None and torch.get_num_threads() != engine.share:
        torch.set_num_threads(engine.share)


def share_points(module: torch.nn.Module) -> list[torch.nn.Module]:
    """Where a running forward re-reads its share: each block of the model's stacks (every child of a
    ``ModuleList``: a BERT or XLM-R layer), a sixth of a MiniLM forward each.

    Not every module: a process-wide hook (``register_module_forward_pre_hook``, as before) ran on
    every module call of every model in the process (116 per MiniLM forward; the validation's and
    the canary's models too) and took them all off torch's hook-free fast path; a hook per block is
    the granularity the share needs."""
    return [block for m in module.modules() if isinstance(m, torch.nn.ModuleList) for block in m]


def _hook_blocks(module: torch.nn.Module) -> None:
    """Put the share hook on ``module``'s blocks, once per model (a double-mode swap brings a new one)."""
    if module in _hooked:
        return
    with _hooked_lock:  # two model threads may meet a new model at once
        if module not in _hooked:
            for block in share_points(module):
                block.register_forward_pre_hook(_follow_share)
            _hooked.add(module)


def model_threads(on_cpu: bool, cpu_threads: int) -> int:
    """How many threads run forwards: on CPU one per intra-op thread (batches overlap, sharing
    the cores); on a GPU one, always the same thread, since every thread that runs a forward gets
    a cuBLAS workspace of its own and the device runs one batch at a time anyway."""
    return max(1, cpu_threads) if on_cpu else 1


@dataclass(eq=False)
class Slot:
    """A model on the device that jobs can be pinned to."""

    loaded: LoadedVersion
    runner: Runner
    pinned: int = 0
    idle: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def on_cpu(self) -> bool:
        """Whether the weights live in host memory (several forwards may run at once)."""
        module = getattr(self.loaded, "module", None)
        if not isinstance(module, torch.nn.Module):
            return False
        return next(module.parameters()).device.type == "cpu"

    @classmethod
    def of(cls, loaded: LoadedVersion) -> Slot:
        slot = cls(loaded, runner_for(loaded))
        slot.idle.set()
        return slot

    def replace(self, loaded: LoadedVersion) -> None:
        """Point this slot at new weights (in-place swap): only while nothing is pinned."""
        assert self.pinned == 0
        self.loaded = loaded
        self.runner = runner_for(loaded)


@dataclass(eq=False)
class Job:
    query: str
    docs: list[str]
    future: asyncio.Future[None]
    pending: list[int]
    scores: np.ndarray
    tokens: np.ndarray
    remaining: int
    slot: Slot | None = None
    version: str = ""
    kind: str = ""
    finished: bool = False
    admitted: AdmittedTokens | None = None  # the pairs' ids from the admission check, if any
    queued_at: float = field(default_factory=time.perf_counter)
    # Wall-clock nanoseconds for trace spans: arrival, first pair in a batch, last pair scored.
    queued_ns: int = field(default_factory=time.time_ns)
    started_ns: int = 0
    finished_ns: int = 0


def _pair_length(pair: tuple[Job, int]) -> int:
    job, i = pair
    return len(job.query) + len(job.docs[i])


def _admitted_features(slot: Slot, pairs: list[tuple[Job, int]]) -> Features | None:
    """The batch's ids from the admission check, if every pair has them from the version this
    slot runs now (a job admitted before a swap is tokenized again by the version that scores it)."""
    rows: list[tuple[Features, int]] = []
    for job, i in pairs:
        admitted = job.admitted
        if admitted is None or admitted.features is None or admitted.loaded is not slot.loaded:
            return None
        rows.append((admitted.features, i))
    return {name: [features[name][i] for features, i in rows] for name in rows[0][0]}


@dataclass(frozen=True)
class Scored:
    raw: np.ndarray
    tokens: int
    version: str
    kind: str
    queued_ns: int = 0  # wall clock: arrival, first pair in a batch, last pair scored (trace spans)
    started_ns: int = 0
    finished_ns: int = 0


class Engine:
    def __init__(self, max_batch_size: int, max_queue_pairs: int, metrics: ServerMetrics) -> None:
        self.max_batch_size = max_batch_size
        self.max_queue_pairs = max_queue_pairs
        self.metrics = metrics
        # Forwards run on model threads; an exclusive operation (an in-place copy) runs only
        # while no forward does. CPU forwards may overlap, up to one per intra-op thread.
        self.threads = max(1, torch.get_num_threads())
        self.model_thread = ThreadPoolExecutor(
            max_workers=model_threads(True, self.threads), thread_name_prefix="hotswap-model"
        )
        # GPU forwards and copies: one thread (its executor starts the thread on first use).
        self.device_thread = ThreadPoolExecutor(
            max_workers=model_threads(False, self.threads), thread_name_prefix="hotswap-device"
        )
        self._running = 0  # forwards on the model threads now
        self.share = self.threads  # intra-op threads for each running CPU forward
        self.active: Slot | None = None
        self._jobs: deque[Job] = deque()
        self._waiting_pairs = 0
        self._paused = False
        self._closing = False
        self._wakeup = asyncio.Event()
        self._changed = asyncio.Event()  # set after every batch: drain waiters re-check
        self._task: asyncio.Task[None] | None = None
        self._last_group = (0, 0.0)  # pairs the last group started with, and how long it ran

    # --- lifecycle -------------------------------------------------------------------------
    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="hotswap-engine")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        for job in self._jobs:
            if not job.future.done():
                job.future.set_exception(NotReady("server is shutting down"))
        self.model_thread.shutdown(wait=True)
        self.device_thread.shutdown(wait=True)

    async def drain(self, timeout: float) -> bool:
        """Refuse new work, then wait (bounded) until every accepted job is answered."""
        self._closing = True
        deadline = time.monotonic() + timeout
        while self._jobs and time.monotonic() < deadline:
            self._changed.clear()
            try:
                await asyncio.wait_for(self._changed.wait(), max(0.0, deadline - time.monotonic()))
            except TimeoutError:
                break
        return not self._jobs

    @property
    def ready(self) -> bool:
        return self.active is not None and not self._closing

    @property
    def waiting_pairs(self) -> int:
        return self._waiting_pairs

    # --- requests --------------------------------------------------------------------------
    async def score(self, query: str, docs: list[str], admitted: AdmittedTokens | None = None) -> Scored:
        if self._closing:
            raise NotReady("server is shutting down")
        if self.active is None:
            raise NotReady("no model is active yet")
        if self._waiting_pairs + len(docs) > self.max_queue_pairs:
            raise Overloaded(
                f"queue full: {self._waiting_pairs} pairs waiting, limit {self.max_queue_pairs}; retry later"
            )
        loop = asyncio.get_running_loop()
        job = Job(
            query=query,
            docs=docs,
            future=loop.create_future(),
            pending=list(range(len(docs))),
            scores=np.empty(len(docs), dtype=np.float32),
            tokens=np.zeros(len(docs), dtype=np.int64),
            remaining=len(docs),
            admitted=admitted,
        )
        self._jobs.append(job)
        self._waiting_pairs += len(docs)
        self.metrics.queue_depth.set(self._waiting_pairs)
        self._wakeup.set()
        await job.future
        return Scored(
            job.scores,
            int(job.tokens.sum()),
            job.version,
            job.kind,
            job.queued_ns,
            job.started_ns,
            job.finished_ns,
        )

    # --- control (used by the swap manager) -------------------------------------------------
    async def on_model_thread(self, fn: Callable[[], T], on_cpu: bool = True) -> T:
        executor = self.model_thread if on_cpu else self.device_thread
        return await asyncio.get_running_loop().run_in_executor(executor, fn)

    def _alone(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` (nothing else runs) with every thread. Under OpenMP the thread count is a
        setting of the calling thread, so each model thread keeps its own."""
        if self.threads > 1 and torch.get_num_threads() != self.threads:
            torch.set_num_threads(self.threads)
        return fn()

    def _cpu_forward(self, module: torch.nn.Module | None, fn: Callable[[], T]) -> T:
        """Run a CPU forward on its share of the threads, following the share as it changes (at
        each of the model's blocks)."""
        if self.threads == 1:
            return fn()
        if module is not None:
            _hook_blocks(module)
        _model_thread.engine = self
        try:
            _follow_share(None, None)  # type: ignore[arg-type]
            return fn()
        finally:
            _model_thread.engine = None

    def _set_running(self, delta: int) -> None:
        self._running += delta
        self.share = max(1, self.threads // max(1, self._running))

    async def exclusive(self, fn: Callable[[], T]) -> tuple[T, float]:
        """Run ``fn`` on the model thread once no job is pinned; new jobs wait meanwhile.

        Returns fn's result and the pause: how long new requests could not start.
        """
        started = time.perf_counter()
        self._paused = True
        try:
            for slot in self._live_slots():
                while slot.pinned:
                    slot.idle.clear()
                    self._wakeup.set()
                    await slot.idle.wait()
            # A batch can outlive its jobs (all of them dropped by clients that went away): the
            # copy must still not overlap any forward that reads these weights.
            while self._running:
                self._changed.clear()
                await self._changed.wait()
            on_cpu = self.active is None or self.active.on_cpu
            result = await self.on_model_thread(partial(self._alone, fn), on_cpu)
        finally:
            self._paused = False
            self._wakeup.set()
        return result, time.perf_counter() - started

    def set_active(self, slot: Slot | None) -> Slot | None:
        """Route new jobs to ``slot``; jobs pinned to the old one finish there. Returns the old one."""
        old, self.active = self.active, slot
        self._wakeup.set()
        return old

    @staticmethod
    async def wait_idle(slot: Slot) -> None:
        while slot.pinned:
            slot.idle.clear()
            await slot.idle.wait()

    def _live_slots(self) -> list[Slot]:
        slots = {id(j.slot): j.slot for j in self._jobs if j.slot is not None}
        if self.active is not None:
            slots[id(self.active)] = self.active
        return list(slots.values())

    # --- the loop --------------------------------------------------------------------------
    def _slot_for(self, job: Job) -> Slot | None:
        if job.slot is not None:
            return job.slot
        return None if self._paused else self.active

    def _next_batch(self, free: int = 1) -> tuple[Slot, list[tuple[Job, int]]] | None:
        """The next batch, for one of ``free`` idle model threads: when what waits fits in fewer
        than ``free`` full batches, it is shared out between them (see ``MIN_PART_CHARS``)."""
        slot: Slot | None = None
        pool: list[tuple[Job, int]] = []
        limit = self.max_batch_size * POOL_FACTOR
        for job in self._jobs:
            if not job.pending:
                continue
            js = self._slot_for(job)
            if js is None:
                continue
            if slot is None:
                slot = js
            elif js is not slot:
                continue
            pool.extend((job, i) for i in job.pending[: limit - len(pool)])
            if len(pool) >= limit:
                break
        if slot is None or not pool:
            return None
        size = self._part_size(slot)
        if free > 1 and len(pool) < free * size:
            parts = max(1, min(free, sum(map(_pair_length, pool)) // MIN_PART_CHARS))
            size = -(-len(pool) // parts)
        if len(pool) > size:
            pool = self._in_order(pool, size) or self._by_length(pool, size)
        for job, i in pool:
            job.pending.remove(i)
            if job.slot is None:
                self.metrics.queue_wait.observe(time.perf_counter() - job.queued_at)
                job.started_ns = time.time_ns()
                job.slot = slot
                job.version = slot.loaded.version
                job.kind = slot.loaded.kind
                slot.pinned += 1
        self._waiting_pairs -= len(pool)
        self.metrics.queue_depth.set(self._waiting_pairs)
        return slot, pool

    def _in_order(self, pool: list[tuple[Job, int]], limit: int) -> list[tuple[Job, int]] | None:
        """The oldest pairs, whole requests where they fit; None when their lengths differ too much."""
        batch: list[tuple[Job, int]] = []
        start = 0
        while start < len(pool) and len(batch) < limit:
            job = pool[start][0]
            end = start
            while end < len(pool) and pool[end][0] is job:
                end += 1
            room = limit - len(batch)
            if end - start <= room:
                batch.extend(pool[start:end])
            elif len(batch) < MIN_FILL * limit:
                batch.extend(pool[start : start + room])
            else:
                break
            start = end
        lengths = [_pair_length(p) for p in batch]
        if 1 - sum(lengths) / (len(lengths) * max(lengths)) > UNIFORM_WASTE:
            return None
        return batch

    def _by_length(self, pool: list[tuple[Job, int]], size: int) -> list[tuple[Job, int]]:
        """Bucket by length so one long document does not pad the whole batch, while the oldest
        pair (pool[0]) is always in the chosen window: nothing starves."""
        oldest = pool[0]
        pool = sorted(pool, key=_pair_length)
        pos = next(i for i, p in enumerate(pool) if p[0] is oldest[0] and p[1] == oldest[1])
        start = min(pos, len(pool) - size)
        return pool[start : start + size]

    def _finish(self, job: Job, error: BaseException | None = None) -> None:
        job.finished = True
        self._jobs.remove(job)
        if job.pending:
            self._waiting_pairs -= len(job.pending)
            job.pending.clear()
        if job.slot is not None:
            job.slot.pinned -= 1
            if job.slot.pinned == 0:
                job.slot.idle.set()
        if not job.future.done():
            if error is None:
                job.future.set_result(None)
            else:
                job.future.set_exception(error)

    def _part_size(self, slot: Slot | None) -> int:
        """The most pairs one batch takes: on CPU, a thread's share of a full batch."""
        if slot is not None and slot.on_cpu and self.threads > 1:
            return max(1, self.max_batch_size // self.threads)
        return self.max_batch_size

    def _concurrency(self) -> int:
        return self.threads if self.active is not None and self.active.on_cpu else 1

    async def _linger(self) -> None:
        """Fewer pairs wait than the last group took: give the rest a moment to come back."""
        pairs, seconds = self._last_group
        deadline = time.perf_counter() + min(LINGER_MAX, LINGER_SHARE * seconds)
        while 0 < self._waiting_pairs < pairs and not self._paused:
            left = deadline - time.perf_counter()
            if left <= 0:
                return
            self._wakeup.clear()
            try:
                await asyncio.wait_for(self._wakeup.wait(), left)
            except TimeoutError:
                return

    async def _run(self) -> None:
        running: set[asyncio.Task[None]] = set()
        group = (0, 0.0)  # pairs the running group started with, and when
        try:
            while True:
                if not running:
                    await self._linger()
                self._wakeup.clear()  # before picking: a job queued from here on wakes us again
                if not running:
                    pairs = 0
                    while len(running) < self._concurrency():
                        picked = self._next_batch(self._concurrency() - len(running))
                        if picked is None:
                            break
                        pairs += len(picked[1])
                        self._start(running, *picked)
                    group = (pairs, time.perf_counter())
                elif len(running) < self._concurrency() and self._waiting_pairs >= self._part_size(
                    self.active
                ):
                    # A thread's full batch waits: a thread that frees need not wait for the rest of
                    # its group (no small batch is started this way, so latencies do not spread).
                    picked = self._next_batch()
                    if picked is not None:
                        self._start(running, *picked)
                if not running:
                    self._changed.set()
                    await self._wakeup.wait()
                    continue
                waiters: set[asyncio.Future[Any]] = set(running)
                wake = None
                if len(running) < self._concurrency():
                    wake = asyncio.ensure_future(self._wakeup.wait())
                    waiters.add(wake)
                done, _ = await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
                if wake is not None and not wake.done():
                    wake.cancel()
                running.difference_update(done)
                if not running:
                    self._last_group = (group[0], time.perf_counter() - group[1])
        finally:
            for task in running:
                task.cancel()

    def _start(self, running: set[asyncio.Task[None]], slot: Slot, batch: list[tuple[Job, int]]) -> None:
        self._set_running(+1)  # now, not when the task first runs: the next part gets its share
        running.add(asyncio.create_task(self._forward(slot, batch)))

    async def _score_pairs(self, slot: Slot, pairs: list[tuple[Job, int]]) -> tuple[np.ndarray, np.ndarray]:
        queries, docs = [job.query for job, _ in pairs], [job.docs[i] for job, i in pairs]
        features = _admitted_features(slot, pairs)
        if features is None:
            forward = partial(slot.runner.score, queries, docs)
        else:
            forward = partial(slot.runner.score, queries, docs, features)
        if slot.on_cpu:
            module = getattr(slot.loaded, "module", None)
            forward = partial(
                self._cpu_forward, module if isinstance(module, torch.nn.Module) else None, forward
            )
        return await self.on_model_thread(forward, slot.on_cpu)

    async def _isolate(
        self, slot: Slot, batch: list[tuple[Job, int]], error: BaseException
    ) -> list[tuple[list[tuple[Job, int]], np.ndarray, np.ndarray]]:
        """A batch failed: score each of its requests alone, so only the one that cannot be scored fails.

        A request that fails alone while another of the batch succeeds is answered 422 ``Tokenizer``
        (its input); when every request fails alone, each gets 500 ``Backend`` (the model or the
        device). The reruns are bounded by the batch: at most one forward per request in it.
        """
        by_job: dict[int, list[tuple[Job, int]]] = {}
        for job, i in batch:
            by_job.setdefault(id(job), []).append((job, i))
        groups = list(by_job.values())
        scored: list[tuple[list[tuple[Job, int]], np.ndarray, np.ndarray]] = []
        failures: list[tuple[list[tuple[Job, int]], BaseException]] = []
        if len(groups) == 1:
            failures.append((groups[0], error))
        else:
            log.warning(
                "a batch of %d requests failed (%s): scoring each alone", len(groups), type(error).__name__
            )
            for pairs in groups:
                if pairs[0][0].finished:
                    continue
                try:
                    raw, tokens = await self._score_pairs(slot, pairs)
                except _CONTROL_FLOW:
                    raise
                except BaseException as exc:
                    failures.append((pairs, exc))
                else:
                    scored.append((pairs, raw, tokens))
        for pairs, cause in failures:
            job = pairs[0][0]
            log.error(
                "model forward failed for a request of %d pairs: %s: %s",
                len(pairs),
                type(cause).__name__,
                cause,
            )
            if scored and not isinstance(cause, RuntimeError):
                err: BackendError | TokenizerError = TokenizerError(
                    f"this input cannot be scored: {type(cause).__name__}; other requests in its batch were"
                )
            else:
                err = BackendError(f"model forward failed: {type(cause).__name__}")
            if not job.finished:
                self._finish(job, err)
        return scored

    async def _forward(self, slot: Slot, batch: list[tuple[Job, int]]) -> None:
        """One batch of a group; ``_run`` counted it as running when it started it."""
        self.metrics.batch_size.observe(len(batch))
        try:
            try:
                started = time.perf_counter()
                raw, tokens = await self._score_pairs(slot, batch)
                self.metrics.forward.observe(time.perf_counter() - started)
                parts = [(batch, raw, tokens)]
            except _CONTROL_FLOW:
                raise
            except BaseException as e:
                parts = await self._isolate(slot, batch, e)
        finally:
            self._set_running(-1)
        for pairs, raw, tokens in parts:
            self.metrics.pairs.labels(slot.loaded.version).inc(len(pairs))
            for (job, i), value, count in zip(pairs, raw, tokens, strict=True):
                if job.finished:
                    continue
                job.scores[i] = value
                job.tokens[i] = count
                job.remaining -= 1
                if job.remaining == 0:
                    job.finished_ns = time.time_ns()
                    self._finish(job)
        # Drop jobs whose client went away before they were pinned.
        for job in [j for j in self._jobs if j.future.cancelled()]:
            self._finish(job)
        self._changed.set()
