"""The cluster demo's terminal view: a table per pod redrawn in place (plain ANSI) on a terminal,
progress lines anywhere else (CI, pipes, ``| tee``)."""

from __future__ import annotations

import shutil
import sys
import time
from collections import Counter
from typing import Any, TextIO

from e2e.result import Event
from e2e.scenario import Scenario

RESET, BOLD, DIM = "\x1b[0m", "\x1b[1m", "\x1b[2m"
GREEN, YELLOW, RED, CYAN = "\x1b[32m", "\x1b[33m", "\x1b[31m", "\x1b[36m"
SETTLED = {"Ready"}
BAD = {"Failed", "RolledBack", "RollingBack", "Unreachable", "Held"}


class PodCounts:
    """Requests and errors per pod, counted from the load's samples as they arrive."""

    def __init__(self) -> None:
        self.seen = 0
        self.requests: Counter[str] = Counter()
        self.errors: Counter[str] = Counter()

    def update(self, samples: list[Any]) -> None:
        for s in samples[self.seen :]:
            self.requests[s.pod] += 1
            if not s.ok:
                self.errors[s.pod] += 1
        self.seen = len(samples)


def paint(text: str, code: str, color: bool) -> str:
    return f"{code}{text}{RESET}" if color else text


class View:
    def __init__(
        self, scenario: Scenario | None, *, out: TextIO = sys.stdout, live: bool | None = None
    ) -> None:
        self.scenario = scenario
        self.out = out
        self.live = out.isatty() if live is None else live
        self.counts = PodCounts()
        self._drawn = 0
        self._t0 = time.monotonic()
        self._next_load_line = 0.0
        self.title = ""
        self._closed = False

    # --------------------------------------------------------------------- both modes

    def on_event(self, ev: Event) -> None:
        if not self.live:
            self._print(f"{ev.at:7.1f}s  {ev.text}")

    def tick(self) -> None:
        """Called a few times a second while the scenario runs."""
        if self._closed:
            return
        if self.scenario is not None and self.scenario.load is not None:
            self.counts.update(self.scenario.load.samples)
        if self.live:
            self._redraw(self.frame())
        elif self.scenario is not None and self.scenario.load is not None:
            elapsed = self.scenario.elapsed()  # the events' time base
            if elapsed >= self._next_load_line:
                self._print(f"{elapsed:7.1f}s  {self._load_line(color=False)}")
                self._next_load_line = elapsed + 5.0

    def close(self) -> None:
        """Draw the last frame, leave it on screen with the cursor visible; stop drawing."""
        if self._closed:
            return
        if self.live:
            self.tick()
            self.out.write("\x1b[?25h")
            self.out.flush()
        self._closed = True

    # --------------------------------------------------------------------- the frame

    def frame(self) -> list[str]:
        sc = self.scenario
        elapsed = time.monotonic() - self._t0
        lines = [f"{BOLD}{self.title}{RESET}{DIM}  t+{elapsed:.0f}s{RESET}"]
        if sc is None:
            return [*lines, "  starting the local cluster: API server, pods, operator ..."]
        lines.append(f"  {CYAN}{sc.phase}{RESET}")
        lines.append("")
        lines.append(
            f"  {BOLD}{'POD':<12} {'VERSION':<9} {'STATE':<12} {'REQUESTS':>9} {'ERRORS':>7}  LAST SWAP{RESET}"
        )
        status = (sc.model or {}).get("status") or {}
        pods = {p.get("name"): p for p in status.get("pods") or []}
        names = sorted(set(pods) | set(self.counts.requests))
        for name in names:
            pod = pods.get(name, {})
            state = str(pod.get("state") or "-")
            color = GREEN if state in SETTLED else RED if state in BAD else YELLOW
            errors = self.counts.errors[name]
            swap = pod.get("lastSwap") or {}
            swap_text = ""
            if swap:
                pause, mode = swap.get("pauseMs"), swap.get("mode", "?")
                swap_text = str(mode)
                if mode == "inplace" and isinstance(pause, int | float):
                    swap_text += f", requests paused {pause:.1f} ms"
            err = f"{errors:>7}"
            if errors:
                err = f"{RED}{err}{RESET}"
            lines.append(
                f"  {name:<12} {pod.get('version') or '-':<9} {color}{state:<12}{RESET} "
                f"{self.counts.requests[name]:>9} {err}  {DIM}{swap_text}{RESET}"
            )
        if not names:
            lines.append(f"  {DIM}(waiting for the operator's first status){RESET}")
        lines.append("")
        lines.append("  " + self._model_line(status))
        lines.append("  " + self._load_line(color=True))
        lines.append("")
        for ev in [e for e in sc.events if e.kind != "pod"][-6:]:
            lines.append(f"  {DIM}{ev.at:6.1f}s{RESET}  {ev.text}")
        return lines

    def _model_line(self, status: dict[str, Any]) -> str:
        if not status:
            return f"RerankerModel: {DIM}no status yet{RESET}"
        conds = {c.get("type"): c for c in status.get("conditions") or []}
        ready = conds.get("Ready", {})
        degraded = conds.get("Degraded", {})
        ready_text = f"Ready {ready.get('status', '?')} ({ready.get('reason', '')})"
        ready_col = GREEN if ready.get("status") == "True" else YELLOW
        text = (
            f"RerankerModel: target {status.get('targetVersion')} · current {status.get('currentVersion') or '-'}"
            f" · last-good {status.get('lastGoodVersion') or '-'} · {ready_col}{ready_text}{RESET}"
        )
        if degraded.get("status") == "True":
            text += f" · {RED}Degraded ({degraded.get('reason')}){RESET}"
        return text

    def _load_line(self, *, color: bool) -> str:
        sc = self.scenario
        summary = sc.load.live() if sc is not None and sc.load is not None else None
        if summary is None:
            return "load: not started (it starts once v1 is Ready)"
        failed = f"{summary.failed} failed"
        if color:
            failed = (RED if summary.failed else GREEN) + failed + RESET
        versions = "  ".join(f"{v}: {n}" for v, n in sorted(summary.by_version.items()))
        return (
            f"load: {summary.clients} clients · {summary.total} requests · {failed} · "
            f"p50 {summary.p50_ms:.0f} ms · p99 {summary.p99_ms:.0f} ms · {versions}"
        )

    # --------------------------------------------------------------------- output

    def _redraw(self, lines: list[str]) -> None:
        width = shutil.get_terminal_size((120, 40)).columns
        buf = []
        if self._drawn:
            buf.append(f"\x1b[{self._drawn}F\x1b[J")  # back to the first line of the last frame, clear below
        else:
            buf.append("\x1b[?25l")  # hide the cursor while redrawing
        for line in lines:
            buf.append(_clip(line, width) + "\n")
        self.out.write("".join(buf))
        self.out.flush()
        self._drawn = len(lines)

    def _print(self, line: str) -> None:
        self.out.write(line + "\n")
        self.out.flush()


def _clip(line: str, width: int) -> str:
    """Cut a line with ANSI codes to ``width`` visible characters (a wrapped line breaks the redraw)."""
    out, visible, i = [], 0, 0
    while i < len(line):
        if line[i] == "\x1b":
            end = line.find("m", i)
            if end == -1:
                break
            out.append(line[i : end + 1])
            i = end + 1
            continue
        if visible >= width - 1:
            break
        out.append(line[i])
        visible += 1
        i += 1
    return "".join(out) + RESET
