"""Recording progress (pure): fold an executed action's outcome into status, derive conditions.

``record`` is called by the reconcile loop as each action finishes (several run at once during the
prefetch), so status shows progress as it happens; ``summarize`` derives the summary fields and the
``Ready`` / ``Progressing`` / ``Degraded`` conditions from the rollout record and the pods' states.
"""

from __future__ import annotations

import dataclasses
import datetime
from typing import Any

from . import conditions as cond
from .actions import Action, EventSpec, Kind, Outcome, Purpose
from .models import (
    ACTIVE_PHASES,
    FAILED_PHASES,
    CurrentStep,
    Failure,
    HistoryEntry,
    HistoryResult,
    Phase,
    PodState,
    PodStatus,
    RerankerModelSpec,
    RerankerModelStatus,
    RolloutStatus,
    Step,
    VersionRef,
)
from .timeutil import iso


def summarize(status: RerankerModelStatus, *, now: str, moving: bool = False) -> RerankerModelStatus:
    """Derive the summary fields and the conditions from the rollout record and the pods' states.

    ``moving``: pods are being moved outside a rollout (convergence, a rollback in steady state).
    """
    r = status.rollout
    assert r is not None
    gen = status.observed_generation
    pods = status.pods
    versions = {p.version for p in pods}
    all_agree = bool(pods) and len(versions) == 1 and all(p.state is not PodState.UNREACHABLE for p in pods)
    current = next(iter(versions)) if all_agree else None
    on_target = sum(1 for p in pods if p.version == r.version)
    good = status.last_good.version if status.last_good else None
    conds = list(status.conditions)

    def put(type_: str, value: bool, reason: str, message: str) -> None:
        nonlocal conds
        conds = cond.set_condition(conds, type_, value, reason, message, now=now, generation=gen)

    failure = r.failure
    failed_msg = (
        f"{r.version} failed on pod {failure.pod or '-'} at step {failure.step}: {failure.reason}"
        if failure
        else ""
    )
    sick = [p for p in pods if p.state in (PodState.FAILED, PodState.UNREACHABLE) or p.retry_at]
    settled = r.phase in (Phase.COMPLETE, Phase.ROLLED_BACK) and not moving
    serving = r.version if r.phase is Phase.COMPLETE else good
    if not pods:
        put(cond.READY, False, "NoPods", "no running pod matches the selector")
    elif settled and current is not None and current == serving:
        reason = "RolloutComplete" if r.phase is Phase.COMPLETE else "RolledBack"
        put(cond.READY, True, reason, f"all {len(pods)} pod(s) serve {current}")
    elif r.phase is Phase.HOLDING:
        put(cond.READY, False, "RolloutHeld", failed_msg)
    else:
        reason = "Progressing" if r.phase in ACTIVE_PHASES else "PodsNotSettled"
        put(cond.READY, False, reason, f"{on_target}/{len(pods)} pod(s) on {r.version}")

    if r.phase in ACTIVE_PHASES:
        put(
            cond.PROGRESSING,
            True,
            r.phase.value,
            f"{r.phase.value} {r.version}: {len(r.done)}/{len(pods)} pod(s) done",
        )
    elif r.phase is Phase.ROLLING_BACK or moving:
        reason = "RollingBack" if r.phase is Phase.ROLLING_BACK else "Converging"
        put(cond.PROGRESSING, True, reason, f"moving pods to {serving}")
    else:
        reason = {Phase.COMPLETE: "RolloutComplete", Phase.ROLLED_BACK: "RolledBack"}.get(
            r.phase, "RolloutHeld"
        )
        put(cond.PROGRESSING, False, reason, "")

    if r.phase in FAILED_PHASES:
        tail = (
            "; holding (automatic rollback off)" if r.phase is Phase.HOLDING else f"; rolled back to {good}"
        )
        put(cond.DEGRADED, True, "RolloutFailed", failed_msg + tail)
    elif sick:
        put(cond.DEGRADED, True, "PodFailed", "; ".join(f"{p.name}: {p.message or p.state}" for p in sick))
    else:
        put(cond.DEGRADED, False, "AsExpected", "")

    return status.model_copy(
        update={
            "current_version": current,
            "last_good_version": good,
            "ready_pods": f"{on_target}/{len(pods)}",
            "conditions": conds,
        }
    )


def record(
    status: RerankerModelStatus,
    spec: RerankerModelSpec,
    action: Action,
    outcome: Outcome,
    now: datetime.datetime,
    *,
    failed_pod_retry: float = 30.0,
) -> tuple[RerankerModelStatus, tuple[EventSpec, ...]]:
    """Fold the outcome of one executed action into status (pure). Stale results are dropped."""
    r = status.rollout
    if r is None or r.spec_hash != action.spec_hash:
        return status, ()  # superseded while it ran: no promotion on an old spec's checks
    stamp = iso(now)
    events: list[EventSpec] = []
    history = list(status.history)
    last_good = status.last_good
    pods = {p.name: p for p in status.pods}
    pod = pods.get(action.pod) or PodStatus(name=action.pod, since=stamp)

    def set_pod(state: PodState, message: str, **extra: Any) -> None:
        nonlocal pod
        since = pod.since if pod.state is state else stamp
        pod = pod.model_copy(update={"state": state, "message": message, "since": since, **extra})
        pods[action.pod] = pod

    if outcome.swap is not None and action.then_verify:
        swapped = _swap_record(outcome, stamp)
        events.append(
            EventSpec(
                "Normal",
                "Activated",
                f"Pod {action.pod} now serves {action.version} ({_swap_detail(swapped)})",
            )
        )
        pod = pod.model_copy(update={"last_swap": swapped})
        pods[action.pod] = pod
    if not outcome.ok:
        reason = outcome.error or "failed"
        if action.purpose is Purpose.ROLLOUT and r.phase in ACTIVE_PHASES:
            r, evs, entry = fail_rollout(spec, r, action.pod, outcome.step, reason, stamp, last_good)
            events.extend(evs)
            history.append(entry)
            set_pod(PodState.FAILED, f"{outcome.step}: {reason}")
        elif action.purpose is Purpose.ROLLOUT:
            # Another pod already failed this rollout (parallel prefetch): note it, roll it back.
            set_pod(PodState.FAILED, f"{outcome.step}: {reason}")
            events.append(
                EventSpec(
                    "Warning", "StepFailed", f"Pod {action.pod}: {outcome.step} {action.version}: {reason}"
                )
            )
        else:
            retry_at = iso(now + datetime.timedelta(seconds=failed_pod_retry))
            set_pod(PodState.FAILED, f"{outcome.step}: {reason}", retry_at=retry_at)
            what = "RollbackFailed" if action.purpose is Purpose.ROLLBACK else "ConvergeFailed"
            events.append(
                EventSpec(
                    "Warning", what, f"Pod {action.pod}: {outcome.step} {action.version} failed: {reason}"
                )
            )
    else:
        r, pod_update, evs = _advance(spec, r, action, outcome, now)
        events.extend(evs)
        if pod_update is not None:
            state, message, extra = pod_update
            set_pod(state, message, retry_at=None, **extra)
    ordered = [pods[p.name] for p in status.pods] + (
        [pods[action.pod]] if action.pod not in {p.name for p in status.pods} else []
    )
    new = status.model_copy(update={"rollout": r, "pods": ordered, "history": history[-spec.history_limit :]})
    return summarize(new, now=stamp), tuple(events)


def _advance(
    spec: RerankerModelSpec, r: RolloutStatus, action: Action, outcome: Outcome, now: datetime.datetime
) -> tuple[RolloutStatus, tuple[PodState, str, dict[str, Any]] | None, list[EventSpec]]:
    stamp = iso(now)
    pod, version = action.pod, action.version
    events: list[EventSpec] = []
    rolling = action.purpose is Purpose.ROLLOUT
    if action.kind is Kind.PREPARE:
        if outcome.digest and r.digest is None and version == r.version:
            r = r.model_copy(update={"digest": outcome.digest})
        what = "Staged and preloaded" if action.needs_stage else "Preloaded"
        digest = f" (digest {outcome.digest[:12]})" if outcome.digest else ""
        events.append(EventSpec("Normal", "Preloaded", f"{what} {version} on pod {pod}{digest}"))
        return r, (PodState.PRELOADED, "", {}), events
    if action.kind in (Kind.ACTIVATE, Kind.REACTIVATE) and action.then_verify:
        # The Activated event and lastSwap were recorded by record(); go on with the verify part.
        return _advance(spec, r, dataclasses.replace(action, kind=Kind.VERIFY), outcome, now)
    if action.kind in (Kind.ACTIVATE, Kind.REACTIVATE):
        swap = _swap_record(outcome, stamp)
        detail = _swap_detail(swap)
        if action.purpose is Purpose.ROLLBACK:
            events.append(EventSpec("Normal", "PodRolledBack", f"Pod {pod} back on {version} ({detail})"))
            return r, (PodState.ROLLED_BACK, "", {"last_swap": swap}), events
        events.append(EventSpec("Normal", "Activated", f"Pod {pod} now serves {version} ({detail})"))
        if rolling:
            r = r.model_copy(update={"current": CurrentStep(pod=pod, step=Step.VERIFY, since=stamp)})
        return r, (PodState.VERIFYING, "", {"last_swap": swap}), events
    if action.kind is Kind.VERIFY:
        events.append(EventSpec("Normal", "Verified", f"Pod {pod} verified on {version}"))
        soak = spec.rollout.analysis.soak_seconds
        if rolling and soak > 0:
            req, err = outcome.metrics if outcome.metrics else (None, None)
            current = CurrentStep(
                pod=pod, step=Step.SOAK, since=stamp, baseline_requests=req, baseline_errors=err
            )
            return (
                r.model_copy(update={"current": current}),
                (PodState.SOAKING, f"soaking {soak}s", {}),
                events,
            )
        return _mark_done(spec, r, pod, now), (PodState.READY, "", {}), events
    # SOAK passed
    events.append(EventSpec("Normal", "SoakPassed", f"Pod {pod} passed its soak on {version}"))
    return _mark_done(spec, r, pod, now), (PodState.READY, "", {}), events


def _swap_record(outcome: Outcome, stamp: str) -> dict[str, Any]:
    swap = dict(outcome.swap or {})
    swap.setdefault("at", stamp)
    return swap


def _swap_detail(swap: dict[str, Any]) -> str:
    return ", ".join(f"{k} {v}" for k, v in swap.items() if k in ("mode", "pauseMs"))


def _mark_done(spec: RerankerModelSpec, r: RolloutStatus, pod: str, now: datetime.datetime) -> RolloutStatus:
    done = [*r.done, pod] if pod not in r.done else list(r.done)
    pause = spec.rollout.pause_seconds
    next_at = iso(now + datetime.timedelta(seconds=pause)) if pause and r.phase is Phase.ACTIVATING else None
    return r.model_copy(update={"done": done, "current": None, "next_at": next_at})


def fail_rollout(
    spec: RerankerModelSpec,
    r: RolloutStatus,
    pod: str | None,
    step: Step,
    reason: str,
    stamp: str,
    last_good: VersionRef | None,
) -> tuple[RolloutStatus, list[EventSpec], HistoryEntry]:
    automatic = spec.rollback.automatic and last_good is not None
    failure = Failure(pod=pod, step=step, reason=reason, at=stamp)
    phase = Phase.ROLLING_BACK if automatic else Phase.HOLDING
    r = r.model_copy(
        update={"phase": phase, "failure": failure, "current": None, "next_at": None, "finished_at": stamp}
    )
    where = f"pod {pod} " if pod else ""
    then = f"rolling back to {last_good.version}" if automatic and last_good else "holding"
    if not spec.rollback.automatic:
        then = "holding (automatic rollback is off)"
    elif last_good is None:
        then = "holding (no last-good version)"
    events = [
        EventSpec("Warning", "RolloutFailed", f"{r.version} failed on {where}at {step}: {reason}; {then}")
    ]
    result = HistoryResult.ROLLED_BACK if automatic else HistoryResult.FAILED
    return r, events, history_entry(r, result, f"{where}at {step}: {reason}", stamp)


def history_entry(r: RolloutStatus, result: HistoryResult, reason: str, stamp: str) -> HistoryEntry:
    return HistoryEntry(
        version=r.version,
        digest=r.digest,
        source=r.source,
        result=result,
        reason=reason,
        started_at=r.started_at,
        finished_at=stamp,
    )
