"""Progress of one operation, written by download threads and read by status."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Progress:
    """Bytes done and total (``None`` until known) and the current step, with a cancel flag.

    Counters are plain ints updated under the GIL; readers only ever see a consistent-enough
    snapshot, which is all a progress report needs. Setting :attr:`step` also times the step it
    ends: :attr:`step_seconds` says where an operation spent its time (the rollout benchmark's
    download and digest columns), without a timer call at every step.
    """

    bytes_done: int = 0
    bytes_total: int | None = None
    cancel: threading.Event = field(default_factory=threading.Event)
    step_seconds: dict[str, float] = field(default_factory=dict)
    _step: str = "queued"
    _since: float | None = None  # when the current step began; None once finished

    @property
    def step(self) -> str:
        return self._step

    @step.setter
    def step(self, name: str) -> None:
        self._close()
        self._step = name
        self._since = time.monotonic()

    def finish(self) -> None:
        """Stop the clock: the current step's time is counted, its name stays (a failed step)."""
        self._close()
        self._since = None

    def _close(self) -> None:
        if self._since is None or self._step in UNTIMED_STEPS:
            return
        spent = time.monotonic() - self._since
        self.step_seconds[self._step] = self.step_seconds.get(self._step, 0.0) + spent

    def add(self, n: int) -> None:
        self.bytes_done += n

    def expect(self, n: int | None) -> None:
        self.bytes_total = n

    def timings(self) -> dict[str, float]:
        return {name: round(seconds, 4) for name, seconds in self.step_seconds.items()}

    def to_json(self) -> dict[str, Any]:
        return {"bytesDone": self.bytes_done, "bytesTotal": self.bytes_total}


UNTIMED_STEPS = frozenset({"queued", "done"})
