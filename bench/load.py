"""The load generator: closed-loop clients in one separate process (asyncio + aiohttp).

Run as ``python -m bench.load SPEC_JSON``: it prints one line ``{"started": t}`` when its clients
begin, then one line with every request's record. Times are ``time.monotonic()``, which on Linux
is one clock for every process, so the parent can line requests up with what it did meanwhile
(a swap). The clients never share a GIL with the server they measure.

One spec can also name several targets for its single client to alternate between (see
``LoadSpec.targets``); :func:`per_target` splits such a load into one result per server.

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
from dataclasses import asdict, dataclass, field, replace
from typing import Any, NamedTuple

from hotswap_contract.wire import VERSION_HEADER


class Endpoint(NamedTuple):
    """One server a load talks to: its base URL and the shape of the bodies it takes."""

    url: str
    api: str = "tei"
    model: str = ""


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
    # The warm-up also lasts until every client has had one answer: with long requests (32 clients
    # of 32 documents queue for many seconds) the first wave starts together, which no steady
    # state does, and a warm-up in seconds alone would measure only that wave.
    warm_wave: bool = False
    # Several servers for ONE client to alternate between (url, api and model then unused): request
    # k goes to target k mod n, and every target gets body j before any gets body j+1. At one client
    # the servers differ by a few percent while this machine's speed drifts 10-20% from one minute
    # to the next; measured one after the other, that drift swamps the difference, alternated
    # request by request it hits every server alike. Each server still has one request at a time.
    targets: tuple[Endpoint, ...] = ()

    def __post_init__(self) -> None:
        # JSON brings the targets back as lists (LoadSpec(**json.loads(...))): make them Endpoints.
        object.__setattr__(self, "targets", tuple(Endpoint(*t) for t in self.targets))
        if self.targets and self.clients != 1:
            raise ValueError(
                f"a load that alternates between targets has one client (got clients={self.clients}): "
                "with more, a server would see several requests at once, each from another client"
            )

    @property
    def endpoints(self) -> tuple[Endpoint, ...]:
        """The servers this load talks to, in the order requests cycle through them."""
        return self.targets or (Endpoint(self.url, self.api, self.model),)


@dataclass(frozen=True)
class Record:
    start: float
    end: float
    status: int  # 0: the connection failed
    docs: int
    version: str
    client: int = -1  # which closed-loop client sent it (-1: unknown)
    target: int = 0  # which of the spec's endpoints it went to

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
    warm_at: float | None = None  # when the warm-up ended, if the generator said (warm_wave)
    target_errors: list[dict[str, int]] = field(default_factory=list)  # errors per endpoint
    # One server's share of an alternating load (per_target): its rate is pairs per second of its
    # own in-flight time, as the wall-clock window also holds the other servers' requests.
    in_flight: bool = False

    @property
    def measure_from(self) -> float:
        return self.warm_at if self.warm_at is not None else self.started + self.spec.warmup_s

    def ok(self, since: float | None = None, until: float | None = None) -> list[Record]:
        lo = self.measure_from if since is None else since
        hi = math.inf if until is None else until
        return [r for r in self.records if r.status == 200 and lo <= r.end < hi]

    @property
    def failures(self) -> int:
        return sum(1 for r in self.records if r.status != 200)

    @property
    def full_load_until(self) -> float:
        """When the first client stopped: up to here every client had a request in flight (the
        closed loop at its full concurrency); after it the load tapers off as clients finish."""
        last: dict[int, float] = {}
        for r in self.records:
            last[r.client] = max(last.get(r.client, r.end), r.end)
        return min(last.values(), default=self.finished)

    def window(self) -> tuple[float, float]:
        """The measured stretch: from the end of the warm-up to the end of full load."""
        lo = self.measure_from
        hi = self.full_load_until
        return (lo, hi) if hi > lo else (lo, self.finished)


# --------------------------------------------------------------------------- the client process


async def _generate(spec: LoadSpec) -> dict[str, Any]:
    import aiohttp

    from .workload import make_workload

    targets = spec.endpoints
    workload = make_workload()
    bodies = [workload.bodies(spec.docs, truncate=spec.truncate, api=t.api, model=t.model) for t in targets]
    records: list[list[Any]] = []
    errors: list[dict[str, int]] = [{} for _ in targets]
    started = time.monotonic()
    measured = [0] * len(targets)  # per target: min_measured holds for each
    answered: set[tuple[int, int]] = set()  # (client, target) pairs that have had an answer (warm_wave)
    warm_at: float | None = None if spec.warm_wave else started + spec.warmup_s

    def done() -> bool:
        now = time.monotonic() - started
        if now >= spec.max_s or len(records) >= spec.max_requests:
            return True
        return now >= spec.min_s and min(measured) >= spec.min_measured

    async def client(session: aiohttp.ClientSession, index: int) -> None:
        nonlocal warm_at
        k = 0  # this client's requests so far
        headers = {"Content-Type": "application/json"}
        while not done():
            # The cycle, not the request, picks the body: every target scores the same texts.
            t, cycle = k % len(targets), k // len(targets)
            body = bodies[t][(index + cycle * spec.clients) % len(bodies[t])]
            k += 1
            t0 = time.monotonic()
            status, version = 0, ""
            try:
                async with session.post(targets[t].url + "/rerank", data=body, headers=headers) as r:
                    await r.read()
                    status, version = r.status, r.headers.get(VERSION_HEADER, "")
            except (aiohttp.ClientError, TimeoutError) as e:
                key = type(e).__name__
                errors[t][key] = errors[t].get(key, 0) + 1
            t1 = time.monotonic()
            records.append([t0, t1, status, spec.docs, version, index, t])
            if warm_at is None:
                answered.add((index, t))
                if len(answered) == spec.clients * len(targets):
                    warm_at = max(t1, started + spec.warmup_s)
            elif status == 200 and t1 >= warm_at:
                measured[t] += 1
            if status == 0:
                await asyncio.sleep(0.05)  # a refused connection must not spin

    timeout = aiohttp.ClientTimeout(total=spec.request_timeout_s)
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:
        print(json.dumps({"started": started}), flush=True)
        await asyncio.gather(*(client(session, c) for c in range(spec.clients)))
    return {
        "started": started,
        "finished": time.monotonic(),
        "records": records,
        "errors": _merged(errors),
        "target_errors": errors,
        "warm_at": warm_at,
    }


def _merged(counts: list[dict[str, int]]) -> dict[str, int]:
    out: dict[str, int] = {}
    for c in counts:
        for k, v in c.items():
            out[k] = out.get(k, 0) + v
    return out


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
        return LoadResult(
            self.spec,
            data["started"],
            data["finished"],
            records,
            data["errors"],
            data.get("warm_at"),
            data.get("target_errors", []),
        )

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


def per_target(result: LoadResult) -> list[LoadResult]:
    """An alternating load as one result per target, in the spec's order: each a one-client load
    of that server alone (its records, errors and spec), judged on its in-flight time."""
    out = []
    for t, endpoint in enumerate(result.spec.endpoints):
        spec = replace(result.spec, url=endpoint.url, api=endpoint.api, model=endpoint.model, targets=())
        records = [r for r in result.records if r.target == t]
        errors = result.target_errors[t] if t < len(result.target_errors) else {}
        out.append(
            LoadResult(spec, result.started, result.finished, records, errors, result.warm_at, in_flight=True)
        )
    return out


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100); NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


def window_rates(records: list[Record], lo: float, hi: float, chunks: int = 3) -> list[float]:
    """Pairs per second in ``chunks`` equal parts of the window [lo, hi).

    Each successful request counts pro rata: its pairs times the share of its life (start to end)
    that lies in the part, as if its work were spread evenly over it. Counting completions instead
    breaks when a server answers in waves (a peer that batches every waiting request completes
    them within a millisecond: timed between completions, that reads as thousands of pairs/s) and
    when requests last longer than the window. The median of the parts shrugs off a stall that
    another process caused in one of them.
    """
    if hi <= lo:
        return []
    k = max(1, chunks)
    step = (hi - lo) / k
    rates = []
    for g in range(k):
        a, b = lo + g * step, lo + (g + 1) * step
        pairs = 0.0
        for r in records:
            if r.status != 200 or r.end <= a or r.start >= b:
                continue
            life = r.end - r.start
            share = 1.0 if life <= 0 else (min(b, r.end) - max(a, r.start)) / life
            pairs += r.docs * share
        rates.append(pairs / step)
    return rates


def in_flight_rate(records: list[Record]) -> float:
    """Pairs scored per second that the server had a request in flight: the successful requests'
    documents over their summed latencies (for one request at a time, interleaved with others)."""
    ok = [r for r in records if r.status == 200]
    busy = sum(r.latency for r in ok)
    return sum(r.docs for r in ok) / busy if busy > 0 else 0.0


def throughput(result: LoadResult, chunks: int = 3) -> float:
    """Pairs scored per second: the median of :func:`window_rates` over the result's measured
    window, or for one server's share of an alternating load its :func:`in_flight_rate` there."""
    if result.in_flight:
        return in_flight_rate(result.ok())
    lo, hi = result.window()
    rates = window_rates(result.records, lo, hi, chunks)
    return statistics.median(rates) if rates else 0.0


def statuses(records: list[Record]) -> dict[str, int]:
    """How many responses had each HTTP status ("0": no response)."""
    out: dict[str, int] = {}
    for r in records:
        out[str(r.status)] = out.get(str(r.status), 0) + 1
    return out


if __name__ == "__main__":
    raise SystemExit(main())
