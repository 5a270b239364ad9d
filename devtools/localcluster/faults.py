"""Fault points: hold a pod's swap at a chosen step, so a test can kill the pod *during* it.

Each step of a swap takes milliseconds with the tiny test models: killing a pod "during preload" by
timing would be a sleep that hopes. Instead the harness stands on the wires the agent uses, and a
test holds one request there:

- ``PodProxy``: each real pod's agent reaches its server's data plane and admin plane through a
  proxy on the pod's own address (``PROXY_DATA_PORT``, ``PROXY_ADMIN_PORT``), transparent until a
  hold matches a request (``POST /admin/v1/preload``, ``/admin/v1/activate``, the canary's
  ``/v1/rerank``...). Clients of the Service and the operator still talk to the server directly.
- ``HttpRegistry``: the local registry folder served over http (a ``manifest.json`` made on the
  fly, as ``python -m hotswap_agent.manifest`` writes it), so a stage can be held on its download.

A ``Hold`` keeps every matching request waiting until ``release()``; the test knows the step has
begun once a request is held (``reached``). A released request goes on to its upstream; when that
is gone (the test SIGKILLed the server meanwhile), the agent's connection is cut without an answer,
exactly what a server dying mid-request does. Nothing in the product knows about any of this: the
agent sees what it would see from a crashing server, and the chart has no such proxy.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
from pathlib import Path

import aiohttp
from aiohttp import web
from multidict import CIMultiDict

PROXY_DATA_PORT, PROXY_ADMIN_PORT = 18080, 18081
# Hop-by-hop headers and the ones aiohttp sets again for the body it sends.
_NOT_FORWARDED = frozenset(
    {"host", "connection", "keep-alive", "transfer-encoding", "content-length", "upgrade", "te"}
)


@dataclasses.dataclass(eq=False)
class Hold:
    """Every request ``method path`` (and, for a proxy, on that pod) waits until ``release()``."""

    method: str
    path: str
    waiting: int = 0  # requests held now
    held: int = 0  # requests held so far
    forwarded: int = 0  # held requests that went on after the release (answered or cut)
    _reached: asyncio.Event = dataclasses.field(default_factory=asyncio.Event)
    _released: asyncio.Event = dataclasses.field(default_factory=asyncio.Event)
    _changed: asyncio.Condition = dataclasses.field(default_factory=asyncio.Condition)

    def matches(self, method: str, path: str) -> bool:
        return not self._released.is_set() and method == self.method and path == self.path

    async def reached(self, timeout: float, count: int = 1) -> None:
        """Until ``count`` requests are held at once (TimeoutError after ``timeout`` seconds)."""
        async with asyncio.timeout(timeout), self._changed:
            await self._changed.wait_for(lambda: self.waiting >= count)

    def release(self) -> None:
        self._released.set()

    async def settled(self, timeout: float) -> None:
        """After ``release()``: until every held request went on (answered, or its connection cut)."""
        async with asyncio.timeout(timeout), self._changed:
            await self._changed.wait_for(lambda: self.forwarded >= self.held)

    async def _hold(self) -> None:
        async with self._changed:
            self.waiting += 1
            self.held += 1
            self._changed.notify_all()
        try:
            await self._released.wait()
        finally:
            async with self._changed:
                self.waiting -= 1
                self._changed.notify_all()

    async def _went_on(self) -> None:
        async with self._changed:
            self.forwarded += 1
            self._changed.notify_all()


class _Held:
    """The holds armed on one listener; a request waits on every one it matches."""

    def __init__(self) -> None:
        self.holds: list[Hold] = []

    def add(self, method: str, path: str) -> Hold:
        hold = Hold(method.upper(), path)
        self.holds = [h for h in self.holds if not h._released.is_set()] + [hold]
        return hold

    async def wait(self, request: web.Request) -> list[Hold]:
        matched = [h for h in self.holds if h.matches(request.method, request.path)]
        for hold in matched:
            await hold._hold()
        return matched


def _cut(request: web.Request) -> web.StreamResponse:
    """Close the client's connection without an answer (what a SIGKILLed server leaves it with)."""
    if request.transport is not None:
        request.transport.abort()
    return web.Response(status=502)  # never sent: the connection is gone


class _Listener:
    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.held = _Held()
        self._runner: web.AppRunner | None = None

    async def _serve(self, handler: web.RequestHandler | object) -> None:
        app = web.Application(client_max_size=64 << 20)
        app.router.add_route("*", "/{tail:.*}", handler)  # type: ignore[arg-type]
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port, reuse_address=True)
        await site.start()
        if self.port == 0:
            self.port = int(self._runner.addresses[0][1])

    async def close(self) -> None:
        for hold in self.held.holds:
            hold.release()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None


class PodProxy(_Listener):
    """``http://host:port`` forwards to ``upstream`` (one plane of one pod's server)."""

    def __init__(self, host: str, port: int, upstream: str) -> None:
        super().__init__(host, port)
        self.upstream = upstream.rstrip("/")
        self._session: aiohttp.ClientSession | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    async def start(self) -> PodProxy:
        # No total timeout: a preload may take minutes; the agent bounds its own calls.
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=5)
        self._session = aiohttp.ClientSession(timeout=timeout, auto_decompress=False)
        await self._serve(self._forward)
        return self

    async def close(self) -> None:
        await super().close()
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def _forward(self, request: web.Request) -> web.StreamResponse:
        assert self._session is not None
        body = await request.read()
        holds = await self.held.wait(request)
        headers = CIMultiDict((k, v) for k, v in request.headers.items() if k.lower() not in _NOT_FORWARDED)
        try:
            async with self._session.request(
                request.method, self.upstream + request.path_qs, data=body, headers=headers
            ) as resp:
                data = await resp.read()
                out = CIMultiDict((k, v) for k, v in resp.headers.items() if k.lower() not in _NOT_FORWARDED)
                return web.Response(status=resp.status, body=data, headers=out)
        except (aiohttp.ClientError, TimeoutError, OSError):
            return _cut(request)
        finally:
            for hold in holds:
                await hold._went_on()


class HttpRegistry(_Listener):
    """The registry folder over http: ``GET /<version>/manifest.json`` and ``GET /<version>/<file>``."""

    def __init__(self, host: str, root: Path) -> None:
        super().__init__(host, 0)
        self.root = root.resolve()

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    async def start(self) -> HttpRegistry:
        await self._serve(self._get)
        return self

    def uri(self, version: str) -> str:
        return f"{self.url}/{version}"

    async def _get(self, request: web.Request) -> web.StreamResponse:
        holds = await self.held.wait(request)
        try:
            if request.method != "GET":
                return web.Response(status=405)
            version, _, rel = request.path.lstrip("/").partition("/")
            folder = (self.root / version).resolve()
            if folder.parent != self.root or not folder.is_dir():
                return web.Response(status=404)
            if rel == "manifest.json":
                from hotswap_agent.manifest import build_manifest  # torch-free

                manifest = await asyncio.to_thread(build_manifest, folder)
                return web.Response(body=json.dumps(manifest), content_type="application/json")
            path = (folder / rel).resolve()
            if not path.is_file() or not path.is_relative_to(folder):
                return web.Response(status=404)
            return web.FileResponse(path)
        finally:
            for hold in holds:
                await hold._went_on()


async def close_all(listeners: list[_Listener]) -> None:
    for listener in listeners:
        with contextlib.suppress(Exception):
            await listener.close()
