"""What the planner asks for and what executing it came to: the vocabulary shared by
``planner`` (which decides), ``rollout`` (which executes) and ``progress`` (which records).

A plan's actions on one pod run in order, each recorded as it finishes, and the first failure ends
that pod's chain (:func:`chains`); different pods' chains run at once (the prefetch). A swap is two
actions, ``activate`` then ``verify``, planned together: one reconcile round per pod; an
``activate`` of a rollout or a convergence is preceded by ``verify-staged`` (the canary scored with
the staged weights inside the pod's server), so a version that fails its canary never serves.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from enum import StrEnum
from typing import Any

from .models import CanaryCase, QualityGate, Source, Step


class Kind(StrEnum):
    PREPARE = "prepare"  # stage (unless on disk) then preload
    ACTIVATE = "activate"  # activate the staged version
    REACTIVATE = "reactivate"  # the agent's rollback: the previous version, still in memory
    VERIFY_STAGED = "verify-staged"  # the canary on the staged weights, before activation
    VERIFY = "verify"
    SOAK = "soak"
    EVALUATE = "evaluate"  # the quality gate on one pod's staged weights, once per rollout


class Purpose(StrEnum):
    ROLLOUT = "rollout"  # part of a rollout: a failure fails the rollout
    CONVERGE = "converge"  # a new, restarted or drifted pod joins a settled version
    ROLLBACK = "rollback"  # back to the last-good version


@dataclasses.dataclass(frozen=True)
class Action:
    kind: Kind
    purpose: Purpose
    pod: str
    ip: str
    version: str
    spec_hash: str
    source: Source | None = None
    needs_stage: bool = False
    canary: tuple[CanaryCase, ...] = ()
    sample_metrics: bool = False
    baseline: tuple[float, float] | None = None
    max_error_rate: float = 0.0
    quality: QualityGate | None = None
    timeout: float = 300.0

    @property
    def step(self) -> Step:
        return {
            Kind.PREPARE: Step.STAGE if self.needs_stage else Step.PRELOAD,
            Kind.ACTIVATE: Step.ROLLBACK if self.purpose is Purpose.ROLLBACK else Step.ACTIVATE,
            Kind.REACTIVATE: Step.ROLLBACK if self.purpose is Purpose.ROLLBACK else Step.ACTIVATE,
            Kind.VERIFY_STAGED: Step.VERIFY_STAGED,
            Kind.VERIFY: Step.VERIFY,
            Kind.SOAK: Step.SOAK,
            Kind.EVALUATE: Step.QUALITY,
        }[self.kind]


@dataclasses.dataclass(frozen=True)
class Outcome:
    """What executing an action came to. ``step`` names the step that failed (or last ran)."""

    ok: bool
    step: Step
    error: str = ""
    error_type: str | None = None  # the agent's operation errorType, when it said one
    source_fault: str | None = None  # its sourceFault (transient, gone, refused), when it said one
    digest: str | None = None
    swap: dict[str, Any] | None = None  # what the agent said of a swap: mode, pauseMs, fromVersion, via
    metrics: tuple[float, float] | None = None
    quality: dict[str, Any] | None = None  # the agent's EvaluateResult (kept on a failed gate too)


@dataclasses.dataclass(frozen=True)
class EventSpec:
    type: str  # Normal | Warning
    reason: str
    message: str


def chains(actions: Iterable[Action]) -> list[list[Action]]:
    """The actions grouped by pod, each group in plan order (pods in order of their first action)."""
    by_pod: dict[str, list[Action]] = {}
    for action in actions:
        by_pod.setdefault(action.pod, []).append(action)
    return list(by_pod.values())
