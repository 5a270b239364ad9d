"""Running a command (kubectl, helm, kind) from asyncio: bounded, and killed when cancelled."""

from __future__ import annotations

import asyncio
import contextlib
import shlex
import subprocess
from collections.abc import Mapping, Sequence


class CommandError(RuntimeError):
    """A command that had to succeed did not (its exit status, or it ran past its timeout)."""


async def run(
    argv: Sequence[str],
    *,
    env: Mapping[str, str] | None = None,
    timeout: float = 60.0,
    stdin: str | None = None,
    check: bool = False,
) -> subprocess.CompletedProcess[str]:
    """Run ``argv`` and capture its output. A cancelled or timed-out call kills the process first,
    so Ctrl-C never leaves a ``kubectl wait`` behind."""
    proc = await asyncio.create_subprocess_exec(
        *argv,
        stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=dict(env) if env is not None else None,
    )
    try:
        out, err = await asyncio.wait_for(
            proc.communicate(stdin.encode() if stdin is not None else None), timeout
        )
    except BaseException as exc:  # TimeoutError, CancelledError, KeyboardInterrupt
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        with contextlib.suppress(BaseException):
            await asyncio.shield(proc.wait())
        if isinstance(exc, TimeoutError):
            raise CommandError(f"{shlex.join(argv)}: no answer in {timeout:.0f}s") from None
        raise
    result = subprocess.CompletedProcess(list(argv), proc.returncode or 0, out.decode(), err.decode())
    if check and result.returncode != 0:
        raise CommandError(f"{shlex.join(argv)} exited {result.returncode}: {result.stderr.strip()}")
    return result
