"""The pure planner, driven through a simulated fleet: every decision from observed state."""

from __future__ import annotations

import datetime

import pytest
from hotswap_operator import conditions as cond
from hotswap_operator.actions import Kind, Outcome
from hotswap_operator.models import HistoryResult, Phase, PodState, Step
from hotswap_operator.progress import source_fault
from hotswap_operator.timeutil import parse

from .sim import Sim, SimPod, boot_ref, digest_of, fleet, make_spec


def cond_of(sim: Sim, type_: str) -> tuple[str, str]:
    c = cond.get_condition(sim.status.conditions, type_)
    assert c is not None, type_
    return c.status, c.reason


def activation_order(sim: Sim, version: str) -> list[str]:
    seen = [(clock, name) for name, pod in sim.pods.items() for v, clock in pod.activations if v == version]
    return [name for _, name in sorted(seen)]


def test_first_rollout_onto_empty_pods_and_boot_configmap() -> None:
    sim = Sim(spec=make_spec("v1"), pods=fleet(3, version=None))
    sim.run()
    assert all(p.active == "v1" for p in sim.pods.values())
    assert sim.status.current_version == "v1"
    assert sim.status.last_good_version == "v1"
    assert sim.status.last_good is not None and sim.status.last_good.digest == digest_of("v1")
    assert sim.boot is not None and sim.boot.version == "v1"
    assert cond_of(sim, cond.READY) == ("True", "RolloutComplete")
    assert cond_of(sim, cond.PROGRESSING)[0] == "False"
    assert cond_of(sim, cond.RECONCILING)[0] == "False"
    assert cond_of(sim, cond.STALLED)[0] == "False"
    assert sim.status.serving == "v1 3/3"
    assert cond_of(sim, cond.DEGRADED)[0] == "False"
    assert [h.result for h in sim.status.history] == [HistoryResult.SUCCEEDED]
    assert sim.status.ready_pods == "3/3"


def test_rollout_v1_to_v2_prefetches_then_moves_one_pod_at_a_time() -> None:
    sim = Sim(spec=make_spec("v2"), pods=fleet(3), boot=boot_ref("v1"))
    sim.run()
    kinds = [(a.kind, a.pod) for a in sim.actions]
    prepares = [i for i, (k, _) in enumerate(kinds) if k is Kind.PREPARE]
    activates = [i for i, (k, _) in enumerate(kinds) if k is Kind.ACTIVATE]
    assert len(prepares) == 3 and len(activates) == 3
    assert max(prepares) < min(activates), "every pod is prefetched before the first swap"
    assert activation_order(sim, "v2") == ["pod-1", "pod-2", "pod-3"]
    # Each swap is verified in the same step, and pod k is verified before pod k+1 swaps.
    swaps = [i for i, a in enumerate(sim.actions) if a.kind is Kind.ACTIVATE]
    assert all(
        sim.actions[i + 1].kind is Kind.VERIFY and sim.actions[i + 1].pod == sim.actions[i].pod for i in swaps
    )
    log = [(e.reason, e.message.split()[1]) for e in sim.events if e.reason in ("Activated", "Verified")]
    assert log == [(r, f"pod-{k}") for k in (1, 2, 3) for r in ("Activated", "Verified")]
    assert all(len(p.activations) == 1 for p in sim.pods.values()), "no pod swapped twice"
    assert sim.status.last_good_version == "v2" and sim.boot is not None and sim.boot.version == "v2"
    assert [e.reason for e in sim.events].count("Activated") == 3
    assert sim.status.rollout is not None and sim.status.rollout.phase is Phase.COMPLETE


def test_bootstraps_last_good_from_the_boot_configmap() -> None:
    sim = Sim(spec=make_spec("v2"), pods=fleet(2), boot=boot_ref("v1"))
    sim.step()
    assert sim.status.last_good_version == "v1"
    assert sim.status.last_good is not None and sim.status.last_good.source is not None


def test_verify_failure_on_pod_2_rolls_back_pods_1_and_2_and_is_not_retried() -> None:
    sim = Sim(spec=make_spec("v3"), pods=fleet(3), boot=boot_ref("v1"))
    sim.failures[("pod-2", Step.VERIFY, "v3")] = "document 1 ranked first, expected 0"
    sim.run()
    assert [p.active for p in sim.pods.values()] == ["v1", "v1", "v1"]
    assert activation_order(sim, "v3") == ["pod-1", "pod-2"], "pod-3 is never swapped"
    r = sim.status.rollout
    assert r is not None and r.phase is Phase.ROLLED_BACK
    assert r.failure is not None and (r.failure.pod, r.failure.step) == ("pod-2", Step.VERIFY)
    assert "ranked first" in r.failure.reason
    assert cond_of(sim, cond.DEGRADED) == ("True", "RolloutFailed")
    # kstatus: v3 is not served, so not Ready; Stalled until the spec changes; nothing reconciling.
    assert cond_of(sim, cond.READY) == ("False", "RolledBack")
    assert cond_of(sim, cond.STALLED) == ("True", "RolledBack")
    assert cond_of(sim, cond.RECONCILING)[0] == "False"
    assert sim.status.serving == "v1 3/3"
    assert sim.status.history[-1].result is HistoryResult.ROLLED_BACK
    assert sim.status.last_good_version == "v1" and sim.boot is not None and sim.boot.version == "v1"
    # Settled: more iterations do nothing (v3 is not retried until the spec changes).
    before = len(sim.actions)
    for _ in range(5):
        sim.step()
    assert len(sim.actions) == before
    # A new spec is a new rollout.
    sim.spec = make_spec("v4")
    sim.run()
    assert [p.active for p in sim.pods.values()] == ["v4"] * 3


def test_every_activation_is_preceded_by_the_canary_on_the_staged_weights() -> None:
    sim = Sim(spec=make_spec("v2"), pods=fleet(3), boot=boot_ref("v1"))
    sim.run()
    for i, a in enumerate(sim.actions):
        if a.kind is Kind.ACTIVATE:
            before = sim.actions[i - 1]
            assert (before.kind, before.pod, before.version) == (Kind.VERIFY_STAGED, a.pod, "v2")
    assert all(p.staged_verified == ["v2"] for p in sim.pods.values())


def test_staged_canary_failure_fails_the_version_before_it_serves_anywhere() -> None:
    sim = Sim(spec=make_spec("v3"), pods=fleet(3), boot=boot_ref("v1"))
    sim.failures[("*", Step.VERIFY_STAGED, "v3")] = (
        "canary failed for v3: document 0 ranked first, expected 1"
    )
    sim.run()
    assert activation_order(sim, "v3") == [], "v3 never becomes active anywhere"
    assert [p.active for p in sim.pods.values()] == ["v1", "v1", "v1"]
    assert [p.staged_verified for p in sim.pods.values()] == [["v3"], [], []]
    r = sim.status.rollout
    assert r is not None and r.phase is Phase.ROLLED_BACK and r.failure is not None
    assert (r.failure.pod, r.failure.step) == ("pod-1", Step.VERIFY_STAGED)
    assert sim.status.history[-1].result is HistoryResult.ROLLED_BACK
    assert "RolloutFailed" in [e.reason for e in sim.events]
    assert cond_of(sim, cond.DEGRADED) == ("True", "RolloutFailed")
    # Not retried while the spec stays.
    before = len(sim.actions)
    for _ in range(5):
        sim.step()
    assert len(sim.actions) == before


def test_staged_canary_failure_on_pod_2_rolls_back_pod_1_only() -> None:
    sim = Sim(spec=make_spec("v3"), pods=fleet(3), boot=boot_ref("v1"))
    sim.failures[("pod-2", Step.VERIFY_STAGED, "v3")] = "canary failed"
    sim.run()
    assert activation_order(sim, "v3") == ["pod-1"]
    assert [p.active for p in sim.pods.values()] == ["v1", "v1", "v1"]
    r = sim.status.rollout
    assert r is not None and r.failure is not None and r.failure.step is Step.VERIFY_STAGED


def test_stage_failure_fails_the_rollout_before_any_swap() -> None:
    sim = Sim(spec=make_spec("v3"), pods=fleet(3), boot=boot_ref("v1"))
    sim.failures[("pod-3", Step.STAGE, "v3")] = "digest_mismatch: expected abc, got def"
    sim.run()
    assert all(not any(v == "v3" for v, _ in p.activations) for p in sim.pods.values())
    r = sim.status.rollout
    assert (
        r is not None and r.failure is not None and r.failure.step is Step.STAGE and r.failure.pod == "pod-3"
    )


def test_preload_failure_on_nan_weights() -> None:
    sim = Sim(spec=make_spec("v3"), pods=fleet(2), boot=boot_ref("v1"))
    sim.failures[("*", Step.PRELOAD, "v3")] = "invalid_model: weights are not finite"
    sim.run()
    r = sim.status.rollout
    assert r is not None and r.phase is Phase.ROLLED_BACK and r.failure is not None
    assert r.failure.step is Step.PRELOAD
    assert [p.active for p in sim.pods.values()] == ["v1", "v1"]


def test_automatic_rollback_off_holds() -> None:
    sim = Sim(spec=make_spec("v3", rollback={"automatic": False}), pods=fleet(3), boot=boot_ref("v1"))
    sim.failures[("pod-2", Step.VERIFY, "v3")] = "bad"
    sim.run()
    assert [p.active for p in sim.pods.values()] == ["v3", "v3", "v1"]
    assert sim.status.rollout is not None and sim.status.rollout.phase is Phase.HOLDING
    assert cond_of(sim, cond.READY) == ("False", "RolloutHeld")
    assert cond_of(sim, cond.STALLED) == ("True", "RolloutHeld")
    assert sim.status.history[-1].result is HistoryResult.FAILED
    assert {p.name: p.state for p in sim.status.pods}["pod-1"] is PodState.HELD


def test_spec_change_mid_rollout_supersedes() -> None:
    sim = Sim(spec=make_spec("v2"), pods=fleet(3), boot=boot_ref("v1"))
    while not sim.pods["pod-1"].active == "v2":
        sim.step()
    sim.spec = make_spec("v3")
    sim.run()
    assert [p.active for p in sim.pods.values()] == ["v3"] * 3
    results = [(h.version, h.result) for h in sim.status.history]
    assert results == [("v2", HistoryResult.SUPERSEDED), ("v3", HistoryResult.SUCCEEDED)]
    assert "v2" not in [p.version for p in sim.status.pods]
    assert sim.status.last_good_version == "v3"


def test_superseded_rollout_then_failure_rolls_back_to_last_good_not_to_the_superseded() -> None:
    sim = Sim(spec=make_spec("v2"), pods=fleet(3), boot=boot_ref("v1"))
    while not sim.pods["pod-2"].active == "v2":
        sim.step()
    sim.spec = make_spec("v3")
    sim.failures[("pod-1", Step.VERIFY, "v3")] = "bad"
    sim.run()
    assert [p.active for p in sim.pods.values()] == ["v1"] * 3


def test_crash_at_every_point_never_swaps_a_pod_twice_nor_skips_one() -> None:
    reference = Sim(spec=make_spec("v2"), pods=fleet(3), boot=boot_ref("v1"))
    reference.run()
    total = len(reference.actions)
    for crash_at in range(total):
        sim = Sim(spec=make_spec("v2"), pods=fleet(3), boot=boot_ref("v1"))
        # Run up to the crash point, losing the outcome of that action; then "restart" (run on).
        for _ in range(500):
            if len(sim.actions) >= crash_at:
                break
            sim.step()
        sim.crash_after = 0
        sim.run()
        assert [p.active for p in sim.pods.values()] == ["v2"] * 3, crash_at
        assert all(len(p.activations) == 1 for p in sim.pods.values()), (crash_at, sim.pods)
        assert activation_order(sim, "v2") == ["pod-1", "pod-2", "pod-3"]
        assert sim.status.rollout is not None and sim.status.rollout.phase is Phase.COMPLETE


def test_operator_restart_with_empty_memory_reads_the_agents() -> None:
    """Status lost between an activate and its patch: the agent's report says pod-2 moved."""
    sim = Sim(spec=make_spec("v2"), pods=fleet(3), boot=boot_ref("v1"))
    while sim.pods["pod-2"].active != "v2":
        sim.step()
    # Forget that pod-2 was activated (the status patch never happened).
    r = sim.status.rollout
    assert r is not None
    sim.status = sim.status.model_copy(update={"rollout": r.model_copy(update={"current": None})})
    sim.run()
    assert all(len(p.activations) == 1 for p in sim.pods.values())


def test_not_ready_pod_is_waited_for_then_times_out() -> None:
    spec = make_spec("v2", rollout={"podTimeoutSeconds": 10})
    sim = Sim(spec=spec, pods=fleet(2), boot=boot_ref("v1"))
    sim.pods["pod-2"].ready = False
    sim.step()
    assert not sim.last_plan or all(a.kind is not Kind.ACTIVATE for a in sim.actions)
    assert {p.name: p.state for p in sim.status.pods}["pod-2"] is PodState.NOT_READY
    for _ in range(60):
        sim.step()
    r = sim.status.rollout
    assert (
        r is not None
        and r.failure is not None
        and r.failure.step is Step.WAIT_READY
        and r.failure.pod == "pod-2"
    )


def test_pod_that_comes_back_is_brought_along() -> None:
    sim = Sim(spec=make_spec("v2"), pods=fleet(3), boot=boot_ref("v1"))
    while sim.pods["pod-1"].active != "v2":
        sim.step()
    # pod-2 restarts: agent gone for a while, then back on the boot version (v1), nothing staged.
    sim.pods["pod-2"].reachable = False
    for _ in range(3):
        sim.step()
    assert sim.pods["pod-3"].active == "v1", "nothing moves past a pod that is away"
    sim.pods["pod-2"] = type(sim.pods["pod-2"])(name="pod-2", active="v1", on_disk={"v1": digest_of("v1")})
    sim.run()
    assert [p.active for p in sim.pods.values()] == ["v2"] * 3


def test_pod_added_after_rollout_converges_without_new_history() -> None:
    sim = Sim(spec=make_spec("v2"), pods=fleet(2), boot=boot_ref("v1"))
    sim.run()
    history = list(sim.status.history)
    sim.pods["pod-3"] = type(sim.pods["pod-1"])(name="pod-3", active="v1", on_disk={"v1": digest_of("v1")})
    sim.run()
    assert sim.pods["pod-3"].active == "v2"
    assert sim.status.history == history
    assert cond_of(sim, cond.READY) == ("True", "RolloutComplete")


def test_drift_is_corrected() -> None:
    sim = Sim(spec=make_spec("v2"), pods=fleet(2), boot=boot_ref("v1"))
    sim.run()
    pod = sim.pods["pod-2"]
    pod.previous, pod.active = pod.active, "v1"  # someone swapped it by hand
    sim.run()
    assert pod.active == "v2"


def test_failed_convergence_backs_off_and_does_not_touch_the_fleet() -> None:
    sim = Sim(spec=make_spec("v2"), pods=fleet(2), boot=boot_ref("v1"))
    sim.run()
    sim.pods["pod-3"] = type(sim.pods["pod-1"])(name="pod-3", active="v1", on_disk={"v1": digest_of("v1")})
    sim.failures[("pod-3", Step.STAGE, "v2")] = "source unavailable"
    for _ in range(3):
        sim.step()
    assert cond_of(sim, cond.DEGRADED) == ("True", "PodFailed")
    assert sim.pods["pod-1"].active == "v2" and sim.pods["pod-2"].active == "v2"
    del sim.failures[("pod-3", Step.STAGE, "v2")]
    sim.now += datetime.timedelta(seconds=10)
    sim.run()
    assert sim.pods["pod-3"].active == "v2"
    assert cond_of(sim, cond.DEGRADED)[0] == "False"


def test_digest_mismatch_across_pods_fails_the_rollout() -> None:
    sim = Sim(spec=make_spec("v2"), pods=fleet(2), boot=boot_ref("v1"))
    sim.pods["pod-2"].put_on_disk("v2", "f" * 64)  # a different content under the same version id
    sim.pods["pod-1"].put_on_disk("v2", digest_of("v2"))
    sim.run()
    r = sim.status.rollout
    assert r is not None and r.failure is not None and "digest mismatch" in r.failure.reason


def test_pause_between_pods() -> None:
    sim = Sim(spec=make_spec("v2", rollout={"pauseSeconds": 60}), pods=fleet(2), boot=boot_ref("v1"))
    while sim.pods["pod-1"].active != "v2" or not sim.status.rollout or not sim.status.rollout.done:
        sim.step()
    paused_at = sim.now
    sim.run()
    assert sim.pods["pod-2"].activations[0][1] > sim.pods["pod-1"].activations[0][1]
    assert sim.now - paused_at >= datetime.timedelta(seconds=59)


def test_soak_failure_rolls_back() -> None:
    spec = make_spec("v2", rollout={"analysis": {"soakSeconds": 20, "maxErrorRate": 0.05}})
    sim = Sim(spec=spec, pods=fleet(2), boot=boot_ref("v1"))
    sim.failures[("pod-1", Step.SOAK, "v2")] = "error rate 0.2 > 0.05"
    sim.run()
    r = sim.status.rollout
    assert r is not None and r.failure is not None and r.failure.step is Step.SOAK
    assert [p.active for p in sim.pods.values()] == ["v1", "v1"]


def test_soak_waits_its_time() -> None:
    spec = make_spec("v2", rollout={"analysis": {"soakSeconds": 20}})
    sim = Sim(spec=spec, pods=fleet(1), boot=boot_ref("v1"))
    start = sim.now
    sim.run()
    soak = [a for a in sim.actions if a.kind is Kind.SOAK]
    assert len(soak) == 1 and soak[0].baseline == (100.0, 0.0)
    assert sim.now - start >= datetime.timedelta(seconds=20)


def test_manual_rollback_by_spec_uses_the_previous_version_in_memory() -> None:
    sim = Sim(spec=make_spec("v2"), pods=fleet(2), boot=boot_ref("v1"))
    sim.run()
    sim.spec = make_spec("v1")
    sim.run()
    assert [p.active for p in sim.pods.values()] == ["v1", "v1"]
    second = [a for a in sim.actions if a.version == "v1"]
    assert {a.kind for a in second} <= {Kind.REACTIVATE, Kind.VERIFY}, "fast path: previous is in memory"


def test_settings_change_keeps_the_fleet_verified() -> None:
    sim = Sim(spec=make_spec("v2"), pods=fleet(2), boot=boot_ref("v1"))
    sim.run()
    n = len(sim.actions)
    sim.spec = make_spec("v2", historyLimit=5)
    sim.run()
    assert len(sim.actions) == n
    assert [h.result for h in sim.status.history] == [HistoryResult.SUCCEEDED]


def test_history_is_bounded() -> None:
    sim = Sim(spec=make_spec("v2", historyLimit=2), pods=fleet(1), boot=boot_ref("v1"))
    for version in ("v2", "v3", "v4", "v5"):
        sim.spec = make_spec(version, historyLimit=2)
        sim.run()
    assert [h.version for h in sim.status.history] == ["v4", "v5"]


def test_no_pods() -> None:
    sim = Sim(spec=make_spec("v2"), pods={})
    sim.step()
    assert cond_of(sim, cond.READY) == ("False", "NoPods")
    assert not sim.actions


def test_observed_generation_on_conditions() -> None:
    sim = Sim(spec=make_spec("v2"), pods=fleet(1), boot=boot_ref("v1"))
    sim.run()
    assert sim.status.observed_generation == 1
    assert all(c.observed_generation == 1 for c in sim.status.conditions)


def test_rollback_target_undoes_the_latest_change() -> None:
    from hotswap_operator.planner import rollback_target

    sim = Sim(spec=make_spec("v2"), pods=fleet(1), boot=boot_ref("v1"))
    sim.run()
    sim.spec = make_spec("v3")
    sim.run()
    # v3 succeeded and is last-good: "true" means the good version before it.
    target = rollback_target(sim.spec, sim.status, "true")
    assert target is not None and target.version == "v2" and target.source is not None
    named = rollback_target(sim.spec, sim.status, "v2")
    assert named is not None and named.version == "v2"
    assert rollback_target(sim.spec, sim.status, "v9") is None
    # A failed v4: "true" means last-good (v3).
    sim.spec = make_spec("v4")
    sim.failures[("*", Step.VERIFY, "v4")] = "bad"
    sim.run()
    target = rollback_target(sim.spec, sim.status, "true")
    assert target is not None and target.version == "v3"


def test_kstatus_conditions_while_moving_and_rolling_back() -> None:
    sim = Sim(spec=make_spec("v3"), pods=fleet(3), boot=boot_ref("v1"))
    sim.failures[("pod-2", Step.VERIFY, "v3")] = "bad"
    seen: list[tuple[str, str, str, str]] = []
    for _ in range(60):
        sim.step()
        seen.append(
            (cond_of(sim, cond.READY)[0], cond_of(sim, cond.RECONCILING)[0], cond_of(sim, cond.STALLED)[0],
             sim.status.rollout.phase.value if sim.status.rollout else "")
        )  # fmt: skip
    assert all(ready == "False" for ready, *_ in seen), "Ready never True: v3 is never served by every pod"
    assert ("False", "True", "False", "Activating") in seen
    assert seen[-1] == ("False", "False", "True", "RolledBack")
    for c in sim.status.conditions:
        assert c.observed_generation == 1
    assert sim.status.observed_generation == 1
    # A new spec clears Stalled and the fleet becomes Ready on it.
    sim.spec = make_spec("v4")
    sim.run()
    assert cond_of(sim, cond.READY) == ("True", "RolloutComplete")
    assert cond_of(sim, cond.STALLED)[0] == "False"


QUALITY = {
    "set": [{"query": "neural networks", "documents": ["bananas", "deep learning"], "relevance": [0, 2]}],
    "metric": "ndcg",
    "k": 5,
    "maxDrop": 0.05,
}


def test_quality_gate_runs_once_before_any_activation_and_records_both_scores() -> None:
    sim = Sim(spec=make_spec("v2", rollout={"quality": QUALITY}), pods=fleet(3), boot=boot_ref("v1"))
    sim.run()
    assert sim.evaluations == [("pod-1", "v2")], "once per rollout, on one pod"
    first_eval = next(i for i, a in enumerate(sim.actions) if a.kind is Kind.EVALUATE)
    assert all(i > first_eval for i, a in enumerate(sim.actions) if a.kind is Kind.ACTIVATE)
    assert [p.active for p in sim.pods.values()] == ["v2"] * 3
    r = sim.status.rollout
    assert r is not None and r.quality is not None and r.quality.passed
    assert (r.quality.candidate, r.quality.baseline, r.quality.baseline_version) == (0.93, 0.9, "v1")
    h = sim.status.history[-1]
    assert h.result is HistoryResult.SUCCEEDED and h.quality is not None and h.quality.candidate == 0.93
    passed = [e for e in sim.events if e.reason == "QualityGatePassed"]
    assert len(passed) == 1 and "0.9300" in passed[0].message and "v1 0.9000" in passed[0].message


def test_quality_gate_failure_blocks_the_rollout_before_any_pod_is_activated() -> None:
    sim = Sim(spec=make_spec("v3", rollout={"quality": QUALITY}), pods=fleet(3), boot=boot_ref("v1"))
    sim.failures[("*", Step.QUALITY, "v3")] = "ndcg@5 dropped 0.49 below v1 (maxDrop 0.05)"
    sim.run()
    assert activation_order(sim, "v3") == [] and all(not p.staged_verified for p in sim.pods.values())
    r = sim.status.rollout
    assert r is not None and r.failure is not None and r.failure.step is Step.QUALITY
    assert r.quality is not None and not r.quality.passed
    assert (r.quality.candidate, r.quality.baseline) == (0.41, 0.9)
    h = sim.status.history[-1]
    assert h.quality is not None and (h.quality.candidate, h.quality.baseline) == (0.41, 0.9)
    assert cond_of(sim, cond.READY) == ("False", "QualityGateFailed")
    assert cond_of(sim, cond.STALLED) == ("True", "QualityGateFailed")
    failed = [e for e in sim.events if e.reason == "QualityGateFailed"]
    assert len(failed) == 1 and failed[0].type == "Warning" and "0.4100" in failed[0].message
    assert [p.active for p in sim.pods.values()] == ["v1"] * 3
    before = len(sim.actions)
    for _ in range(5):
        sim.step()
    assert len(sim.actions) == before, "not retried while the spec stays"


def test_quality_gate_without_prefetch_is_evaluated_on_the_first_prepared_pod() -> None:
    spec = make_spec("v2", rollout={"quality": QUALITY, "prefetch": False})
    sim = Sim(spec=spec, pods=fleet(2), boot=boot_ref("v1"))
    sim.run()
    assert sim.evaluations == [("pod-1", "v2")]
    assert [p.active for p in sim.pods.values()] == ["v2", "v2"]


def test_quality_gate_spec_validation() -> None:
    import pytest
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="exactly one"):
        make_spec("v2", rollout={"quality": {"metric": "ndcg"}})
    with pytest.raises(ValidationError, match="relevance grades"):
        make_spec(
            "v2", rollout={"quality": {"set": [{"query": "q", "documents": ["a"], "relevance": [1, 0]}]}}
        )
    spec = make_spec("v2", rollout={"quality": {"configMapRef": {"name": "golden", "key": "set.json"}}})
    assert spec.rollout.quality is not None and spec.rollout.quality.config_map_ref is not None


@pytest.mark.parametrize(
    ("step", "error_type"),
    [(Step.VERIFY_STAGED, "not_staged"), (Step.ACTIVATE, "not_staged"), (Step.VERIFY, "verify_failed")],
)
def test_a_pod_fault_re_plans_the_pod_instead_of_condemning_the_version(step: Step, error_type: str) -> None:
    sim = Sim(spec=make_spec("v2"), pods=fleet(3), boot=boot_ref("v1"))
    sim.pod_faults[("pod-2", step, "v2")] = (error_type, True)  # its agent and server restarted
    sim.run()
    assert [p.active for p in sim.pods.values()] == ["v2"] * 3, "the rollout completes on the target"
    r = sim.status.rollout
    assert r is not None and r.phase is Phase.COMPLETE and r.failure is None and r.pod_fault is None
    assert sim.status.history[-1].result is HistoryResult.SUCCEEDED
    assert [e.reason for e in sim.events].count("PodFault") == 1
    assert "RolloutFailed" not in [e.reason for e in sim.events]
    assert len(sim.pods["pod-1"].activations) == 1 and len(sim.pods["pod-3"].activations) == 1


def test_a_pod_that_keeps_faulting_fails_the_rollout_within_its_bound() -> None:
    sim = Sim(spec=make_spec("v2"), pods=fleet(2), boot=boot_ref("v1"))
    for _ in range(100):  # pod-2's server answers with another version every time
        sim.pod_faults[("pod-2", Step.VERIFY, "v2")] = ("verify_failed", False)
        sim.step()
        r = sim.status.rollout
        if r is not None and r.phase not in (Phase.PREFETCHING, Phase.ACTIVATING):
            break
    sim.pod_faults.clear()
    sim.run()
    r = sim.status.rollout
    assert r is not None and r.phase is Phase.ROLLED_BACK and r.failure is not None
    assert (r.failure.pod, r.failure.step) == ("pod-2", Step.VERIFY)
    assert [e.reason for e in sim.events].count("PodFault") == 3
    assert [p.active for p in sim.pods.values()] == ["v1", "v1"]


def test_a_version_fault_still_fails_at_once() -> None:
    sim = Sim(spec=make_spec("v3"), pods=fleet(3), boot=boot_ref("v1"))
    sim.failures[("pod-1", Step.VERIFY, "v3")] = "canary failed"  # no pod-fault error type
    sim.run()
    assert "PodFault" not in [e.reason for e in sim.events]
    r = sim.status.rollout
    assert r is not None and r.phase is Phase.ROLLED_BACK


# ---------------------------------------------------------------- source errors, first install, last-good


def stage_attempts(sim: Sim, pod: str, version: str) -> int:
    return sum(1 for a in sim.actions if a.pod == pod and a.version == version and a.needs_stage)


def test_a_transient_source_error_is_retried_with_backoff_not_rolled_back() -> None:
    sim = Sim(spec=make_spec("v2"), pods=fleet(3), boot=boot_ref("v1"))
    sim.source_errors[("pod-2", "v2")] = [
        "GET http://registry/v2/manifest.json answered 429 Too Many Requests",
        "s3 source s3://models/v2: An error occurred (SlowDown) when calling the GetObject operation",
        "GET http://registry/v2/model.safetensors: timed out",
    ]
    sim.run()
    assert [p.active for p in sim.pods.values()] == ["v2"] * 3
    r = sim.status.rollout
    assert r is not None and r.phase is Phase.COMPLETE and r.failure is None and r.pod_fault is None
    reasons = [e.reason for e in sim.events]
    assert reasons.count("SourceUnavailable") == 3 and "RolloutFailed" not in reasons
    assert stage_attempts(sim, "pod-2", "v2") == 4
    # backoff 2s, 4s, 8s between the tries (the shared helper), all within podTimeoutSeconds
    assert (sim.now - parse(r.started_at)).total_seconds() >= 14  # type: ignore[operator]
    assert all(len(p.activations) == 1 for p in sim.pods.values())


def test_source_backoff_is_shown_in_status_and_holds_every_stage() -> None:
    sim = Sim(spec=make_spec("v2"), pods=fleet(2), boot=boot_ref("v1"))
    sim.source_errors[("*", "v2")] = ["GET http://registry/v2/manifest.json answered 503 Service Unavailable"]
    sim.step()  # prefetch: pod-1 throttled, pod-2 staged
    r = sim.status.rollout
    assert r is not None and r.pod_fault is not None and r.pod_fault.retry_at is not None
    sim.step()
    pods = {p.name: p for p in sim.status.pods}
    assert "retry 2 at" in pods["pod-1"].message and sim.last_plan is not None
    assert not sim.last_plan.actions and 0 < sim.last_plan.requeue_after <= 2.0
    sim.run()
    assert [p.active for p in sim.pods.values()] == ["v2", "v2"]


def test_a_source_that_stays_unavailable_fails_the_rollout_within_the_pod_timeout() -> None:
    sim = Sim(spec=make_spec("v2", rollout={"podTimeoutSeconds": 20}), pods=fleet(2), boot=boot_ref("v1"))
    sim.source_errors[("*", "v2")] = [
        "GET http://registry/v2/manifest.json answered 429 Too Many Requests"
    ] * 50
    sim.run()
    r = sim.status.rollout
    assert r is not None and r.phase is Phase.ROLLED_BACK and r.failure is not None
    assert r.failure.step is Step.STAGE and "429" in r.failure.reason
    assert [e.reason for e in sim.events].count("SourceUnavailable") >= 3  # retried with backoff
    took = (parse(r.failure.at) - parse(r.started_at)).total_seconds()  # type: ignore[operator]
    assert 10 <= took <= 20, "it gave up once the next try would end past podTimeoutSeconds"
    assert [p.active for p in sim.pods.values()] == ["v1", "v1"]


@pytest.mark.parametrize(
    "message",
    [
        "file:///registry/v2 does not exist",
        "GET http://registry/v2/manifest.json answered 404 Not Found",
        "GET http://registry/v2/manifest.json answered 403 Forbidden",
        "no objects under s3://models/v2",
    ],
)
def test_a_source_that_does_not_hold_the_version_fails_at_once(message: str) -> None:
    sim = Sim(spec=make_spec("v2"), pods=fleet(2), boot=boot_ref("v1"))
    sim.source_errors[("pod-1", "v2")] = [message]
    sim.run()
    r = sim.status.rollout
    assert r is not None and r.phase is Phase.ROLLED_BACK and r.failure is not None
    assert "SourceUnavailable" not in [e.reason for e in sim.events]


def test_the_agents_source_fault_decides_over_the_message() -> None:
    # A proxy's 502 page that reads "Not Found" upstream: the agent says transient, so it is retried,
    # where the message alone (an agent from before sourceFault) would have failed the rollout.
    sim = Sim(spec=make_spec("v2"), pods=fleet(2), boot=boot_ref("v1"))
    sim.source_errors[("pod-1", "v2")] = [
        ("GET http://registry/v2/x answered 502 upstream not found", "transient")
    ]
    sim.run()
    r = sim.status.rollout
    assert r is not None and r.phase is Phase.COMPLETE and [p.active for p in sim.pods.values()] == ["v2"] * 2
    assert [e.reason for e in sim.events].count("SourceUnavailable") == 1
    # ... and a message with nothing to match fails at once when the agent says the version is gone.
    sim = Sim(spec=make_spec("v2"), pods=fleet(2), boot=boot_ref("v1"))
    sim.source_errors[("pod-1", "v2")] = [("hf source hf://acme/r@v2: RevisionNotFoundError", "gone")]
    sim.run()
    r = sim.status.rollout
    assert r is not None and r.phase is Phase.ROLLED_BACK and r.failure is not None
    assert "SourceUnavailable" not in [e.reason for e in sim.events]


def test_source_fault_reads_the_agents_word_then_the_message() -> None:
    def outcome(error: str, fault: str | None = None, error_type: str = "source_unavailable") -> Outcome:
        return Outcome(ok=False, step=Step.STAGE, error=error, error_type=error_type, source_fault=fault)

    assert source_fault(outcome("anything", "gone")) == "gone"
    assert source_fault(outcome("answered 404 Not Found", "transient")) == "transient"
    assert source_fault(outcome("answered 403 Forbidden", "refused")) == "refused"
    # no word from the agent, or one this operator does not know: the message decides
    assert source_fault(outcome("answered 404 Not Found")) == "gone"
    assert source_fault(outcome("answered 403 Forbidden", "someday")) == "refused"
    assert source_fault(outcome("answered 503 Service Unavailable")) == "transient"
    assert source_fault(outcome("not found", "gone", error_type="digest_mismatch")) is None


def test_a_failed_first_install_is_retried_with_backoff() -> None:
    sim = Sim(spec=make_spec("v1"), pods=fleet(2, version=None))
    sim.failures[("*", Step.STAGE, "v1")] = "source_invalid: model.safetensors missing"
    for _ in range(10):
        sim.step()
        r = sim.status.rollout
        if r is not None and r.retry_at is not None:
            break
    r = sim.status.rollout
    assert r is not None and r.phase is Phase.HOLDING and r.attempt == 1 and r.retry_at is not None
    assert cond_of(sim, cond.READY) == ("False", "InstallRetrying")
    assert cond_of(sim, cond.STALLED) == ("False", "InstallRetrying")  # kstatus: it will retry by itself
    assert cond_of(sim, cond.RECONCILING)[0] == "True"
    first_retry = r.retry_at
    # the second attempt fails too: the delay doubles
    for _ in range(200):
        sim.step()
        r = sim.status.rollout
        if r is not None and r.attempt == 2 and r.retry_at is not None:
            break
    assert r is not None and r.attempt == 2 and r.retry_at is not None and r.failure is not None
    gap = (parse(r.retry_at) - parse(r.failure.at)).total_seconds()  # type: ignore[operator]
    assert gap == 20.0 and r.retry_at > first_retry
    del sim.failures[("*", Step.STAGE, "v1")]
    sim.run()
    r = sim.status.rollout
    assert r is not None and r.phase is Phase.COMPLETE and r.attempt == 3
    assert [p.active for p in sim.pods.values()] == ["v1", "v1"]
    assert [e.reason for e in sim.events].count("InstallRetry") == 2
    assert cond_of(sim, cond.READY) == ("True", "RolloutComplete")
    assert [h.result for h in sim.status.history] == [
        HistoryResult.FAILED,
        HistoryResult.FAILED,
        HistoryResult.SUCCEEDED,
    ]


def test_a_first_install_failing_its_quality_gate_is_not_retried() -> None:
    sim = Sim(spec=make_spec("v1", rollout={"quality": QUALITY}), pods=fleet(1, version=None))
    sim.failures[("*", Step.QUALITY, "v1")] = "below the floor"
    sim.run()
    r = sim.status.rollout
    assert r is not None and r.phase is Phase.HOLDING and r.retry_at is None
    assert "InstallRetry" not in [e.reason for e in sim.events]


def test_the_last_good_source_gone_is_reported_when_a_new_pod_needs_it() -> None:
    sim = Sim(spec=make_spec("v1"), pods=fleet(2), boot=boot_ref("v1"))
    sim.run()
    assert sim.status.last_good is not None and cond_of(sim, cond.DEGRADED)[0] == "False"
    new = SimPod(name="pod-3")  # a new pod booting: nothing active, its boot cannot stage v1
    sim.pods[new.name] = new
    sim.source_errors[("pod-3", "v1")] = ["file:///registry/v1 does not exist"] * 3
    for _ in range(6):  # it fails and is retried every failed_pod_retry
        sim.step()
    assert cond_of(sim, cond.DEGRADED) == ("True", "LastGoodUnavailable")
    gone = sim.status.last_good_unavailable
    assert gone is not None and gone.version == "v1" and "does not exist" in gone.reason
    assert [e.reason for e in sim.events].count("LastGoodUnavailable") == 1
    # restored: the next convergence stages it and the condition clears
    sim.source_errors.clear()
    sim.now += datetime.timedelta(seconds=60)
    sim.run()
    assert sim.pods["pod-3"].active == "v1" and sim.status.last_good_unavailable is None
    assert cond_of(sim, cond.DEGRADED)[0] == "False"


def test_a_boot_failing_for_a_passing_reason_does_not_report_the_last_good_gone() -> None:
    sim = Sim(spec=make_spec("v1"), pods=fleet(1), boot=boot_ref("v1"))
    sim.run()
    new = SimPod(name="pod-2", busy=True)
    # the message would read as "gone", but the agent said it was a passing trouble
    new.boot = {"state": "retrying", "version": "v1", "lastError": "GET http://r/v1 answered 502 not found",
                "lastSourceFault": "transient"}  # fmt: skip
    sim.pods[new.name] = new
    sim.step()
    assert cond_of(sim, cond.DEGRADED)[0] == "False" and sim.status.last_good_unavailable is None
    # not a source error at all (null): the boot file is not there yet, whatever the message says
    new.boot = {**new.boot, "lastError": "boot file /etc/hotswap/boot.json does not exist (yet)",
                "lastSourceFault": None}  # fmt: skip
    sim.step()
    assert cond_of(sim, cond.DEGRADED)[0] == "False" and sim.status.last_good_unavailable is None
    new.boot = {
        **new.boot,
        "lastError": "hf source hf://acme/r@v1: RevisionNotFoundError",
        "lastSourceFault": "gone",
    }
    sim.step()
    assert cond_of(sim, cond.DEGRADED) == ("True", "LastGoodUnavailable")


def test_the_last_good_source_gone_is_read_off_a_failing_boot() -> None:
    sim = Sim(spec=make_spec("v1"), pods=fleet(1), boot=boot_ref("v1"))
    sim.run()
    new = SimPod(name="pod-2", busy=True)  # its agent's boot loop is staging
    new.boot = {"state": "retrying", "version": "v1", "lastError": "file:///registry/v1 does not exist"}
    sim.pods[new.name] = new
    sim.step()
    assert cond_of(sim, cond.DEGRADED) == ("True", "LastGoodUnavailable")
    assert "LastGoodUnavailable" in [e.reason for e in sim.events]
