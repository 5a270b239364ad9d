"""The load generator: closed-loop clients in one separate process (asyncio + aiohttp).

Run as ``python -m bench.load SPEC_JSON``: it prints one line ``{"started": t}`` when its clients
begin, then one line with every request's record. Times are ``time.monotonic()``, which on Linux
is one clock for every process, so the parent can line requests up with what it did meanwhile
(a swap). The clients never share a GIL with the server they measure.

The statistics over those records (throughput, percentiles) live here too; they are plain Python.
"""

from __future__ import annotations

import asyncio
import json
import math
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from hotswap_contract.wire import VERSION_HEADER


@dataclass(frozen=True)
class LoadSpec:
    url: str  # the data plane's base URL
    clients: int
    docs: int  # documents per request
    min_s: float  # run at least this long ...
    min_measured: int  # ... and until this many requests completed after warmup_s
    warmup_s: float
    max_s: float  # hard bounds: time and requests
    max_requests: int = 100_000
    truncate: bool = False  # send TEI's truncate: true (only for models shorter than the documents)
    request_timeout_s: float = 120.0
    api: str = "tei"  # the body's shape: "tei" or "infinity" (see Workload.bodies)
    model: str = ""  # the served model's name, for APIs whose bodies name it (Infinity)


@dataclass(frozen=True)
class Record:
    start: float
    end: float
    status: int  # 0: the connection failed
    docs: int
    version: str

    @property
    def latency(self) -> float:
        return self.end - self.start


@dataclass
class LoadResult:
    spec: LoadSpec
    started: float
    finished: float
    records: list[Record]
    errors: dict[str, int] = field(default_factory=dict)

    @property
    def measure_from(self) -> float:
        return self.started + self.spec.warmup_s

    def ok(self, since: float | None = None, until: float | None = None) -> list[Record]:
        lo = self.measure_from if since is None else since
        hi = math.inf if until is None else until
        return [r for r in self.records if r.status == 200 and lo <= r.end < hi]

    @property
    def failures(self) -> int:
        return sum(1 for r in self.records if r.status != 200)


# --------------------------------------------------------------------------- the client process


async def _generate(spec: LoadSpec) -> dict[str, Any]:
    import aiohttp

    from .workload import make_workload

    bodies = make_workload().bodies(spec.docs, truncate=spec.truncate, api=spec.api, model=spec.model)
    records: list[list[Any]] = []
    errors: dict[str, int] = {}
    started = time.monotonic()
    measured = 0

    def done() -> bool:
        now = time.monotonic() - started
        if now >= spec.max_s or len(records) >= spec.max_requests:
            return True
        return now >= spec.min_s and measured >= spec.min_measured

    async def client(session: aiohttp.ClientSession, first: int) -> None:
        nonlocal measured
        i = first
        headers = {"Content-Type": "application/json"}
        while not done():
            body = bodies[i % len(bodies)]
            i += spec.clients
            t0 = time.monotonic()
            status, version = 0, ""
            try:
                async with session.post(spec.url + "/rerank", data=body, headers=headers) as r:
                    await r.read()
                    status, version = r.status, r.headers.get(VERSION_HEADER, "")
            except (aiohttp.ClientError, TimeoutError) as e:
                key = type(e).__name__
                errors[key] = errors.get(key, 0) + 1
            t1 = time.monotonic()
            records.append([t0, t1, status, spec.docs, version])
            if status == 200 and t1 - started >= spec.warmup_s:
                measured += 1
            if status == 0:
                await asyncio.sleep(0.05)  # a refused connection must not spin

    timeout = aiohttp.ClientTimeout(total=spec.request_timeout_s)
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:
        print(json.dumps({"started": started}), flush=True)
        await asyncio.gather(*(client(session, c) for c in range(spec.clients)))
    return {"started": started, "finished": time.monotonic(), "records": records, "errors": errors}


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    spec = LoadSpec(**json.loads(args[0]))
    result = asyncio.run(_generate(spec))
    print(json.dumps(result), flush=True)
    return 0


# --------------------------------------------------------------------------- the parent's side


class LoadProcess:
    """A running load generator; :meth:`result` waits for it and parses what it measured."""

    def __init__(self, spec: LoadSpec) -> None:
        self.spec = spec
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bench.load", json.dumps(asdict(spec))],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            self.proc.wait()
            raise RuntimeError(f"load generator exited with {self.proc.returncode} before starting")
        self.started: float = json.loads(line)["started"]

    def result(self) -> LoadResult:
        assert self.proc.stdout is not None
        out = self.proc.stdout.read()
        if self.proc.wait(timeout=self.spec.max_s + self.spec.request_timeout_s + 30) != 0 or not out:
            raise RuntimeError(f"load generator failed with {self.proc.returncode}")
        data = json.loads(out)
        records = [Record(*r) for r in data["records"]]
        return LoadResult(self.spec, data["started"], data["finished"], records, data["errors"])

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def run_load(spec: LoadSpec) -> LoadResult:
    proc = LoadProcess(spec)
    try:
        return proc.result()
    finally:
        proc.kill()


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100); NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


def chunk_rates(records: list[Record], chunks: int = 3) -> list[float]:
    """Pairs per second in ``chunks`` consecutive runs of completions, each timed between completions.

    Measuring from one completion to another (not over a fixed window) avoids counting a request
    that was half done when the window opened; the median of the chunks shrugs off a stall that
    another process caused in one of them.
    """
    done = sorted(records, key=lambda r: r.end)
    if len(done) < 2:
        return []
    n = len(done) - 1  # completions after the first, which only marks the start
    k = max(1, min(chunks, n))
    rates = []
    for g in range(k):
        a, b = g * n // k, (g + 1) * n // k  # completions a+1..b, timed from done[a] to done[b]
        span = done[b].end - done[a].end
        pairs = sum(r.docs for r in done[a + 1 : b + 1])
        if span > 0:
            rates.append(pairs / span)
    return rates


def throughput(records: list[Record], chunks: int = 3) -> float:
    """The median of :func:`chunk_rates`: pairs scored per second."""
    rates = chunk_rates(records, chunks)
    return statistics.median(rates) if rates else 0.0


def statuses(records: list[Record]) -> dict[str, int]:
    """How many responses had each HTTP status ("0": no response)."""
    out: dict[str, int] = {}
    for r in records:
        out[str(r.status)] = out.get(str(r.status), 0) + 1
    return out


def summarize(result: LoadResult) -> dict[str, Any]:
    ok = result.ok()
    latencies = [r.latency for r in ok]
    return {
        "clients": result.spec.clients,
        "docs": result.spec.docs,
        "pairs_per_s": throughput(ok),
        "chunk_pairs_per_s": chunk_rates(ok),
        "p50_ms": percentile(latencies, 50) * 1000,
        "p99_ms": percentile(latencies, 99) * 1000,
        "max_ms": max(latencies, default=math.nan) * 1000,
        "requests": len(ok),
        "failures": result.failures,
        "statuses": statuses(result.records),
        "errors": result.errors,
        "seconds": result.finished - result.started,
    }


if __name__ == "__main__":
    raise SystemExit(main())
