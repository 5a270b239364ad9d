"""Recording progress (pure): fold an executed action's outcome into status, derive conditions.

``record`` is called by the reconcile loop as each action finishes (several run at once during the
prefetch), so status shows progress as it happens; ``summarize`` derives the summary fields and the
``Ready`` / ``Progressing`` / ``Degraded`` conditions from the rollout record and the pods' states.
"""

from __future__ import annotations

import datetime
import re
from typing import Any

from hotswap_contract.retry import Backoff

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
    PodFault,
    PodState,
    PodStatus,
    QualityScores,
    RerankerModelSpec,
    RerankerModelStatus,
    RolloutStatus,
    SourceGone,
    Step,
    VersionRef,
)
from .timeutil import iso, parse


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
    failed = r.phase in FAILED_PHASES
    target = status.target_version or r.version
    gate_failed = failure is not None and failure.step is Step.QUALITY
    retrying = r.phase is Phase.HOLDING and r.retry_at is not None  # a failed first install, retried
    # kstatus: Ready only while spec.version is served by every selected pod and nothing moves.
    if not pods:
        put(cond.READY, False, "NoPods", "no running pod matches the selector")
    elif settled and r.phase is Phase.COMPLETE and current is not None and current == r.version:
        put(cond.READY, True, "RolloutComplete", f"all {len(pods)} pod(s) serve {current}")
    elif failed and gate_failed:
        put(cond.READY, False, "QualityGateFailed", f"{target} is not served: {failed_msg}")
    elif retrying:
        put(cond.READY, False, "InstallRetrying", f"{failed_msg}; attempt {r.attempt + 1} at {r.retry_at}")
    elif r.phase is Phase.HOLDING:
        put(cond.READY, False, "RolloutHeld", failed_msg)
    elif failed:
        where = f"every pod is back on {good}" if settled and current == good else f"rolling back to {good}"
        put(cond.READY, False, "RolledBack", f"{target} is not served: {failed_msg}; {where}")
    else:
        reason = "Progressing" if r.phase in ACTIVE_PHASES or moving else "PodsNotSettled"
        put(cond.READY, False, reason, f"{on_target}/{len(pods)} pod(s) on {r.version}")

    reconciling = r.phase in ACTIVE_PHASES or r.phase is Phase.ROLLING_BACK or moving or retrying
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
    elif retrying:
        put(
            cond.PROGRESSING,
            True,
            "InstallRetrying",
            f"attempt {r.attempt + 1} of {r.version} at {r.retry_at}",
        )
    else:
        reason = {Phase.COMPLETE: "RolloutComplete", Phase.ROLLED_BACK: "RolledBack"}.get(
            r.phase, "RolloutHeld"
        )
        put(cond.PROGRESSING, False, reason, "")
    progressing = cond.get_condition(conds, cond.PROGRESSING)
    assert progressing is not None
    put(cond.RECONCILING, reconciling, progressing.reason, progressing.message)

    # kstatus: Stalled while the operator will not retry until the spec changes.
    if failed and gate_failed:
        put(cond.STALLED, True, "QualityGateFailed", failed_msg + "; change the spec to try again")
    elif retrying:
        put(cond.STALLED, False, "InstallRetrying", "")
    elif r.phase is Phase.HOLDING:
        put(cond.STALLED, True, "RolloutHeld", failed_msg + "; change the spec to try again")
    elif failed:
        put(cond.STALLED, True, "RolledBack", failed_msg + "; change the spec to try again")
    else:
        put(cond.STALLED, False, "AsExpected", "")

    gone = status.last_good_unavailable
    if gone is not None and gone.version == good:
        put(
            cond.DEGRADED,
            True,
            "LastGoodUnavailable",
            f"the last-good version {good} is gone from its source ({gone.reason}); a pod that needs it "
            "cannot get it",
        )
    elif failed:
        tail = (
            "; holding (automatic rollback off)" if r.phase is Phase.HOLDING else f"; rolled back to {good}"
        )
        if retrying:
            tail = f"; first install retried at {r.retry_at}"
        put(cond.DEGRADED, True, "QualityGateFailed" if gate_failed else "RolloutFailed", failed_msg + tail)
    elif sick:
        put(cond.DEGRADED, True, "PodFailed", "; ".join(f"{p.name}: {p.message or p.state}" for p in sick))
    else:
        put(cond.DEGRADED, False, "AsExpected", "")

    counts: dict[str, int] = {}
    for p in pods:
        counts[p.version or "none"] = counts.get(p.version or "none", 0) + 1
    serving_text = ", ".join(f"{v} {n}/{len(pods)}" for v, n in sorted(counts.items(), key=lambda kv: -kv[1]))
    return status.model_copy(
        update={
            "current_version": current,
            "last_good_version": good,
            "ready_pods": f"{on_target}/{len(pods)}",
            "serving": serving_text or "no pods",
            "conditions": conds,
        }
    )


def state_since(old: PodStatus | None, state: PodState, stamp: str) -> str:
    """When a pod entered ``state``: kept from ``old`` while the state stays, else ``stamp``."""
    return old.since if old is not None and old.state is state else stamp


def pod_state(
    old: PodStatus | None, name: str, state: PodState, message: str, stamp: str, **fields: Any
) -> PodStatus:
    """A pod's status in ``state``: the one place ``since`` moves (only when the state changes).

    Every other field is kept from ``old`` unless given: ``retryAt`` stays until the pod succeeds a
    step again (so Degraded does not flap while it is retried), ``lastSwap`` until the next swap.
    """
    base = old if old is not None else PodStatus(name=name, since=stamp)
    since = state_since(old, state, stamp)
    return base.model_copy(update={"state": state, "message": message, "since": since, **fields})


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
    old = next((p for p in status.pods if p.name == action.pod), None)
    gone = status.last_good_unavailable
    if action.kind is Kind.EVALUATE:
        r, evs = _quality(r, action, outcome, stamp)
        events.extend(evs)
    if outcome.ok:
        r, (state, message, fields), evs = _advance(spec, r, action, outcome, now)
        events.extend(evs)
        pod = pod_state(old, action.pod, state, message, stamp, retry_at=None, **fields)
        if gone is not None and gone.version == action.version and action.kind is Kind.PREPARE:
            gone = None  # its source holds it again
    else:
        reason = outcome.error or "failed"
        message = f"{outcome.step}: {reason}"
        retry_at = None
        fault = _pod_fault(spec, r, action, outcome, now) if r.phase in ACTIVE_PHASES else None
        good = status.last_good
        if good is not None and action.version == good.version and source_gone(outcome):
            if gone is None or gone.version != good.version:
                events.append(
                    EventSpec(
                        "Warning",
                        "LastGoodUnavailable",
                        f"The last-good version {good.version} is gone from its source "
                        f"({good.source.uri if good.source else 'no source'}): {reason}; pods that need "
                        "it (a new pod booting, a rollback) cannot get it — restore it or roll out a "
                        "new version",
                    )
                )
            gone = SourceGone(version=good.version, reason=reason, pod=action.pod, at=stamp)
        if action.purpose is Purpose.ROLLOUT and fault is not None and fault.retry_at is not None:
            # A transient source error (throttled, timed out): not the version's fault; retried with
            # backoff within podTimeoutSeconds.
            r = r.model_copy(update={"pod_fault": fault, "current": None})
            events.append(
                EventSpec(
                    "Warning",
                    "SourceUnavailable",
                    f"Pod {action.pod}: {outcome.step} {action.version}: {reason} (transient, "
                    f"{fault.count} so far): retrying at {fault.retry_at}",
                )
            )
            message = f"{outcome.step}: {reason} (transient: retrying at {fault.retry_at})"
        elif action.purpose is Purpose.ROLLOUT and fault is not None:
            # A pod fault is not a version fault: the pod is re-planned on the next pass.
            r = r.model_copy(update={"pod_fault": fault, "current": None})
            events.append(
                EventSpec(
                    "Warning",
                    "PodFault",
                    f"Pod {action.pod}: {outcome.step} {action.version}: {reason} (a fault of the pod, "
                    f"{fault.count} so far): re-planning the pod",
                )
            )
            message = f"{outcome.step}: {reason} (pod fault: re-planned)"
        elif action.purpose is Purpose.ROLLOUT and r.phase in ACTIVE_PHASES:
            r, evs, entry = fail_rollout(spec, r, action.pod, outcome.step, reason, stamp, status.last_good)
            events.extend(evs)
            history.append(entry)
        elif action.purpose is Purpose.ROLLOUT:
            # Another pod already failed this rollout (parallel prefetch): note it, roll it back.
            events.append(
                EventSpec(
                    "Warning", "StepFailed", f"Pod {action.pod}: {outcome.step} {action.version}: {reason}"
                )
            )
        else:
            retry_at = iso(now + datetime.timedelta(seconds=failed_pod_retry))
            what = "RollbackFailed" if action.purpose is Purpose.ROLLBACK else "ConvergeFailed"
            events.append(
                EventSpec(
                    "Warning", what, f"Pod {action.pod}: {outcome.step} {action.version} failed: {reason}"
                )
            )
        extra = {"retry_at": retry_at} if retry_at else {}
        pod = pod_state(old, action.pod, PodState.FAILED, message, stamp, **extra)
    ordered = [pod if p.name == action.pod else p for p in status.pods]
    if old is None:
        ordered.append(pod)
    new = status.model_copy(
        update={
            "rollout": r,
            "pods": ordered,
            "history": history[-spec.history_limit :],
            "last_good_unavailable": gone,
        }
    )
    return summarize(new, now=stamp), tuple(events)


# Operation failures that say the pod, not the version, is at fault: a restarted agent or server
# (the staged version gone, the server empty or back on another version), a server not up.
POD_FAULT_TYPES = frozenset(
    {"verify_failed", "not_staged", "not_on_disk", "server_unavailable", "cancelled", "agent_unreachable"}
)
MAX_POD_FAULTS = 3
INSTALL_RETRY_INITIAL = 10.0  # seconds before a failed first install is tried again (doubling)
INSTALL_RETRY_MAX = 300.0


# The agent says ``source_unavailable`` both for a source it cannot reach now (throttled, a 5xx, a
# timeout, a reset connection) and for one that answered for good: the version is not there (a 404, no
# such key, an empty prefix) or access is refused. Since 2026-11-30 the agent says which, in the
# operation's ``sourceFault``; from an agent older than that (a fleet half-way through an upgrade)
# the operator tells them apart by the message, with these patterns.
_SOURCE_GONE = re.compile(
    r"does not exist|answered 404|answered 410|no objects under|NoSuchKey|NoSuchBucket|NotFound|"
    r"404 Client Error|not found",
    re.IGNORECASE,
)
_SOURCE_REFUSED = re.compile(r"answered 40[13]|AccessDenied|Forbidden|Unauthorized|InvalidAccessKey", re.I)
SOURCE_RETRY_INITIAL = 2.0  # seconds before the first retry of a transient source error
SOURCE_RETRY_MAX = 30.0


def source_fault(outcome: Outcome) -> str | None:
    """``transient``, ``gone`` or ``refused`` for a ``source_unavailable`` outcome, else None."""
    if outcome.error_type != "source_unavailable":
        return None
    if outcome.source_fault in ("transient", "gone", "refused"):
        return outcome.source_fault
    if _SOURCE_GONE.search(outcome.error):
        return "gone"
    return "refused" if _SOURCE_REFUSED.search(outcome.error) else "transient"


def source_gone(outcome: Outcome) -> bool:
    """The source answered that it does not hold the version (not a passing trouble)."""
    return source_fault(outcome) == "gone"


def transient_source_error(outcome: Outcome) -> bool:
    """A source error worth retrying: throttling (429, SlowDown), a 5xx, a timeout, a reset."""
    return source_fault(outcome) == "transient"


def backoff_delay(attempt: int, initial: float, maximum: float) -> float:
    """The delay before retry number ``attempt`` (1-based) of the shared capped exponential backoff."""
    backoff = Backoff(initial, maximum)
    delay = backoff.next()
    for _ in range(max(0, attempt - 1)):
        delay = backoff.next()
    return delay


def _source_fault(
    spec: RerankerModelSpec, r: RolloutStatus, action: Action, outcome: Outcome, now: datetime.datetime
) -> PodFault | None:
    """A transient source error's record (the source is shared: one record for every pod), with the
    time of the next try; None once the next try would fall past ``podTimeoutSeconds`` since the
    first error (then the rollout fails as before)."""
    old = r.pod_fault if r.pod_fault is not None and r.pod_fault.retry_at is not None else None
    if old is not None and (parse(old.retry_at) or now) > now:
        return old  # another pod's try in the same round (parallel prefetch): one backoff step a round
    stamp = iso(now)
    since = old.since if old is not None else stamp
    count = (old.count if old is not None else 0) + 1
    at = now + datetime.timedelta(seconds=backoff_delay(count, SOURCE_RETRY_INITIAL, SOURCE_RETRY_MAX))
    if (at - (parse(since) or now)).total_seconds() > spec.rollout.pod_timeout_seconds:
        return None
    return PodFault(
        pod=action.pod,
        step=outcome.step,
        reason=outcome.error or "failed",
        since=since,
        count=count,
        retry_at=iso(at),
    )


def _pod_fault(
    spec: RerankerModelSpec, r: RolloutStatus, action: Action, outcome: Outcome, now: datetime.datetime
) -> PodFault | None:
    """The pod's fault record when ``outcome`` is a pod fault still within its bounds, else None
    (a version fault, or a pod that kept failing: more than MAX_POD_FAULTS times or longer than
    ``podTimeoutSeconds`` since its first fault — then the rollout fails as before)."""
    if action.kind is Kind.PREPARE and transient_source_error(outcome):
        return _source_fault(spec, r, action, outcome, now)
    if outcome.error_type not in POD_FAULT_TYPES or action.kind is Kind.EVALUATE:
        return None
    stamp = iso(now)
    old = r.pod_fault if r.pod_fault is not None and r.pod_fault.pod == action.pod else None
    since = old.since if old is not None else stamp
    count = (old.count if old is not None else 0) + 1
    first = parse(since) or now
    if count > MAX_POD_FAULTS or (now - first).total_seconds() > spec.rollout.pod_timeout_seconds:
        return None
    return PodFault(
        pod=action.pod, step=outcome.step, reason=outcome.error or "failed", since=since, count=count
    )


def _quality(
    r: RolloutStatus, action: Action, outcome: Outcome, stamp: str
) -> tuple[RolloutStatus, list[EventSpec]]:
    """Record the quality gate's scores (passed or not) in the rollout, with an Event."""
    res = outcome.quality
    if not isinstance(res, dict):
        return r, []
    cand, base = res.get("candidate") or {}, res.get("baseline") or {}
    scores = QualityScores(
        version=action.version,
        metric=str(res.get("metric") or (action.quality.metric if action.quality else "")),
        k=res.get("k"),
        candidate=cand.get("score"),
        baseline=base.get("score"),
        baseline_version=base.get("version"),
        delta=res.get("delta"),
        floor=res.get("floor"),
        max_drop=res.get("maxDrop"),
        passed=bool(res.get("passed")) and outcome.ok,
        problems=[str(p) for p in res.get("problems") or []][:5],
        pod=action.pod,
        at=stamp,
    )
    text = describe_quality(scores)
    if scores.passed:
        event = EventSpec("Normal", "QualityGatePassed", text)
    else:
        event = EventSpec("Warning", "QualityGateFailed", text)
    return r.model_copy(update={"quality": scores}), [event]


def describe_quality(q: QualityScores) -> str:
    def num(x: float | None) -> str:
        return "-" if x is None else f"{x:.4f}"

    at_k = f"@{q.k}" if q.k else ""
    base = (
        f"{q.baseline_version or 'current'} {num(q.baseline)}"
        if q.baseline is not None
        else "no current version"
    )
    verdict = "passed" if q.passed else "failed: " + ("; ".join(q.problems) or "below the gate")
    return f"{q.version} {q.metric}{at_k} {num(q.candidate)} vs {base} on pod {q.pod}: {verdict}"


def _advance(
    spec: RerankerModelSpec, r: RolloutStatus, action: Action, outcome: Outcome, now: datetime.datetime
) -> tuple[RolloutStatus, tuple[PodState, str, dict[str, Any]], list[EventSpec]]:
    """What a step that succeeded comes to: the rollout record, the pod's new state, the events."""
    stamp = iso(now)
    pod, version = action.pod, action.version
    rolling = action.purpose is Purpose.ROLLOUT
    if action.kind is Kind.PREPARE:
        if r.pod_fault is not None and r.pod_fault.retry_at is not None and r.pod_fault.pod == pod:
            r = r.model_copy(update={"pod_fault": None})  # the source answers that pod again
        if outcome.digest and r.digest is None and version == r.version:
            r = r.model_copy(update={"digest": outcome.digest})
        what = "Staged and preloaded" if action.needs_stage else "Preloaded"
        digest = f" (digest {outcome.digest[:12]})" if outcome.digest else ""
        return (
            r,
            (PodState.PRELOADED, "", {}),
            [EventSpec("Normal", "Preloaded", f"{what} {version} on pod {pod}{digest}")],
        )
    if action.kind in (Kind.ACTIVATE, Kind.REACTIVATE):
        swap = {**(outcome.swap or {}), "at": stamp}  # the swap's time, set here only
        detail = ", ".join(f"{k} {v}" for k, v in swap.items() if k in ("mode", "pauseMs"))
        if action.purpose is Purpose.ROLLBACK:
            event = EventSpec("Normal", "PodRolledBack", f"Pod {pod} back on {version} ({detail})")
            return r, (PodState.ROLLED_BACK, "", {"last_swap": swap}), [event]
        if rolling:
            r = r.model_copy(update={"current": CurrentStep(pod=pod, step=Step.VERIFY, since=stamp)})
        event = EventSpec("Normal", "Activated", f"Pod {pod} now serves {version} ({detail})")
        return r, (PodState.VERIFYING, "", {"last_swap": swap}), [event]
    if action.kind is Kind.EVALUATE:
        return r.model_copy(update={"current": None}), (PodState.PRELOADED, "quality gate passed", {}), []
    if action.kind is Kind.VERIFY_STAGED:
        if rolling:
            r = r.model_copy(update={"current": CurrentStep(pod=pod, step=Step.ACTIVATE, since=stamp)})
        event = EventSpec("Normal", "StagedVerified", f"Pod {pod}: canary passed on the staged {version}")
        return r, (PodState.ACTIVATING, "canary passed on the staged weights", {}), [event]
    if action.kind is Kind.VERIFY:
        events = [EventSpec("Normal", "Verified", f"Pod {pod} verified on {version}")]
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
    events = [EventSpec("Normal", "SoakPassed", f"Pod {pod} passed its soak on {version}")]
    return _mark_done(spec, r, pod, now), (PodState.READY, "", {}), events


def _mark_done(spec: RerankerModelSpec, r: RolloutStatus, pod: str, now: datetime.datetime) -> RolloutStatus:
    done = [*r.done, pod] if pod not in r.done else list(r.done)
    if r.pod_fault is not None and r.pod_fault.pod == pod:
        r = r.model_copy(update={"pod_fault": None})
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
    # A first install (nothing to roll back to) is tried again after a capped backoff, not held until
    # the spec changes; a quality gate's verdict on the same digest would not change, so it is final.
    retry_at = None
    if last_good is None and step is not Step.QUALITY:
        delay = backoff_delay(r.attempt, INSTALL_RETRY_INITIAL, INSTALL_RETRY_MAX)
        retry_at = iso(
            (parse(stamp) or datetime.datetime.now(datetime.UTC)) + datetime.timedelta(seconds=delay)
        )
    r = r.model_copy(
        update={
            "phase": phase,
            "failure": failure,
            "current": None,
            "next_at": None,
            "finished_at": stamp,
            "retry_at": retry_at,
            "pod_fault": None,
        }
    )
    where = f"pod {pod} " if pod else ""
    then = f"rolling back to {last_good.version}" if automatic and last_good else "holding"
    if retry_at is not None:
        then = f"first install (no last-good version): attempt {r.attempt} failed, retrying at {retry_at}"
    elif not spec.rollback.automatic:
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
        quality=r.quality,
        version=r.version,
        digest=r.digest,
        source=r.source,
        result=result,
        reason=reason,
        started_at=r.started_at,
        finished_at=stamp,
    )
