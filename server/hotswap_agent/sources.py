"""Fetchers: copy a version from an allow-listed source into a temporary folder on the models volume.

Each scheme offers two shapes, picked by the URI: a tarball (``.tar``, ``.tar.gz``, ``.tgz``),
downloaded to one file and extracted by ``archive.extract_tarball``; or a folder, copied file by
file. ``hf://`` is always a repository snapshot.

- ``file://``: a path on a mounted volume. Links are resolved and the real path must still be in
  the allow-list; a link or special file inside a source folder is refused.
- ``s3://bucket/prefix/``: s3fs (fsspec). Credentials come from the usual AWS variables or the pod's
  identity; the endpoint from ``--s3-endpoint-url`` / ``AWS_ENDPOINT_URL_S3`` / ``AWS_ENDPOINT_URL``.
  A folder is every object under the prefix.
- ``http(s)://``: aiohttp. A folder URI serves ``<folder>/manifest.json`` (see ``manifest.py``) and
  each file at ``<folder>/<path>``. Redirects are followed only to the same scheme, host and port and
  only inside the allow-list; link-local and metadata addresses are refused, literal or resolved.
- ``hf://org/name@revision``: ``huggingface_hub.snapshot_download`` against ``--hf-endpoint``
  (``HF_ENDPOINT``), token from ``HF_TOKEN``.

Blocking work runs in threads; ``Progress.cancel`` stops it between chunks.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import hashlib
import json
import logging
import os
import shutil
import socket
import threading
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver
from yarl import URL

from hotswap_agent.archive import CHUNK, Cancelled, safe_relpath, write_file
from hotswap_agent.errors import (
    AgentError,
    DiskFull,
    InvalidSource,
    SourceInvalid,
    SourceNotAllowed,
    SourceUnavailable,
)
from hotswap_agent.manifest import MANIFEST_NAME, parse_manifest
from hotswap_agent.progress import Progress
from hotswap_agent.settings import Settings
from hotswap_agent.uris import SourceUri, check_allowed, check_host, is_refused_address, parse_source

log = logging.getLogger(__name__)

T = TypeVar("T")
SPACE_MARGIN = 64 << 20
MAX_REDIRECTS = 5
MAX_MANIFEST_BYTES = 16 << 20


def ensure_space(folder: Path, needed: int) -> None:
    free = shutil.disk_usage(folder).free
    if needed + SPACE_MARGIN > free:
        raise DiskFull(f"not enough space on the models volume: need {needed} bytes, {free} free")


def disk_error(exc: OSError) -> AgentError | None:
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return DiskFull("no space left on the models volume")
    return None


async def run_blocking(fn: Callable[[], T], progress: Progress) -> T:
    """Run ``fn`` in a thread; on cancellation, flag it and wait for the thread to stop."""
    task = asyncio.ensure_future(asyncio.to_thread(fn))
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        progress.cancel.set()
        with contextlib.suppress(BaseException):
            await task
        raise


class Sources:
    """Dispatches a source to its fetcher."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.http = HttpFetcher(settings)

    async def fetch_archive(self, source: SourceUri, path: Path, progress: Progress) -> None:
        if source.scheme == "file":
            await run_blocking(
                lambda: fetch_file_archive(source, path, progress, self.settings.allow), progress
            )
        elif source.scheme == "s3":
            await run_blocking(
                lambda: fetch_s3(self.settings, source, path, progress, archive=True), progress
            )
        elif source.scheme in ("http", "https"):
            await self.http.fetch_archive(source, path, progress)
        else:
            raise InvalidSource(f"{source.scheme}:// sources are not tarballs")

    async def fetch_folder(self, source: SourceUri, dest: Path, progress: Progress) -> None:
        if source.scheme == "file":
            await run_blocking(
                lambda: fetch_file_folder(source, dest, progress, self.settings.allow), progress
            )
        elif source.scheme == "s3":
            await run_blocking(
                lambda: fetch_s3(self.settings, source, dest, progress, archive=False), progress
            )
        elif source.scheme in ("http", "https"):
            await self.http.fetch_folder(source, dest, progress)
        else:
            await run_blocking(lambda: fetch_hf(self.settings, source, dest, progress), progress)


# --- file:// ---------------------------------------------------------------------------------------
def _real_source_path(source: SourceUri, allow: tuple[str, ...]) -> Path:
    real = Path(os.path.realpath(source.location))
    check_allowed(parse_source(real.as_uri()), allow)  # a link must not lead out of the allow-list
    if not real.exists():
        raise SourceUnavailable(f"{source.canonical} does not exist")
    return real


def fetch_file_archive(source: SourceUri, path: Path, progress: Progress, allow: tuple[str, ...]) -> None:
    real = _real_source_path(source, allow)
    if not real.is_file():
        raise SourceInvalid(f"{source.canonical} is not a file")
    size = real.stat().st_size
    progress.expect(size)
    ensure_space(path.parent, size * 2)
    with open(real, "rb") as src:
        write_file(path, src, progress.cancel, progress.add)


def fetch_file_folder(source: SourceUri, dest: Path, progress: Progress, allow: tuple[str, ...]) -> None:
    real = _real_source_path(source, allow)
    if not real.is_dir():
        raise SourceInvalid(f"{source.canonical} is not a folder (name tarballs .tar, .tar.gz or .tgz)")
    files: list[tuple[str, Path, int]] = []
    for dirpath, dirnames, filenames in os.walk(real, followlinks=False):
        base = Path(dirpath)
        for name in dirnames + filenames:
            p = base / name
            st = p.lstat()
            rel = p.relative_to(real).as_posix()
            if p.is_symlink():
                raise SourceInvalid(f"source folder holds a symbolic link: {rel}")
            if name in filenames:
                if not p.is_file():
                    raise SourceInvalid(f"source folder holds a special file: {rel}")
                files.append((rel, p, st.st_size))
    total = sum(size for _, _, size in files)
    progress.expect(total)
    ensure_space(dest, total)
    for rel, p, _ in files:
        with open(p, "rb") as src:
            write_file(dest / rel, src, progress.cancel, progress.add)


# --- s3:// -----------------------------------------------------------------------------------------
def _s3_filesystem(settings: Settings) -> Any:
    import s3fs  # imported here: heavy, and only needed for s3 sources

    kwargs: dict[str, Any] = {"skip_instance_cache": True}
    if settings.s3_endpoint_url:
        kwargs["endpoint_url"] = settings.s3_endpoint_url
    return s3fs.S3FileSystem(**kwargs)


def fetch_s3(settings: Settings, source: SourceUri, dest: Path, progress: Progress, *, archive: bool) -> None:
    try:
        fs = _s3_filesystem(settings)
        if archive:
            key = f"{source.authority}/{source.location}"
            size = int(fs.info(key)["size"])
            progress.expect(size)
            ensure_space(dest.parent, size * 2)
            with fs.open(key, "rb", block_size=8 << 20) as src:
                write_file(dest, src, progress.cancel, progress.add)
            return
        prefix = source.location
        if prefix and not prefix.endswith("/"):
            prefix += "/"
        base = f"{source.authority}/{prefix}"
        found = fs.find(base, detail=True)
        files: list[tuple[str, str, int]] = []
        for name, info in sorted(found.items()):
            if info.get("type") == "directory" or name.endswith("/"):
                continue
            if not name.startswith(base):
                continue
            try:
                rel = safe_relpath(name[len(base) :])
            except ValueError as exc:
                raise SourceInvalid(f"s3 object refused: {exc}") from None
            files.append((rel, name, int(info.get("size") or 0)))
        if not files:
            raise SourceUnavailable(f"no objects under {source.canonical}")
        total = sum(size for _, _, size in files)
        progress.expect(total)
        ensure_space(dest, total)
        for rel, name, _ in files:
            with fs.open(name, "rb", block_size=8 << 20) as src:
                write_file(dest / rel, src, progress.cancel, progress.add)
    except AgentError:
        raise
    except OSError as exc:
        local = disk_error(exc)
        if local is not None:
            raise local from None
        raise SourceUnavailable(f"s3 source {source.canonical}: {_describe(exc)}") from None
    except Exception as exc:  # botocore and aiobotocore raise their own hierarchies
        raise SourceUnavailable(f"s3 source {source.canonical}: {_describe(exc)}") from None


def _describe(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    name = type(exc).__name__
    return f"{name}: {text[:300]}" if text else name


# --- hf:// -----------------------------------------------------------------------------------------
def fetch_hf(settings: Settings, source: SourceUri, dest: Path, progress: Progress) -> None:
    # imported here: only needed for hf sources
    from huggingface_hub import HfApi, snapshot_download
    from huggingface_hub.hf_api import RepoFile
    from huggingface_hub.utils import disable_progress_bars

    disable_progress_bars()
    token: str | bool = settings.hf_token or False
    stop = threading.Event()

    def watch() -> None:  # snapshot_download has no byte callback: measure the folder instead
        while not stop.wait(0.5):
            progress.bytes_done = _tree_size(dest)

    watcher = threading.Thread(target=watch, name="hf-progress", daemon=True)
    try:
        api = HfApi(endpoint=settings.hf_endpoint, token=token)
        # Resolve the revision to a commit first: the listing and the download then name one content,
        # and an unreachable hub or a missing repository is a clear error here.
        commit = api.repo_info(source.authority, revision=source.location).sha
        if not commit:
            raise SourceUnavailable(f"{settings.hf_endpoint} gave no commit for {source.canonical}")
        listing = [f for f in api.list_repo_tree(source.authority, revision=commit, recursive=True)
                   if isinstance(f, RepoFile)]  # fmt: skip
        for f in listing:
            try:
                safe_relpath(f.path)
            except ValueError as exc:
                raise SourceInvalid(f"hf repository file refused: {exc}") from None
        total = sum(f.size or 0 for f in listing)
        progress.expect(total)
        ensure_space(dest, total)
        log.info("hf: %s is commit %s, %d files, %d bytes", source.canonical, commit, len(listing), total)
        watcher.start()
        snapshot_download(
            source.authority,
            revision=commit,
            local_dir=dest,
            endpoint=settings.hf_endpoint,
            token=token,
            max_workers=4,
        )
    except AgentError:
        raise
    except OSError as exc:
        local = disk_error(exc)
        if local is not None:
            raise local from None
        raise SourceUnavailable(f"hf source {source.canonical}: {_describe(exc)}") from None
    except Exception as exc:  # huggingface_hub's HTTP and repository errors
        raise SourceUnavailable(f"hf source {source.canonical}: {_describe(exc)}") from None
    finally:
        stop.set()
        if watcher.is_alive():
            watcher.join()
    # snapshot_download keeps its bookkeeping in <local_dir>/.cache: not part of the version
    shutil.rmtree(dest / ".cache", ignore_errors=True)
    if progress.cancel.is_set():
        raise Cancelled("cancelled")
    got = sorted(p.relative_to(dest).as_posix() for p in dest.rglob("*") if p.is_file())
    if got != sorted(f.path for f in listing):
        raise SourceInvalid(f"hf download of {source.canonical} does not match the repository listing")
    progress.bytes_done = _tree_size(dest)


def _tree_size(root: Path) -> int:
    total = 0
    for dirpath, _, filenames in os.walk(root):
        for name in filenames:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(dirpath, name)).st_size
    return total


# --- http(s):// ------------------------------------------------------------------------------------
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
        for _ in range(MAX_REDIRECTS + 1):
            try:
                resp = await session.get(url, allow_redirects=False)
            except aiohttp.ClientError as exc:
                if resolver.refused:
                    raise SourceNotAllowed(resolver.refused) from None
                raise SourceUnavailable(f"GET {shown}: {_describe(exc)}") from None
            except TimeoutError:
                raise SourceUnavailable(f"GET {shown}: timed out") from None
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
                continue
            try:
                if resp.status != 200:
                    raise SourceUnavailable(f"GET {shown} answered {resp.status} {resp.reason or ''}".strip())
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
                raise SourceUnavailable(f"GET {shown}: download interrupted: {_describe(exc)}") from None
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
