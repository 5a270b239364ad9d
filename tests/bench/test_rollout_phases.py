"""The rollout benchmark's per-phase table: read from real agents' step timings and servers' load phases."""

from __future__ import annotations

import pytest

from bench.rollout_bench import PHASES, phase_table, pod_phases, run


def test_phases_come_from_the_history_and_the_servers_record() -> None:
    agent = {
        "history": [
            {"kind": "stage", "version": "v2", "state": "succeeded",
             "stepSeconds": {"starting": 0.01, "downloading": 1.5, "digest": 0.25, "publishing": 0.02}},
            {"kind": "preload", "version": "v2", "state": "succeeded", "stepSeconds": {"preloading": 0.9}},
            {"kind": "verify", "version": "v2", "state": "succeeded", "stepSeconds": {"canaries (staged)": 0.2}},
            {"kind": "activate", "version": "v2", "state": "succeeded", "stepSeconds": {"activating": 0.05}},
            {"kind": "verify", "version": "v2", "state": "succeeded", "stepSeconds": {"canaries": 0.1}},
            {"kind": "stage", "version": "v1", "state": "succeeded", "stepSeconds": {"downloading": 99.0}},
            {"kind": "stage", "version": "v2", "state": "failed", "stepSeconds": {"downloading": 99.0}},
        ],
        "server": {"state": {"active": {"version": "v2",
                                        "loadPhasesMs": {"digest": 100.0, "read": 300.0, "build": 200.0, "check": 50.0}}}},
    }  # fmt: skip
    got = pod_phases(agent, "v2")
    assert got == pytest.approx(
        {"download": 1.5, "digest": 0.25, "server digest": 0.1, "load": 0.5, "validate": 0.05,
         "canary": 0.2, "activate": 0.05, "verify": 0.1}
    )  # fmt: skip
    table = phase_table([got, {**got, "download": 3.5}])
    assert table["download"] == {"median_s": 2.5, "max_s": 3.5}
    assert list(table) == list(PHASES)


@pytest.mark.slow
def test_one_real_pod_reports_every_phase() -> None:
    """A real server + agent pod on the local cluster (tiny model, no client load)."""
    result = run(1, model="tiny-xlmr", load=False, timeout=120)
    phases = result["phases"]
    assert set(phases) == set(PHASES), phases
    assert all(v["median_s"] >= 0 for v in phases.values())
