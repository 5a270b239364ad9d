"""The pure checks of ``e2e.checks`` on hand-written agent statuses: what passes and what does not."""

from __future__ import annotations

import datetime
from typing import Any

from e2e.checks import condition, forbidden_outside, is_ready_on, rolled_back, rollout_checks, swaps_to

T0 = datetime.datetime(2026, 1, 1, 12, 0, 0, tzinfo=datetime.UTC)


def at(seconds: float) -> str:
    return (T0 + datetime.timedelta(seconds=seconds)).isoformat().replace("+00:00", "Z")


def op(
    kind: str, version: str, start: float, end: float, state: str = "succeeded", **result: Any
) -> dict[str, Any]:
    return {
        "id": f"{kind}-{version}-{start}",
        "kind": kind,
        "version": version,
        "state": state,
        "startedAt": at(start),
        "finishedAt": at(end),
        "result": result or {"version": version},
    }


def agent(
    swap_at: float, verify_end: float, *, preload_end: float = 1.0, extra: list[Any] | None = None
) -> dict[str, Any]:
    swap = op("activate", "v2", swap_at - 0.01, swap_at + 0.01)
    return {
        "history": [
            op("stage", "v2", 0.1, 0.5),
            op("preload", "v2", 0.5, preload_end),
            swap,
            op("verify", "v2", swap_at + 0.02, verify_end),
            *(extra or []),
        ],
        "lastActivation": {
            "version": "v2",
            "fromVersion": "v1",
            "at": at(swap_at),
            "kind": "activate",
            "operationId": swap["id"],
            "mode": "inplace",
            "pauseMs": 2.5,
        },
    }


def names(checks: list[Any]) -> dict[str, bool]:
    return {c.name: c.ok for c in checks}


def test_one_at_a_time_in_order_passes() -> None:
    agents = {"p-0": agent(2.0, 2.1), "p-1": agent(2.2, 2.3), "p-2": agent(2.4, 2.5)}
    swaps = swaps_to(agents, "v2", T0)
    assert [s[0].mode for s in swaps.values()] == ["inplace"] * 3
    assert swaps["p-0"][0].pause_ms == 2.5 and swaps["p-0"][0].from_version == "v1"
    assert abs((swaps["p-0"][0].operation_ms or 0) - 10) < 1
    checks = rollout_checks(swaps, "v2")
    assert all(c.ok for c in checks), checks
    assert len(checks) == 4


def test_overlapping_swaps_fail_one_at_a_time() -> None:
    # p-1 swapped before p-0's verify finished.
    agents = {"p-0": agent(2.0, 2.5), "p-1": agent(2.2, 2.6)}
    result = names(rollout_checks(swaps_to(agents, "v2", T0), "v2"))
    assert result["one pod at a time: each pod verified before the next one swapped"] is False


def test_out_of_name_order_fails() -> None:
    agents = {"p-0": agent(2.4, 2.5), "p-1": agent(2.0, 2.1)}
    result = names(rollout_checks(swaps_to(agents, "v2", T0), "v2"))
    assert result["pods swapped to v2 in name order"] is False


def test_a_pod_swapped_twice_or_never_fails() -> None:
    twice = agent(2.0, 2.1, extra=[op("activate", "v2", 3.0, 3.1), op("verify", "v2", 3.2, 3.3)])
    never = {"history": [op("preload", "v2", 0.5, 1.0)], "lastActivation": None}
    result = names(rollout_checks(swaps_to({"p-0": twice, "p-1": never}, "v2", T0), "v2"))
    assert result["every pod swapped to v2 exactly once"] is False


def test_failed_verify_is_not_a_verification() -> None:
    bad = agent(2.0, 2.1)
    bad["history"][3]["state"] = "failed"
    swaps = swaps_to({"p-0": bad, "p-1": agent(2.2, 2.3)}, "v2", T0)
    assert swaps["p-0"][0].verified_at is None and swaps["p-0"][0].verify_failed_at is not None
    assert (
        names(rollout_checks(swaps, "v2"))["one pod at a time: each pod verified before the next one swapped"]
        is False
    )


def test_prefetch_late_preload_fails() -> None:
    agents = {"p-0": agent(2.0, 2.1), "p-1": agent(2.2, 2.3, preload_end=2.15)}
    result = names(rollout_checks(swaps_to(agents, "v2", T0), "v2"))
    assert result["prefetch: every pod preloaded v2 before the first swap"] is False


def test_operations_before_since_and_noops_are_ignored() -> None:
    old = agent(2.0, 2.1)
    old["history"].append(op("activate", "v2", 5.0, 5.01, noop=True))
    swaps = swaps_to({"p-0": old}, "v2", T0 + datetime.timedelta(seconds=1.5))
    assert len(swaps["p-0"]) == 1
    assert swaps_to({"p-0": old}, "v2", T0 + datetime.timedelta(seconds=10)) == {"p-0": []}


def test_rollback_swap_is_recognised() -> None:
    a = {
        "history": [
            op("activate", "v3", 1.0, 1.1),
            op("verify", "v3", 1.2, 1.3, state="failed"),
            op("rollback", "v2", 1.4, 1.5),
        ],
        "lastActivation": {
            "version": "v2",
            "fromVersion": "v3",
            "at": at(1.45),
            "kind": "rollback",
            "operationId": "rollback-v2-1.4",
            "mode": "replace",
            "pauseMs": 0.0,
        },
    }
    broken = swaps_to({"p-0": a}, "v3", T0)["p-0"]
    back = swaps_to({"p-0": a}, "v2", T0)["p-0"]
    assert broken[0].verify_failed_at is not None and broken[0].verified_at is None
    assert (back[0].kind, back[0].from_version, back[0].mode) == ("rollback", "v3", "replace")


def model(**status: Any) -> dict[str, Any]:
    return {"metadata": {"generation": 3}, "status": {"observedGeneration": 3, **status}}


def test_ready_and_rolled_back_predicates() -> None:
    ready = [{"type": "Ready", "status": "True", "reason": "RolloutComplete"}]
    pods = [{"name": f"p-{i}", "version": "v2"} for i in range(3)]
    assert is_ready_on(model(conditions=ready, currentVersion="v2", pods=pods), "v2", 3)
    assert not is_ready_on(model(conditions=ready, currentVersion="v2", pods=pods[:2]), "v2", 3)
    assert not is_ready_on(model(conditions=ready, currentVersion="v1", pods=pods), "v2", 3)
    stale = model(conditions=ready, currentVersion="v2", pods=pods)
    stale["status"]["observedGeneration"] = 2
    assert not is_ready_on(stale, "v2", 3), "a status of an older generation does not count"
    assert not is_ready_on(None, "v2", 3)

    stalled = [
        {"type": "Ready", "status": "False", "reason": "RolledBack"},
        {"type": "Stalled", "status": "True", "reason": "RolledBack"},
    ]
    back = model(conditions=stalled, currentVersion="v2", rollout={"version": "v3", "phase": "RolledBack"})
    assert rolled_back(back, "v3", "v2")
    assert not rolled_back(
        model(conditions=stalled, currentVersion="v2", rollout={"version": "v3", "phase": "RollingBack"}),
        "v3",
        "v2",
    )
    assert not rolled_back(
        model(conditions=ready, currentVersion="v2", rollout={"version": "v3", "phase": "RolledBack"}),
        "v3",
        "v2",
    ), "Ready True after a rollback would tell CI the target rolled out"
    assert condition(back, "Ready")["reason"] == "RolledBack" and condition(back, "Degraded") == {}


def test_answered_none_passes_only_when_the_broken_version_served_nothing() -> None:
    from e2e.checks import answered_none

    assert answered_none({"v1": 10, "v2": 20}, "v3").ok
    failed = answered_none({"v1": 10, "v2": 20, "v3": 4}, "v3")
    assert not failed.ok and "v3 answered 4" in failed.detail


def test_forbidden_outside_a_window() -> None:
    """The apiserver-restart test allows 403s logged while kube-apiserver restarts, and only those."""
    line = (
        "[2026-11-30 05:07:{}] kopf.objects [hotswap-e2e/rerank] APIForbiddenError: "
        "('rerankermodels.hotswap.dev \"rerank\" is forbidden', ...) 403 Forbidden"
    )
    before, inside, after = line.format("40,001"), line.format("48,751"), line.format("55,000")
    unstamped = "kopf.objects 403 Forbidden (no timestamp)"
    start = datetime.datetime(2026, 11, 30, 5, 7, 45)
    end = datetime.datetime(2026, 11, 30, 5, 7, 53)
    assert forbidden_outside([before, inside, after, unstamped], start, end) == [before, after, unstamped]
    assert forbidden_outside([inside], start, end) == []
