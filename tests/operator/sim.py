"""A simulated fleet for driving the pure planner: agents that obey the contract, a fake clock.

``Sim.step()`` is one reconcile iteration without I/O: plan, apply every action to the simulated
agents, record each outcome. Failures are scripted per (pod, step, version); ``crash_after`` drops
the outcome of one action (the operator died between the agent acting and status being patched).
"""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
from typing import Any

from hotswap_contract.admin import VersionRecord
from hotswap_operator.actions import Action, EventSpec, Kind, Outcome
from hotswap_operator.models import Phase, RerankerModelSpec, RerankerModelStatus, Step, VersionRef
from hotswap_operator.observed import PodView
from hotswap_operator.planner import Plan, PlanInput, plan
from hotswap_operator.progress import record

from devtools.fakes.slots import PodSlots

T0 = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)


def digest_of(version: str) -> str:
    return hashlib.sha256(version.encode()).hexdigest()


def make_spec(version: str = "v2", **overrides: Any) -> RerankerModelSpec:
    raw: dict[str, Any] = {
        "selector": {"matchLabels": {"app": "reranker"}},
        "version": version,
        "source": {"uri": f"file:///registry/{version}"},
    }
    for key, value in overrides.items():
        raw[key] = value
    return RerankerModelSpec.model_validate(raw)


class SimPod:
    """One pod: what it holds and the rules for changing it are the shared fake's
    (:class:`devtools.fakes.slots.PodSlots`, as the local cluster's fake pod); the rest is scripting."""

    def __init__(
        self,
        name: str,
        active: str | None = None,
        on_disk: dict[str, str] | None = None,
        *,
        ready: bool = True,
        running: bool = True,
        reachable: bool = True,
        busy: bool = False,
    ) -> None:
        self.name = name
        self.slots = PodSlots()
        for version, digest in (on_disk or {}).items():
            self.put_on_disk(version, digest)
        self.active = active
        self.ready, self.running, self.reachable, self.busy = ready, running, reachable, busy
        self.boot: dict[str, Any] = {}  # the agent's status.boot
        self.activations: list[tuple[str, int]] = []
        self.staged_verified: list[str] = []

    def __repr__(self) -> str:
        return f"SimPod({self.name}: active={self.active} previous={self.previous} staged={self.staged})"

    def _record(self, version: str | None) -> VersionRecord | None:
        if version is None:
            return None
        known = self.slots.on_disk.get(version)
        return known or VersionRecord(version=version, digest=digest_of(version))

    # The slots by version id, as tests read and set them ("someone swapped it by hand").
    @property
    def active(self) -> str | None:
        return self.slots.active

    @active.setter
    def active(self, version: str | None) -> None:
        self.slots.server.active = self._record(version)

    @property
    def previous(self) -> str | None:
        return self.slots.previous

    @previous.setter
    def previous(self, version: str | None) -> None:
        self.slots.server.previous = self._record(version)

    @property
    def staged(self) -> str | None:
        return self.slots.staged

    @staged.setter
    def staged(self, version: str | None) -> None:
        self.slots.server.staged = self._record(version)

    @property
    def on_disk(self) -> dict[str, str | None]:
        return {v: r.digest for v, r in self.slots.on_disk.items()}

    def put_on_disk(self, version: str, digest: str) -> None:
        """A version folder with these contents, whatever was there (a hand-placed folder)."""
        self.slots.on_disk[version] = VersionRecord(version=version, digest=digest)

    def view(self) -> PodView:
        agent = None
        if self.running and self.reachable:
            operation = {"kind": "stage", "state": "running"} if self.busy else None
            agent = self.slots.agent_status(self.name, operation=operation, boot=self.boot)
        serving_ready = self.ready and (self.active is not None)
        return PodView(
            name=self.name,
            ip="127.0.0.9" if self.running else None,
            phase="Running" if self.running else "Pending",
            ready=serving_ready,
            agent=agent,
            agent_error=None if agent or not self.running else "connection refused",
        )


@dataclasses.dataclass
class Sim:
    spec: RerankerModelSpec
    pods: dict[str, SimPod]
    status: RerankerModelStatus = dataclasses.field(default_factory=RerankerModelStatus)
    now: datetime.datetime = T0
    boot: VersionRef | None = None
    failures: dict[tuple[str, Step, str], str] = dataclasses.field(default_factory=dict)
    events: list[EventSpec] = dataclasses.field(default_factory=list)
    actions: list[Action] = dataclasses.field(default_factory=list)
    clock: int = 0  # increments on every activation: a global order
    crash_after: int | None = None  # drop the outcome of the Nth action from now
    last_plan: Plan | None = None
    evaluations: list[tuple[str, str]] = dataclasses.field(default_factory=list)
    # (pod, step, version) -> (error_type, the pod restarts: staged lost, back on its previous version)
    pod_faults: dict[tuple[str, Step, str], tuple[str, bool]] = dataclasses.field(default_factory=dict)
    # (pod or "*", version) -> the agent's source_unavailable messages, one consumed per stage attempt:
    # a message alone is what an agent from before sourceFault said; (message, fault) a newer one
    source_errors: dict[tuple[str, str], list[str | tuple[str, str]]] = dataclasses.field(
        default_factory=dict
    )

    def step(self) -> Plan:
        p = plan(
            PlanInput(
                spec=self.spec,
                status=self.status,
                pods=[pod.view() for pod in self.pods.values()],
                now=self.now,
                generation=1,
                boot=self.boot,
                poll_interval=0.5,
                resync_interval=30.0,
            )
        )
        self.last_plan = p
        self.status = p.status
        self.events.extend(p.events)
        if p.boot is not None:
            self.boot = p.boot
        failed: set[str] = set()
        for action in p.actions:
            if action.pod in failed:
                continue  # a failure ends that pod's chain (as the operator runs them)
            self.actions.append(action)
            outcome = self.apply(action)
            if self.crash_after is not None:
                self.crash_after -= 1
                if self.crash_after < 0:
                    self.crash_after = None
                    return p  # the operator died: nothing recorded, the rest never ran
            self.status, events = record(
                self.status, self.spec, action, outcome, self.now, failed_pod_retry=5.0
            )
            self.events.extend(events)
            if not outcome.ok:
                failed.add(action.pod)
        self.now += datetime.timedelta(seconds=max(p.requeue_after, 0.1) if not p.actions else 0.1)
        return p

    def run(self, limit: int = 200) -> None:
        """Iterate until the planner has nothing to do (settled) or ``limit`` iterations."""
        for _ in range(limit):
            p = self.step()
            r = p.status.rollout
            moving = r is not None and r.phase in (Phase.PREFETCHING, Phase.ACTIVATING, Phase.ROLLING_BACK)
            if not p.actions and p.requeue_after >= 30.0 and not moving:
                return
        raise AssertionError(f"did not settle in {limit} iterations: {self.status.rollout}")

    def apply(self, action: Action) -> Outcome:
        pod = self.pods[action.pod]
        v = action.version

        def fail(step: Step) -> str | None:
            return self.failures.get((pod.name, step, v)) or self.failures.get(("*", step, v))

        if (fault := self.pod_faults.pop((pod.name, action.step, v), None)) is not None:
            error_type, lose = (
                fault  # a pod fault, once: e.g. the agent restarted and lost its staged version
            )
            if lose:
                pod.staged = None
                pod.active, pod.previous = pod.previous, None
            return Outcome(
                ok=False, step=action.step, error=f"{error_type}: pod fault", error_type=error_type
            )

        if action.kind is Kind.PREPARE:
            if action.needs_stage:
                queue = self.source_errors.get((pod.name, v)) or self.source_errors.get(("*", v))
                if queue:
                    said = queue.pop(0)
                    error, fault = (said, None) if isinstance(said, str) else said
                    return Outcome(
                        ok=False,
                        step=Step.STAGE,
                        error=error,
                        error_type="source_unavailable",
                        source_fault=fault,
                    )
                if err := fail(Step.STAGE):
                    return Outcome(ok=False, step=Step.STAGE, error=err)
                pod.slots.stage(v, digest_of(v), sha256=digest_of(v))  # the source's contents
            if err := fail(Step.PRELOAD):
                return Outcome(ok=False, step=Step.PRELOAD, error=err)
            staged = pod.slots.preload(v)  # ContractError (not_on_disk) fails the test loudly
            return Outcome(ok=True, step=Step.PRELOAD, digest=staged.digest)
        if action.kind in (Kind.ACTIVATE, Kind.REACTIVATE):
            if err := fail(Step.ACTIVATE):
                return Outcome(ok=False, step=action.step, error=err)
            if action.kind is Kind.ACTIVATE:
                assert pod.staged == v, f"activate {v} on {pod.name} but staged is {pod.staged}"
                pod.slots.activate(v)
            else:
                assert pod.previous == v
                pod.slots.rollback(v)
            self.clock += 1
            pod.activations.append((v, self.clock))
            return Outcome(ok=True, step=action.step, swap={"mode": "inplace", "pauseMs": 3})
        if action.kind is Kind.EVALUATE:
            assert v in (pod.staged, pod.previous), f"evaluate {v} on {pod.name}: not loaded"
            assert action.quality is not None
            self.evaluations.append((pod.name, v))
            err = fail(Step.QUALITY)
            cand = 0.41 if err else 0.93
            result = {
                "version": v,
                "metric": action.quality.metric,
                "k": action.quality.k,
                "candidate": {"version": v, "score": cand, "perCase": [cand]},
                "baseline": {"version": pod.active, "score": 0.9, "perCase": [0.9]} if pod.active else None,
                "delta": round(cand - 0.9, 4) if pod.active else None,
                "maxDrop": action.quality.max_drop,
                "floor": action.quality.floor,
                "passed": not err,
                "problems": [err] if err else [],
            }
            if err:
                return Outcome(
                    ok=False, step=Step.QUALITY, error=err, error_type="quality_failed", quality=result
                )
            return Outcome(ok=True, step=Step.QUALITY, quality=result)
        if action.kind is Kind.VERIFY_STAGED:
            assert pod.staged == v, f"verify staged {v} on {pod.name} but staged is {pod.staged}"
            pod.staged_verified.append(v)
            if err := fail(Step.VERIFY_STAGED):
                return Outcome(ok=False, step=Step.VERIFY_STAGED, error=err, error_type="canary_failed")
            return Outcome(ok=True, step=Step.VERIFY_STAGED)
        if action.kind is Kind.VERIFY:
            assert pod.active == v, "verify of a version that is not active"
            if err := fail(Step.VERIFY):
                return Outcome(ok=False, step=Step.VERIFY, error=err)
            return Outcome(ok=True, step=Step.VERIFY, metrics=(100.0, 0.0))
        if err := fail(Step.SOAK):
            return Outcome(ok=False, step=Step.SOAK, error=err)
        return Outcome(ok=True, step=Step.SOAK)


def fleet(n: int, version: str | None = "v1") -> dict[str, SimPod]:
    pods = {}
    for i in range(1, n + 1):
        on_disk = {version: digest_of(version)} if version else {}
        pods[f"pod-{i}"] = SimPod(name=f"pod-{i}", active=version, on_disk=on_disk)
    return pods


def boot_ref(version: str = "v1") -> VersionRef:
    return VersionRef(
        version=version, source={"uri": f"file:///registry/{version}"}, digest=digest_of(version)
    )  # type: ignore[arg-type]
