"""Rollout scenarios on the local cluster, written once for fake pods and for real server+agent pods.

Each scenario keeps client load on the Service throughout (zero failures allowed) and asserts on
both the RerankerModel's status and the pods' real state as their agents and servers report it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import re
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
from hotswap_operator.agent_client import AgentClient, TokenSource
from hotswap_operator.models import HistoryResult, Phase, RerankerModelStatus, Step
from hotswap_operator.timeutil import iso, now, parse

from devtools.localcluster.cluster import Container, LocalCluster
from devtools.localcluster.load import LoadReport

MODEL_FOLDERS = {
    "v1": "tiny-xlmr-v1",
    "v2": "tiny-xlmr-v2",
    "nan": "broken-nan",
    "inverted": "tiny-xlmr-inverted",
    "minilm-v2": "minilm-v2",
    "minilm-noisy": "minilm-noisy",
}
# The testmodels canary: every good tiny model ranks document 1 first; tiny-xlmr-inverted does not.
CANARY = {
    "query": "how do neural networks learn from data",
    "documents": [
        "A ripe banana tastes sweet and fresh.",
        "Deep learning updates its weights with backpropagation.",
        "The football team won the match in extra time.",
    ],
    "expectTop": 1,
}
TWO_DOC_CANARY = {**CANARY, "documents": CANARY["documents"][:2]}
TWO_DOC_CANARY["expectTop"] = 1
SECOND_POD = "reranker-1"


@dataclasses.dataclass
class Fleet:
    """A local cluster and how to make model versions for its flavour of pods."""

    cluster: LocalCluster
    testmodels: Path | None = None
    timeout: float = 60.0

    @property
    def real(self) -> bool:
        return self.cluster.flavour == "real"

    def publish(self, version: str, model: str) -> dict[str, str]:
        """``model``: v1 | v2 (good), nan (NaN weights), inverted (valid weights failing the canary)."""
        if self.real:
            assert self.testmodels is not None
            return self.cluster.publish(version, self.testmodels / MODEL_FOLDERS[model])
        if model == "inverted":
            self._fail_fakes(
                {"step": "canary", "version": version, "error": "document 0 ranked first, expected 1"}
            )
        return self.cluster.publish_fake(version, broken=model == "nan")

    def fail_canary_on_second_pod(self, version: str) -> dict[str, Any]:
        """The spec fields that make ``version``'s canary fail on the second pod only.

        Fake pods are scripted. Real pods: the second pod's server was started with
        ``--max-documents 2`` (a misconfigured pod), so the three-document canary fails there.
        """
        if not self.real:
            self._fail_fakes(
                {
                    "step": "verify",
                    "version": version,
                    "pods": [SECOND_POD],
                    "error": "document 0 ranked first, expected 1",
                }
            )
            return {"canary": [TWO_DOC_CANARY]}
        return {"canary": [CANARY]}

    def _fail_fakes(self, rule: dict[str, Any]) -> None:
        script = getattr(self, "_script", {"fail": [], "errors": []})
        script["fail"].append(rule)
        self._script = script
        self.cluster.script_fakes(script)

    def script_invert(self, version: str) -> None:
        """Fake pods rank ``version`` backwards (a model that loads and passes a one-document canary)."""
        script = getattr(self, "_script", {"fail": [], "errors": []})
        script.setdefault("invert", []).append(version)
        self._script = script
        self.cluster.script_fakes(script)

    def script_errors(self, rule: dict[str, Any]) -> None:
        script = getattr(self, "_script", {"fail": [], "errors": []})
        script["errors"].append(rule)
        self._script = script
        self.cluster.script_fakes(script)

    async def agent_op(self, pod: str, kind: str, body: dict[str, Any]) -> dict[str, Any]:
        """Call a pod's agent directly, as a person with the token would."""
        client = AgentClient(
            self._session(), TokenSource(self.cluster.workdir / "agent-token"), poll_interval=0.05
        )
        return await client.run(self.cluster.pods[pod].ip, kind, body, timeout=self.timeout)

    def _session(self) -> aiohttp.ClientSession:
        session = self.cluster._session
        assert session is not None
        return session

    async def set_model(self, version: str, source: dict[str, str], **spec: Any) -> None:
        spec.setdefault("rollout", {})
        spec["rollout"] = {"podTimeoutSeconds": 90, **spec["rollout"]}
        await self.cluster.apply_model(version, source, **spec)

    async def baseline(self, version: str = "v1", model: str = "v1") -> dict[str, str]:
        """Every pod on ``version``, the resource Ready (a fresh spec for this scenario)."""
        source = self.publish(version, model)
        await self.set_model(version, source)
        await self.cluster.wait_ready(version, timeout=self.timeout * 2)
        return source

    async def swaps(self) -> dict[str, int]:
        """Completed swaps per pod, as the pods themselves count them."""
        out = {}
        for name, pod in self.cluster.pods.items():
            if not self.real:
                out[name] = len((await self.cluster.agent_status(name)).get("activations", []))
                continue
            async with aiohttp.ClientSession() as session, session.get(pod.url + "/metrics") as resp:
                text = await resp.text()
            out[name] = int(
                sum(float(v) for v in re.findall(r"^hotswap_swaps_total\{[^}]*\} (\S+)", text, re.M))
            )
        return out

    async def agents(self) -> dict[str, dict[str, Any]]:
        return {name: await self.cluster.agent_status(name) for name in sorted(self.cluster.pods)}

    async def actives(self) -> dict[str, str | None]:
        return await self.cluster.active_versions()

    async def until(
        self, check: Callable[[], Awaitable[bool]], what: str, timeout: float | None = None
    ) -> None:
        deadline = time.monotonic() + (timeout or self.timeout)
        while not await check():
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}; status: {await self.cluster.status()}")
            await asyncio.sleep(0.05)


def ops(
    agent: dict[str, Any], kind: str | tuple[str, ...], version: str, since: str | None = None
) -> list[dict[str, Any]]:
    """The agent's operations of ``kind`` on ``version`` (started at or after ``since``)."""
    kinds = (kind,) if isinstance(kind, str) else kind
    start = parse(since)
    return [
        o
        for o in agent.get("history", [])
        if o.get("kind") in kinds
        and o.get("version") == version
        and (start is None or (parse(o.get("startedAt")) or start) >= start)
    ]


def assert_no_failures(report: LoadReport) -> None:
    assert report.failed == 0, f"{report.failed} failed requests: {report.failures}"
    assert report.ok > 0, "the load never reached a pod"


def cond(st: RerankerModelStatus, type_: str) -> tuple[str, str, str]:
    c = next(c for c in st.conditions if c.type == type_)
    return c.status, c.reason, c.message


def first_pod_done(version: str) -> Callable[[RerankerModelStatus], bool]:
    def check(st: RerankerModelStatus) -> bool:
        return bool(st.rollout and st.rollout.version == version and st.rollout.done)

    return check


async def failed_and_settled(fleet: Fleet, version: str) -> RerankerModelStatus:
    def done(st: RerankerModelStatus) -> bool:
        r = st.rollout
        return (
            r is not None
            and r.version == version
            and r.phase is Phase.ROLLED_BACK
            and st.current_version is not None
        )

    return await fleet.cluster.wait_for_status(done, timeout=fleet.timeout * 2, what=f"{version} rolled back")


# ------------------------------------------------------------------------------------------ scenarios


async def first_rollout(fleet: Fleet) -> LoadReport:
    """Pods start empty (no boot ConfigMap yet): the first RerankerModel brings them all up."""
    c = fleet.cluster
    assert set((await fleet.actives()).values()) == {None}
    assert await c.boot_config() is None
    async with c.load() as load:
        source = fleet.publish("v1", "v1")
        await fleet.set_model("v1", source)
        st = await c.wait_ready("v1", timeout=fleet.timeout * 2)
    report = load.report()
    assert_no_failures(report)
    assert set((await fleet.actives()).values()) == {"v1"}
    assert st.last_good is not None and st.last_good.digest == source["sha256"]
    assert cond(st, "Ready")[:2] == ("True", "RolloutComplete")
    assert [(h.version, h.result) for h in st.history] == [("v1", HistoryResult.SUCCEEDED)]
    boot = await c.boot_config()
    assert boot == {"version": "v1", "source": {"uri": source["uri"], "sha256": source["sha256"]}}
    reasons = [e["reason"] for e in await c.events()]
    assert "RolloutSucceeded" in reasons and reasons.count("Activated") == len(c.pods)
    return report


async def rollout_one_pod_at_a_time(fleet: Fleet) -> LoadReport:
    """v1 -> v2 across the pods: prefetch everywhere first, then one pod at a time, in order."""
    c = fleet.cluster
    await fleet.baseline("v1")
    before = await fleet.swaps()
    async with c.load() as load:
        rollout = {"canary": [TWO_DOC_CANARY], "analysis": {"soakSeconds": 1, "maxErrorRate": 0.01}}
        await fleet.set_model("v2", fleet.publish("v2", "v2"), rollout=rollout)
        st = await c.wait_ready("v2", timeout=fleet.timeout * 2)
    report = load.report()
    assert_no_failures(report)
    assert {"v1", "v2"} <= set(report.by_version), report.by_version
    after = await fleet.swaps()
    assert {n: after[n] - before[n] for n in after} == {n: 1 for n in after}, "each pod swapped exactly once"

    agents = await fleet.agents()
    names = sorted(agents)
    activated = {n: parse(agents[n]["lastActivation"]["at"]) for n in names}
    assert all(agents[n]["lastActivation"]["version"] == "v2" for n in names)
    order = sorted(names, key=lambda n: activated[n])  # type: ignore[arg-type, return-value]
    assert order == names, f"activation order {order}"
    first_swap = min(a for a in activated.values() if a)
    for n in names:  # prefetch: every pod preloaded v2 before the first pod swapped
        preloads = ops(agents[n], "preload", "v2")
        assert preloads and all(parse(p["finishedAt"]) <= first_swap for p in preloads), (n, preloads)
    for prev, nxt in itertools.pairwise(names):  # verified before the next one moved
        verified = [
            parse(o["finishedAt"]) for o in ops(agents[prev], "verify", "v2") if o["state"] == "succeeded"
        ]
        assert verified and min(verified) <= activated[nxt], (prev, nxt)  # type: ignore[operator]
    assert st.last_good_version == "v2" and (await c.boot_config() or {}).get("version") == "v2"
    assert [h.version for h in st.history][-1] == "v2"
    assert [e["reason"] for e in await c.events()].count("SoakPassed") >= len(names)
    return report


async def drift_is_corrected(fleet: Fleet) -> LoadReport:
    """Someone swaps a pod back by hand: on its next resync the operator brings it to the target."""
    c = fleet.cluster
    await fleet.baseline("v1")
    async with c.load() as load:
        await fleet.set_model("v2", fleet.publish("v2", "v2"))
        await c.wait_ready("v2", timeout=fleet.timeout * 2)
        history = (await c.status()).history
        done = await fleet.agent_op("reranker-2", "rollback", {"version": "v1"})
        # The agent's own answer proves the drift: reading the pod again could already see the
        # operator's correction on a busy machine.
        assert done.get("version") == "v1" and not done.get("noop"), done

        async def corrected() -> bool:
            return (await fleet.actives())["reranker-2"] == "v2"

        await fleet.until(corrected, "reranker-2 back on v2")
        st = await c.wait_ready("v2", timeout=fleet.timeout)
    assert_no_failures(load.report())
    assert st.history == history, "correcting drift is not a rollout"
    return load.report()


async def soak_failure_rolls_back(fleet: Fleet) -> LoadReport:
    """The first pod's server answers 500 to half of v4's requests: its soak fails, v4 is rolled back."""
    assert not fleet.real, "fake pods only: they can be told to fail requests"
    c = fleet.cluster
    await fleet.baseline("v1")
    fleet.script_errors({"version": "v4", "pods": ["reranker-0"], "every": 2})
    async with c.load() as load:
        analysis = {"soakSeconds": 2, "maxErrorRate": 0.05}
        await fleet.set_model("v4", fleet.publish("v4", "v2"), rollout={"analysis": analysis})
        st = await failed_and_settled(fleet, "v4")
    report = load.report()
    failure = st.rollout.failure if st.rollout else None
    assert failure is not None and (failure.pod, failure.step) == ("reranker-0", Step.SOAK), failure
    assert "error rate" in failure.reason
    # Only the soaking pod on v4 failed requests; everything is back on v1.
    assert report.failed > 0 and all(f.startswith("reranker-0: 500") for f in report.failures), (
        report.failures
    )
    assert set((await fleet.actives()).values()) == {"v1"}
    await _assert_rolled_back(fleet, st, "v1")
    return report


async def broken_digest(fleet: Fleet) -> LoadReport:
    """A source whose content does not match the pinned sha256: refused at staging, nobody moves."""
    c = fleet.cluster
    await fleet.baseline("v1")
    before = await fleet.swaps()
    good = fleet.publish("v2", "v2")
    async with c.load() as load:
        await fleet.set_model("bad-digest", {"uri": good["uri"], "sha256": "0" * 64})
        st = await failed_and_settled(fleet, "bad-digest")
    assert_no_failures(load.report())
    failure = st.rollout.failure if st.rollout else None
    assert failure is not None and failure.step is Step.STAGE, failure
    assert "digest" in failure.reason.lower() or "0000" in failure.reason, failure.reason
    assert await fleet.swaps() == before, "no pod swapped"
    assert set((await fleet.actives()).values()) == {"v1"}
    await _assert_rolled_back(fleet, st, "v1")
    return load.report()


async def broken_nan(fleet: Fleet) -> LoadReport:
    """NaN weights: refused at preload on every pod, nobody moves."""
    c = fleet.cluster
    await fleet.baseline("v1")
    before = await fleet.swaps()
    async with c.load() as load:
        await fleet.set_model("nan", fleet.publish("nan", "nan"))
        st = await failed_and_settled(fleet, "nan")
    assert_no_failures(load.report())
    failure = st.rollout.failure if st.rollout else None
    assert failure is not None and failure.step is Step.PRELOAD, failure
    assert re.search(r"finite|nan", failure.reason, re.I), failure.reason
    assert await fleet.swaps() == before
    await _assert_rolled_back(fleet, st, "v1")
    return load.report()


async def broken_canary_on_second_pod(fleet: Fleet) -> LoadReport:
    """The canary fails on the second pod: pods 1..2 go back to v1, the third never moves, no retry."""
    c = fleet.cluster
    await fleet.baseline("v1")
    before = await fleet.swaps()
    source = fleet.publish("v3", "v2")
    async with c.load() as load:
        await fleet.set_model("v3", source, rollout=fleet.fail_canary_on_second_pod("v3"))
        st = await failed_and_settled(fleet, "v3")
        settled = await fleet.swaps()
        # Not retried while the spec stays: nothing moves over two resync periods (2 s each in the
        # local cluster) — an absence can only be checked by giving it the time to happen.
        await asyncio.sleep(4.5)
        assert await fleet.swaps() == settled
    assert_no_failures(load.report())
    failure = st.rollout.failure if st.rollout else None
    # Fake pods: scripted on the check after activation. Real pods: the misconfigured server may
    # refuse the canary already when it scores the staged weights (then the pod never swaps).
    steps = (Step.VERIFY,) if not fleet.real else (Step.VERIFY, Step.VERIFY_STAGED)
    assert failure is not None and failure.pod == SECOND_POD and failure.step in steps, failure
    moved = {n: settled[n] - before[n] for n in settled}
    second = 2 if failure.step is Step.VERIFY else 0
    assert moved == {"reranker-0": 2, "reranker-1": second, "reranker-2": 0}, f"swaps: {moved}"
    assert set((await fleet.actives()).values()) == {"v1"}
    await _assert_rolled_back(fleet, st, "v1")
    degraded = cond(st, "Degraded")
    assert SECOND_POD in degraded[2] and "Verify" in degraded[2], degraded
    return load.report()


async def broken_canary_never_serves(fleet: Fleet) -> LoadReport:
    """A version that fails its canary fails it on the staged weights of the first pod: it never
    becomes active anywhere, answers no request, and the fleet stays on v1 (history RolledBack).
    A version id no earlier scenario used: a pod holding it in memory would reactivate it."""
    await fleet.baseline("v1")
    before = await fleet.swaps()
    source = fleet.publish("v7", "inverted")
    async with fleet.cluster.load() as load:
        await fleet.set_model("v7", source, rollout={"canary": [CANARY if fleet.real else TWO_DOC_CANARY]})
        st = await failed_and_settled(fleet, "v7")
        await asyncio.sleep(1.0)
        report = load.report()
    assert_no_failures(report)
    assert report.by_version.get("v7", 0) == 0, f"v7 answered requests: {report.by_version}"
    failure = st.rollout.failure if st.rollout else None
    assert failure is not None and (failure.pod, failure.step) == ("reranker-0", Step.VERIFY_STAGED), failure
    assert await fleet.swaps() == before, "no pod swapped"
    assert set((await fleet.actives()).values()) == {"v1"}
    await _assert_rolled_back(fleet, st, "v1")
    return report


QUALITY_SET = [
    {
        "query": "how do neural networks learn from data",
        "documents": [
            "A ripe banana tastes sweet and fresh.",
            "Neural networks learn from data: deep learning updates weights with backpropagation.",
            "The football team won the match in extra time.",
        ],
        "relevance": [0, 2, 0],
    },
    {
        "query": "football match result",
        "documents": ["The football team won the match in extra time.", "A ripe banana tastes sweet."],
        "relevance": [1, 0],
    },
]
ONE_DOC_CANARY = {"query": "neural networks", "documents": ["Neural networks learn."], "expectTop": 0}


async def quality_gate_blocks_a_worse_version(fleet: Fleet) -> LoadReport:
    """A version that loads and passes its canary but ranks the labelled set worse is blocked by the
    quality gate before any pod activates it (both scores in status and an Event); a good one passes."""
    assert not fleet.real, "fake pods only: they can be told to rank a version backwards"
    await fleet.baseline("v1")
    before = await fleet.swaps()
    fleet.script_invert("v5")
    gate = {"set": QUALITY_SET, "metric": "ndcg", "k": 5, "maxDrop": 0.05}
    rollout = {"quality": gate, "canary": [ONE_DOC_CANARY]}
    async with fleet.cluster.load() as load:
        await fleet.set_model("v5", fleet.publish("v5", "v2"), rollout=rollout)
        st = await failed_and_settled(fleet, "v5")
        report = load.report()
    assert_no_failures(report)
    assert report.by_version.get("v5", 0) == 0, report.by_version
    assert await fleet.swaps() == before, "no pod activated v5"
    r = st.rollout
    assert r is not None and r.failure is not None and r.failure.step is Step.QUALITY, r
    q = st.history[-1].quality
    assert q is not None and not q.passed and q.candidate is not None and q.baseline == 1.0
    assert q.candidate < q.baseline - 0.05 and q.baseline_version == "v1", q
    assert r.quality == q
    assert cond(st, "Ready")[:2] == ("False", "QualityGateFailed")
    assert cond(st, "Stalled")[:2] == ("True", "QualityGateFailed")
    events = [e for e in await fleet.cluster.events() if e["reason"] == "QualityGateFailed"]
    assert events and f"{q.candidate:.4f}" in events[0]["message"], events
    # A version that ranks as well passes the same gate and rolls out.
    await fleet.set_model("v6", fleet.publish("v6", "v2"), rollout=rollout)
    st = await fleet.cluster.wait_ready("v6", timeout=fleet.timeout * 2)
    assert st.rollout is not None and st.rollout.quality is not None and st.rollout.quality.passed
    assert st.history[-1].quality is not None and st.history[-1].quality.candidate == 1.0
    return report


async def quality_gate_blocks_noisy_minilm(fleet: Fleet) -> LoadReport:
    """Real MiniLM weights: ``minilm-noisy`` (v2's weights with noise) loads and passes a one-case
    canary, but its nDCG@5 on devtools.quality_set drops clearly below the serving version's: the
    gate blocks it before any pod activates it, both scores in status.history."""
    assert fleet.real, "real pods: the scores are real MiniLM rankings"
    from devtools.quality_set import ONE_CASE_CANARY, QUALITY_GATE

    c = fleet.cluster
    canary = {"canary": [ONE_CASE_CANARY]}
    await fleet.set_model("mq-v2", fleet.publish("mq-v2", "minilm-v2"), rollout=canary)
    await c.wait_ready("mq-v2", timeout=fleet.timeout * 2)
    before = await fleet.swaps()
    async with c.load() as load:
        await fleet.set_model(
            "mq-noisy", fleet.publish("mq-noisy", "minilm-noisy"), rollout={**canary, "quality": QUALITY_GATE}
        )
        st = await failed_and_settled(fleet, "mq-noisy")
        report = load.report()
    assert_no_failures(report)
    assert report.by_version.get("mq-noisy", 0) == 0, report.by_version
    assert await fleet.swaps() == before, "no pod activated the noisy version"
    assert set((await fleet.actives()).values()) == {"mq-v2"}
    r = st.rollout
    assert r is not None and r.failure is not None and r.failure.step is Step.QUALITY, r
    q = st.history[-1].quality
    assert q is not None and not q.passed and q.baseline_version == "mq-v2", q
    assert q.candidate is not None and q.baseline is not None and q.baseline > 0.95, q
    assert q.candidate < q.baseline - 0.05, q
    assert cond(st, "Ready")[:2] == ("False", "QualityGateFailed")
    events = [e for e in await c.events() if e["reason"] == "QualityGateFailed"]
    assert events and f"{q.candidate:.4f}" in events[-1]["message"], events
    print(f"quality gate: nDCG@5 mq-v2 {q.baseline:.4f}, mq-noisy {q.candidate:.4f}")
    return report


async def _assert_rolled_back(fleet: Fleet, st: RerankerModelStatus, good: str) -> None:
    assert cond(st, "Ready")[:2] == ("False", "RolledBack")
    assert cond(st, "Stalled")[:2] == ("True", "RolledBack")
    assert cond(st, "Degraded")[:2] == ("True", "RolloutFailed")
    assert st.last_good_version == good and st.current_version == good
    assert st.history[-1].result is HistoryResult.ROLLED_BACK
    assert (await fleet.cluster.boot_config() or {}).get("version") == good
    assert "RolloutFailed" in [e["reason"] for e in await fleet.cluster.events()]


async def spec_change_mid_rollout(fleet: Fleet) -> LoadReport:
    """v2 is replaced by v4 after its first pod: v2 is superseded, v4 rolls out to every pod."""
    c = fleet.cluster
    await fleet.baseline("v1")
    started = iso(now())
    async with c.load() as load:
        await fleet.set_model("v2", fleet.publish("v2", "v2"), rollout={"pauseSeconds": 3})
        await c.wait_for_status(first_pod_done("v2"), timeout=fleet.timeout, what="one pod on v2")
        await fleet.set_model("v4", fleet.publish("v4", "v1"))
        st = await c.wait_ready("v4", timeout=fleet.timeout * 2)
    assert_no_failures(load.report())
    results = [(h.version, h.result) for h in st.history]
    assert ("v2", HistoryResult.SUPERSEDED) in results, results
    assert results[-1] == ("v4", HistoryResult.SUCCEEDED), results
    assert st.last_good_version == "v4"
    agents = await fleet.agents()
    assert set((await fleet.actives()).values()) == {"v4"}
    moved = ops(agents["reranker-2"], ("activate", "rollback"), "v2", since=started)
    assert not moved, "the superseded rollout never got further"
    return load.report()


async def operator_killed_mid_rollout(fleet: Fleet) -> LoadReport:
    """SIGKILL the operator right after the first pod swapped; a new one converges from the agents."""
    c = fleet.cluster
    await fleet.baseline("v1")
    before = await fleet.swaps()
    async with c.load() as load:
        await fleet.set_model("v2", fleet.publish("v2", "v2"), rollout={"pauseSeconds": 2})

        async def first_pod_swapped() -> bool:
            return (await fleet.actives()).get("reranker-0") == "v2"

        await fleet.until(first_pod_swapped, "reranker-0 on v2")
        c.kill_operator()
        await asyncio.sleep(1.0)  # a moment with no operator at all
        await c.start_operator()
        st = await c.wait_ready("v2", timeout=fleet.timeout * 2)
    assert_no_failures(load.report())
    after = await fleet.swaps()
    assert {n: after[n] - before[n] for n in after} == {n: 1 for n in after}, (
        "no pod swapped twice, none skipped"
    )
    assert st.history[-1].version == "v2" and st.history[-1].result is HistoryResult.SUCCEEDED
    return load.report()


async def pod_restarted_mid_rollout(fleet: Fleet) -> LoadReport:
    """The second pod dies (SIGKILL) during the rollout and comes back on the boot version (v1)."""
    c = fleet.cluster
    await fleet.baseline("v1")
    async with c.load() as load:
        await fleet.set_model("v2", fleet.publish("v2", "v2"), rollout={"pauseSeconds": 2})
        await c.wait_for_status(first_pod_done("v2"), timeout=fleet.timeout, what="one pod on v2")
        await c.restart_pod(SECOND_POD)
        st = await c.wait_ready("v2", timeout=fleet.timeout * 3)
    assert_no_failures(load.report())
    agents = await fleet.agents()
    assert set((await fleet.actives()).values()) == {"v2"}
    boot = agents[SECOND_POD].get("boot") or {}
    if fleet.real:
        assert boot.get("version") in (None, "v1"), boot  # it came back on the last-good version
    assert st.last_good_version == "v2"
    return load.report()


async def pod_killed_while_verified_staged(fleet: Fleet) -> LoadReport:
    """The second pod is SIGKILLed while its agent scores the canary on its staged weights: a pod
    fault, not a version fault — the pod is re-planned and the rollout completes on the target."""
    assert not fleet.real, "fake pods only: their verify is slowed by the script"
    c = fleet.cluster
    await fleet.baseline("v1")
    script = getattr(fleet, "_script", {"fail": [], "errors": []})
    script["delay"] = {"verify": 0.8}
    fleet._script = script
    c.script_fakes(script)

    async def verifying() -> bool:
        op = (await c.agent_status(SECOND_POD)).get("operation") or {}
        return op.get("kind") == "verify" and op.get("state") == "running" and op.get("version") == "v2"

    async with c.load() as load:
        await fleet.set_model("v2", fleet.publish("v2", "v2"))
        await fleet.until(verifying, "the second pod verifying v2 on its staged weights")
        await c.restart_pod(SECOND_POD)
        st = await c.wait_ready("v2", timeout=fleet.timeout * 3)
    assert set((await fleet.actives()).values()) == {"v2"}
    assert st.history[-1].result is HistoryResult.SUCCEEDED and st.rollout is not None
    assert st.rollout.failure is None
    reasons = [e["reason"] for e in await c.events()]
    assert "RolloutFailed" not in reasons, reasons
    report = load.report()
    # Only the killed pod's in-flight requests may fail.
    assert all(f.startswith(f"{SECOND_POD}:") for f in report.failures), report.failures
    return report


# Where ``pod_killed_mid_swap`` holds the second pod's swap, by step: the agent's request that
# step waits on (pod None: the http registry, every pod's download of the version; else that pod's
# calls to its own server) and the agent operation then running. ``verify`` is the check after the
# activation, through the data plane: the pod already serves the new version when it dies.
SWAP_STEPS: dict[str, tuple[str | None, str, str, str]] = {
    "stage": (None, "GET", "/{version}/manifest.json", "stage"),
    "preload": (SECOND_POD, "POST", "/admin/v1/preload", "preload"),
    "activate": (SECOND_POD, "POST", "/admin/v1/activate", "activate"),
    "verify": (SECOND_POD, "POST", "/v1/rerank", "verify"),
}
SWAP_KINDS = ("activate", "rollback", "boot")  # the agent operations that swap a model in


def activations(agent: dict[str, Any], skip: set[str]) -> list[str | None]:
    """Versions the agent swapped in (its succeeded activate / rollback / boot operations), oldest
    first, leaving out the operations whose ids are in ``skip``."""
    return [
        o.get("version")
        for o in agent.get("history", [])
        if o.get("kind") in SWAP_KINDS and o.get("state") == "succeeded" and o.get("id") not in skip
    ]


async def pod_killed_mid_swap(
    fleet: Fleet, step: str, containers: tuple[Container, ...] = ("server",)
) -> LoadReport:
    """Under load, the second pod's server (``containers``: or its whole pod) is SIGKILLed while its
    swap to a new version is at ``step``; the kubelet starts it again. A pod fault, not a version
    fault: the rollout completes on the target, no pod swaps twice, no other pod fails a request.

    The swap is held at the step on the harness's wires (``LocalCluster.hold``), never by timing:
    the step has begun when the agent's request waits there and its operation runs. The request
    goes on only once the server is dead, so the agent sees its call cut, as from a crashing server.
    """
    assert fleet.real and fleet.testmodels is not None, "real pods: a real server process dies"
    c = fleet.cluster
    await fleet.baseline("v1")
    # A version no pod ever held: every step of its swap runs (a copy on disk or in memory would
    # skip stage or preload). Served over http, so that its download can be held.
    version = f"fault-{step}"
    source = c.publish_http(version, fleet.testmodels / MODEL_FOLDERS["v2"])
    where, method, path, kind = SWAP_STEPS[step]
    hold = c.hold(where, method, path.format(version=version))
    before = await fleet.swaps()
    failed_before = [e["reason"] for e in await c.events()].count("RolloutFailed")

    async def in_step() -> bool:
        op = (await c.agent_status(SECOND_POD)).get("operation") or {}
        return (op.get("kind"), op.get("version"), op.get("state")) == (kind, version, "running")

    async with c.load() as load:
        await fleet.set_model(version, source)
        # The registry holds every pod's download: all of them stage at once (the prefetch).
        await hold.reached(fleet.timeout, count=len(c.pods) if where is None else 1)
        await fleet.until(in_step, f"{SECOND_POD} at {kind} {version}")
        at_kill = await c.agent_status(SECOND_POD)
        in_flight = at_kill["operation"]["id"]
        for container in containers:
            await c.kill_container(SECOND_POD, container)
        hold.release()
        # The held request went on to the dead server (its connection cut) before the kubelet
        # starts the container again: the agent's call can never reach the new process.
        await hold.settled(fleet.timeout)
        for container in containers:
            await c.start_container(SECOND_POD, container)

        def settled(s: RerankerModelStatus) -> bool:  # Ready on the version, or failed (then say why)
            failed = s.rollout is not None and s.rollout.version == version and s.rollout.failure is not None
            on_target = s.current_version == version and len(s.pods) == len(c.pods)
            return failed or (on_target and cond(s, "Ready")[0] == "True")

        st = await c.wait_for_status(settled, timeout=fleet.timeout * 2, what=f"Ready on {version}")
    report = load.report()

    # Completed on the target, the version never condemned.
    assert st.rollout is not None and st.rollout.failure is None, st.rollout.failure if st.rollout else st
    assert set((await fleet.actives()).values()) == {version}
    assert (st.history[-1].version, st.history[-1].result) == (version, HistoryResult.SUCCEEDED)
    reasons = [e["reason"] for e in await c.events()]
    assert reasons.count("RolloutFailed") == failed_before, "the pod fault failed the rollout"

    # No pod swapped twice. The other pods: exactly one swap each, to the version. The killed pod:
    # once per server process. Its killed process swapped to the version at most once (only when
    # killed at verify, after its activation); its new process came up empty and swapped to the
    # version exactly once — after first booting on the boot ConfigMap's version (v1) when its agent
    # got there before the operator: a restarted agent boots at start, a living one when it sees its
    # server back empty (--server-watch-interval). Then two swaps in that process, one per version:
    # never a swap repeated.
    after = await fleet.swaps()
    agents = await fleet.agents()
    old_ids = {o["id"] for o in at_kill.get("history", [])}
    others = sorted(n for n in c.pods if n != SECOND_POD)
    assert {n: after[n] - before[n] for n in others} == {n: 1 for n in others}, (before, after)
    for n in others:
        assert activations(agents[n], set()).count(version) == 1, agents[n]["history"]
    killed_process = activations(at_kill, set())
    assert killed_process.count(version) == (1 if step == "verify" else 0), at_kill["history"]
    new_process = activations(agents[SECOND_POD], old_ids)
    boot = [v for v in new_process if v != version]
    assert new_process.count(version) == 1 and new_process[-1] == version, new_process
    assert boot in ([], ["v1"]), new_process
    assert after[SECOND_POD] == len(new_process), (after, new_process)  # none went unseen

    # The kill landed in the step: the operation in flight was cut off (a stage needs no server,
    # so with the agent alive it finished).
    if "agent" not in containers:
        op = next(o for o in agents[SECOND_POD]["history"] if o["id"] == in_flight)
        assert op["state"] == ("succeeded" if step == "stage" else "failed"), op

    # Zero failed requests on the other pods; only the killed pod's may fail.
    assert report.ok > 0
    others_failed = [
        f"{s.pod}: {s.status} {s.error}" for s in report.samples if not s.ok and s.pod != SECOND_POD
    ]
    assert not others_failed, others_failed
    killed = sum(1 for s in report.samples if not s.ok)
    print(f"{'+'.join(containers)} killed at {step}: {report.summary()}; {killed} failed on {SECOND_POD}")
    return report


async def transient_source_error_is_retried(fleet: Fleet) -> LoadReport:
    """The source fails every pod's first two stages for a passing reason: retried with backoff
    within podTimeoutSeconds, the rollout completes, the fleet is never rolled back. The message
    would read as "not found" to an operator that went by the text: the agent's sourceFault
    (transient) is what decides, carried from the pod's status through the operator."""
    assert not fleet.real, "fake pods only: they can be told the source throttles"
    c = fleet.cluster
    await fleet.baseline("v1")
    fleet._fail_fakes(
        {
            "step": "stage",
            "version": "v7",
            "times": 2,
            "errorType": "source_unavailable",
            "sourceFault": "transient",  # (the message alone, from older agents: test_planner.py)
            "error": "GET http://registry/v7/manifest.json answered 502 Bad Gateway (upstream: not found)",
        }
    )
    async with c.load() as load:
        await fleet.set_model("v7", fleet.publish("v7", "v2"))
        st = await c.wait_ready("v7", timeout=fleet.timeout * 2)
        report = load.report()
    assert_no_failures(report)
    r = st.rollout
    assert r is not None and r.failure is None and st.history[-1].result is HistoryResult.SUCCEEDED
    reasons = [e["reason"] for e in await c.events()]
    assert "SourceUnavailable" in reasons and "RolloutFailed" not in reasons, reasons
    return report


async def last_good_source_gone(fleet: Fleet) -> LoadReport:
    """The last-good version deleted from storage, then a new pod needs it: Degraded
    (LastGoodUnavailable) and an Event, not a silent boot ConfigMap pointing at nothing; restored,
    the pod joins and the condition clears."""
    assert not fleet.real, "fake pods only"
    c = fleet.cluster
    source = await fleet.baseline("v8", "v2")
    gone = Path(source["uri"].removeprefix("file://"))
    moved = gone.with_name(".v8.away")
    gone.rename(moved)
    async with c.load() as load:
        pod = await c.add_pod(wait=False)  # it cannot become ready: its boot version is gone
        st = await _last_good_gone_then_restored(fleet, pod.name, gone, moved)
        report = load.report()
    assert_no_failures(report)
    assert st.last_good_unavailable is None
    return report


async def _last_good_gone_then_restored(
    fleet: Fleet, pod: str, gone: Path, moved: Path
) -> RerankerModelStatus:
    c = fleet.cluster

    def unavailable(s: RerankerModelStatus) -> bool:
        return cond(s, "Degraded")[:2] == ("True", "LastGoodUnavailable")

    st = await c.wait_for_status(unavailable, timeout=fleet.timeout, what="LastGoodUnavailable")
    assert st.last_good_unavailable is not None and st.last_good_unavailable.version == "v8"
    assert "does not exist" in cond(st, "Degraded")[2]
    events = [e for e in await c.events() if e["reason"] == "LastGoodUnavailable"]
    assert events and "v8" in events[0]["message"], events
    moved.rename(gone)  # restored: the pod is brought onto it, the condition clears
    st = await c.wait_for_status(
        lambda s: cond(s, "Degraded")[0] == "False" and s.ready_pods == f"{len(c.pods)}/{len(c.pods)}",
        timeout=fleet.timeout * 2,
        what="the new pod on v8",
    )
    assert (await fleet.actives())[pod] == "v8"
    return st


async def pod_added_after_rollout(fleet: Fleet) -> LoadReport:
    """A new pod boots on the last-good version from the boot ConfigMap and joins the fleet."""
    c = fleet.cluster
    await fleet.baseline("v2", "v2")
    history = (await c.status()).history
    async with c.load() as load:
        pod = await c.add_pod()
        st = await c.wait_ready("v2", timeout=fleet.timeout * 2)
    assert_no_failures(load.report())
    assert (await fleet.actives())[pod.name] == "v2"
    assert st.history == history, "joining a settled version is not a new rollout"
    assert st.ready_pods == f"{len(c.pods)}/{len(c.pods)}"
    return load.report()


async def manual_rollback_by_annotation(fleet: Fleet) -> LoadReport:
    """``kubectl annotate rrm reranker hotswap.dev/rollback=true`` goes back to the last-good version."""
    c = fleet.cluster
    await fleet.baseline("v1")
    async with c.load() as load:
        await fleet.set_model("v2", fleet.publish("v2", "v2"))
        await c.wait_ready("v2", timeout=fleet.timeout * 2)
        # v2 is now last-good; roll v5, then undo it by hand: back to v2, the good version before.
        await fleet.set_model("v5", fleet.publish("v5", "v1"))
        await c.wait_ready("v5", timeout=fleet.timeout * 2)
        await c.kubectl("annotate", "rrm", c.model, "hotswap.dev/rollback=true")
        await c.wait_for_status(
            lambda st: st.target_version == "v2", timeout=fleet.timeout, what="spec back on v2"
        )
        waited = await c.kubectl(
            "wait", "--for=condition=Ready", f"rrm/{c.model}", "--timeout=60s", check=False
        )
        st = await c.wait_ready("v2", timeout=fleet.timeout * 2)
    assert waited.returncode == 0, waited.stderr
    assert_no_failures(load.report())
    model = await c.get_model()
    assert model["spec"]["version"] == "v2" and "hotswap.dev/rollback" not in model["metadata"].get(
        "annotations", {}
    )
    assert set((await fleet.actives()).values()) == {"v2"}
    assert "ManualRollback" in [e["reason"] for e in await c.events()]
    assert st.last_good_version == "v2"
    return load.report()


async def hold_without_automatic_rollback(fleet: Fleet) -> LoadReport:
    """With rollback.automatic false a failure holds: moved pods stay, Ready is False."""
    c = fleet.cluster
    await fleet.baseline("v1")
    async with c.load() as load:
        spec = fleet.fail_canary_on_second_pod("v3")
        await fleet.set_model("v3", fleet.publish("v3", "v2"), rollout=spec, rollback={"automatic": False})
        st = await c.wait_for_status(
            lambda s: bool(s.rollout and s.rollout.phase is Phase.HOLDING),
            timeout=fleet.timeout,
            what="holding",
        )
    assert_no_failures(load.report())
    assert cond(st, "Ready")[:2] == ("False", "RolloutHeld")
    actives = await fleet.actives()
    assert actives == {"reranker-0": "v3", "reranker-1": "v3", "reranker-2": "v1"}, actives
    assert st.history[-1].result is HistoryResult.FAILED
    return load.report()


Scenario = Callable[[Fleet], Awaitable[LoadReport]]
