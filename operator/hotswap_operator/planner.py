"""Pure planning: (spec, status, observed pods) -> the next actions and the new status.

Nothing here does I/O or reads a clock: every input arrives in :class:`PlanInput`, so each decision
is a unit test. ``rollout.py`` observes, calls :func:`plan`, executes the actions, and folds each
result back with :func:`progress.record`.

The agents are the truth. Status only remembers what agents cannot tell: which rollout (spec) is
running, which pods it already verified, where it failed, and history. Because a pod is activated
only while its agent reports another version, and verified before the next one moves, an operator
restarted at any point neither swaps a pod twice nor skips one.
"""

from __future__ import annotations

import dataclasses
import datetime
from collections.abc import Sequence

from .actions import Action, EventSpec, Kind, Outcome, Purpose
from .models import (
    ACTIVE_PHASES,
    FAILED_PHASES,
    CurrentStep,
    HistoryResult,
    Phase,
    PodState,
    PodStatus,
    RerankerModelSpec,
    RerankerModelStatus,
    RolloutStatus,
    SourceGone,
    Step,
    VersionRef,
)
from .observed import PodView
from .progress import fail_rollout, history_entry, pod_state, source_gone, state_since, summarize
from .timeutil import iso, parse, seconds_between

__all__ = ["Plan", "PlanInput", "plan", "rollback_target"]


@dataclasses.dataclass(frozen=True)
class PlanInput:
    spec: RerankerModelSpec
    status: RerankerModelStatus
    pods: Sequence[PodView]
    now: datetime.datetime
    generation: int | None = None
    boot: VersionRef | None = None  # what the boot ConfigMap holds now (None: absent)
    poll_interval: float = 0.5
    resync_interval: float = 30.0


@dataclasses.dataclass(frozen=True)
class Plan:
    status: RerankerModelStatus
    actions: tuple[Action, ...]
    events: tuple[EventSpec, ...]
    requeue_after: float
    boot: VersionRef | None  # what the boot ConfigMap should hold (None: leave it alone)


# ------------------------------------------------------------------------------------ planning


def plan(inp: PlanInput) -> Plan:
    """Decide the next step of one RerankerModel from what is observed now."""
    return _Planner(inp).run()


class _Planner:
    def __init__(self, inp: PlanInput) -> None:
        self.inp = inp
        self.spec = inp.spec
        self.now = iso(inp.now)
        # Only Running pods with an IP take part (not-ready ones among them are waited for); a pod
        # still being scheduled or already terminating joins or leaves the fleet on its own.
        self.pods = sorted((p for p in inp.pods if p.running), key=lambda p: p.name)
        self.old_pods = {p.name: p for p in inp.status.pods}
        self.pod_status: dict[str, PodStatus] = {}
        self.events: list[EventSpec] = []
        self.actions: list[Action] = []
        self.history = list(inp.status.history)
        self.last_good = inp.status.last_good
        self.rollout: RolloutStatus = inp.status.rollout  # type: ignore[assignment]  # set in run()
        self.requeue = inp.resync_interval
        self.converging = False
        self.spec_hash = self.spec.fingerprint()

    # -- driver

    def run(self) -> Plan:
        self._bootstrap_last_good()
        self._select_rollout()
        for pod in self.pods:
            self._set_pod(pod, *self._default_state(pod))
        phase = self.rollout.phase
        if phase is Phase.PREFETCHING:
            self._prefetch()
        if self.rollout.phase is Phase.ACTIVATING:
            self._activate(purpose=Purpose.ROLLOUT)
        elif self.rollout.phase is Phase.COMPLETE:
            self._activate(purpose=Purpose.CONVERGE)
        elif self.rollout.phase in (Phase.ROLLING_BACK, Phase.ROLLED_BACK):
            self._roll_back()
        elif self.rollout.phase is Phase.HOLDING:
            for pod in self.pods:
                if pod.running and pod.agent is not None and pod.active != self._good_version():
                    self._set_pod(
                        pod, PodState.HELD, "held on the failed rollout (automatic rollback is off)"
                    )
        if self.actions:
            self.requeue = 0.0
        return Plan(
            status=self._status(),
            actions=tuple(self.actions),
            events=tuple(self.events),
            requeue_after=max(0.0, self.requeue),
            boot=self._desired_boot(),
        )

    # -- rollout record

    def _bootstrap_last_good(self) -> None:
        """First sight of a resource: the version the pods booted on is the last-good one."""
        if self.last_good is not None or self.inp.status.rollout is not None:
            return
        actives = {p.active for p in self.pods if p.agent is not None}
        boot = self.inp.boot
        if boot is not None and boot.version in actives:
            digest = next(p.agent.active.digest for p in self.pods if p.active == boot.version and p.agent)  # type: ignore[union-attr]
            self.last_good = VersionRef(
                version=boot.version, source=boot.source, digest=digest or boot.digest
            )
        elif len(actives) == 1 and None not in actives:
            version = actives.pop()
            digest = next(p.agent.active.digest for p in self.pods if p.active == version and p.agent)  # type: ignore[union-attr]
            self.last_good = VersionRef(version=version, digest=digest)  # type: ignore[arg-type]

    def _select_rollout(self) -> None:
        old = self.inp.status.rollout
        spec = self.spec
        if old is not None and old.spec_hash == self.spec_hash:
            self.rollout = old
            retry_at = parse(old.retry_at)
            if old.phase is Phase.HOLDING and retry_at is not None and self.last_good is None:
                if retry_at > self.inp.now:
                    self.requeue = min(self.requeue, (retry_at - self.inp.now).total_seconds())
                    return
                self.rollout = self._new_rollout(attempt=old.attempt + 1)
                self._event(
                    "Warning",
                    "InstallRetry",
                    f"Retrying the first install of {spec.version} (attempt {old.attempt + 1}; the last "
                    f"failed: {old.failure.reason if old.failure else 'unknown'})",
                )
            return
        if old is not None and old.phase in ACTIVE_PHASES:
            self._history(old, HistoryResult.SUPERSEDED, f"superseded by a new spec (version {spec.version})")
            self._event(
                "Normal", "Superseded", f"Rollout of {old.version} superseded by a new spec ({spec.version})"
            )
        if (
            old is not None
            and old.phase is Phase.COMPLETE
            and old.version == spec.version
            and old.source == spec.source
        ):
            # Same version and source: only rollout settings changed; the fleet stays verified.
            self.rollout = old.model_copy(update={"spec_hash": self.spec_hash})
            return
        self.rollout = self._new_rollout()
        moving = sum(1 for p in self.pods if p.active != spec.version)
        self._event(
            "Normal",
            "RolloutStarted",
            f"Rolling out {spec.version} to {len(self.pods)} pod(s), {moving} to move"
            + (f" (last good: {self.last_good.version})" if self.last_good else ""),
        )

    def _new_rollout(self, attempt: int = 1) -> RolloutStatus:
        spec = self.spec
        return RolloutStatus(
            version=spec.version,
            spec_hash=self.spec_hash,
            source=spec.source,
            phase=Phase.PREFETCHING if spec.rollout.prefetch else Phase.ACTIVATING,
            started_at=self.now,
            digest=spec.source.sha256,
            attempt=attempt,
        )

    def _source_backoff(self, pod: PodView, action: Action) -> bool:
        """A transient source error is being backed off: no pod stages before its retry time."""
        fault = self.rollout.pod_fault
        retry_at = parse(fault.retry_at) if fault is not None else None
        if not action.needs_stage or fault is None or retry_at is None or retry_at <= self.inp.now:
            return False
        self._set_pod(
            pod,
            PodState.PENDING,
            f"source unavailable ({fault.reason}); retry {fault.count + 1} at {fault.retry_at}",
        )
        self.requeue = min(self.requeue, max(0.1, (retry_at - self.inp.now).total_seconds()))
        return True

    # -- phases

    def _prefetch(self) -> None:
        target = self.rollout.version
        waiting = False
        for pod in self.pods:
            if not pod.operable:
                waiting = True
                self._check_wait_timeout(pod)
                if self.rollout.phase is not Phase.PREFETCHING:
                    return  # it waited too long: the rollout failed
                continue
            if self._digest_conflict(pod):
                return
            action = self._towards(pod, target, self._target_ref(), Purpose.ROLLOUT, prepare_only=True)
            if action is not None and self._source_backoff(pod, action):
                waiting = True
                continue
            if action is not None:
                self.actions.append(action)
                self._set_pod(pod, PodState.STAGING if action.needs_stage else PodState.PRELOADING, "")
        if self.actions or waiting:
            fault = self.rollout.pod_fault
            if self.actions or fault is None or fault.retry_at is None:
                self.requeue = self.inp.poll_interval  # (else: until the source's retry time)
            return
        self.rollout = self.rollout.model_copy(update={"phase": Phase.ACTIVATING})
        self._event(
            "Normal", "Prefetched", f"{target} is staged and preloaded on every pod; swapping one at a time"
        )

    def _activate(self, purpose: Purpose) -> None:
        """One pod at a time, in name order: move it, verify it, soak it, then the next."""
        done = self._still_done()
        for pod in self.pods:
            if pod.name in done:
                self._set_pod(pod, PodState.READY, "")
                continue
            if purpose is Purpose.CONVERGE and (not pod.operable or self._retry_later(pod)):
                continue  # a settled version never waits on a sick pod; it is reported
            self._next_step(pod, purpose)
            return
        if purpose is Purpose.CONVERGE:
            return
        if not self.pods:
            self.requeue = self.inp.resync_interval
            return
        self._complete()

    def _still_done(self) -> list[str]:
        """The pods this rollout finished that still serve its version (a restarted one moves again)."""
        r = self.rollout
        done = [n for n in r.done if any(p.name == n and p.active == r.version for p in self.pods)]
        if done != r.done:
            self.rollout = r.model_copy(update={"done": done})
        return done

    def _next_step(self, pod: PodView, purpose: Purpose) -> None:
        """The first pod not done: wait for it, pause before it, or move, verify or soak it."""
        if not pod.operable:  # a rollout waits for it (bounded by the pod timeout)
            self._check_wait_timeout(pod)
            self.requeue = self.inp.poll_interval
            return
        if self._digest_conflict(pod) or self._pausing(pod, purpose):
            return
        self.converging = purpose is Purpose.CONVERGE
        current = self.rollout.current
        if pod.active != self.rollout.version:
            self._move(pod, purpose)
        elif (
            purpose is Purpose.ROLLOUT
            and current is not None
            and current.pod == pod.name
            and current.step is Step.SOAK
        ):
            self._soak_or_wait(pod, current)
        else:
            self._set_pod(pod, PodState.VERIFYING, "")
            self.actions.append(self._verify(pod, purpose))

    def _pausing(self, pod: PodView, purpose: Purpose) -> bool:
        """A rollout's pause between two pods (``pauseSeconds``) is not over yet."""
        next_at = parse(self.rollout.next_at)
        if purpose is not Purpose.ROLLOUT or next_at is None or next_at <= self.inp.now:
            return False
        self._set_pod(pod, PodState.PENDING, f"pausing until {self.rollout.next_at}")
        self.requeue = min((next_at - self.inp.now).total_seconds(), self.inp.resync_interval)
        return True

    def _move(self, pod: PodView, purpose: Purpose) -> None:
        """Bring the pod towards the target: prepare it, or swap it and verify it in the same round."""
        action = self._towards(pod, self.rollout.version, self._target_ref(), purpose)
        if action is None:  # no way to get the version (no source): reported in _towards
            return
        if self._source_backoff(pod, action):
            return
        if action.kind in (Kind.ACTIVATE, Kind.REACTIVATE) and self._quality_pending(purpose):
            self._evaluate(pod)
            return
        swapping = action.kind in (Kind.ACTIVATE, Kind.REACTIVATE)
        if action.kind is Kind.ACTIVATE:
            # Verify before exposure: the canary scored with the staged weights inside the pod's
            # server; a failure ends the chain before the activation, so the version never serves.
            self.actions.append(self._verify(pod, purpose, staged=True))
        self.actions.append(action)
        if swapping:
            self.actions.append(self._verify(pod, purpose))
        self._set_pod(pod, PodState.ACTIVATING if swapping else PodState.STAGING, "")
        if purpose is Purpose.ROLLOUT:
            self.rollout = self.rollout.model_copy(
                update={"current": CurrentStep(pod=pod.name, step=action.step, since=self.now)}
            )

    def _quality_pending(self, purpose: Purpose) -> bool:
        """The spec has a quality gate this rollout has not passed yet (evaluated once per rollout:
        the digest makes every pod's weights identical)."""
        gate = self.spec.rollout.quality
        q = self.rollout.quality
        return (
            purpose is Purpose.ROLLOUT
            and gate is not None
            and (q is None or q.version != self.rollout.version)
        )

    def _evaluate(self, pod: PodView) -> None:
        """The quality gate on this pod's staged weights, before any pod is activated."""
        self.actions.append(
            Action(
                kind=Kind.EVALUATE,
                purpose=Purpose.ROLLOUT,
                pod=pod.name,
                ip=pod.ip or "",
                version=self.rollout.version,
                spec_hash=self.spec_hash,
                quality=self.spec.rollout.quality,
                timeout=float(self.spec.rollout.pod_timeout_seconds),
            )
        )
        self._set_pod(pod, PodState.VERIFYING, "quality gate: scoring the labelled set")
        self.rollout = self.rollout.model_copy(
            update={"current": CurrentStep(pod=pod.name, step=Step.QUALITY, since=self.now)}
        )

    def _soak_or_wait(self, pod: PodView, current: CurrentStep) -> None:
        """A verified pod soaks: wait out ``soakSeconds``, then check its error rate."""
        left = self.spec.rollout.analysis.soak_seconds - seconds_between(current.since, self.inp.now)
        if left > 0:
            self._set_pod(pod, PodState.SOAKING, f"soaking, {left:.0f}s left")
            self.requeue = min(left, self.inp.resync_interval)
            return
        self._set_pod(pod, PodState.SOAKING, "checking the error rate")
        self.actions.append(self._soak(pod, current))

    def _complete(self) -> None:
        r = self.rollout
        digest = r.digest or next(
            (p.agent.active.digest for p in self.pods if p.agent and p.agent.active), None
        )
        self.last_good = VersionRef(version=r.version, source=r.source, digest=digest)
        self.rollout = r.model_copy(
            update={
                "phase": Phase.COMPLETE,
                "finished_at": self.now,
                "current": None,
                "next_at": None,
                "digest": digest,
            }
        )
        self._history(self.rollout, HistoryResult.SUCCEEDED, f"{len(self.pods)} pod(s) moved and verified")
        took = seconds_between(r.started_at, self.inp.now)
        self._event(
            "Normal", "RolloutSucceeded", f"{r.version} serves on all {len(self.pods)} pod(s) ({took:.1f}s)"
        )

    def _roll_back(self) -> None:
        good = self.last_good
        if good is None:
            self.rollout = self.rollout.model_copy(update={"phase": Phase.HOLDING})
            self._event("Warning", "NoLastGood", "No last-good version to roll back to: holding")
            return
        moving = False
        for pod in self.pods:
            if pod.active == good.version:
                continue
            if not pod.operable:
                if pod.running:
                    moving = True  # it comes back on the boot file (last-good) or is moved when it can be
                continue
            if self._retry_later(pod):
                moving = True
                continue
            action = self._towards(pod, good.version, good, Purpose.ROLLBACK)
            if action is not None:
                moving = True
                self.actions.append(action)
                self._set_pod(pod, PodState.ROLLING_BACK, f"back to {good.version}")
        if moving:
            self.requeue = self.inp.poll_interval
            self.converging = self.rollout.phase is Phase.ROLLED_BACK
            return
        if self.rollout.phase is Phase.ROLLING_BACK:
            self.rollout = self.rollout.model_copy(
                update={"phase": Phase.ROLLED_BACK, "finished_at": self.now}
            )
            self._event("Normal", "RolledBack", f"Every pod is back on {good.version}")

    # -- per-pod helpers

    def _towards(
        self, pod: PodView, version: str, ref: VersionRef, purpose: Purpose, *, prepare_only: bool = False
    ) -> Action | None:
        """The next operation that brings ``pod`` closer to serving ``version`` (None: nothing/blocked)."""
        agent = pod.agent
        assert agent is not None
        base = dict(pod=pod.name, ip=pod.ip or "", version=version, spec_hash=self.spec_hash, purpose=purpose)
        timeout = float(self.spec.rollout.pod_timeout_seconds)
        if agent.active_version == version:
            return None
        if (
            agent.previous is not None
            and agent.previous.version == version
            and _same(agent.previous.digest, ref.digest)
        ):
            return None if prepare_only else Action(kind=Kind.REACTIVATE, timeout=timeout, **base)  # type: ignore[arg-type]
        if (
            agent.staged is not None
            and agent.staged.version == version
            and _same(agent.staged.digest, ref.digest)
        ):
            return None if prepare_only else Action(kind=Kind.ACTIVATE, timeout=timeout, **base)  # type: ignore[arg-type]
        on_disk = agent.has_on_disk(version) and _same(agent.disk_digest(version), ref.digest)
        if not on_disk and ref.source is None:
            self._set_pod(pod, PodState.FAILED, f"{version} is not on the pod and no source is known for it")
            return None
        return Action(kind=Kind.PREPARE, needs_stage=not on_disk, source=ref.source, timeout=timeout, **base)  # type: ignore[arg-type]

    def _verify(self, pod: PodView, purpose: Purpose, *, staged: bool = False) -> Action:
        rollout_spec = self.spec.rollout
        return Action(
            kind=Kind.VERIFY_STAGED if staged else Kind.VERIFY,
            purpose=purpose,
            pod=pod.name,
            ip=pod.ip or "",
            version=self.rollout.version,
            spec_hash=self.spec_hash,
            canary=tuple(rollout_spec.canary),
            sample_metrics=not staged
            and purpose is Purpose.ROLLOUT
            and rollout_spec.analysis.soak_seconds > 0,
            timeout=float(rollout_spec.pod_timeout_seconds),
        )

    def _soak(self, pod: PodView, current: CurrentStep) -> Action:
        baseline = None
        if current.baseline_requests is not None and current.baseline_errors is not None:
            baseline = (current.baseline_requests, current.baseline_errors)
        return Action(
            kind=Kind.SOAK,
            purpose=Purpose.ROLLOUT,
            pod=pod.name,
            ip=pod.ip or "",
            version=self.rollout.version,
            spec_hash=self.spec_hash,
            baseline=baseline,
            max_error_rate=self.spec.rollout.analysis.max_error_rate,
            timeout=float(self.spec.rollout.pod_timeout_seconds),
        )

    def _target_ref(self) -> VersionRef:
        r = self.rollout
        return VersionRef(version=r.version, source=r.source, digest=r.digest)

    def _good_version(self) -> str | None:
        return self.last_good.version if self.last_good else None

    def _digest_conflict(self, pod: PodView) -> bool:
        """A pod whose copy of the target has another digest than the rollout's fails it."""
        r = self.rollout
        agent = pod.agent
        if agent is None or r.phase not in ACTIVE_PHASES:
            return False
        seen = [i.digest for i in (agent.active, agent.staged) if i is not None and i.version == r.version]
        seen.append(agent.disk_digest(r.version))
        for digest in seen:
            if digest is None:
                continue
            if r.digest is None:
                self.rollout = r = r.model_copy(update={"digest": digest})
            elif digest != r.digest:
                self._fail(
                    pod.name,
                    Step.STAGE,
                    f"digest mismatch: the pod has {digest[:12]}, expected {r.digest[:12]}",
                )
                return True
        return False

    def _check_wait_timeout(self, pod: PodView) -> None:
        state, message = self._default_state(pod)
        since = state_since(self.old_pods.get(pod.name), state, self.now)
        started = parse(self.rollout.started_at)
        if started is not None and (parse(since) or started) < started:
            since = self.rollout.started_at  # the clock starts with the rollout, not with the pod's trouble
        waited = seconds_between(since, self.inp.now)
        limit = self.spec.rollout.pod_timeout_seconds
        if waited > limit:
            self._fail(pod.name, Step.WAIT_READY, f"not ready within {limit}s: {message}")
        else:
            self.requeue = self.inp.poll_interval

    def _retry_later(self, pod: PodView) -> bool:
        old = self.old_pods.get(pod.name)
        retry_at = parse(old.retry_at) if old is not None else None
        if retry_at is not None and retry_at > self.inp.now:
            self._set_pod(pod, PodState.FAILED, old.message if old else "")
            self.requeue = min(self.requeue, (retry_at - self.inp.now).total_seconds())
            return True
        return False

    def _fail(self, pod: str | None, step: Step, reason: str) -> None:
        self.rollout, events, entry = fail_rollout(
            self.spec, self.rollout, pod, step, reason, self.now, self.last_good
        )
        self.events.extend(events)
        self.history.append(entry)
        self.actions.clear()
        if pod is not None and pod in self.pod_status:
            self.pod_status[pod] = pod_state(self.pod_status[pod], pod, PodState.FAILED, reason, self.now)
        self.requeue = 0.0

    # -- status assembly

    def _default_state(self, pod: PodView) -> tuple[PodState, str]:
        if not pod.running:
            why = (
                "being deleted"
                if pod.deleting
                else f"phase {pod.phase or 'unknown'}" + ("" if pod.ip else ", no IP")
            )
            return PodState.NOT_READY, why
        if pod.agent is None:
            return PodState.UNREACHABLE, pod.agent_error or "agent does not answer"
        if not pod.agent.server_reachable:
            return PodState.NOT_READY, "its server is not up yet (the agent cannot reach it)"
        if pod.agent.busy:
            op = pod.agent.operation
            assert op is not None
            return PodState.BUSY, f"agent runs {op.kind} {op.version or ''}".rstrip()
        if not pod.operable:
            return PodState.NOT_READY, "pod not ready"
        goal = self.rollout.version if self.rollout.phase not in FAILED_PHASES else self._good_version()
        if pod.active == goal:
            return PodState.READY, ""
        return PodState.PENDING, f"serves {pod.active or 'nothing'}"

    def _set_pod(self, pod: PodView, state: PodState, message: str) -> None:
        """Record a pod's state as observed now (``since`` and ``retryAt``: see progress.pod_state)."""
        active = pod.agent.active if pod.agent else None
        self.pod_status[pod.name] = pod_state(
            self.old_pods.get(pod.name),
            pod.name,
            state,
            message,
            self.now,
            ip=pod.ip,
            version=active.version if active else None,
            digest=active.digest if active else None,
        )

    def _history(self, r: RolloutStatus, result: HistoryResult, reason: str) -> None:
        self.history.append(history_entry(r, result, reason, self.now))

    def _event(self, type_: str, reason: str, message: str) -> None:
        self.events.append(EventSpec(type_, reason, message))

    def _desired_boot(self) -> VersionRef | None:
        if self.last_good is not None:
            return self.last_good
        if self.inp.boot is None:
            return VersionRef(
                version=self.spec.version, source=self.spec.source, digest=self.spec.source.sha256
            )
        return None

    def _last_good_unavailable(self) -> SourceGone | None:
        """Kept while it names the current last-good version; also read off a pod whose agent's boot
        keeps failing to stage it with a not-found kind of error (a new pod booting)."""
        gone = self.inp.status.last_good_unavailable
        good = self.last_good
        if good is None:
            return None
        if gone is not None and gone.version != good.version:
            gone = None
        for pod in self.pods:
            boot = pod.agent.boot if pod.agent is not None else {}
            error = str(boot.get("lastError") or "")
            if "lastSourceFault" in boot:  # an agent that says it: null is "not a source error"
                not_there = boot["lastSourceFault"] == "gone"
            else:  # an agent from before it: the message alone (boot status has no error type)
                not_there = source_gone(
                    Outcome(ok=False, step=Step.STAGE, error=error, error_type="source_unavailable")
                )
            if boot.get("state") == "retrying" and boot.get("version") == good.version and not_there:
                if gone is None:
                    self._event(
                        "Warning",
                        "LastGoodUnavailable",
                        f"Pod {pod.name} cannot boot on the last-good version {good.version}: gone from "
                        f"its source ({error}); restore it or roll out a new version",
                    )
                    gone = SourceGone(version=good.version, reason=error, pod=pod.name, at=self.now)
                break
        return gone

    def _status(self) -> RerankerModelStatus:
        base = RerankerModelStatus(
            last_good_unavailable=self._last_good_unavailable(),
            observed_generation=self.inp.generation,
            target_version=self.spec.version,
            last_good=self.last_good,
            pods=[self.pod_status[p.name] for p in self.pods],
            rollout=self.rollout,
            history=self.history[-self.spec.history_limit :],
            conditions=list(self.inp.status.conditions),
        )
        return summarize(base, now=self.now, moving=self.converging or bool(self.actions))


# ------------------------------------------------------------------------------ manual rollback


def rollback_target(spec: RerankerModelSpec, status: RerankerModelStatus, request: str) -> VersionRef | None:
    """Which version a ``hotswap.dev/rollback`` annotation asks for (None: nothing to go back to).

    ``true`` / ``last-good``: undo the latest change, like ``kubectl rollout undo`` — the last-good
    version, or when the current version *is* last-good, the good version before it. A version id:
    that version, if it once rolled out successfully. Only versions with a known source qualify.
    """
    request = request.strip().lower()
    known = [status.last_good] if status.last_good else []
    known += [
        VersionRef(version=h.version, source=h.source, digest=h.digest)
        for h in reversed(status.history)
        if h.result is HistoryResult.SUCCEEDED
    ]
    for ref in known:
        if ref.source is None:
            continue
        if request in ("true", "last-good") and ref.version != spec.version:
            return ref
        if request == ref.version:
            return ref
    return None


def _same(seen: str | None, wanted: str | None) -> bool:
    """Digests agree, or one side does not know it."""
    return seen is None or wanted is None or seen == wanted
