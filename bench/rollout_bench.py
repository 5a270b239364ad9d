"""Operator rollout benchmark: a full v1 -> v2 rollout on the local cluster, for N real pods.

``run(pods)`` starts a local cluster (the kmock API server, ``pods`` real ``hotswap-server`` +
``hotswap-agent`` pairs on loopback addresses, the real operator), brings every pod up on v1, puts
client load on the Service, applies v2 and times the rollout until ``Ready`` says every pod serves
it. The models are the MiniLM-sized cross-encoders (``minilm-ce-v1`` / ``-v2``, 87 MiB of weights)
so staging and preloading cost what they cost on a real model; ``model="tiny-xlmr"`` measures the
operator's own per-step overhead instead.

Every pod of the local cluster shares this machine's CPUs: the prefetch (stage + preload on every
pod at once) is CPU-bound and cannot run N times in parallel on 2 cores as it does on N nodes.
``prefetch_s`` and ``swap_phase_s`` separate the parallel part from the one-pod-at-a-time part.
After the rollout, one pod alone stages and preloads another copy of the model
(``single_prepare_s``: one pod's prefetch without contention), and ``dedicated_estimate_s``
replaces the slowest contended prefetch chain (``agent_prepare_max_s``) with it: the same rollout
when each pod has its own CPUs, as on a real cluster (the swap phase keeps its contended time).

    python -c "from bench.rollout_bench import run; print(run(3))"
"""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
MODELS = {"minilm-ce": ("minilm-ce-v1", "minilm-ce-v2"), "tiny-xlmr": ("tiny-xlmr-v1", "tiny-xlmr-v2")}


def run(
    pods: int,
    *,
    model: str = "minilm-ce",
    load: bool = True,
    timeout: float = 900.0,
    simulate_prepare_seconds: float | None = None,
) -> dict[str, Any]:
    """Time one v1 -> v2 rollout over ``pods`` real pods; a flat dict of figures (seconds, counts).

    ``simulate_prepare_seconds``: use fake pods whose stage takes that long without using a CPU,
    as on pods with their own resources and a model that takes that long to fetch (the operator,
    the API server and the agent protocol are the real ones; nothing is scored by a model).
    """
    return asyncio.run(_run(pods, model, load, timeout, simulate_prepare_seconds))


async def _run(
    pods: int, model: str, with_load: bool, timeout: float, simulate: float | None
) -> dict[str, Any]:
    from hotswap_operator.timeutil import parse

    from bench.models import testmodels
    from devtools.localcluster.cluster import LocalCluster

    v1_name, v2_name = MODELS[model]
    root = testmodels([v1_name, v2_name]) if simulate is None else Path()
    async with LocalCluster(pods=pods, flavour="real" if simulate is None else "fake") as cluster:
        if simulate is None:
            v1, v2 = cluster.publish("v1", root / v1_name), cluster.publish("v2", root / v2_name)
        else:
            model = f"simulated {simulate:g}s prepare"
            v1, v2 = cluster.publish_fake("v1"), cluster.publish_fake("v2")
        started = time.monotonic()
        await cluster.apply_model("v1", v1)
        await cluster.wait_ready("v1", timeout=timeout)
        first = time.monotonic() - started
        if simulate is not None:
            cluster.script_fakes({"delay": {"stage": simulate}})

        load = cluster.load(concurrency=2) if with_load else None
        if load is not None:
            load.start()
        began = time.monotonic()
        await cluster.apply_model("v2", v2, rollout={"podTimeoutSeconds": int(timeout)})
        status = await cluster.wait_ready("v2", timeout=timeout)
        elapsed = time.monotonic() - began
        report = await load.stop() if load is not None else None

        events = [e for e in await cluster.events() if "v2" in e.get("message", "")]
        stamp = {e["reason"]: parse(e.get("lastTimestamp")) for e in events}  # the last of each reason
        first_stamp: dict[str, Any] = {}
        for e in events:
            first_stamp.setdefault(e["reason"], parse(e.get("lastTimestamp")))
        r = status.rollout
        assert r is not None
        rollout_s = _seconds(parse(r.started_at), parse(r.finished_at))
        prefetch_s = _seconds(first_stamp.get("RolloutStarted"), stamp.get("Prefetched"))
        swap_phase_s = _seconds(stamp.get("Prefetched"), stamp.get("RolloutSucceeded"))

        agents = [await cluster.agent_status(name) for name in sorted(cluster.pods)]
        phases = phase_table([pod_phases(a, "v2") for a in agents])
        prepare = [_op_chain_seconds(a, "v2") for a in agents]
        pauses = [float((a.get("lastActivation") or {}).get("pauseMs") or 0.0) for a in agents]
        modes = sorted({str((a.get("lastActivation") or {}).get("mode")) for a in agents})
        single = await _single_prepare(cluster, root / v2_name if simulate is None else None, timeout)

    slowest = max(prepare) if prepare else 0.0
    result: dict[str, Any] = {
        "model": model,
        "rollout_s": round(rollout_s, 2),
        "observed_s": round(elapsed, 2),
        "prefetch_s": round(prefetch_s, 2),
        "swap_phase_s": round(swap_phase_s, 2),
        "per_pod_swap_s": round(swap_phase_s / pods, 3),
        "agent_prepare_max_s": round(slowest, 2),
        "single_prepare_s": round(single, 2),
        "dedicated_estimate_s": round(rollout_s - slowest + single, 2),
        "max_pause_ms": round(max(pauses) if pauses else 0.0, 1),
        "swap_modes": ",".join(modes),
        "first_rollout_s": round(first, 2),
    }
    if report is not None:
        result.update(requests=report.total, failed=report.failed, p99_ms=round(report.p99_ms, 1))
    result["phases"] = phases
    return result


# The phases of one pod's swap, in the order they run, and where each figure comes from.
PHASES = (
    "download",  # agent stage: fetching (or copying from the model cache) and extracting
    "digest",  # agent stage: hashing the staged folder against the pinned sha256
    "server digest",  # server preload: hashing the folder again before loading it
    "load",  # server preload: reading safetensors, building the module and its flat host buffer
    "validate",  # server preload: the finite-score check on the canary pairs
    "canary",  # agent verify on the staged weights (the spec's canary, before any exposure)
    "activate",  # agent activate (the swap itself; its pause is max_pause_ms)
    "verify",  # agent verify on the live version after activation
)
_DOWNLOAD_STEPS = (
    "downloading",
    "extracting",
    "waiting for the model cache",
    "publishing to the model cache",
    "copying from the model cache",
)


def pod_phases(agent: dict[str, Any], version: str) -> dict[str, float]:
    """Seconds of each of :data:`PHASES` on one pod, from its agent's operation history (step
    timings) and its server's record of the version (load phases). Missing phases are absent."""
    out: dict[str, float] = {}
    verifies: list[dict[str, Any]] = []
    for op in agent.get("history", []):
        if op.get("version") != version or op.get("state") != "succeeded":
            continue
        steps = op.get("stepSeconds") or {}
        kind = op.get("kind")
        if kind == "stage":
            out["download"] = out.get("download", 0.0) + sum(steps.get(s, 0.0) for s in _DOWNLOAD_STEPS)
            out["digest"] = out.get("digest", 0.0) + steps.get("digest", 0.0)
        elif kind == "activate":
            out["activate"] = out.get("activate", 0.0) + sum(steps.values())
        elif kind == "verify":
            verifies.append(steps)
    for steps in verifies:
        name = "canary" if any("staged" in s for s in steps) else "verify"
        out[name] = out.get(name, 0.0) + sum(steps.values())
    server = ((agent.get("server") or {}).get("state") or {}).get("active") or {}
    load = (server.get("loadPhasesMs") or {}) if server.get("version") == version else {}
    if load:
        out["server digest"] = load.get("digest", 0.0) / 1000
        out["load"] = (load.get("read", 0.0) + load.get("build", 0.0)) / 1000
        out["validate"] = load.get("check", 0.0) / 1000
    return out


def phase_table(pods: list[dict[str, float]]) -> dict[str, dict[str, float]]:
    """Per phase: the median and the slowest pod, in seconds."""
    import statistics

    out: dict[str, dict[str, float]] = {}
    for phase in PHASES:
        values = [p[phase] for p in pods if phase in p]
        if values:
            out[phase] = {"median_s": round(statistics.median(values), 3), "max_s": round(max(values), 3)}
    return out


async def _single_prepare(cluster: Any, folder: Path | None, timeout: float) -> float:
    """Stage and preload a fresh copy of the model on one pod while nothing else runs."""
    import aiohttp
    from hotswap_operator.agent_client import AgentClient, TokenSource

    source = cluster.publish("solo", folder) if folder is not None else cluster.publish_fake("solo")
    ip = cluster.pods[sorted(cluster.pods)[0]].ip
    async with aiohttp.ClientSession() as session:
        client = AgentClient(session, TokenSource(cluster.workdir / "agent-token"), poll_interval=0.05)
        began = time.monotonic()
        body = {"version": "solo", "uri": source["uri"], "sha256": source["sha256"]}
        await client.run(ip, "stage", body, timeout=timeout)
        await client.run(ip, "preload", {"version": "solo"}, timeout=timeout)
        return time.monotonic() - began


def _seconds(start: Any, end: Any) -> float:
    if start is None or end is None:
        return 0.0
    return float((end - start).total_seconds())


def _op_chain_seconds(agent: dict[str, Any], version: str) -> float:
    """Seconds this pod's agent spent staging and preloading ``version`` (its share of the prefetch)."""
    from hotswap_operator.timeutil import parse

    total = 0.0
    for op in agent.get("history", []):
        if (
            op.get("version") == version
            and op.get("kind") in ("stage", "preload")
            and op.get("state") == "succeeded"
        ):
            start, end = parse(op.get("startedAt")), parse(op.get("finishedAt"))
            if start and end:
                total += (end - start).total_seconds()
    return total


def main(argv: list[str] | None = None) -> int:
    counts = [int(a) for a in (argv if argv is not None else sys.argv[1:])] or [1, 3, 8]
    baseline = None
    for pods in counts:
        result = run(pods)
        baseline = baseline or result["rollout_s"]
        print(
            f"{pods} pod(s): {result}  (x{result['rollout_s'] / baseline:.2f} of the first count)", flush=True
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
