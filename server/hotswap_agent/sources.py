"""Fetchers: copy a version from an allow-listed source into a temporary folder on the models volume.

Each scheme offers two shapes, picked by the URI: a tarball (``.tar``, ``.tar.gz``, ``.tgz``),
downloaded to one file and extracted by ``archive.extract_tarball``; or a folder, copied file by
file. ``hf://`` is always a repository snapshot.

- ``file://``: a path on a mounted volume. Links are resolved and the real path must still be in
  the allow-list; a link or special file inside a source folder is refused.
- ``s3://bucket/prefix/``: s3fs (fsspec). Credentials come from the usual AWS variables or the pod's
  identity; the endpoint from ``--s3-endpoint-url`` / ``AWS_ENDPOINT_URL_S3`` / ``AWS_ENDPOINT_URL``.
  A folder is every object under the prefix.
- ``http(s)://``: aiohttp, in ``http_source.py``.
- ``hf://org/name@revision``: ``huggingface_hub.snapshot_download`` against ``--hf-endpoint``
  (``HF_ENDPOINT``), token from ``HF_TOKEN``.

Blocking work runs in threads; ``Progress.cancel`` stops it between chunks.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import threading
from pathlib import Path
from typing import Any

from hotswap_agent.archive import Cancelled, safe_relpath, write_file
from hotswap_agent.errors import (
    AgentError,
    InvalidSource,
    SourceFault,
    SourceInvalid,
    SourceUnavailable,
    http_fault,
)
from hotswap_agent.http_source import HttpFetcher
from hotswap_agent.progress import Progress
from hotswap_agent.settings import Settings
from hotswap_agent.transfer import describe, disk_error, ensure_space, run_blocking
from hotswap_agent.uris import SourceUri, check_allowed, parse_source

log = logging.getLogger(__name__)


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
        raise SourceUnavailable(f"{source.canonical} does not exist", fault="gone")
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


# S3 codes s3fs turns into PermissionError that are not a refusal of access: a token that expired
# or a clock off by minutes passes (the pod's identity is refreshed, the clock is corrected).
_S3_PASSING = frozenset({"ExpiredToken", "TokenRefreshRequired", "RequestTimeTooSkewed"})


def _s3_code(exc: BaseException) -> str:
    """The S3 error code of a botocore ClientError, or of the one s3fs translated (its cause)."""
    for e in (exc, exc.__cause__):
        response = getattr(e, "response", None)
        if isinstance(response, dict):
            return str(response.get("Error", {}).get("Code", ""))
    return ""


def s3_fault(exc: BaseException) -> SourceFault:
    """s3fs turns S3's answers into OSErrors (NoSuchKey, NoSuchBucket: FileNotFoundError;
    AccessDenied: PermissionError) built from a message alone, so without an errno; a botocore
    ClientError it lets through carries the code. An OSError with an errno is the OS's, about a
    local path (the staging folder): it says nothing of the source."""
    code = _s3_code(exc)
    if code in _S3_PASSING:
        return "transient"
    if isinstance(exc, FileNotFoundError | PermissionError):
        if exc.errno is not None:
            return "transient"
        return "gone" if isinstance(exc, FileNotFoundError) else "refused"
    if code in ("NoSuchKey", "NoSuchBucket", "NotFound", "404"):
        return "gone"
    if code in ("AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "403"):
        return "refused"
    return "transient"


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
            raise SourceUnavailable(f"no objects under {source.canonical}", fault="gone")
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
        raise SourceUnavailable(
            f"s3 source {source.canonical}: {describe(exc)}", fault=s3_fault(exc)
        ) from None
    except Exception as exc:  # botocore and aiobotocore raise their own hierarchies
        raise SourceUnavailable(
            f"s3 source {source.canonical}: {describe(exc)}", fault=s3_fault(exc)
        ) from None


# --- hf:// -----------------------------------------------------------------------------------------
def hf_fault(exc: BaseException) -> SourceFault:
    """huggingface_hub says "not there" with its own classes (a gated repository is one of them,
    but it is a question of access) and anything else through the HTTP status it carries.

    ``LocalEntryNotFoundError`` is an ``EntryNotFoundError`` too, but it means the hub could not be
    asked (no connection, a timeout, a 429 or 5xx: ``snapshot_download`` raises it whenever its own
    lookup fails otherwise): what the hub answered, if anything, is its cause. A private repository
    asked without a token answers 401 as "repository not found" (the hub will not say it exists): it
    reads as ``gone``, and the agent's token is then the first thing to check.
    """
    from huggingface_hub.errors import (
        EntryNotFoundError,
        GatedRepoError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    if isinstance(exc, LocalEntryNotFoundError):
        return hf_fault(exc.__cause__) if exc.__cause__ is not None else "transient"
    if isinstance(exc, GatedRepoError):
        return "refused"
    if isinstance(exc, RepositoryNotFoundError | RevisionNotFoundError | EntryNotFoundError):
        return "gone"
    status = getattr(getattr(exc, "response", None), "status_code", None)
    return http_fault(status) if isinstance(status, int) else "transient"


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
        raise SourceUnavailable(
            f"hf source {source.canonical}: {describe(exc)}", fault=hf_fault(exc)
        ) from None
    except Exception as exc:  # huggingface_hub's HTTP and repository errors
        raise SourceUnavailable(
            f"hf source {source.canonical}: {describe(exc)}", fault=hf_fault(exc)
        ) from None
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
