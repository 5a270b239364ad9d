"""Safe tarball extraction and relative-path checks for everything a source names.

A tarball is refused whole (``UnsafeArchive``) when any member has an absolute path, a ``..``
segment, a backslash or NUL, or is anything but a regular file or a directory (symbolic and hard
links, devices, FIFOs). Files are written by this code, not by ``tarfile.extract``: modes are
0644/0755, owners and times are not restored. When every member lies under one top-level folder
(``tar czf v2.tar.gz v2/``), that folder is the version; otherwise the archive root is.
"""

from __future__ import annotations

import os
import shutil
import tarfile
import threading
from collections.abc import Callable
from pathlib import Path
from typing import IO

from hotswap_agent.errors import Cancelled, SourceInvalid, UnsafeArchive

CHUNK = 1 << 20
OnBytes = Callable[[int], None]


__all__ = [
    "CHUNK",
    "Cancelled",
    "copy_stream",
    "extract_tarball",
    "remove_tree",
    "safe_relpath",
    "write_file",
]


def safe_relpath(name: str) -> str:
    """``name`` as a clean relative path ('/' separators) or ``ValueError`` saying why not."""
    if not name or "\x00" in name or "\\" in name:
        raise ValueError(f"unsafe path {name!r}")
    if name.startswith("/"):
        raise ValueError(f"absolute path {name!r}")
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if not parts:
        raise ValueError(f"empty path {name!r}")
    if ".." in parts:
        raise ValueError(f"path with '..': {name!r}")
    return "/".join(parts)


def copy_stream(
    src: IO[bytes], dest: IO[bytes], cancel: threading.Event | None = None, on_bytes: OnBytes | None = None
) -> int:
    """Copy a binary stream in chunks, honouring ``cancel`` between chunks."""
    total = 0
    while chunk := src.read(CHUNK):
        if cancel is not None and cancel.is_set():
            raise Cancelled("cancelled")
        dest.write(chunk)
        total += len(chunk)
        if on_bytes is not None:
            on_bytes(len(chunk))
    return total


def write_file(
    path: Path, src: IO[bytes], cancel: threading.Event | None = None, on_bytes: OnBytes | None = None
) -> int:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "xb") as dest:
        size = copy_stream(src, dest, cancel, on_bytes)
        dest.flush()
        os.fsync(dest.fileno())
    os.chmod(path, 0o644)
    return size


def _check_member(member: tarfile.TarInfo) -> str | None:
    """The member's clean relative path (``None`` for the archive root) or ``UnsafeArchive``."""
    if not (member.isreg() or member.isdir()):
        kind = "link" if member.issym() or member.islnk() else "device or special file"
        raise UnsafeArchive(
            f"archive member {member.name!r} is a {kind}: only files and folders are accepted"
        )
    name = member.name
    if name.startswith("/"):
        raise UnsafeArchive(f"archive member {name!r} has an absolute path")
    stripped = name.removeprefix("./")
    if member.isdir() and stripped.strip("/") in ("", "."):
        return None
    try:
        return safe_relpath(stripped)
    except ValueError as exc:
        raise UnsafeArchive(f"archive member refused: {exc}") from None


def extract_tarball(archive: Path, dest: Path, cancel: threading.Event | None = None) -> None:
    """Extract ``archive`` (.tar, .tar.gz, ...) into the empty folder ``dest``, refusing anything unsafe."""
    try:
        with tarfile.open(archive, mode="r|*") as tar:
            for member in tar:
                rel = _check_member(member)
                if rel is None:
                    continue
                target = dest / rel
                if member.isdir():
                    target.mkdir(parents=True, exist_ok=True)
                    continue
                src = tar.extractfile(member)
                if src is None:  # pragma: no cover - isreg() members always have data
                    raise UnsafeArchive(f"archive member {rel!r} has no data")
                try:
                    write_file(target, src, cancel)
                except FileExistsError:
                    raise UnsafeArchive(f"archive member {rel!r} appears twice") from None
                except (NotADirectoryError, IsADirectoryError):
                    raise UnsafeArchive(f"archive member {rel!r} clashes with another member") from None
    except tarfile.TarError as exc:
        raise SourceInvalid(f"not a readable tar archive: {exc}") from None
    except EOFError:
        raise SourceInvalid("tar archive is truncated") from None
    _unwrap_single_folder(dest)


def _unwrap_single_folder(dest: Path) -> None:
    entries = list(dest.iterdir())
    if len(entries) != 1 or not entries[0].is_dir() or entries[0].is_symlink():
        return
    inner = entries[0]
    holding = dest.with_name(dest.name + ".unwrap")
    os.rename(inner, holding)
    os.rmdir(dest)
    os.rename(holding, dest)


def remove_tree(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        try:
            path.unlink()
        except FileNotFoundError:
            pass
