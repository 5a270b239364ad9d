"""Verify a swap through the server's data plane: canary pairs, finite scores, order, version header."""

from __future__ import annotations

import math
from typing import Any

from hotswap_agent.bodies import Canary
from hotswap_agent.errors import ServerUnavailable, VerifyFailed
from hotswap_agent.server_client import ServerClient

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
    scores: list[float | None] = [None] * len(canary.documents)
    top: int | None = None
    if status != 200:
        reason = body.get("error") if isinstance(body, dict) else None
        problems.append(f"data plane answered {status}" + (f": {reason}" if reason else ""))
    else:
        if version != expected:
            problems.append(f"scored by version {version!r}, expected {expected!r}")
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
    return {
        "query": canary.query,
        "ok": not problems,
        "problems": problems,
        "scores": scores,
        "top": top,
        "expectTop": canary.expect_top,
        "version": version,
    }


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
                "scores": [],
                "top": None,
                "expectTop": canary.expect_top,
                "version": None,
            }
        else:
            report = check_reply(canary, reply.status, reply.version, reply.body, expected)
            report["latencyMs"] = round(reply.latency_ms, 2)
        reports.append(report)
    ok = all(r["ok"] for r in reports)
    result = {"version": expected, "ok": ok, "canaries": reports}
    if not ok:
        first = next(r for r in reports if not r["ok"])
        raise VerifyFailed(f"verify failed for {expected}: {first['problems'][0]}", result=result)
    return result
