"""An operation's progress times its steps: where a stage spent its time, also when it failed."""

from __future__ import annotations

import pytest
from hotswap_agent import progress as progress_module
from hotswap_agent.progress import Progress


def test_each_step_is_timed_when_the_next_begins(monkeypatch: pytest.MonkeyPatch) -> None:
    now = [100.0]
    monkeypatch.setattr(progress_module.time, "monotonic", lambda: now[0])
    p = Progress()
    p.step = "downloading"
    now[0] += 2.5
    p.step = "digest"
    now[0] += 0.5
    p.step = "downloading"  # a retried download adds up
    now[0] += 1.0
    p.step = "done"
    now[0] += 9.0  # time after "done" is nobody's step
    p.finish()
    assert p.timings() == {"downloading": 3.5, "digest": 0.5}
    assert p.step == "done"


def test_a_failed_step_keeps_its_name_and_its_time(monkeypatch: pytest.MonkeyPatch) -> None:
    now = [0.0]
    monkeypatch.setattr(progress_module.time, "monotonic", lambda: now[0])
    p = Progress()
    p.step = "downloading"
    now[0] += 4.0
    p.finish()
    now[0] += 100.0
    p.finish()  # twice: nothing more is counted
    assert p.step == "downloading" and p.timings() == {"downloading": 4.0}
    assert Progress().timings() == {}  # queued, never started
