"""Verify a version with canaries, and evaluate it on a labelled set.

- Active (after activation): each canary goes through the server's data plane; the reply must be
  200, name the expected version in its header, and hold finite scores in the expected order.
- Staged (before activation): the server scores the canaries with its staged version through the
  admin plane (``POST /admin/v1/score``): the same tokenizer and scoring code, off the live model.
- Evaluate: the server scores a labelled set with the staged and the active version; the metric
  (:mod:`hotswap_contract.ranking`) of both, and the gate when one is given.

A failure says whose fault it is: ``canary_failed`` (the version scored and failed, or could not
score) is the version's; ``verify_failed`` (nothing active, another version answered, the data plane
unavailable), ``not_staged`` and ``server_unavailable`` are the pod's.
"""

from __future__ import annotations

import math
from typing import Any

from hotswap_contract.agent import EvaluateRequest, EvaluateResult, MetricScore
from hotswap_contract.ranking import set_metric

from hotswap_agent.bodies import Canary
from hotswap_agent.errors import (
    CanaryFailed,
    NotStaged,
    QualityFailed,
    ServerRejected,
    ServerUnavailable,
    VerifyFailed,
)
from hotswap_agent.server_client import ServerClient, retry_busy

# The server's admin score bounds (hotswap_contract.admin) and its own time bound, with a margin.
MAX_SCORE_PAIRS = 4096
MAX_SCORE_CASES = 256
MAX_SCORE_CHARS = 1_000_000  # keeps each call's body well under the server's body limit
SCORE_TIMEOUT_S = 150.0
# Data-plane answers that say the pod cannot serve now, not that the version cannot score.
POD_STATUSES = frozenset({429, 502, 503, 504})

# Used when the request names no canary: it still proves the server scores, finitely, with the
# expected version. Real checks of quality need real pairs.
DEFAULT_CANARY = Canary(
    query="what is the capital of france?",
    documents=("Paris is the capital and largest city of France.", "Bananas are rich in potassium."),
    expect_top=None,
)


def check_reply(canary: Canary, status: int, version: str | None, body: Any, expected: str) -> dict[str, Any]:
    """One canary's report: ``{ok, problems, scores (by document index), top, version}``."""
    problems: list[str] = []
    fault: str | None = None
    scores: list[float | None] = [None] * len(canary.documents)
    top: int | None = None
    if status != 200:
        reason = body.get("error") if isinstance(body, dict) else None
        problems.append(f"data plane answered {status}" + (f": {reason}" if reason else ""))
        fault = "pod" if status in POD_STATUSES else "version"
    else:
        if version != expected:
            problems.append(f"scored by version {version!r}, expected {expected!r}")
            fault = "pod"
        results = body.get("results") if isinstance(body, dict) else None
        if not isinstance(results, list):
            problems.append("reply has no results list")
            results = []
        ranked: list[tuple[float, int]] = []
        for item in results:
            index = item.get("index") if isinstance(item, dict) else None
            score = item.get("relevance_score") if isinstance(item, dict) else None
            if not isinstance(index, int) or isinstance(index, bool) or not 0 <= index < len(scores):
                problems.append(f"result with a bad index: {index!r}")
                continue
            if scores[index] is not None:
                problems.append(f"document {index} scored twice")
                continue
            if not isinstance(score, int | float) or isinstance(score, bool) or not math.isfinite(score):
                problems.append(f"document {index} has a score that is not a finite number: {score!r}")
                continue
            scores[index] = float(score)
            ranked.append((float(score), index))
        if results and len(results) != len(scores):
            problems.append(f"{len(results)} results for {len(scores)} documents")
        elif ranked and len(ranked) == len(scores):
            top = max(ranked, key=lambda r: (r[0], -r[1]))[1]
        if canary.expect_top is not None and top != canary.expect_top:
            problems.append(f"document {top} ranked first, expected {canary.expect_top}")
        if problems and fault is None:
            fault = "version"
    return {
        "query": canary.query,
        "ok": not problems,
        "problems": problems,
        "fault": fault,
        "scores": scores,
        "top": top,
        "expectTop": canary.expect_top,
        "version": version,
    }


def check_scores(canary: Canary, scores: Any, version: str) -> dict[str, Any]:
    """One canary's report from scores by document index (the admin score of a staged version)."""
    results = (
        [{"index": i, "relevance_score": v} for i, v in enumerate(scores)]
        if isinstance(scores, list)
        else None
    )
    return check_reply(canary, 200, version, {"results": results}, version)


async def run_canaries(client: ServerClient, canaries: tuple[Canary, ...], expected: str) -> dict[str, Any]:
    """Run every canary; return the report, or raise ``VerifyFailed`` carrying it."""
    reports: list[dict[str, Any]] = []
    for canary in canaries or (DEFAULT_CANARY,):
        try:
            reply = await client.rerank(canary.query, list(canary.documents))
        except ServerUnavailable as exc:
            report: dict[str, Any] = {
                "query": canary.query,
                "ok": False,
                "problems": [exc.message],
                "fault": "pod",
                "scores": [],
                "top": None,
                "expectTop": canary.expect_top,
                "version": None,
            }
        else:
            report = check_reply(canary, reply.status, reply.version, reply.body, expected)
            report["latencyMs"] = round(reply.latency_ms, 2)
        reports.append(report)
    return _verdict(expected, reports, "active")


def _verdict(version: str, reports: list[dict[str, Any]], target: str) -> dict[str, Any]:
    ok = all(r["ok"] for r in reports)
    result = {"version": version, "target": target, "ok": ok, "canaries": reports}
    if ok:
        return result
    # A pod fault makes every other answer of this run untrustworthy: it wins over a version fault.
    pod = next((r for r in reports if r.get("fault") == "pod"), None)
    if pod is not None:
        raise VerifyFailed(f"verify failed for {version}: {pod['problems'][0]}", result=result)
    first = next(r for r in reports if not r["ok"])
    raise CanaryFailed(f"canary failed for {version}: {first['problems'][0]}", result=result)


def _text(doc: Any) -> str:
    return doc if isinstance(doc, str) else str(doc["text"])


def _chunks(cases: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    """Cases cut into calls within the server's bounds (pairs, cases, body size)."""
    out: list[list[dict[str, Any]]] = [[]]
    pairs = chars = 0
    for case in cases:
        n = len(case["documents"])
        size = len(case["query"]) * n + sum(len(d) for d in case["documents"])
        current = out[-1]
        if current and (
            pairs + n > MAX_SCORE_PAIRS or len(current) >= MAX_SCORE_CASES or chars + size > MAX_SCORE_CHARS
        ):
            out.append([])
            pairs = chars = 0
        out[-1].append(case)
        pairs += n
        chars += size
    return out


async def score_cases(
    client: ServerClient, version: str, cases: list[dict[str, Any]], deadline_s: float
) -> list[list[float]]:
    """Scores by case and document index, from the server's admin ``score`` with ``version``.

    ``NotStaged`` when the server does not hold the version (a restarted or re-planned pod).
    """
    scores: list[list[float]] = []
    for chunk in _chunks(cases):
        body = {"version": version, "cases": chunk}

        async def call(body: dict[str, Any] = body) -> Any:
            # ServerClient has no score method (it belongs to another module): its generic admin call.
            return await client._admin("POST", "score", body, SCORE_TIMEOUT_S)

        try:
            reply = await retry_busy(call, deadline_s)
        except ServerRejected as exc:
            if exc.server_error_type == "not_loaded":
                raise NotStaged(f"the server does not hold {version}: {exc.message}") from None
            raise
        got = reply.get("cases") if isinstance(reply, dict) else None
        if not isinstance(got, list) or len(got) != len(chunk):
            raise ServerUnavailable("the server's score answer does not hold one result per case")
        for case in got:
            values: Any = case.get("scores") if isinstance(case, dict) else None
            scores.append(values if isinstance(values, list) else [])
    return scores


async def run_staged_canaries(
    client: ServerClient, canaries: tuple[Canary, ...], version: str, deadline_s: float
) -> dict[str, Any]:
    """Score every canary with the server's copy of ``version`` (staged) and check them."""
    canaries = canaries or (DEFAULT_CANARY,)
    cases = [{"query": c.query, "documents": [_text(d) for d in c.documents]} for c in canaries]
    try:
        scores = await score_cases(client, version, cases, deadline_s)
    except ServerRejected as exc:
        if exc.http_status in (413, 422):  # the version cannot score these canaries
            reports = [
                {"query": c.query, "ok": False, "problems": [exc.message], "fault": "version", "scores": [],
                 "top": None, "expectTop": c.expect_top, "version": version}
                for c in canaries
            ]  # fmt: skip
            return _verdict(version, reports, "staged")
        raise
    reports = [check_scores(c, s, version) for c, s in zip(canaries, scores, strict=True)]
    return _verdict(version, reports, "staged")


async def run_evaluate(
    client: ServerClient, req: EvaluateRequest, active: str | None, deadline_s: float
) -> dict[str, Any]:
    """Score the set with ``req.version`` and with ``active``; both metrics; the gate when one is given."""
    cases = [{"query": c.query, "documents": list(c.documents)} for c in req.set]
    relevance = [list(c.relevance) for c in req.set]

    async def measure(version: str) -> MetricScore:
        scores = await score_cases(client, version, cases, deadline_s)
        try:
            mean, per_case = set_metric(req.metric, scores, relevance, req.k)
        except (ValueError, TypeError) as exc:  # not one finite score per document
            raise CanaryFailed(f"{version} did not score the labelled set: {exc}") from None
        return MetricScore(version=version, score=mean, per_case=per_case)

    candidate = await measure(req.version)
    baseline = await measure(active) if active is not None and active != req.version else None
    delta = candidate.score - baseline.score if baseline is not None else None
    problems = []
    if req.floor is not None and candidate.score < req.floor:
        problems.append(f"{req.metric} {candidate.score:.4f} is below the floor {req.floor:g}")
    if req.max_drop is not None and delta is not None and -delta > req.max_drop:
        assert baseline is not None
        problems.append(
            f"{req.metric} {candidate.score:.4f} drops {-delta:.4f} below {baseline.version}'s "
            f"{baseline.score:.4f} (at most {req.max_drop:g})"
        )
    result = EvaluateResult(
        version=req.version,
        metric=req.metric,
        k=req.k,
        candidate=candidate,
        baseline=baseline,
        delta=delta,
        floor=req.floor,
        max_drop=req.max_drop,
        passed=not problems,
        problems=problems,
    ).wire()
    if problems:
        raise QualityFailed(f"quality gate failed for {req.version}: {problems[0]}", result=result)
    return result
