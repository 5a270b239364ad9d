"""A model cache shared by pods, keyed by the version's manifest digest.

Layout under the cache root (a ReadWriteMany claim or a node-local path shared by the pods)::

    <cache>/sha256-<hex>/              a complete entry: the version's files, nothing else; it only
                                       ever appears by one atomic rename, so it is complete or absent
    <cache>/.locks/sha256-<hex>.lock   the entry's lock file (fcntl.flock)
    <cache>/.tmp-sha256-<hex>-<rand>/  an entry being written (only under the entry's exclusive lock)
    <cache>/.trash-sha256-<hex>-<rand>/  an entry being evicted

Locks: a reader (an agent copying an entry into its models volume) holds the entry's lock
*shared*; a writer (an agent that missed and downloads) holds it *exclusive* for the whole
download, so N agents starting at once download once: the others wait for the lock, then find the
entry and copy it. A waiter gives up after ``lock_timeout_s`` and downloads for itself *without*
publishing (so every ``.tmp-`` folder has a live exclusive lock holder, and one without is a
leftover that can be removed). Eviction takes the entry's lock exclusive *without waiting*: an
entry being copied or written is never evicted.

Access time: the entry folder's mtime is set on every use (its content never changes after
publication); eviction removes least-recently-used entries until the cache holds at most
``max_bytes`` (0: no limit), never the one just used.

Nothing is trusted blindly: the copy of an entry is digested again before it becomes a version,
and an entry whose copy does not match its key is removed (and the version downloaded again).

Everything here is blocking file-system work: call it from a thread. flock works across nodes on
NFSv4 (Linux emulates it with POSIX byte-range locks) and on a node-local hostPath.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import secrets
import shutil
import threading
import time
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

ENTRY_PREFIX = "sha256-"
LOCK_DIR = ".locks"
TEMP_PREFIX = ".tmp-"
TRASH_PREFIX = ".trash-"
POLL_S = 0.05


def entry_name(digest: str) -> str:
    if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
        raise ValueError(f"not a sha256 hex digest: {digest!r}")
    return ENTRY_PREFIX + digest


class LockTimeout(Exception):
    """The entry's lock was not granted within the timeout."""


class Cancelled(Exception):
    """The operation was cancelled while waiting for a lock."""


class EntryLock:
    """One flock on ``<cache>/.locks/<key>.lock``; release it with ``release`` (or ``with``)."""

    def __init__(self, fd: int, path: Path, exclusive: bool) -> None:
        self.fd = fd
        self.path = path
        self.exclusive = exclusive

    def downgrade(self) -> None:
        """Exclusive to shared (other readers may then copy too; eviction still cannot)."""
        fcntl.flock(self.fd, fcntl.LOCK_SH)
        self.exclusive = False

    def release(self, *, unlink: bool = False) -> None:
        if self.fd < 0:
            return
        if unlink and self.exclusive:
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()
        with contextlib.suppress(OSError):
            fcntl.flock(self.fd, fcntl.LOCK_UN)
        os.close(self.fd)
        self.fd = -1

    def __enter__(self) -> EntryLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


@dataclass(frozen=True)
class EntryInfo:
    name: str
    path: Path
    bytes: int
    used_at: float


def _tree_size(path: Path) -> int:
    total = 0
    for dirpath, _dirs, files in os.walk(path):
        for name in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(dirpath, name)).st_size
    return total


def link_or_copy_tree(src: Path, dst: Path, cancel: threading.Event | None = None) -> str:
    """Fill the existing folder ``dst`` with ``src``'s files: hard links when the file system
    allows (same device), else copies. Returns "link" or "copy"."""
    mode = "link"
    for dirpath, dirnames, filenames in os.walk(src):
        rel = Path(dirpath).relative_to(src)
        for name in dirnames:
            (dst / rel / name).mkdir(exist_ok=True)
        for name in filenames:
            if cancel is not None and cancel.is_set():
                raise Cancelled("cancelled while copying from the model cache")
            s, d = Path(dirpath) / name, dst / rel / name
            if mode == "link":
                try:
                    os.link(s, d)
                    continue
                except OSError as exc:
                    if exc.errno not in (errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP):
                        raise
                    mode = "copy"
            shutil.copyfile(s, d)
    return mode


class ModelCache:
    def __init__(self, root: Path, max_bytes: int = 0, lock_timeout_s: float = 600.0) -> None:
        self.root = Path(os.path.abspath(root))
        self.lock_dir = self.root / LOCK_DIR
        self.max_bytes = max_bytes
        self.lock_timeout_s = lock_timeout_s

    # --- layout ---------------------------------------------------------------------------------
    def ensure(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        self.lock_dir.mkdir(exist_ok=True)

    def entry_path(self, digest: str) -> Path:
        return self.root / entry_name(digest)

    def has(self, digest: str) -> bool:
        path = self.entry_path(digest)
        return path.is_dir() and not path.is_symlink()

    def entries(self) -> list[EntryInfo]:
        out: list[EntryInfo] = []
        try:
            scan = list(os.scandir(self.root))
        except FileNotFoundError:
            return out
        for e in scan:
            if e.name.startswith(ENTRY_PREFIX) and e.is_dir(follow_symlinks=False):
                with contextlib.suppress(OSError):
                    out.append(EntryInfo(e.name, Path(e.path), _tree_size(Path(e.path)), e.stat().st_mtime))
        return out

    # --- locks ----------------------------------------------------------------------------------
    def _try_lock(self, name: str, exclusive: bool) -> EntryLock | None:
        self.lock_dir.mkdir(parents=True, exist_ok=True)
        path = self.lock_dir / f"{name}.lock"
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, (fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH) | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None
        except BaseException:
            os.close(fd)
            raise
        # An evictor may have unlinked the file between our open and our lock: then the lock is on
        # an orphaned inode, and the caller must try again on the file now at that path.
        try:
            same = os.stat(path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if not same:
            os.close(fd)
            return self._try_lock(name, exclusive)
        return EntryLock(fd, path, exclusive)

    def lock(
        self,
        digest: str,
        *,
        exclusive: bool,
        timeout_s: float | None = None,
        cancel: threading.Event | None = None,
    ) -> EntryLock:
        """Wait for the entry's lock (polling, so a cancel flag is honoured); ``LockTimeout``."""
        name = entry_name(digest)
        deadline = time.monotonic() + (self.lock_timeout_s if timeout_s is None else timeout_s)
        while True:
            got = self._try_lock(name, exclusive)
            if got is not None:
                return got
            if cancel is not None and cancel.is_set():
                raise Cancelled("cancelled while waiting for the model cache")
            if time.monotonic() >= deadline:
                raise LockTimeout(f"{name} stayed locked for {self.lock_timeout_s:g}s")
            time.sleep(POLL_S)

    # --- use ------------------------------------------------------------------------------------
    def touch(self, digest: str) -> None:
        with contextlib.suppress(OSError):
            os.utime(self.entry_path(digest))

    def copy_out(self, digest: str, dst: Path, cancel: threading.Event | None = None) -> str:
        """Copy (or hard-link) the entry's files into the existing folder ``dst``; hold a lock."""
        self.touch(digest)
        return link_or_copy_tree(self.entry_path(digest), dst, cancel)

    def publish(self, digest: str, src: Path, cancel: threading.Event | None = None) -> bool:
        """Copy ``src`` (already verified to have ``digest``) into the cache as its entry, by one
        rename; hold the entry's exclusive lock. False when the entry was already there."""
        name = entry_name(digest)
        if self.has(digest):
            self.touch(digest)
            return False
        temp = self.root / f"{TEMP_PREFIX}{name}-{secrets.token_hex(4)}"
        temp.mkdir()
        try:
            link_or_copy_tree(src, temp, cancel)
            try:
                os.rename(temp, self.root / name)
            except OSError as exc:
                if exc.errno in (errno.EEXIST, errno.ENOTEMPTY):
                    return False  # someone else's rename won; theirs is the same content
                raise
            with contextlib.suppress(OSError):
                fd = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY)
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)
            return True
        finally:
            if temp.exists():
                shutil.rmtree(temp, ignore_errors=True)

    def remove_entry(self, digest: str) -> None:
        """Remove an entry (a corrupted one); the caller holds its exclusive lock."""
        path = self.entry_path(digest)
        trash = self.root / f"{TRASH_PREFIX}{path.name}-{secrets.token_hex(4)}"
        with contextlib.suppress(FileNotFoundError):
            os.rename(path, trash)
            shutil.rmtree(trash, ignore_errors=True)

    # --- retention ------------------------------------------------------------------------------
    def evict(self, keep: frozenset[str] | set[str] = frozenset()) -> list[str]:
        """Remove least-recently-used entries until at most ``max_bytes`` remain (0: no limit).

        Entries named in ``keep`` (digests) and entries whose lock is held (being copied or written
        by any agent) are skipped; each removal is one rename, then the files go."""
        if self.max_bytes <= 0:
            return []
        keep_names = {entry_name(d) for d in keep}
        infos = sorted(self.entries(), key=lambda e: (e.used_at, e.name))
        total = sum(e.bytes for e in infos)
        removed: list[str] = []
        for info in infos:
            if total <= self.max_bytes:
                break
            if info.name in keep_names:
                continue
            lock = self._try_lock(info.name, exclusive=True)
            if lock is None:
                log.info("model cache: %s is in use, not evicted", info.name)
                continue
            try:
                if not info.path.is_dir():
                    continue
                trash = self.root / f"{TRASH_PREFIX}{info.name}-{secrets.token_hex(4)}"
                try:
                    os.rename(info.path, trash)
                except OSError as exc:
                    log.warning("model cache: cannot evict %s: %s", info.name, exc)
                    continue
                shutil.rmtree(trash, ignore_errors=True)
                total -= info.bytes
                removed.append(info.name)
                log.info("model cache: evicted %s (%d bytes; %d bytes left)", info.name, info.bytes, total)
            finally:
                lock.release(unlink=True)
        return removed

    def clean_leftovers(self) -> list[str]:
        """Remove trash, and temporaries whose writer is gone (its exclusive lock is free)."""
        removed: list[str] = []
        try:
            scan = list(os.scandir(self.root))
        except FileNotFoundError:
            return removed
        for e in scan:
            if e.name.startswith(TRASH_PREFIX):
                shutil.rmtree(e.path, ignore_errors=True)
                removed.append(e.name)
            elif e.name.startswith(TEMP_PREFIX):
                key = e.name.removeprefix(TEMP_PREFIX).rsplit("-", 1)[0]
                if not key.startswith(ENTRY_PREFIX):
                    continue
                lock = self._try_lock(key, exclusive=True)
                if lock is None:
                    continue  # a live writer
                try:
                    shutil.rmtree(e.path, ignore_errors=True)
                    removed.append(e.name)
                finally:
                    lock.release()
        return removed
