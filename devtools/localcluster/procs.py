"""Child processes that never outlive the harness.

Each child runs in its own session (so a terminal's Ctrl-C reaches only the harness, which then
stops its children in order) and with ``PR_SET_PDEATHSIG`` = SIGKILL on Linux (so even a harness
killed with SIGKILL leaves nothing behind). An ``atexit`` hook kills whatever is still running.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import ctypes
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO

from devtools import dev_env

_LIVE: set[Proc] = set()
_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:  # runs in the child between fork and exec
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


class Proc:
    """One child process with its log file; stop() is graceful, kill() is not."""

    def __init__(
        self, name: str, argv: Sequence[str], *, env: Mapping[str, str] | None = None, log: Path
    ) -> None:
        self.name = name
        self.argv = list(argv)
        # devtools is not installed: children find it (python -m devtools...) through PYTHONPATH.
        self.env = dev_env(env)
        self.log = log
        self.popen: subprocess.Popen[bytes] | None = None
        self._log_file: IO[bytes] | None = None

    def start(self) -> Proc:
        if threading.current_thread() is not threading.main_thread():
            # PDEATHSIG fires when the forking *thread* exits: fork from the main thread only.
            raise RuntimeError("start local cluster processes from the main thread")
        self.log.parent.mkdir(parents=True, exist_ok=True)
        self._log_file = open(self.log, "ab")
        self.popen = subprocess.Popen(
            self.argv,
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=_die_with_parent,
        )
        _LIVE.add(self)
        return self

    @property
    def pid(self) -> int | None:
        return self.popen.pid if self.popen else None

    @property
    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def kill(self) -> None:
        """SIGKILL the process group at once (a crash, an OOM kill, ``kubectl delete --force``)."""
        self._signal(signal.SIGKILL)
        if self.popen is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.popen.wait(timeout=5)
        self._reap()

    async def stop(self, grace: float = 5.0) -> None:
        """SIGTERM, wait up to ``grace`` seconds, then SIGKILL."""
        if not self.alive:
            self._reap()
            return
        self._signal(signal.SIGTERM)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace
        while self.alive and loop.time() < deadline:
            await asyncio.sleep(0.05)
        if self.alive:
            self._signal(signal.SIGKILL)
            while self.alive:
                await asyncio.sleep(0.02)
        self._reap()

    def tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def _signal(self, sig: int) -> None:
        if self.popen is None or self.popen.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.popen.pid, sig)

    def _reap(self) -> None:
        if self.popen is not None and self.popen.poll() is not None:
            _LIVE.discard(self)
        if self._log_file is not None and not self.alive:
            self._log_file.close()
            self._log_file = None


def kill_all() -> None:
    """Kill every child still running (the last resort of an interrupted harness)."""
    for proc in list(_LIVE):
        proc.kill()


atexit.register(kill_all)
