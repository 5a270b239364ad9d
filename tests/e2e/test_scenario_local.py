"""The end-to-end scenario on the local cluster: the real operator (kopf run), the local API server,
and three real pods (hotswap-server + hotswap-agent each) on tiny models, under client load.

The same ``e2e.scenario`` runs on kind (``e2e/kind/run.sh``); here it runs in ``make test``.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

from e2e.backends.local import local_backend
from e2e.result import ScenarioResult
from e2e.scenario import MINILM_NAN, TINY, Models, Scenario, ScenarioConfig

pytestmark = pytest.mark.slow


def assert_checks(result: ScenarioResult) -> None:
    assert result.ok, "failed checks:\n" + "\n".join(result.checks_lines())


async def test_scenario_real_pods(testmodels_dir: Path) -> None:
    config = ScenarioConfig(models=TINY, concurrency=4)
    async with local_backend(
        testmodels_dir, pods=3, flavour="real", server_args=["--swap-mode", "inplace"]
    ) as b:
        result = await Scenario(b, config).run()
    print("\n".join(result.summary_lines()))
    assert_checks(result)
    pods = ["reranker-0", "reranker-1", "reranker-2"]
    assert result.pods == pods

    # Zero failed requests, and the load saw both good versions.
    assert result.load.failed == 0, result.load.failures
    assert result.load.by_version.get("v1", 0) > 0 and result.load.by_version.get("v2", 0) > 0

    # v2 rolled one pod at a time, in name order, each verified before the next swapped.
    swaps = [result.rollout[p] for p in pods]
    assert [s.at for s in swaps] == sorted(s.at for s in swaps)
    for prev, nxt in itertools.pairwise(swaps):
        assert prev.verified_at is not None and prev.verified_at <= nxt.at
    assert all(s.mode == "inplace" and s.pause_ms is not None for s in swaps), swaps

    # v3 (valid weights, ranks backwards) failed its canary on the first pod's staged weights: it
    # never became active anywhere and answered no request; the status says so.
    assert result.failure["pod"] == "reranker-0" and result.failure["step"] == "VerifyStaged"
    assert "expected 1" in result.failure["reason"]
    assert result.broken == [] and result.restored == []
    assert result.load.by_version.get("v3", 0) == 0
    assert result.degraded["status"] == "True" and result.degraded["reason"] == "RolloutFailed"
    assert [(h["version"], h["result"]) for h in result.history[-3:]] == [
        ("v1", "Succeeded"),
        ("v2", "Succeeded"),
        ("v3", "RolledBack"),
    ]
    assert result.final == dict.fromkeys(pods, "v2")
    assert "condition met" in result.kubectl_wait
    assert "reranker" in result.kubectl_get and "v2" in result.kubectl_get


async def test_scenario_fake_pods_nan(tmp_path: Path) -> None:
    """The other failure shape, on light fake pods (seconds): NaN weights are refused at preload on
    every pod, so no pod ever serves v3; the rollback still ends Ready on v2 with Degraded."""
    config = ScenarioConfig(models=MINILM_NAN, baseline_seconds=0.5, settle_seconds=0.5)
    async with local_backend(tmp_path, pods=3, flavour="fake") as b:
        result = await Scenario(b, config).run()
    assert_checks(result)
    assert result.failure["step"] == "Preload"
    assert result.broken == [] and result.restored == []
    assert result.load.by_version.get("v3", 0) == 0


async def test_scenario_reports_a_failed_expectation(tmp_path: Path) -> None:
    """A scenario that expects the wrong failure step reports it as a failed check (not a pass)."""
    wrong = Models("minilm-v1", "minilm-v2", "broken-nan", "Verify")
    config = ScenarioConfig(models=wrong, baseline_seconds=0.2, settle_seconds=0.2)
    async with local_backend(tmp_path, pods=2, flavour="fake") as b:
        result = await Scenario(b, config).run()
    assert not result.ok
    assert {c.name for c in result.failed_checks} >= {"v3 failed at step Verify"}
