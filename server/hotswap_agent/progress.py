"""Progress of one operation, written by download threads and read by status."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Progress:
    """Bytes done and total (``None`` until known) and the current step, with a cancel flag.

    Counters are plain ints updated under the GIL; readers only ever see a consistent-enough
    snapshot, which is all a progress report needs.
    """

    bytes_done: int = 0
    bytes_total: int | None = None
    step: str = "queued"
    cancel: threading.Event = field(default_factory=threading.Event)

    def add(self, n: int) -> None:
        self.bytes_done += n

    def expect(self, n: int | None) -> None:
        self.bytes_total = n

    def to_json(self) -> dict[str, Any]:
        return {"bytesDone": self.bytes_done, "bytesTotal": self.bytes_total}
