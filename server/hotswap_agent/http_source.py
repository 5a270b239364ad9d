"""http(s) sources: a tarball, or a folder listed by ``<folder>/manifest.json`` (see ``manifest.py``).

Redirects are followed only to the source's own scheme, host and port, and only inside the
allow-list. Link-local and metadata addresses are refused twice: as literals before connecting
(``uris.check_host``) and as resolved addresses, by ``SafeResolver``, at connect time.
No proxy variables, no content negotiation: the bytes saved are the file's bytes.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import hashlib
import json
import os
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import quote

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver
from yarl import URL

from hotswap_agent.archive import CHUNK, Cancelled
from hotswap_agent.errors import InvalidSource, SourceInvalid, SourceNotAllowed, SourceUnavailable, http_fault
from hotswap_agent.manifest import MANIFEST_NAME, parse_manifest
from hotswap_agent.progress import Progress
from hotswap_agent.settings import Settings
from hotswap_agent.transfer import describe, ensure_space
from hotswap_agent.uris import SourceUri, check_allowed, check_host, is_refused_address, parse_source

MAX_REDIRECTS = 5
MAX_MANIFEST_BYTES = 16 << 20
# A throttled or briefly unavailable source (429, 503) is asked again a few times, after its
# ``Retry-After`` (seconds; capped) or a short backoff, before the error reaches the operator (which
# retries a transient ``source_unavailable`` with its own backoff, within podTimeoutSeconds).
BUSY_STATUSES = (429, 503)
BUSY_RETRIES = 3
BUSY_WAIT_MAX = 10.0


def retry_after(value: str | None, attempt: int) -> float:
    """Seconds to wait before asking again: ``Retry-After`` in seconds (an HTTP date is not parsed),
    else 0.5 s doubling; at most BUSY_WAIT_MAX."""
    try:
        wait = float(value) if value is not None else 0.5 * 2**attempt
    except ValueError:
        wait = 0.5 * 2**attempt
    return min(max(wait, 0.0), BUSY_WAIT_MAX)


class SafeResolver(AbstractResolver):
    """Resolves through aiohttp's default resolver and drops link-local and metadata addresses."""

    def __init__(self) -> None:
        self.inner = DefaultResolver()
        self.refused: str | None = None

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        results = await self.inner.resolve(host, port, family)
        kept = [r for r in results if not is_refused_address(r["host"])]
        if not kept:
            self.refused = f"refused address: {host} resolves to a link-local or metadata address"
            raise OSError(errno.EACCES, self.refused)
        return kept

    async def close(self) -> None:
        await self.inner.close()


class HttpFetcher:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    @contextlib.asynccontextmanager
    async def _session(self) -> AsyncIterator[tuple[aiohttp.ClientSession, SafeResolver]]:
        resolver = SafeResolver()
        connector = aiohttp.TCPConnector(resolver=resolver, use_dns_cache=False, limit=4)
        timeout = aiohttp.ClientTimeout(
            total=None, sock_connect=15, sock_read=self.settings.source_read_timeout_s
        )
        headers = {"Accept-Encoding": "identity", "User-Agent": "hotswap-agent"}
        async with aiohttp.ClientSession(
            connector=connector, timeout=timeout, auto_decompress=False, trust_env=False, headers=headers
        ) as session:
            yield session, resolver

    @contextlib.asynccontextmanager
    async def _get(
        self, session: aiohttp.ClientSession, resolver: SafeResolver, source: SourceUri, url: URL
    ) -> AsyncIterator[aiohttp.ClientResponse]:
        """GET ``url``, following redirects only to the source's own origin and allow-list."""
        origin = (source.scheme, source.host, source.port)
        shown = str(url.with_query(None))
        busy = redirects = 0
        while redirects <= MAX_REDIRECTS:
            try:
                resp = await session.get(url, allow_redirects=False)
            except aiohttp.ClientError as exc:
                if resolver.refused:
                    raise SourceNotAllowed(resolver.refused) from None
                raise SourceUnavailable(f"GET {shown}: {describe(exc)}") from None
            except TimeoutError:
                raise SourceUnavailable(f"GET {shown}: timed out") from None
            if resp.status in BUSY_STATUSES and busy < BUSY_RETRIES:
                wait = retry_after(resp.headers.get("Retry-After"), busy)
                resp.release()
                busy += 1
                await asyncio.sleep(wait)
                continue
            if resp.status in (301, 302, 303, 307, 308):
                location = resp.headers.get("Location", "")
                resp.release()
                target = url.join(URL(location))
                hop = parse_source(str(target))
                if (hop.scheme, hop.host, hop.port) != origin:
                    raise SourceNotAllowed(
                        f"redirect from {shown} to another host ({hop.scheme}://{hop.authority}) refused"
                    )
                check_allowed(hop, self.settings.allow)
                url, shown = target, str(target.with_query(None))
                redirects += 1
                continue
            try:
                if resp.status != 200:
                    raise SourceUnavailable(
                        f"GET {shown} answered {resp.status} {resp.reason or ''}".strip(),
                        fault=http_fault(resp.status),
                    )
                yield resp
            finally:
                resp.release()
            return
        raise SourceUnavailable(f"GET {shown}: more than {MAX_REDIRECTS} redirects")

    async def _stream_to(
        self, resp: aiohttp.ClientResponse, path: Path, progress: Progress, *, shown: str
    ) -> tuple[int, str]:
        h = hashlib.sha256()
        size = 0
        path.parent.mkdir(parents=True, exist_ok=True)
        f = await asyncio.to_thread(open, path, "xb")
        try:
            try:
                async for chunk in resp.content.iter_chunked(CHUNK):
                    if progress.cancel.is_set():
                        raise Cancelled("cancelled")
                    await asyncio.to_thread(f.write, chunk)
                    h.update(chunk)
                    size += len(chunk)
                    progress.add(len(chunk))
            except (aiohttp.ClientError, TimeoutError) as exc:
                raise SourceUnavailable(f"GET {shown}: download interrupted: {describe(exc)}") from None
            await asyncio.to_thread(f.flush)
            await asyncio.to_thread(os.fsync, f.fileno())
        finally:
            f.close()
        return size, h.hexdigest()

    async def fetch_archive(self, source: SourceUri, path: Path, progress: Progress) -> None:
        check_host(source.host)
        url = URL(source.raw)
        async with self._session() as (session, resolver), self._get(session, resolver, source, url) as resp:
            if resp.content_length is not None:
                progress.expect(resp.content_length)
                ensure_space(path.parent, resp.content_length * 2)
            shown = str(url.with_query(None))
            size, _ = await self._stream_to(resp, path, progress, shown=shown)
            if resp.content_length is not None and size != resp.content_length:
                raise SourceUnavailable(f"GET {shown}: got {size} of {resp.content_length} bytes")

    async def fetch_folder(self, source: SourceUri, dest: Path, progress: Progress) -> None:
        check_host(source.host)
        if URL(source.raw).query_string:
            raise InvalidSource("an http folder uri takes no query string")
        base = str(URL(source.raw)).rstrip("/") + "/"
        async with self._session() as (session, resolver):
            manifest_url = URL(base + MANIFEST_NAME, encoded=True)
            async with self._get(session, resolver, source, manifest_url) as resp:
                if resp.content_length is not None and resp.content_length > MAX_MANIFEST_BYTES:
                    raise SourceInvalid(f"{MANIFEST_NAME} is larger than {MAX_MANIFEST_BYTES} bytes")
                raw = await resp.content.read(MAX_MANIFEST_BYTES + 1)
            if len(raw) > MAX_MANIFEST_BYTES:
                raise SourceInvalid(f"{MANIFEST_NAME} is larger than {MAX_MANIFEST_BYTES} bytes")
            try:
                entries = parse_manifest(json.loads(raw.decode("utf-8")))
            except (ValueError, UnicodeDecodeError) as exc:
                raise SourceInvalid(f"{base}{MANIFEST_NAME}: {exc}") from None
            sizes = [e.size for e in entries]
            if all(s is not None for s in sizes):
                total = sum(s for s in sizes if s is not None)
                progress.expect(total)
                ensure_space(dest, total)
            for entry in entries:
                file_url = URL(base + quote(entry.path, safe="/"), encoded=True)
                async with self._get(session, resolver, source, file_url) as resp:
                    size, sha = await self._stream_to(resp, dest / entry.path, progress, shown=str(file_url))
                if entry.size is not None and size != entry.size:
                    raise SourceInvalid(f"{entry.path}: {size} bytes, the manifest says {entry.size}")
                if entry.sha256 is not None and sha != entry.sha256:
                    raise SourceInvalid(f"{entry.path}: sha256 {sha}, the manifest says {entry.sha256}")
