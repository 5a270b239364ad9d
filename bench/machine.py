"""What the machine is, and how busy other work kept it while we measured.

The load average counts our own server and clients too (about 2 on a 2-core machine under
load), so each measurement also reports ``other_cores``: the CPU time that processes outside
this benchmark's process tree used during it, in cores (from /proc/stat minus our own
processes' /proc/<pid>/stat times).
"""

from __future__ import annotations

import os
import platform
import time
from dataclasses import dataclass
from typing import Any

TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def loadavg() -> float:
    return os.getloadavg()[0]


def _busy_ticks() -> int:
    """Non-idle CPU ticks of the whole machine."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (fields + [0] * 8)[:8]
    return user + nice + system + irq + softirq + steal


def _stat(pid: int | str) -> list[str] | None:
    try:
        with open(f"/proc/{pid}/stat") as f:
            text = f.read()
    except OSError:
        return None
    return text[text.rindex(")") + 2 :].split()  # fields from the 3rd (state) on


def _our_ticks() -> int:
    """CPU ticks of this process, its reaped children (the finished load generators) and its live children."""
    me = os.getpid()
    own = _stat(me)
    total = sum(int(x) for x in own[11:15]) if own else 0  # utime, stime, cutime, cstime
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == me:
            continue
        st = _stat(entry)
        if st and int(st[1]) == me:  # ppid
            total += int(st[11]) + int(st[12])
    return total


@dataclass
class CpuMeter:
    """Started at construction; :meth:`read` says how many cores we and the others used since."""

    started: float = 0.0
    busy: int = 0
    ours: int = 0

    def __post_init__(self) -> None:
        self.started, self.busy, self.ours = time.monotonic(), _busy_ticks(), _our_ticks()

    def read(self) -> dict[str, float]:
        elapsed = max(1e-6, time.monotonic() - self.started)
        busy = (_busy_ticks() - self.busy) / TICKS / elapsed
        ours = (_our_ticks() - self.ours) / TICKS / elapsed
        return {"ours_cores": ours, "other_cores": max(0.0, busy - ours), "loadavg": loadavg()}


def describe(device: str) -> dict[str, Any]:
    import torch
    import transformers

    cpu_model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu_model = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return {
        "cpu_count": os.cpu_count(),
        "cpu_model": cpu_model,
        "device": device,
        "device_kind": "cuda" if device == "cuda" else "cpu",
        "device_name": f"cuda: {torch.cuda.get_device_name(0)}" if device == "cuda" else "cpu",
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
    }
