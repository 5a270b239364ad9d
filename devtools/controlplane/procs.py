"""Child processes that never outlive the harness, even one killed with SIGKILL.

Two mechanisms, because each alone has a hole:

* ``PR_SET_PDEATHSIG`` = SIGKILL in every direct child (set between fork and exec): the kernel kills
  the child when the harness dies. It does not reach grandchildren (a pod's ``sh -c`` and what it
  starts), and it fires when the *forking thread* exits, so children are started from the main
  thread only.
* A watchdog: one small process per harness, started first, that reads the process groups of the
  children from a pipe. Every child is the leader of its own process group (``start_new_session``,
  which also keeps a terminal's Ctrl-C away from the children: the harness stops them in order).
  When the harness dies, by any means, the pipe reaches EOF and the watchdog SIGKILLs every group
  still registered, grandchildren included, then exits.

An ``atexit`` hook stops whatever is still running on a normal interpreter exit.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import ctypes
import json
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO, Self

_PR_SET_PDEATHSIG = 1
_LIVE: set[Proc] = set()


def _die_with_parent() -> None:  # runs in the child between fork and exec
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


# The watchdog's whole program: a set of process groups, kept from "+pgid"/"-pgid" lines on stdin;
# on EOF (the harness is gone), SIGKILL them all. It ignores SIGINT/SIGTERM so that a Ctrl-C sent
# to the harness's process group cannot end it before the harness has stopped its children.
# "!<json argv>" / "~<json argv>" add / remove a command to run after that (undoing host state the
# harness changed, such as the pod network's route).
_WATCHDOG = r"""
import json, os, signal, subprocess, sys
signal.signal(signal.SIGINT, signal.SIG_IGN)
signal.signal(signal.SIGTERM, signal.SIG_IGN)
groups, commands = set(), []
for line in sys.stdin:
    line = line.strip()
    if line.startswith("+"):
        groups.add(int(line[1:]))
    elif line.startswith("-"):
        groups.discard(int(line[1:]))
    elif line.startswith("!"):
        commands.append(json.loads(line[1:]))
    elif line.startswith("~"):
        argv = json.loads(line[1:])
        commands = [c for c in commands if c != argv]
for pgid in groups:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except OSError:
        pass
for argv in commands:
    try:
        subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=10)
    except Exception:
        pass
"""


class _Watchdog:
    """The process that kills the children's process groups once the harness has died."""

    def __init__(self) -> None:
        self._popen: subprocess.Popen[str] | None = None
        self._lock = threading.Lock()

    def _ensure(self) -> subprocess.Popen[str]:
        if self._popen is None or self._popen.poll() is not None:
            # Its own session: a Ctrl-C or a killpg aimed at the harness's group does not reach it.
            self._popen = subprocess.Popen(
                [sys.executable, "-I", "-c", _WATCHDOG],
                stdin=subprocess.PIPE,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,
                text=True,
                bufsize=1,
            )
        return self._popen

    def _send(self, line: str) -> None:
        with self._lock:
            popen = self._ensure()
            assert popen.stdin is not None
            with contextlib.suppress(BrokenPipeError, OSError):
                popen.stdin.write(line + "\n")
                popen.stdin.flush()

    def watch(self, pgid: int) -> None:
        self._send(f"+{pgid}")

    def forget(self, pgid: int) -> None:
        self._send(f"-{pgid}")

    def on_exit(self, argv: list[str]) -> None:
        """Run ``argv`` once the harness is gone, unless :meth:`forget_command` cancels it."""
        self._send("!" + json.dumps(argv))

    def forget_command(self, argv: list[str]) -> None:
        self._send("~" + json.dumps(argv))

    @property
    def pid(self) -> int | None:
        return self._popen.pid if self._popen is not None else None


WATCHDOG = _Watchdog()


class Proc:
    """One child process (the leader of its own process group) with its log file.

    ``stop()`` is graceful (SIGTERM, grace, SIGKILL), ``kill()`` is not. Signals go to the whole
    group, so what the child started goes with it.
    """

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        log: Path,
        cwd: Path | None = None,
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.env = dict(os.environ if env is None else env)
        self.log = log
        self.cwd = cwd
        self.popen: subprocess.Popen[bytes] | None = None
        self._log_file: IO[bytes] | None = None

    def start(self) -> Self:
        if threading.current_thread() is not threading.main_thread():
            raise RuntimeError("start control-plane processes from the main thread (PR_SET_PDEATHSIG)")
        # The watchdog exists before the first child does, so there is no window without it.
        WATCHDOG._send("")
        self.log.parent.mkdir(parents=True, exist_ok=True)
        self._log_file = open(self.log, "ab")
        self.popen = subprocess.Popen(
            self.argv,
            env=self.env,
            cwd=self.cwd,
            stdin=subprocess.DEVNULL,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=_die_with_parent,
        )
        WATCHDOG.watch(self.popen.pid)
        _LIVE.add(self)
        return self

    @property
    def pid(self) -> int | None:
        return self.popen.pid if self.popen else None

    @property
    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    @property
    def returncode(self) -> int | None:
        return self.popen.poll() if self.popen is not None else None

    def signal(self, sig: int) -> None:
        """Send ``sig`` to the child's process group (no-op once it has exited)."""
        if self.popen is None or self.popen.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.popen.pid, sig)

    def kill(self) -> None:
        """SIGKILL the process group at once and reap it."""
        self.signal(signal.SIGKILL)
        if self.popen is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.popen.wait(timeout=5)
        self._reap()

    async def wait(self, timeout: float | None = None) -> int | None:
        """Wait (polling, so no child watcher is needed) until the child exits; its exit code."""
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        while self.alive and (deadline is None or loop.time() < deadline):
            await asyncio.sleep(0.05)
        if not self.alive:
            self._reap()
        return self.returncode

    async def stop(self, grace: float = 5.0) -> None:
        """SIGTERM the group, wait up to ``grace`` seconds, then SIGKILL it."""
        if self.alive:
            self.signal(signal.SIGTERM)
            await self.wait(grace)
        if self.alive:
            self.signal(signal.SIGKILL)
            await self.wait()
        self._reap()

    def tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def _reap(self) -> None:
        if self.popen is not None and self.popen.poll() is not None:
            if self in _LIVE:
                # Whatever the leader left behind in its group goes too, then the watchdog forgets it.
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(self.popen.pid, signal.SIGKILL)
                WATCHDOG.forget(self.popen.pid)
            _LIVE.discard(self)
        if self._log_file is not None and not self.alive:
            self._log_file.close()
            self._log_file = None


def kill_all() -> None:
    """Kill every child still running (the last resort of an interrupted harness)."""
    for proc in list(_LIVE):
        proc.kill()


atexit.register(kill_all)
