"""The models volume: version folders, their metadata, temporary folders and their cleanup.

Layout under the models root::

    <root>/<version>/            a complete version (only ever appears by an atomic rename)
    <root>/.hotswap/<version>.json   its metadata: digest, bytes, files, source, stagedAt
    <root>/.staging-<version>-<hex>/ a download in progress (never a valid version name)
    <root>/.staging-<version>-<hex>.archive  a tarball being downloaded
    <root>/.trash-<version>-<hex>/   a version being deleted

Names starting with a dot can never be version ids (DNS-1123 labels), so nothing in progress is
ever mistaken for a version. Everything here is blocking file-system work: call it from a thread.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import secrets
import shutil
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from hotswap_contract import versions
from hotswap_contract.digest import DigestError, folder_digest
from hotswap_contract.versions import check_version

from hotswap_agent.errors import InvalidVersion

log = logging.getLogger(__name__)

META_DIR = ".hotswap"
TEMP_PREFIX = ".staging-"
TRASH_PREFIX = ".trash-"


def validate_version(version: object) -> str:
    """Return ``version`` if it is a valid version id (:mod:`hotswap_contract.versions`)."""
    try:
        return check_version(version)
    except versions.InvalidVersion as exc:
        raise InvalidVersion(str(exc)) from None


def utcnow() -> str:
    return datetime.now(UTC).isoformat()


@dataclass(frozen=True)
class VersionInfo:
    version: str
    digest: str | None
    bytes: int
    staged_at: str | None
    source: str | None

    def to_json(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "digest": self.digest,
            "bytes": self.bytes,
            "stagedAt": self.staged_at,
            "source": self.source,
        }


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class ModelsVolume:
    def __init__(self, root: Path) -> None:
        self.root = Path(os.path.abspath(root))
        self.meta_dir = self.root / META_DIR

    # --- layout -------------------------------------------------------------------------------
    def ensure(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        self.meta_dir.mkdir(exist_ok=True)

    def version_path(self, version: str) -> Path:
        return self.root / validate_version(version)

    def exists(self, version: str) -> bool:
        path = self.version_path(version)
        return path.is_dir() and not path.is_symlink()

    def versions(self) -> list[str]:
        try:
            entries = list(os.scandir(self.root))
        except FileNotFoundError:
            return []
        return sorted(
            e.name for e in entries if versions.is_version(e.name) and e.is_dir(follow_symlinks=False)
        )

    # --- metadata -----------------------------------------------------------------------------
    def _meta_path(self, version: str) -> Path:
        return self.meta_dir / f"{validate_version(version)}.json"

    def read_meta(self, version: str) -> dict[str, Any] | None:
        try:
            data = json.loads(self._meta_path(version).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        return data if isinstance(data, dict) else None

    def write_meta(self, version: str, meta: dict[str, Any]) -> None:
        self.meta_dir.mkdir(exist_ok=True)
        final = self._meta_path(version)
        tmp = final.with_name(f".{final.name}.{secrets.token_hex(4)}.tmp")
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(meta, f, sort_keys=True)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, final)

    def info(self, version: str) -> VersionInfo:
        meta = self.read_meta(version) or {}
        return VersionInfo(
            version=version,
            digest=meta.get("digest"),
            bytes=int(meta.get("bytes") or 0),
            staged_at=meta.get("stagedAt"),
            source=meta.get("source"),
        )

    def list_info(self) -> list[VersionInfo]:
        return [self.info(v) for v in self.versions()]

    def digest(self, version: str) -> str:
        """The version's digest, from its metadata or computed (and recorded) when missing."""
        meta = self.read_meta(version)
        if meta and isinstance(meta.get("digest"), str):
            return str(meta["digest"])
        return self.record_existing(version)

    def record_existing(self, version: str) -> str:
        """Digest a version folder that has no metadata (placed by hand) and record it."""
        path = self.version_path(version)
        digest = folder_digest(path)
        files = [p for p in path.rglob("*") if p.is_file()]
        staged_at = datetime.fromtimestamp(path.stat().st_mtime, UTC).isoformat()
        self.write_meta(
            version,
            {
                "version": version,
                "digest": digest,
                "bytes": sum(p.stat().st_size for p in files),
                "files": len(files),
                "source": None,
                "stagedAt": staged_at,
            },
        )
        return digest

    # --- temporary folders, publication, removal ----------------------------------------------
    def new_temp(self, version: str) -> tuple[Path, Path]:
        """A fresh temporary folder and a sibling archive path for ``version``, both on this volume."""
        stem = f"{TEMP_PREFIX}{validate_version(version)}-{secrets.token_hex(4)}"
        folder = self.root / stem
        folder.mkdir()
        return folder, self.root / f"{stem}.archive"

    def publish(self, temp: Path, version: str, meta: dict[str, Any]) -> Path:
        """Make ``temp`` visible as ``<root>/<version>`` in one rename, metadata first."""
        final = self.version_path(version)
        if final.exists() or final.is_symlink():
            raise FileExistsError(f"{version} appeared on disk while staging")
        self.write_meta(version, meta)
        os.rename(temp, final)
        fsync_dir(self.root)
        return final

    def remove(self, version: str) -> None:
        """Delete a version: one rename makes it disappear, then the files go."""
        path = self.version_path(version)
        trash = self.root / f"{TRASH_PREFIX}{version}-{secrets.token_hex(4)}"
        os.rename(path, trash)
        with contextlib.suppress(FileNotFoundError):
            self._meta_path(version).unlink()
        fsync_dir(self.root)
        shutil.rmtree(trash, ignore_errors=True)

    def clean_leftovers(self) -> list[str]:
        """Remove what a killed agent left behind: temporaries, trash, metadata of absent versions."""
        removed: list[str] = []
        try:
            entries = list(os.scandir(self.root))
        except FileNotFoundError:
            return removed
        for entry in entries:
            if entry.name.startswith((TEMP_PREFIX, TRASH_PREFIX)):
                if entry.is_dir(follow_symlinks=False):
                    shutil.rmtree(entry.path, ignore_errors=True)
                else:
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(entry.path)
                removed.append(entry.name)
        present = set(self.versions())
        if self.meta_dir.is_dir():
            for meta in self.meta_dir.iterdir():
                stem = meta.name.removesuffix(".json")
                if meta.name.startswith(".") or stem not in present:
                    if meta.is_dir() and not meta.is_symlink():
                        shutil.rmtree(meta, ignore_errors=True)
                    else:
                        with contextlib.suppress(FileNotFoundError):
                            meta.unlink()
                    removed.append(f"{META_DIR}/{meta.name}")
        return removed

    def record_missing_digests(self) -> None:
        for version in self.versions():
            if self.read_meta(version) is None:
                try:
                    self.record_existing(version)
                    log.info("recorded digest of %s (found on disk without metadata)", version)
                except (OSError, DigestError) as exc:
                    log.warning("cannot digest %s on disk: %s", version, exc)
