"""Staging a version onto the models volume, and retention.

stage(version, source, sha256):
1. ``<root>/<version>`` already there: its digest must equal the pin (if any); nothing is fetched.
2. Otherwise fetch into ``<root>/.staging-<version>-<hex>/`` (a tarball first lands in
   ``....archive`` next to it and is extracted with ``archive.extract_tarball``).
3. Compute the manifest digest (``hotswap_contract.digest.folder_digest``) and compare with the pin.
4. Write ``.hotswap/<version>.json``, then rename the folder to ``<root>/<version>`` in one step.

Any failure removes the temporaries; a kill leaves only dot-names, removed at the next start. So
``<root>/<version>`` is either complete or absent, whatever happens.

With a model cache (``--cache-dir``, :mod:`hotswap_agent.cache`) and a pinned sha256, step 2 first
looks for ``<cache>/sha256-<pin>/``: a hit is copied (hard-linked on the same file system) into the
temporary folder and digested again like a download; a corrupted entry is removed and the version
downloaded. A miss downloads under the entry's exclusive lock and publishes the verified folder into
the cache before the version is published. Without a pin there is no key before the download, and
the cache is not used.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hotswap_contract.digest import DigestError, folder_digest, folder_size

from hotswap_agent.archive import extract_tarball, remove_tree
from hotswap_agent.cache import EntryLock, LockTimeout, ModelCache
from hotswap_agent.errors import DigestMismatch, SourceInvalid, SourceUnavailable, VersionConflict
from hotswap_agent.progress import Progress
from hotswap_agent.sources import Sources
from hotswap_agent.transfer import disk_error, run_blocking
from hotswap_agent.uris import SourceUri
from hotswap_agent.volume import ModelsVolume, utcnow

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class StageResult:
    version: str
    digest: str
    path: str
    bytes: int
    noop: bool
    cache: str | None = None  # "hit" or "miss" when the model cache was used

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "version": self.version,
            "digest": self.digest,
            "path": self.path,
            "bytes": self.bytes,
            "noop": self.noop,
        }
        if self.cache is not None:
            out["cache"] = self.cache
        return out


class Stager:
    def __init__(self, volume: ModelsVolume, sources: Sources, cache: ModelCache | None = None) -> None:
        self.volume = volume
        self.sources = sources
        settings = getattr(sources, "settings", None)
        if cache is None and getattr(settings, "cache_dir", None) is not None:
            assert settings is not None
            cache = ModelCache(settings.cache_dir, settings.cache_max_bytes, settings.cache_lock_timeout_s)
        self.cache = cache
        self._cache_ready = False

    async def existing(self, version: str, sha256: str | None, progress: Progress) -> StageResult | None:
        """The result for a version already on disk (checked against the pin), else ``None``."""
        if not self.volume.exists(version):
            return None
        progress.step = "checking existing"
        digest = await run_blocking(lambda: self.volume.digest(version), progress)
        if sha256 is not None and digest != sha256:
            raise VersionConflict(
                f"{version} is already on disk with digest {digest}, not {sha256}: a version id names "
                "one content, stage the new content under a new version id"
            )
        info = self.volume.info(version)
        return StageResult(version, digest, str(self.volume.version_path(version)), info.bytes, noop=True)

    async def stage(
        self, version: str, source: SourceUri, sha256: str | None, progress: Progress
    ) -> StageResult:
        found = await self.existing(version, sha256, progress)
        if found is not None:
            progress.expect(progress.bytes_done)
            return found
        if self.cache is not None and sha256 is not None:
            return await self._stage_cached(self.cache, version, source, sha256, progress)
        return await self._download(version, source, sha256, progress)

    async def _download(
        self,
        version: str,
        source: SourceUri,
        sha256: str | None,
        progress: Progress,
        verified: Callable[[Path], Awaitable[None]] | None = None,
        cache: str | None = None,
    ) -> StageResult:
        temp, archive = await run_blocking(lambda: self.volume.new_temp(version), progress)
        try:
            progress.step = "downloading"
            if source.is_tarball:
                await self.sources.fetch_archive(source, archive, progress)
                progress.step = "extracting"
                await run_blocking(lambda: extract_tarball(archive, temp, progress.cancel), progress)
                remove_tree(archive)
            else:
                await self.sources.fetch_folder(source, temp, progress)
            progress.step = "digest"
            try:
                digest = await run_blocking(lambda: folder_digest(temp), progress)
                size = await run_blocking(lambda: folder_size(temp), progress)
            except DigestError as exc:
                raise SourceInvalid(str(exc)) from None
            if not any(p.is_file() for p in temp.rglob("*")):
                raise SourceInvalid(f"{source.canonical} holds no files")
            if sha256 is not None and digest != sha256:
                raise DigestMismatch(
                    f"digest mismatch for {version}: the source gives {digest}, pinned {sha256}"
                )
            if verified is not None:
                await verified(temp)
            progress.step = "publishing"
            meta = {
                "version": version,
                "digest": digest,
                "bytes": size,
                "source": source.canonical,
                "stagedAt": utcnow(),
            }
            final = await run_blocking(lambda: self.volume.publish(temp, version, meta), progress)
            log.info("staged %s from %s: digest %s, %d bytes", version, source.canonical, digest, size)
            return StageResult(version, digest, str(final), size, noop=False, cache=cache)
        except OSError as exc:
            local = disk_error(exc)
            if local is not None:
                raise local from None
            raise SourceUnavailable(f"staging {version} failed: {exc.strerror or exc}") from None
        finally:

            def cleanup() -> None:
                remove_tree(temp)
                remove_tree(archive)

            await run_blocking(cleanup, Progress())

    # --- the model cache ----------------------------------------------------------------------
    async def _stage_cached(
        self, cache: ModelCache, version: str, source: SourceUri, sha256: str, progress: Progress
    ) -> StageResult:
        """Stage through the cache: copy a hit, or download once (exclusive lock) and publish."""
        cancel = progress.cancel
        lock: EntryLock | None = None
        try:
            progress.step = "waiting for the model cache"
            try:
                if not self._cache_ready:
                    await run_blocking(cache.ensure, progress)
                    removed = await run_blocking(cache.clean_leftovers, progress)
                    if removed:
                        log.info("model cache: removed leftovers %s", ", ".join(removed))
                    self._cache_ready = True
                lock = await run_blocking(
                    lambda: cache.lock(sha256, exclusive=False, cancel=cancel), progress
                )
                if not cache.has(sha256):
                    lock.release()
                    lock = await run_blocking(
                        lambda: cache.lock(sha256, exclusive=True, cancel=cancel), progress
                    )
                    if cache.has(sha256):
                        lock.downgrade()
            except LockTimeout as exc:
                log.warning("model cache: %s; downloading %s without the cache", exc, version)
                return await self._download(version, source, sha256, progress)
            except OSError as exc:  # an unusable cache (not writable, gone) never fails the staging
                log.warning("model cache unusable (%s); downloading %s without it", exc, version)
                if lock is not None:
                    lock.release()
                lock = None
                return await self._download(version, source, sha256, progress)
            if cache.has(sha256):
                hit = await self._copy_hit(cache, version, source, sha256, progress)
                if hit is not None:
                    return hit
                # A corrupted entry: remove it (under the exclusive lock) and download again.
                lock.release()
                lock = await run_blocking(lambda: cache.lock(sha256, exclusive=True, cancel=cancel), progress)
                await run_blocking(lambda: cache.remove_entry(sha256), progress)
            assert lock is not None and lock.exclusive

            async def publish(folder: Path) -> None:
                progress.step = "publishing to the model cache"
                try:
                    await run_blocking(lambda: cache.publish(sha256, folder, cancel), progress)
                except OSError as exc:  # a full or broken cache never fails the staging
                    log.warning("model cache: cannot publish %s: %s", version, exc)

            return await self._download(version, source, sha256, progress, verified=publish, cache="miss")
        except (LockTimeout, OSError) as exc:  # while replacing a corrupted entry
            log.warning("model cache: %s; downloading %s without the cache", exc, version)
            if lock is not None:
                lock.release()
            return await self._download(version, source, sha256, progress)
        finally:
            if lock is not None:
                lock.release()
            try:
                await run_blocking(lambda: cache.evict(keep={sha256}), Progress())
            except OSError as exc:
                log.warning("model cache: eviction failed: %s", exc)

    async def _copy_hit(
        self, cache: ModelCache, version: str, source: SourceUri, sha256: str, progress: Progress
    ) -> StageResult | None:
        """Copy the entry into the volume after checking its digest; ``None`` when it is corrupted."""
        temp, archive = await run_blocking(lambda: self.volume.new_temp(version), progress)
        try:
            progress.step = "copying from the model cache"
            await run_blocking(lambda: cache.copy_out(sha256, temp, progress.cancel), progress)
            progress.step = "digest"
            try:
                digest = await run_blocking(lambda: folder_digest(temp), progress)
            except DigestError:
                digest = ""
            if digest != sha256:
                log.warning(
                    "model cache: entry sha256-%s is corrupted (digest %s); removing it", sha256, digest
                )
                return None
            size = await run_blocking(lambda: folder_size(temp), progress)
            progress.expect(size)
            progress.bytes_done = size
            progress.step = "publishing"
            meta = {
                "version": version,
                "digest": digest,
                "bytes": size,
                "source": source.canonical,
                "stagedAt": utcnow(),
                "cache": "hit",
            }
            final = await run_blocking(lambda: self.volume.publish(temp, version, meta), progress)
            log.info("staged %s from the model cache (sha256-%s), %d bytes", version, sha256, size)
            return StageResult(version, digest, str(final), size, noop=False, cache="hit")
        except OSError as exc:
            local = disk_error(exc)
            if local is not None:
                raise local from None
            log.warning("model cache: copying sha256-%s failed (%s); downloading instead", sha256, exc)
            return None
        finally:

            def cleanup() -> None:
                remove_tree(temp)
                remove_tree(archive)

            await run_blocking(cleanup, Progress())

    def prune(self, keep: int, protected: Iterable[str]) -> list[str]:
        """Delete all but the ``keep`` most recently staged versions, never one in ``protected``."""
        keep_set = set(protected)
        infos = sorted(self.volume.list_info(), key=lambda i: (i.staged_at or "", i.version), reverse=True)
        removed = []
        for info in infos[keep:]:
            if info.version in keep_set:
                continue
            try:
                self.volume.remove(info.version)
            except OSError as exc:
                log.warning("retention: cannot remove %s: %s", info.version, exc)
                continue
            removed.append(info.version)
            log.info("retention: removed %s (keeping %d)", info.version, keep)
        return removed
