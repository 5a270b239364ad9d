"""Rollout scenarios on a local cluster of fake pods: the real operator (kopf run), the real API
emulator, fake pods that follow the agent contract with scripted failures. Fast: one cluster each."""

from __future__ import annotations

import pytest

from . import scenarios
from .scenarios import Fleet

SCENARIOS = [
    scenarios.first_rollout,
    scenarios.rollout_one_pod_at_a_time,
    scenarios.broken_digest,
    scenarios.broken_nan,
    scenarios.broken_canary_on_second_pod,
    scenarios.broken_canary_never_serves,
    scenarios.quality_gate_blocks_a_worse_version,
    scenarios.spec_change_mid_rollout,
    scenarios.operator_killed_mid_rollout,
    scenarios.pod_restarted_mid_rollout,
    scenarios.pod_killed_while_verified_staged,
    scenarios.pod_added_after_rollout,
    scenarios.manual_rollback_by_annotation,
    scenarios.hold_without_automatic_rollback,
    scenarios.drift_is_corrected,
    scenarios.soak_failure_rolls_back,
    scenarios.transient_source_error_is_retried,
    scenarios.last_good_source_gone,
]


@pytest.mark.parametrize("scenario", SCENARIOS, ids=[s.__name__ for s in SCENARIOS])
async def test_scenario(fake_fleet: Fleet, scenario: scenarios.Scenario) -> None:
    await scenario(fake_fleet)
