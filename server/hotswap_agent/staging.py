"""Staging a version onto the models volume, and retention.

stage(version, source, sha256):
1. ``<root>/<version>`` already there: its digest must equal the pin (if any); nothing is fetched.
2. Otherwise fetch into ``<root>/.staging-<version>-<hex>/`` (a tarball first lands in
   ``....archive`` next to it and is extracted with ``archive.extract_tarball``).
3. Compute the manifest digest (``hotswap_contract.digest.folder_digest``) and compare with the pin.
4. Write ``.hotswap/<version>.json``, then rename the folder to ``<root>/<version>`` in one step.

Any failure removes the temporaries; a kill leaves only dot-names, removed at the next start. So
``<root>/<version>`` is either complete or absent, whatever happens.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from hotswap_contract.digest import DigestError, folder_digest, folder_size

from hotswap_agent.archive import extract_tarball, remove_tree
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

    def to_json(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "digest": self.digest,
            "path": self.path,
            "bytes": self.bytes,
            "noop": self.noop,
        }


class Stager:
    def __init__(self, volume: ModelsVolume, sources: Sources) -> None:
        self.volume = volume
        self.sources = sources

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
            return StageResult(version, digest, str(final), size, noop=False)
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
