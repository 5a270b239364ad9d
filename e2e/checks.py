"""Pure reads of what the agents report: who swapped to what, when, and in which order.

The agents are the truth (docs/agent.md): each reports ``lastActivation`` and the history of its
operations with start and finish times. From those alone this module proves that a rollout went one
pod at a time, so the same checks hold on any backend and are unit-tested on plain dicts. One
read of the operator's log too (``forbidden_outside``): which 403s fall outside a known window.
"""

from __future__ import annotations

import dataclasses
import datetime
import itertools
from collections.abc import Iterable, Mapping
from typing import Any

SWAP_KINDS = ("activate", "rollback")  # the agent swaps by activate, or by rollback to its previous version


@dataclasses.dataclass
class Check:
    name: str
    ok: bool
    detail: str = ""


@dataclasses.dataclass
class PodSwap:
    """One pod's swap to ``version`` as its agent recorded it."""

    pod: str
    version: str
    from_version: str | None
    kind: str  # activate | rollback (the agent's operation that made the swap)
    at: datetime.datetime  # the swap itself (lastActivation.at, else the operation's finish)
    started_at: datetime.datetime | None  # the operation's start
    mode: str | None  # inplace | double | replace
    pause_ms: float | None  # how long new requests waited (inplace), as the server measured it
    preloaded_at: datetime.datetime | None  # that version's preload finished on this pod
    verified_at: datetime.datetime | None  # its first successful verify after the swap
    verify_failed_at: datetime.datetime | None = None  # a failed verify after the swap

    @property
    def operation_ms(self) -> float | None:
        """The swap operation from start to finish (the operator's call, as the agent timed it)."""
        return None if self.started_at is None else (self.at - self.started_at).total_seconds() * 1000


def answered_none(by_version: Mapping[str, int], version: str) -> Check:
    """The broken version answered no request: it failed before exposure (canary on the staged
    weights, or refused at load), never after it served traffic."""
    n = int(by_version.get(version, 0))
    detail = ", ".join(f"{v}: {c}" for v, c in sorted(by_version.items()))
    return Check(f"the broken {version} answered 0 requests", n == 0, f"{version} answered {n}; {detail}")


def parse_time(text: Any) -> datetime.datetime | None:
    if not isinstance(text, str) or not text:
        return None
    try:
        moment = datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=datetime.UTC)


def operations(
    agent: Mapping[str, Any],
    kinds: Iterable[str],
    version: str,
    since: datetime.datetime,
    state: str | None = "succeeded",
) -> list[dict[str, Any]]:
    """The agent's operations of ``kinds`` on ``version`` that started at or after ``since``."""
    wanted = set(kinds)
    out = []
    for op in agent.get("history") or []:
        started = parse_time(op.get("startedAt"))
        if op.get("kind") not in wanted or op.get("version") != version or started is None:
            continue
        if started < since or (state is not None and op.get("state") != state):
            continue
        if (op.get("result") or {}).get("noop"):
            continue  # "already active": not a swap
        out.append(op)
    return sorted(out, key=lambda o: o["startedAt"])


def swaps_to(
    agents: Mapping[str, Mapping[str, Any]], version: str, since: datetime.datetime
) -> dict[str, list[PodSwap]]:
    """Every pod's swaps to ``version`` since ``since`` (normally one each)."""
    out: dict[str, list[PodSwap]] = {}
    for pod, agent in sorted(agents.items()):
        last = agent.get("lastActivation") or {}
        preloads = [parse_time(o.get("finishedAt")) for o in operations(agent, ["preload"], version, since)]
        verifies = operations(agent, ["verify"], version, since, state=None)
        swaps = []
        for op in operations(agent, SWAP_KINDS, version, since):
            started, finished = parse_time(op.get("startedAt")), parse_time(op.get("finishedAt"))
            is_last = last.get("operationId") == op.get("id")
            at = (parse_time(last.get("at")) if is_last else None) or finished or started
            assert at is not None
            after = [v for v in verifies if (parse_time(v.get("startedAt")) or at) >= at]
            ok = [parse_time(v.get("finishedAt")) for v in after if v.get("state") == "succeeded"]
            bad = [parse_time(v.get("finishedAt")) for v in after if v.get("state") == "failed"]
            swaps.append(
                PodSwap(
                    pod=pod,
                    version=version,
                    from_version=last.get("fromVersion") if is_last else None,
                    kind=str(op.get("kind")),
                    at=at,
                    started_at=started,
                    mode=last.get("mode") if is_last else (op.get("result") or {}).get("mode"),
                    pause_ms=_float(
                        last.get("pauseMs") if is_last else (op.get("result") or {}).get("pauseMs")
                    ),
                    preloaded_at=min((p for p in preloads if p), default=None),
                    verified_at=min((v for v in ok if v), default=None),
                    verify_failed_at=min((v for v in bad if v), default=None),
                )
            )
        out[pod] = swaps
    return out


def rollout_checks(swaps: Mapping[str, list[PodSwap]], version: str, *, prefetch: bool = True) -> list[Check]:
    """A rollout of ``version`` went as the contract says: every pod swapped exactly once, in name
    order, each verified before the next one swapped, and (with prefetch) every pod preloaded
    before the first swap."""
    checks = []
    counts = {pod: len(s) for pod, s in swaps.items()}
    checks.append(
        Check(
            f"every pod swapped to {version} exactly once",
            bool(counts) and all(n == 1 for n in counts.values()),
            ", ".join(f"{p}: {n}" for p, n in sorted(counts.items())),
        )
    )
    firsts = {pod: s[0] for pod, s in swaps.items() if s}
    order = sorted(firsts, key=lambda p: firsts[p].at)
    checks.append(
        Check(
            f"pods swapped to {version} in name order",
            len(order) == len(swaps) and order == sorted(order),
            " -> ".join(order),
        )
    )
    problems = []
    for prev, nxt in itertools.pairwise(order):
        verified = firsts[prev].verified_at
        if verified is None:
            problems.append(f"{prev} has no successful verify of {version}")
        elif verified > firsts[nxt].at:
            problems.append(f"{nxt} swapped at {firsts[nxt].at:%H:%M:%S.%f} before {prev} was verified")
    if order and firsts[order[-1]].verified_at is None:
        problems.append(f"{order[-1]} has no successful verify of {version}")
    checks.append(
        Check(
            "one pod at a time: each pod verified before the next one swapped",
            bool(order) and not problems,
            "; ".join(problems) or _gaps(order, firsts),
        )
    )
    if prefetch and order:
        first = firsts[order[0]].at
        late = [p for p, s in firsts.items() if s.preloaded_at is None or s.preloaded_at > first]
        checks.append(
            Check(
                f"prefetch: every pod preloaded {version} before the first swap",
                not late,
                f"late or missing: {', '.join(sorted(late))}" if late else "",
            )
        )
    return checks


def _gaps(order: list[str], firsts: Mapping[str, PodSwap]) -> str:
    parts = []
    for prev, nxt in itertools.pairwise(order):
        gap = (firsts[nxt].at - firsts[prev].at).total_seconds()
        parts.append(f"{prev} -> {nxt} {gap:.2f}s")
    return ", ".join(parts)


def _float(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) else None


def condition(model: Mapping[str, Any] | None, type_: str) -> dict[str, Any]:
    """The RerankerModel's condition of ``type_`` (an empty dict when absent)."""
    for c in ((model or {}).get("status") or {}).get("conditions") or []:
        if c.get("type") == type_:
            return dict(c)
    return {}


def is_ready_on(model: Mapping[str, Any] | None, version: str, pods: int) -> bool:
    """Ready=True for the current generation, every one of ``pods`` pods serving ``version``."""
    if not model:
        return False
    status = model.get("status") or {}
    ready = condition(model, "Ready")
    return (
        ready.get("status") == "True"
        and status.get("observedGeneration") == (model.get("metadata") or {}).get("generation")
        and status.get("currentVersion") == version
        and len(status.get("pods") or []) == pods
        and all(p.get("version") == version for p in status.get("pods") or [])
    )


def rolled_back(model: Mapping[str, Any] | None, failed: str, good: str) -> bool:
    """The rollout of ``failed`` ended rolled back, and the fleet is settled on ``good`` again; kstatus:
    ``Ready`` False (the spec's version is not served) and ``Stalled`` True until the spec changes."""
    if not model:
        return False
    status = model.get("status") or {}
    rollout = status.get("rollout") or {}
    return (
        rollout.get("version") == failed
        and rollout.get("phase") == "RolledBack"
        and status.get("currentVersion") == good
        and condition(model, "Ready").get("status") == "False"
        and condition(model, "Stalled").get("status") == "True"
    )


def forbidden_outside(lines: list[str], start: datetime.datetime, end: datetime.datetime) -> list[str]:
    """The operator's logged 403s not stamped inside [start, end) (local wall time, as kopf stamps
    them). A line without kopf's timestamp counts as outside: it fails a check rather than pass unread."""
    return [line for line in lines if not start <= (logged_at(line) or end) < end]


def logged_at(line: str) -> datetime.datetime | None:
    """The timestamp kopf puts at the start of a log line: ``[2026-11-30 05:07:48,751]``."""
    try:
        return datetime.datetime.strptime(line[1:24], "%Y-%m-%d %H:%M:%S,%f")
    except ValueError:
        return None
