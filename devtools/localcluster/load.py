"""Client load through the local cluster's Service, counting every failure.

The Service sends each request to one ready pod (round robin), as a Kubernetes Service does; a
pod leaves it before it is stopped and the harness waits for its in-flight requests to finish,
as endpoints removal and a preStop drain do. Every answer must be a 200 carrying exactly one
``X-Hotswap-Model-Version`` header (one version scored the whole request).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import itertools
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

import aiohttp
from hotswap_contract.wire import VERSION_HEADER


@dataclasses.dataclass
class Endpoint:
    name: str
    url: str  # data plane base URL
    inflight: int = 0


class Service:
    """The ready endpoints, and the requests in flight to each."""

    def __init__(self) -> None:
        self._endpoints: dict[str, Endpoint] = {}
        self._rr = itertools.count()

    def set_ready(self, name: str, url: str, ready: bool) -> None:
        if ready:
            self._endpoints.setdefault(name, Endpoint(name, url))
        else:
            self._endpoints.pop(name, None)

    @property
    def endpoints(self) -> list[str]:
        return sorted(self._endpoints)

    @contextlib.asynccontextmanager
    async def pick(self) -> AsyncIterator[Endpoint | None]:
        ready = sorted(self._endpoints.values(), key=lambda e: e.name)
        if not ready:
            yield None
            return
        endpoint = ready[next(self._rr) % len(ready)]
        endpoint.inflight += 1
        try:
            yield endpoint
        finally:
            endpoint.inflight -= 1

    async def drain(self, name: str, url: str, timeout: float = 10.0) -> None:
        """Take ``name`` out of the Service and wait until its in-flight requests are done."""
        endpoint = self._endpoints.pop(name, None)
        if endpoint is None:
            return
        deadline = time.monotonic() + timeout
        while endpoint.inflight and time.monotonic() < deadline:
            await asyncio.sleep(0.01)


@dataclasses.dataclass
class Sample:
    at: float  # seconds since the load started
    pod: str
    ok: bool
    status: int
    version: str | None
    latency_ms: float
    error: str = ""


@dataclasses.dataclass
class LoadReport:
    total: int
    ok: int
    failed: int
    by_version: dict[str, int]
    by_pod: dict[str, int]
    failures: list[str]
    p50_ms: float
    p99_ms: float
    samples: list[Sample]

    def summary(self) -> str:
        return (
            f"{self.total} requests, {self.failed} failed, by version {self.by_version}, "
            f"p50 {self.p50_ms:.1f} ms, p99 {self.p99_ms:.1f} ms"
        )


class Load:
    """``concurrency`` clients sending reranking requests until stopped."""

    def __init__(
        self,
        service: Service,
        *,
        concurrency: int = 2,
        query: str = "how do neural networks learn from data",
        documents: Sequence[str] = (
            "Deep learning updates its weights with backpropagation.",
            "A ripe banana tastes sweet and fresh.",
        ),
        route: str = "/rerank",
        think_time: float = 0.01,
        on_sample: Callable[[Sample], None] | None = None,
    ) -> None:
        self.service = service
        self.concurrency = concurrency
        self.route = route
        self.think_time = think_time
        self.on_sample = on_sample
        if route == "/rerank":
            self.body: dict[str, Any] = {"query": query, "texts": list(documents)}
        else:
            self.body = {"query": query, "documents": list(documents)}
        self.samples: list[Sample] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._stop = asyncio.Event()
        self._t0 = 0.0
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> Load:
        self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def start(self) -> None:
        self._t0 = time.monotonic()
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30))
        self._tasks = [asyncio.create_task(self._worker()) for _ in range(self.concurrency)]

    async def stop(self) -> LoadReport:
        self._stop.set()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
            self._tasks = []
        if self._session is not None:
            await self._session.close()
            self._session = None
        return self.report()

    def report(self) -> LoadReport:
        samples = list(self.samples)
        ok = [s for s in samples if s.ok]
        latencies = sorted(s.latency_ms for s in ok) or [0.0]
        return LoadReport(
            total=len(samples),
            ok=len(ok),
            failed=len(samples) - len(ok),
            by_version=dict(Counter(s.version or "-" for s in ok)),
            by_pod=dict(Counter(s.pod for s in samples)),
            failures=[f"{s.pod}: {s.status} {s.error}" for s in samples if not s.ok][:20],
            p50_ms=latencies[len(latencies) // 2],
            p99_ms=latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))],
            samples=samples,
        )

    async def _worker(self) -> None:
        assert self._session is not None
        while not self._stop.is_set():
            async with self.service.pick() as endpoint:
                if endpoint is None:
                    sample = None
                else:
                    sample = await self._one(endpoint)
            if sample is None:
                await asyncio.sleep(0.02)
                continue
            self.samples.append(sample)
            if self.on_sample is not None:
                self.on_sample(sample)
            if self.think_time:
                await asyncio.sleep(self.think_time)

    async def _one(self, endpoint: Endpoint) -> Sample:
        assert self._session is not None
        started = time.monotonic()
        status, version, error = 0, None, ""
        try:
            async with self._session.post(endpoint.url + self.route, json=self.body) as resp:
                status = resp.status
                versions = resp.headers.getall(VERSION_HEADER, [])
                await resp.read()
                if status != 200:
                    error = "non-200 answer"
                elif len(versions) != 1:
                    error = f"{len(versions)} version headers"
                else:
                    version = versions[0]
        except (aiohttp.ClientError, TimeoutError) as exc:
            error = f"{type(exc).__name__}: {exc}"
        latency = (time.monotonic() - started) * 1000
        return Sample(started - self._t0, endpoint.name, not error, status, version, latency, error)
