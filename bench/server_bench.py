"""The measurements: raw ceiling, serving throughput and latency, and swaps under load.

Every measurement uses the same model (:mod:`bench.models`) and the same seeded inputs
(:mod:`bench.workload`). This machine is shared, so the figures that are compared with each
other are taken interleaved: each *round* measures the ceiling, then every (request size,
clients) load against this server and against the baseline, one after the other; a figure is
the median over rounds, and a background load that comes and goes hits all of them alike.
At one client the servers are measured in one load that alternates each request between them
(:func:`alternating_spec`): there they differ by a few percent, less than this machine's speed
drifts between two measurements taken one after the other.
A measurement during which other processes used more than ``QUIET_CORES`` of CPU is taken
again (at most ``retries`` times) and the least disturbed attempt is kept; the CPU the others
used is reported with every figure (:mod:`bench.machine`).
"""

from __future__ import annotations

import gc
import math
import statistics
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import partial
from typing import Any, TypeVar

from .load import (
    Endpoint,
    LoadProcess,
    LoadResult,
    LoadSpec,
    per_target,
    percentile,
    run_load,
    statuses,
    throughput,
)
from .machine import CpuMeter
from .models import ModelSet
from .processes import Server
from .workload import make_workload

MEMORY_POLL_S = 0.02
QUIET_CORES = 0.3  # other processes using more CPU than this during a measurement: take it again
T = TypeVar("T")


@dataclass(frozen=True)
class Durations:
    rounds: int  # each throughput figure is the median of this many interleaved measurements
    warmup_s: float  # load before a measurement counts
    measure_s: float  # ... then at least this long
    min_requests: int  # ... and until this many requests completed (bounded by max_s)
    max_s: float
    ceiling_s: float  # the raw ceiling, per round (after a warm-up of warmup_s)
    swaps: int  # swaps under load per mode, alternately to v2 (activate) and back (rollback)
    swap_steady_s: float  # steady state under load before each swap ...
    swap_window_s: float  # ... then requests in flight within this long after the swap call
    retries: int  # extra attempts at a measurement that other processes disturbed


FULL = Durations(
    # Five rounds, not three: this machine's speed drifts by 10-20% from one minute to the next
    # (the rounds of one server at 1 client x 3 docs spanned 31.6-39.8 pairs/s in one run), so the
    # peer comparison is judged on per-round ratios (each server measured back to back with the
    # other in the same round), and a median of five of them outvotes two drifted rounds.
    rounds=5,
    warmup_s=1.5,
    # A p99 is the nearest-rank one of the rounds' pooled requests: over 100 of them it is the
    # second-slowest, which one hiccup of the machine decides. 8 s x 5 rounds gives the quick
    # loads (1 to 32 clients, 3 documents) about 500 to 800; the slow ones run until min_requests
    # answers anyway.
    measure_s=8.0,
    min_requests=15,  # per round, so a p99 over the rounds' pooled requests is one of at least 75
    max_s=60.0,
    ceiling_s=3.0,
    # Nine, not five: the worst latency of a 2-s window moves by a few hundred ms without any
    # swap (the control run), and a median over five swaps followed it (-52, -5, +82 ms in three
    # runs of the same code).
    swaps=9,
    swap_steady_s=4.0,
    swap_window_s=2.0,
    retries=2,
)
QUICK = Durations(
    rounds=1,
    warmup_s=0.3,
    measure_s=0.5,
    min_requests=2,
    max_s=8.0,
    ceiling_s=0.5,
    swaps=2,
    swap_steady_s=1.0,
    swap_window_s=0.5,
    retries=0,
)


def least_disturbed(measure: Callable[[], T], retries: int) -> tuple[T, dict[str, float]]:
    """Run ``measure`` until other processes stay under QUIET_CORES (at most 1 + retries times);
    return the least disturbed result and its CPU figures (with ``attempts``)."""
    best: tuple[T, dict[str, float]] | None = None
    for attempt in range(1, retries + 2):
        meter = CpuMeter()
        result = measure()
        cpu = meter.read()
        if best is None or cpu["other_cores"] < best[1]["other_cores"]:
            best = (result, cpu)
        best[1]["attempts"] = attempt
        if cpu["other_cores"] <= QUIET_CORES:
            break
    assert best is not None
    return best


# --------------------------------------------------------------------------- raw ceiling


class Ceiling:
    """Tokenize + forward in a loop, in this process, ``batch`` pairs at a time: the raw ceiling."""

    def __init__(self, models: ModelSet, device: str, batch: int) -> None:
        import torch
        from hotswap_server.devices import resolve_placement
        from hotswap_server.modelload import load_version
        from hotswap_server.scoring import CrossEncoderRunner, runner_for

        self.placement = resolve_placement(device, models.dtype)  # type: ignore[arg-type]
        loaded = load_version("v1", models.v1_path, self.placement.dtype, pin_memory=self.placement.is_cuda)
        loaded.module.to(self.placement.device)
        runner = runner_for(loaded)
        assert isinstance(runner, CrossEncoderRunner)
        self.runner: CrossEncoderRunner | None = runner
        self.batch = batch
        self.batches = [make_workload().pairs(i, batch) for i in range(64)]
        self.rates: list[float] = []
        self.cpu: list[dict[str, float]] = []
        self._next = 0
        self.admission_tokenizer = loaded.admission_tokenizer
        self.model_bytes = loaded.nbytes
        self.parameters = sum(p.numel() for p in loaded.module.parameters())
        self.torch_threads = torch.get_num_threads()

    def _loop(self, seconds: float) -> float:
        assert self.runner is not None
        pairs, t0 = 0, time.perf_counter()
        while True:
            queries, docs = self.batches[self._next % len(self.batches)]
            self.runner.score(queries, docs)
            pairs += len(docs)
            self._next += 1
            elapsed = time.perf_counter() - t0
            if elapsed >= seconds:
                return pairs / elapsed

    def measure(self, warmup_s: float, seconds: float, retries: int) -> tuple[float, dict[str, float]]:
        self._loop(warmup_s)
        rate, cpu = least_disturbed(lambda: self._loop(seconds), retries)
        self.rates.append(rate)
        self.cpu.append(cpu)
        return rate, cpu

    def result(self) -> dict[str, Any]:
        import torch

        assert self.runner is not None
        # Where a batch's time goes: tokenizing vs the whole step (for the profile notes).
        t0 = time.perf_counter()
        encoded = [self.runner.encode(*self.batches[k]) for k in range(8)]
        tokenize_ms = (time.perf_counter() - t0) / 8 * 1000
        # What the server's engine spends instead when the admission check already tokenized the
        # pairs (truncation off): padding those ids into the batch. Cut to the model's limit here
        # as the tokenizer would (the tiny models' is below the workload's pairs), so the padded
        # batch can be compared with the tokenized one.
        cut = {"truncation": "only_second", "max_length": self.runner.max_length}
        admitted = [
            {k: list(v) for k, v in self.admission_tokenizer(*self.batches[k], **cut).items()}
            for k in range(8)
        ]
        t0 = time.perf_counter()
        padded = [self.runner.collate(features) for features in admitted]
        pad_ms = (time.perf_counter() - t0) / 8 * 1000
        pads_alike = all(
            p is not None and all(torch.equal(p[name], e[name]) for name in p)
            for p, e in zip(padded, encoded, strict=True)
        )
        rate = statistics.median(self.rates)
        return {
            "batch": self.batch,
            "pairs_per_s": rate,
            "rounds_pairs_per_s": self.rates,
            "batch_ms": self.batch / rate * 1000,
            "tokenize_ms": tokenize_ms,
            "pad_admitted_ms": pad_ms if pads_alike else math.nan,
            "tokens_per_pair": statistics.mean(
                float(e["attention_mask"].sum()) / self.batch for e in encoded
            ),
            "padded_length": statistics.mean(float(e["input_ids"].shape[1]) for e in encoded),
            "torch_threads": self.torch_threads,
            "model_bytes": self.model_bytes,
            "parameters": self.parameters,
            "loadavg": max(c["loadavg"] for c in self.cpu),
            "other_cores": max(c["other_cores"] for c in self.cpu),
            "attempts": sum(int(c["attempts"]) for c in self.cpu),
        }

    def close(self) -> None:
        self.runner = None
        gc.collect()
        if self.placement.is_cuda:
            import torch

            torch.cuda.empty_cache()


# --------------------------------------------------------------------------- throughput


def load_spec(
    url: str, clients: int, docs: int, durations: Durations, truncate: bool, api: str = "tei", model: str = ""
) -> LoadSpec:
    return LoadSpec(
        url=url,
        api=api,
        model=model,
        clients=clients,
        docs=docs,
        min_s=durations.warmup_s + durations.measure_s,
        min_measured=durations.min_requests,
        warmup_s=durations.warmup_s,
        max_s=max(durations.max_s, durations.warmup_s + durations.measure_s),
        truncate=truncate,
        warm_wave=True,
    )


def alternating_spec(servers: list[Server], docs: int, durations: Durations, truncate: bool) -> LoadSpec:
    """One client alternating its requests between ``servers`` (in this order), one at a time.

    At one client nothing is batched across requests and every server runs the same forward per
    request, so they differ by a few percent while this machine drifts 10-20% from one minute to
    the next: measured one after the other, the per-round ratios spanned 0.94-1.24x. Alternated
    request by request, the drift hits every server alike. The load lasts as long as the separate
    loads together did, so each server gets as many requests (and as much time) as it had alone.
    """
    first = servers[0]
    spec = load_spec(first.url, 1, docs, durations, truncate, first.api, first.model)
    n = len(servers)
    return replace(
        spec,
        min_s=durations.warmup_s + n * durations.measure_s,
        max_s=n * spec.max_s,
        targets=tuple(Endpoint(s.url, s.api, s.model) for s in servers),
    )


def summarize_runs(runs: list[tuple[LoadResult, dict[str, float]]]) -> dict[str, Any]:
    """One row from the rounds of one (server, clients, docs): median throughput, pooled latencies
    and each round's p99."""
    spec = runs[0][0].spec
    ok = [r for result, _ in runs for r in result.ok()]
    latencies = [r.latency for r in ok]
    rates = [throughput(result) for result, _ in runs]
    errors: dict[str, int] = {}
    for result, _ in runs:
        for k, v in result.errors.items():
            errors[k] = errors.get(k, 0) + v
    return {
        "clients": spec.clients,
        "docs": spec.docs,
        "pairs_per_s": statistics.median(rates),
        "rounds_pairs_per_s": rates,
        "p50_ms": percentile(latencies, 50) * 1000,
        "p99_ms": percentile(latencies, 99) * 1000,
        # Each round's own p99, paired with the peer's of the same round like rounds_pairs_per_s
        # (report.tail_ratio): the pooled one above follows whichever minute was slowest.
        "rounds_p99_ms": [percentile([r.latency for r in result.ok()], 99) * 1000 for result, _ in runs],
        "max_ms": max(latencies, default=math.nan) * 1000,
        "requests": len(ok),
        "failures": sum(result.failures for result, _ in runs),
        "statuses": statuses([r for result, _ in runs for r in result.records]),
        "errors": errors,
        "loadavg": max(cpu["loadavg"] for _, cpu in runs),
        "other_cores": max(cpu["other_cores"] for _, cpu in runs),
        "attempts": sum(int(cpu["attempts"]) for _, cpu in runs),
    }


def _disturbed(cpu: dict[str, float]) -> str:
    return f"(others used {cpu['other_cores']:.2f} cores; attempts {int(cpu['attempts'])})"


def throughput_rounds(
    ceiling: Ceiling,
    servers: dict[str, Server],
    models: ModelSet,
    clients: list[int],
    sizes: list[int],
    durations: Durations,
    progress: Callable[[str], None] = print,
) -> dict[str, list[dict[str, Any]]]:
    """Interleaved rounds: ceiling, then each load against each server; rows per server."""
    runs: dict[tuple[str, int, int], list[tuple[LoadResult, dict[str, float]]]] = {}
    names = list(servers)
    for round_no in range(durations.rounds):
        rate, cpu = ceiling.measure(durations.warmup_s, durations.ceiling_s, durations.retries)
        progress(f"round {round_no + 1}/{durations.rounds}: raw ceiling {rate:.1f} pairs/s {_disturbed(cpu)}")
        order = names if round_no % 2 == 0 else names[::-1]  # neither server always goes first
        for docs in sizes:
            for n in clients:
                if n == 1 and len(order) > 1:
                    spec = alternating_spec(
                        [servers[name] for name in order], docs, durations, models.truncate
                    )
                    alternated, cpu = least_disturbed(partial(run_load, spec), durations.retries)
                    for name, result in zip(order, per_target(alternated), strict=True):
                        runs.setdefault((name, docs, n), []).append((result, cpu))
                        progress(
                            f"  {name:9} docs={docs:<3} clients={n:<3} {throughput(result):8.1f} pairs/s "
                            f"(in flight, alternating) {_disturbed(cpu)}"
                        )
                    continue
                for name in order:
                    server = servers[name]
                    spec = load_spec(
                        server.url, n, docs, durations, models.truncate, server.api, server.model
                    )
                    result, cpu = least_disturbed(partial(run_load, spec), durations.retries)
                    runs.setdefault((name, docs, n), []).append((result, cpu))
                    progress(
                        f"  {name:9} docs={docs:<3} clients={n:<3} {throughput(result):8.1f} pairs/s "
                        f"{_disturbed(cpu)}"
                    )
    return {
        name: [summarize_runs(runs[(name, docs, n)]) for docs in sizes for n in clients] for name in names
    }


# --------------------------------------------------------------------------- swaps under load


class MemoryPoller:
    """Polls ``/admin/v1/state`` in a thread: (time, memory figures) while swaps happen."""

    def __init__(self, server: Server, interval: float = MEMORY_POLL_S) -> None:
        self.server = server
        self.interval = interval
        self.samples: list[tuple[float, dict[str, int]]] = []
        self.errors = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bench-memory-poller", daemon=True)

    def __enter__(self) -> MemoryPoller:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.is_set():
            t0 = time.monotonic()
            try:
                memory = self.server.admin("GET", "/admin/v1/state", timeout=30)["memory"]
            except (OSError, RuntimeError):
                self.errors += 1  # a missed sample; the figures say how many were taken
            else:
                self.samples.append(((t0 + time.monotonic()) / 2, memory))
            self._stop.wait(self.interval)

    def between(self, lo: float, hi: float) -> list[dict[str, int]]:
        return [m for t, m in self.samples if lo <= t <= hi]

    def last_before(self, t: float) -> dict[str, int]:
        before = [m for ts, m in self.samples if ts < t]
        return before[-1] if before else self.samples[0][1]


@dataclass(frozen=True)
class SwapCall:
    to: str
    called: float
    returned: float
    reply: dict[str, Any]


def _one_swap(
    result: LoadResult,
    poller: MemoryPoller,
    call: SwapCall,
    since: float,
    window_s: float,
    steady_worst: float,
) -> dict:
    steady = [r.latency for r in result.ok(since=since, until=call.called) if r.start >= since]
    window = [r for r in result.records if r.start < call.called + window_s and r.end > call.called]
    before = poller.last_before(call.called)
    # Forwards allocate and free activations all the time: the swap is judged against the most
    # the steady state before it reached, like latency.
    steady_mem = poller.between(since, call.called) or [before]
    steady_max = max(m["anonBytes"] for m in steady_mem)
    during = poller.between(call.called, call.returned + 0.25)
    anon_max = max(m["anonBytes"] for m in [before, *during])
    window_worst = max((r.latency for r in window), default=math.nan) * 1000
    out = {
        "to": call.to,
        "reported_mode": call.reply["mode"],
        "pause_ms": float(call.reply["pauseMs"]),
        "call_ms": (call.returned - call.called) * 1000,
        "steady_requests": len(steady),
        "steady_p50_ms": percentile(steady, 50) * 1000,
        "steady_worst_before_ms": max(steady, default=math.nan) * 1000,
        "steady_worst_ms": steady_worst,
        "window_requests": len(window),
        "window_failures": sum(1 for r in window if r.status != 200),
        "window_worst_ms": window_worst,
        "added_worst_ms": window_worst - steady_worst,
        "anon_before": before["anonBytes"],
        "anon_steady_max": steady_max,
        "anon_during_max": anon_max,
        "anon_growth": anon_max - steady_max,
        "memory_samples_during": len(during),
    }
    if "deviceAllocatedBytes" in before:
        out["gpu_allocated_before"] = max(m["deviceAllocatedBytes"] for m in steady_mem)
        out["gpu_allocated_during_max"] = max(m["deviceAllocatedBytes"] for m in [before, *during])
        out["gpu_peak_before"] = before["devicePeakBytes"]
    last = call.reply.get("lastSwap") or {}
    if last.get("devicePeakBytes") is not None:
        # This swap's own peak (the server resets the counter just before it), not a peak since start.
        out["gpu_swap_before"] = last["deviceBeforeBytes"]
        out["gpu_swap_peak"] = last["devicePeakBytes"]
    return out


def swaps_under_load(
    server: Server, models: ModelSet, mode: str, clients: int, docs: int, durations: Durations
) -> dict[str, Any]:
    """Put ``clients`` clients on the server and swap ``durations.swaps`` times, v1 -> v2 -> v1 ...
    (an activation of the preloaded v2, then rollbacks). ``mode="control"`` calls nothing at those
    moments: the same statistics without a swap are the noise floor the swaps are read against.

    Each swap is judged against the steady state just before it: the worst latency of requests
    that completed there, against the worst of requests in flight within ``swap_window_s`` after
    the swap call. Memory is polled from the admin plane throughout.
    """
    control = mode == "control"
    if not control:
        server.admin("POST", "/admin/v1/preload", {"version": "v2", "path": models.v2})
    period = durations.swap_steady_s + durations.swap_window_s
    total = durations.warmup_s + durations.swaps * period + 0.5
    spec = LoadSpec(
        url=server.url,
        clients=clients,
        docs=docs,
        min_s=total,
        min_measured=0,
        warmup_s=durations.warmup_s,
        max_s=total + 30,
        truncate=models.truncate,
    )
    meter = CpuMeter()
    calls: list[SwapCall] = []
    with MemoryPoller(server) as poller:
        load = LoadProcess(spec)
        try:
            for k in range(durations.swaps):
                at = load.started + durations.warmup_s + k * period + durations.swap_steady_s
                time.sleep(max(0.0, at - time.monotonic()))
                to = "v2" if k % 2 == 0 else "v1"
                called = time.monotonic()
                if control:
                    to, reply = "none", {"mode": "control", "pauseMs": 0.0}
                elif k == 0:
                    reply = server.admin("POST", "/admin/v1/activate", {"version": "v2"})
                else:  # the previous version is the other one: each rollback swaps them again
                    reply = server.admin("POST", "/admin/v1/rollback", {})
                returned = time.monotonic()
                if not control:
                    # The server resets the device's peak counter before each swap and reports
                    # this swap's own peak in lastSwap (CUDA only): read it before the next one.
                    last = server.admin("GET", "/admin/v1/state").get("lastSwap") or {}
                    reply = {**reply, "lastSwap": last}
                calls.append(SwapCall(to, called, returned, reply))
            result = load.result()
        finally:
            load.kill()
    state = server.admin("GET", "/admin/v1/state")
    model_bytes = int(state["memory"]["modelBytes"])
    # The steady state: every request after the warm-up that was not in flight within a swap window.
    window_s = durations.swap_window_s
    steady_all = [
        r.latency
        for r in result.ok()
        if r.start >= result.measure_from
        and all(r.end <= c.called or r.start >= c.called + window_s for c in calls)
    ]
    steady_worst = max(steady_all, default=math.nan) * 1000
    swaps = []
    since = result.measure_from
    for call in calls:
        swaps.append(_one_swap(result, poller, call, since, window_s, steady_worst))
        since = call.called + window_s
    last_to = calls[-1].to
    after = [r for r in result.records if r.start > calls[-1].returned]
    after_mem = poller.samples[-1][1]
    out: dict[str, Any] = {
        "mode": mode,
        "reported_mode": swaps[0]["reported_mode"],
        "clients": clients,
        "docs": docs,
        "window_s": durations.swap_window_s,
        "swaps": swaps,
        "pause_ms": statistics.median(s["pause_ms"] for s in swaps),
        "pause_max_ms": max(s["pause_ms"] for s in swaps),
        "steady_requests": len(steady_all),
        "steady_p50_ms": percentile(steady_all, 50) * 1000,
        "steady_worst_ms": steady_worst,
        "window_worst_ms": statistics.median(s["window_worst_ms"] for s in swaps),
        "added_worst_ms": statistics.median(s["added_worst_ms"] for s in swaps),
        "added_worst_max_ms": max(s["added_worst_ms"] for s in swaps),
        "failures": result.failures,
        "statuses": statuses(result.records),
        "errors": result.errors,
        "expected_version_after": "v1" if control else last_to,
        "versions_after": sorted({r.version for r in after if r.status == 200}),
        "model_bytes": model_bytes,
        "anon_before": swaps[0]["anon_before"],
        "anon_steady_max": max(s["anon_steady_max"] for s in swaps),
        "anon_during_max": max(s["anon_during_max"] for s in swaps),
        "anon_after": after_mem["anonBytes"],
        "anon_growth": max(s["anon_growth"] for s in swaps),
        "anon_growth_of_model": max(s["anon_growth"] for s in swaps) / model_bytes if model_bytes else 0.0,
        "memory_samples": len(poller.samples),
        "memory_poll_errors": poller.errors,
        "gpu": None,
        **meter.read(),
    }
    if "gpu_allocated_before" in swaps[0]:
        out["gpu"] = {
            "allocated_before": swaps[0]["gpu_allocated_before"],
            "allocated_during_max": max(s["gpu_allocated_during_max"] for s in swaps),
            "allocated_after": after_mem["deviceAllocatedBytes"],
            "peak_before": swaps[0]["gpu_peak_before"],
            # The most any one swap allocated (lastSwap.devicePeakBytes, reset before each swap);
            # a server without the per-swap figure leaves the peak since its last reset.
            "peak_after": max(
                (s["gpu_swap_peak"] for s in swaps if "gpu_swap_peak" in s),
                default=after_mem["devicePeakBytes"],
            ),
            "reserved_after": after_mem.get("deviceReservedBytes"),
        }
    return out
