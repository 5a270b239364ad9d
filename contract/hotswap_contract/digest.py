"""The content digest of a model version folder.

Shared by the server (reported in state) and the agent (verified at staging), so it
is defined once, here, and imports nothing heavy.

Digest: sha256 of the UTF-8 lines ``<sha256-hex of the file>  <relative/path>\\n``,
one per regular file, sorted by path ('/' separators). Symlinks are refused: a
version folder holds plain files only.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from pathlib import Path

CHUNK = 1 << 20


class DigestError(ValueError):
    """The folder cannot be digested (a link, an unreadable entry)."""


def file_sha256(path: Path, on_bytes: Callable[[int], None] | None = None) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
            if on_bytes is not None:
                on_bytes(len(chunk))
    return h.hexdigest()


def manifest_lines(root: Path, on_bytes: Callable[[int], None] | None = None) -> list[str]:
    """One ``<sha>  <relpath>`` line per file under ``root``, sorted by path."""
    entries: list[tuple[str, Path]] = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        base = Path(dirpath)
        for name in dirnames:
            if (base / name).is_symlink():
                raise DigestError(f"symbolic link not allowed in a version folder: {name}")
        for name in filenames:
            p = base / name
            if p.is_symlink() or not p.is_file():
                raise DigestError(f"not a regular file: {p.relative_to(root).as_posix()}")
            entries.append((p.relative_to(root).as_posix(), p))
    entries.sort(key=lambda e: e[0])
    return [f"{file_sha256(p, on_bytes)}  {rel}\n" for rel, p in entries]


def folder_digest(root: Path, on_bytes: Callable[[int], None] | None = None) -> str:
    """The sha256 manifest digest of ``root`` (hex)."""
    h = hashlib.sha256()
    for line in manifest_lines(Path(root), on_bytes):
        h.update(line.encode("utf-8"))
    return h.hexdigest()


def folder_size(root: Path) -> int:
    return sum(p.stat().st_size for p in Path(root).rglob("*") if p.is_file() and not p.is_symlink())
