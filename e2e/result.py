"""What one run of the scenario found: the dataclass the tests assert on and the demo prints."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from .backend import LoadSummary
from .checks import Check, PodSwap


@dataclasses.dataclass
class Event:
    at: float  # seconds since the scenario started
    wall: float  # time.time()
    kind: str  # "step" (what the scenario did or saw), "pod" (a pod's version or state moved)
    text: str


@dataclasses.dataclass
class ScenarioResult:
    backend: str
    pods: list[str]
    models: dict[str, str]  # version -> test model folder it was published from
    install_seconds: float  # apply v1 -> Ready on v1
    rollout_seconds: float  # apply v2 -> Ready on v2 (every pod swapped and verified)
    rollback_seconds: float  # apply v3 -> rolled back, Ready on v2 again
    rollout: dict[str, PodSwap]  # the v2 rollout: each pod's swap
    broken: list[PodSwap]  # swaps to v3 (the pods that served it before it failed)
    restored: list[PodSwap]  # swaps back to v2 after v3 failed
    failure: dict[str, Any]  # status.rollout.failure of v3: pod, step, reason, at
    degraded: dict[str, Any]  # the Degraded condition after the rollback
    history: list[dict[str, Any]]  # status.history at the end
    final: dict[str, str | None]  # pod -> the version its agent reports active at the end
    load: LoadSummary
    kubectl_get: str  # `kubectl get rrm NAME -o wide` at the end
    kubectl_wait: str  # what `kubectl wait --for=condition=Ready` answered
    manifests: dict[str, Path]  # version -> the manifest applied for it
    checks: list[Check]
    events: list[Event]
    started_wall: float
    versions: tuple[str, str, str] = ("v1", "v2", "v3")

    @property
    def ok(self) -> bool:
        return bool(self.checks) and all(c.ok for c in self.checks)

    @property
    def failed_checks(self) -> list[Check]:
        return [c for c in self.checks if not c.ok]

    def summary_lines(self) -> list[str]:
        v1, v2, v3 = self.versions
        lines = [
            f"backend            : {self.backend}, {len(self.pods)} pods ({', '.join(self.pods)})",
            f"requests served    : {self.load.total} by {self.load.clients} clients in {self.load.seconds:.1f} s",
            f"failed requests    : {self.load.failed}",
            "served by version  : " + ", ".join(f"{v}: {n}" for v, n in sorted(self.load.by_version.items())),
            f"latency            : p50 {self.load.p50_ms:.1f} ms, p99 {self.load.p99_ms:.1f} ms",
            f"install {v1:<10} : Ready in {self.install_seconds:.1f} s",
            f"rollout {v1} -> {v2:<4} : {self.rollout_seconds:.1f} s, one pod at a time",
        ]
        for pod in sorted(self.rollout, key=lambda p: self.rollout[p].at):
            s = self.rollout[pod]
            pause = f", requests paused {s.pause_ms:.1f} ms" if s.pause_ms is not None else ""
            op = f"swap {s.operation_ms:.0f} ms" if s.operation_ms is not None else "swap"
            verified = (
                f", verified +{(s.verified_at - s.at).total_seconds() * 1000:.0f} ms" if s.verified_at else ""
            )
            lines.append(
                f"  {pod:<16} : {s.at:%H:%M:%S.%f}"[:-3] + f"  {s.mode or '?'} {op}{pause}{verified}"
            )
        reason = self.failure.get("reason", "")
        lines += [
            f"broken {v3:<11} : failed on {self.failure.get('pod') or 'every pod'} "
            f"at step {self.failure.get('step')}: {reason}",
            f"automatic rollback : {v3} -> {v2} in {self.rollback_seconds:.1f} s "
            f"(Degraded={self.degraded.get('status')}, {self.degraded.get('reason')})",
        ]
        if self.broken:
            served = self.load.by_version.get(v3, 0)
            lines.append(
                f"  {v3} reached       : {', '.join(s.pod for s in self.broken)} "
                f"(served {served} request(s) until its canary failed, then rolled back)"
            )
        else:
            lines.append(f"  {v3} reached       : no pod (refused before any swap)")
        lines.append(
            "history            : "
            + ", ".join(f"{h.get('version')} {h.get('result')}" for h in self.history[-3:])
        )
        lines.append("final versions     : " + ", ".join(f"{p}={v}" for p, v in sorted(self.final.items())))
        lines.append(f"kubectl wait       : {self.kubectl_wait.strip() or '(no output)'}")
        return lines

    def checks_lines(self) -> list[str]:
        return [
            f"  [{'ok' if c.ok else 'FAILED'}] {c.name}" + (f" ({c.detail})" if c.detail else "")
            for c in self.checks
        ]
