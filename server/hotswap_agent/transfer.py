"""Helpers shared by the fetchers and staging: disk space, disk errors, blocking work, messages."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from hotswap_agent.errors import AgentError, DiskFull
from hotswap_agent.progress import Progress

T = TypeVar("T")
SPACE_MARGIN = 64 << 20


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


def describe(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    name = type(exc).__name__
    return f"{name}: {text[:300]}" if text else name
