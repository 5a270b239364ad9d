"""The end-to-end scenario, written once and run against any backend (``e2e.backend.Backend``).

1. Install v1: ``kubectl apply`` a RerankerModel for v1, wait until it is Ready on every pod.
2. Put concurrent client load on the data-plane Service, counting every failure.
3. ``kubectl apply`` the change to v2; wait until Ready on v2. From the agents' own records prove it
   rolled one pod at a time: each pod swapped once, in name order, verified before the next swapped,
   every pod preloaded before the first swap.
4. ``kubectl apply`` a broken v3 (by default a model that loads fine but ranks backwards, so its
   canary fails on the first pod; or NaN weights, refused at preload); wait for the automatic
   rollback: Degraded with the reason, history ``RolledBack``, every pod back on v2.
5. ``kubectl wait --for=condition=Stalled rrm/NAME`` (after the rollback Ready is False: v3 is not served).
6. Stop the load: zero failed requests, both v1 and v2 served.

Waits raise ``ScenarioError`` (nothing else can be checked after one times out); everything else is
a ``Check`` in the result, so one run reports every problem it saw.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
import json
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from devtools.testmodels import CANARY

from .backend import Backend, LoadRun, LoadSummary
from .checks import (
    Check,
    PodSwap,
    answered_none,
    condition,
    is_ready_on,
    rolled_back,
    rollout_checks,
    swaps_to,
)
from .result import Event, ScenarioResult

API_VERSION = "hotswap.dev/v1alpha1"
KIND = "RerankerModel"


class ScenarioError(RuntimeError):
    """A wait ran out: the cluster never reached the state the scenario needs to go on."""


@dataclasses.dataclass(frozen=True)
class Models:
    """Which test models (``devtools.testmodels.MODELS``) play v1, v2 and the broken v3."""

    v1: str
    v2: str
    v3: str
    v3_fails_at: str  # the step the operator names in status.rollout.failure: VerifyStaged | Preload


# The tiny XLM-R rerankers (fast). tiny-xlmr-inverted is a valid model that ranks backwards: it
# passes every preload check and fails the canary on the first pod's staged weights, before any
# pod activates it.
TINY = Models("tiny-xlmr-v1", "tiny-xlmr-v2", "tiny-xlmr-inverted", "VerifyStaged")
# The real MiniLM weights (the demo). v3 is the inverted tiny reranker: another architecture,
# a legitimate full replace, refused by its canary on the staged weights.
MINILM = Models("minilm-v1", "minilm-v2", "tiny-xlmr-inverted", "VerifyStaged")
# NaN weights: refused at preload on every pod, no pod ever serves v3.
MINILM_NAN = Models("minilm-v1", "minilm-v2", "broken-nan", "Preload")


@dataclasses.dataclass(frozen=True)
class ScenarioConfig:
    models: Models = TINY
    versions: tuple[str, str, str] = ("v1", "v2", "v3")
    canary: tuple[Mapping[str, Any], ...] = (CANARY,)  # every good test model ranks document 1 first
    concurrency: int = 4  # clients on the Service
    pause_seconds: int = 0  # spec.rollout.pauseSeconds: a pause between two pods
    soak_seconds: int = 0  # spec.rollout.analysis.soakSeconds
    # spec.rollout.podTimeoutSeconds: it also bounds the wait for a booting pod to be usable, and
    # three servers importing torch at once on a busy 2-core machine can take minutes.
    pod_timeout_seconds: int = 300
    baseline_seconds: float = 1.0  # load on the settled v1 fleet before the first change
    settle_seconds: float = 1.0  # load after each change settled
    install_timeout: float = 420.0  # the first install boots every pod's server (imports torch)
    change_timeout: float = 180.0
    poll_seconds: float = 0.25
    # A fourth step: ``quality_model`` (e.g. minilm-noisy: loads, passes the canary, ranks worse) is
    # applied as ``quality_version`` with spec.rollout.quality (devtools.quality_set.QUALITY_GATE) and
    # must be blocked by the gate (QualityGateFailed) before any pod activates it; None: no such step.
    quality_model: str | None = None
    quality_version: str = "v4"


def model_manifest(
    backend: Backend, config: ScenarioConfig, version: str, source: Mapping[str, str]
) -> dict[str, Any]:
    """The whole RerankerModel for ``version``, as a user would keep it in Git and ``kubectl apply``."""
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": {"name": backend.model_name, "namespace": backend.namespace},
        "spec": {
            "selector": {"matchLabels": backend.selector()},
            "version": version,
            "source": dict(source),
            "rollout": {
                "prefetch": True,
                "podTimeoutSeconds": config.pod_timeout_seconds,
                "pauseSeconds": config.pause_seconds,
                "canary": [dict(c) for c in config.canary],
                "analysis": {"soakSeconds": config.soak_seconds, "maxErrorRate": 0.01},
            },
            "rollback": {"automatic": True},
        },
    }


def with_quality_gate(manifest: dict[str, Any]) -> dict[str, Any]:
    """``manifest`` with spec.rollout.quality: the labelled set of devtools.quality_set (nDCG@5)."""
    from devtools.quality_set import QUALITY_GATE

    manifest["spec"]["rollout"]["quality"] = json.loads(json.dumps(QUALITY_GATE))
    # The gate scores one pod's staged weights: no prefetch on every pod of a version it may block.
    manifest["spec"]["rollout"]["prefetch"] = False
    return manifest


def _last_line(text: str) -> str:
    lines = text.strip().splitlines()
    return lines[-1] if lines else ""


def _utcnow() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


class Scenario:
    """One run. ``model`` (the latest RerankerModel read), ``load`` and ``events`` are there to
    watch while it runs (the demo draws them); ``run()`` returns the result."""

    def __init__(
        self,
        backend: Backend,
        config: ScenarioConfig | None = None,
        on_event: Callable[[Event], None] | None = None,
    ) -> None:
        self.backend = backend
        self.config = config or ScenarioConfig()
        self.on_event = on_event
        self.events: list[Event] = []
        self.model: dict[str, Any] | None = None
        self.load: LoadRun | None = None
        self.phase = "starting"
        self.checks: list[Check] = []
        self._t0 = time.monotonic()
        self._started_wall = time.time()
        self._pod_seen: dict[str, tuple[Any, Any]] = {}

    # ------------------------------------------------------------------------------ the steps

    async def run(self) -> ScenarioResult:
        b, cfg = self.backend, self.config
        v1, v2, v3 = cfg.versions
        self._t0, self._started_wall = time.monotonic(), time.time()
        pods = await b.pods()
        if not pods:
            raise ScenarioError(f"no reranker pods selected by {b.selector()} in {b.namespace}")
        self.event(f"{len(pods)} reranker pods: {', '.join(pods)}")
        models = {v1: cfg.models.v1, v2: cfg.models.v2, v3: cfg.models.v3}
        v4 = cfg.quality_version
        if cfg.quality_model is not None:
            models[v4] = cfg.quality_model
        sources = {}
        for version, folder in models.items():
            sources[version] = b.publish(version, folder)
            self.event(f"published {version} ({folder}) at {sources[version]['uri']}")
        manifests = self._write_manifests(sources)

        self.phase = f"installing {v1}"
        install = await self._apply(manifests[v1], v1)
        install_seconds = await self._wait(
            lambda m: is_ready_on(m, v1, len(pods)), install, cfg.install_timeout, f"Ready on {v1}"
        )
        self.event(f"{v1} Ready on every pod after {install_seconds:.1f}s")

        async with b.load(cfg.concurrency) as load:
            self.load = load
            self.event(f"load: {cfg.concurrency} clients on the Service")
            self.phase = f"serving {v1} under load"
            await asyncio.sleep(cfg.baseline_seconds)

            self.phase = f"rolling out {v2}, one pod at a time"
            since = _utcnow() - datetime.timedelta(seconds=0.5)
            started = await self._apply(manifests[v2], v2)
            rollout_seconds = await self._wait(
                lambda m: is_ready_on(m, v2, len(pods)), started, cfg.change_timeout, f"Ready on {v2}"
            )
            self.event(f"{v2} Ready on every pod, rollout took {rollout_seconds:.1f}s")
            agents = await self._agents(pods)
            swaps = swaps_to(agents, v2, since)
            self.checks += rollout_checks(swaps, v2)
            self._check_history(v2, "Succeeded")
            rollout = {pod: s[0] for pod, s in swaps.items() if s}
            self.phase = f"serving {v2} under load"
            await asyncio.sleep(cfg.settle_seconds)

            self.phase = f"rolling out broken {v3}"
            since = _utcnow() - datetime.timedelta(seconds=0.5)
            started = await self._apply(manifests[v3], v3)
            rollback_seconds = await self._wait(
                lambda m: rolled_back(m, v3, v2), started, cfg.change_timeout, f"{v3} rolled back to {v2}"
            )
            failure = dict(((self.model or {}).get("status") or {}).get("rollout", {}).get("failure") or {})
            self.event(
                f"{v3} failed on {failure.get('pod') or 'every pod'} at {failure.get('step')}: "
                f"{failure.get('reason')}; rolled back to {v2} in {rollback_seconds:.1f}s"
            )
            agents = await self._agents(pods)
            broken = [s for pod_swaps in swaps_to(agents, v3, since).values() for s in pod_swaps]
            restored = [s for pod_swaps in swaps_to(agents, v2, since).values() for s in pod_swaps]
            final = {pod: (agents[pod].get("active") or {}).get("version") for pod in pods}
            self._check_rollback(failure, broken, restored, final)

            # kstatus: after the rollback v3 is not served, so Ready is False and Stalled True (what
            # CI and GitOps health checks read); waiting on Stalled returns at once.
            self.phase = "kubectl wait --for=condition=Stalled"
            name = f"rrm/{b.model_name}"
            waited = await b.kubectl("wait", "--for=condition=Stalled", name, "--timeout=60s", timeout=90)
            ready = condition(self.model, "Ready")
            self.check(
                f"Ready=False with reason RolledBack ({v3} is not served)",
                (ready.get("status"), ready.get("reason")) == ("False", "RolledBack"),
                f"Ready={ready.get('status')} {ready.get('reason')}",
            )
            self.check(
                "kubectl wait --for=condition=Stalled succeeds",
                waited.returncode == 0,
                _last_line(waited.stdout if waited.returncode == 0 else waited.stderr),
            )
            got = await b.kubectl("get", "rrm", b.model_name, "-o", "wide")
            degraded = condition(self.model, "Degraded")
            self.phase = f"serving {v2} under load"
            await asyncio.sleep(cfg.settle_seconds)
            if cfg.quality_model is not None:
                final = await self._quality_step(manifests[v4], v4, v2, pods)
                got = await b.kubectl("get", "rrm", b.model_name, "-o", "wide")
        report = load.summary or LoadSummary(0, 0, {}, {}, [], 0.0, 0.0)
        self._check_load(report)
        self.phase = "done"
        status = (self.model or {}).get("status") or {}
        return ScenarioResult(
            backend=b.name,
            pods=pods,
            models=models,
            install_seconds=install_seconds,
            rollout_seconds=rollout_seconds,
            rollback_seconds=rollback_seconds,
            rollout=rollout,
            broken=broken,
            restored=restored,
            failure=failure,
            degraded=degraded,
            history=list(status.get("history") or []),
            final=final,
            load=report,
            kubectl_get=got.stdout if got.returncode == 0 else got.stderr,
            kubectl_wait=waited.stdout if waited.returncode == 0 else waited.stderr,
            manifests=manifests,
            checks=self.checks,
            events=self.events,
            started_wall=self._started_wall,
            versions=cfg.versions,
        )

    async def _quality_step(self, manifest: Path, v4: str, v2: str, pods: list[str]) -> dict[str, Any]:
        """Apply the worse-ranking ``v4`` with the quality gate: blocked before any pod serves it,
        both scores in status.history, every pod still on ``v2``. The pods' final versions."""
        cfg = self.config
        self.phase = f"rolling out {v4} ({cfg.quality_model}) with a quality gate"
        since = _utcnow() - datetime.timedelta(seconds=0.5)
        started = await self._apply(manifest, v4)
        blocked_seconds = await self._wait(
            lambda m: rolled_back(m, v4, v2), started, cfg.change_timeout, f"{v4} blocked by the quality gate"
        )
        status = (self.model or {}).get("status") or {}
        failure = (status.get("rollout") or {}).get("failure") or {}
        history = status.get("history") or []
        quality = (history[-1].get("quality") if history else None) or {}
        cand, base = quality.get("candidate"), quality.get("baseline")
        metric = f"{quality.get('metric')}@{quality.get('k')}"
        scores = (
            f"{metric} {v4} {cand:.4f} vs {quality.get('baselineVersion')} {base:.4f}"
            if isinstance(cand, float) and isinstance(base, float)
            else f"scores {cand} vs {base}"
        )
        self.event(f"{v4} blocked by the quality gate in {blocked_seconds:.1f}s: {scores}")
        self.check(
            f"{v4} blocked by the quality gate ({scores})",
            failure.get("step") == "QualityGate"
            and condition(self.model, "Ready").get("reason") == "QualityGateFailed",
            f"failure {failure}",
        )
        self.check(
            f"both scores in status.history ({v4} ranks worse than {v2})",
            isinstance(cand, float)
            and isinstance(base, float)
            and quality.get("baselineVersion") == v2
            and cand < base
            and quality.get("passed") is False,
            f"quality {quality}",
        )
        agents = await self._agents(pods)
        reached = sorted(pod for pod, s in swaps_to(agents, v4, since).items() if s)
        final = {pod: (agents[pod].get("active") or {}).get("version") for pod in pods}
        self.check(f"no pod ever activated {v4}", not reached, f"swapped: {reached}")
        self.check(f"every pod still serves {v2}", set(final.values()) == {v2}, f"{final}")
        self.phase = f"serving {v2} under load"
        await asyncio.sleep(cfg.settle_seconds)
        return final

    # ------------------------------------------------------------------------------ checks

    def _check_history(self, version: str, result: str) -> None:
        history = ((self.model or {}).get("status") or {}).get("history") or []
        last = history[-1] if history else {}
        self.check(
            f"history ends with {version} {result}",
            (last.get("version"), last.get("result")) == (version, result),
            f"last entry: {last.get('version')} {last.get('result')}",
        )

    def _check_rollback(
        self,
        failure: Mapping[str, Any],
        broken: list[PodSwap],
        restored: list[PodSwap],
        final: Mapping[str, str | None],
    ) -> None:
        _, v2, v3 = self.config.versions
        status = (self.model or {}).get("status") or {}
        degraded = condition(self.model, "Degraded")
        self.check(
            f"Degraded=True, reason RolloutFailed, naming {v3} and why",
            degraded.get("status") == "True"
            and degraded.get("reason") == "RolloutFailed"
            and v3 in str(degraded.get("message"))
            and bool(failure.get("reason"))
            and str(failure.get("reason")) in str(degraded.get("message")),
            str(degraded.get("message")),
        )
        expected_step = self.config.models.v3_fails_at
        self.check(
            f"{v3} failed at step {expected_step}",
            failure.get("step") == expected_step,
            f"failure: pod {failure.get('pod')}, step {failure.get('step')}",
        )
        self._check_history(v3, "RolledBack")
        self.check(
            f"lastGoodVersion is still {v2}",
            status.get("lastGoodVersion") == v2,
            f"lastGoodVersion {status.get('lastGoodVersion')}",
        )
        self.check(
            f"every pod serves {v2} again (as its agent reports)",
            set(final.values()) == {v2},
            ", ".join(f"{p}={v}" for p, v in sorted(final.items())),
        )
        reached = sorted({s.pod for s in broken})
        if expected_step == "Verify":
            failed_pod = failure.get("pod")
            self.check(
                f"{v3} reached only the pod whose canary failed, which swapped back to {v2}",
                reached == [failed_pod]
                and all(s.verify_failed_at is not None for s in broken)
                and sorted({s.pod for s in restored}) == reached,
                f"swapped to {v3}: {reached}; back to {v2}: {sorted(s.pod for s in restored)}",
            )
        else:
            self.check(f"no pod ever swapped to {v3}", not reached and not restored, f"swapped: {reached}")

    def _check_load(self, report: LoadSummary) -> None:
        v1, v2, _ = self.config.versions
        self.check("zero failed requests", report.failed == 0, "; ".join(report.failures[:5]))
        self.check("the load reached the pods", report.ok > 0, f"{report.ok} answered")
        served = set(report.by_version)
        self.check(
            f"requests were served by {v1} and by {v2}",
            {v1, v2} <= served,
            ", ".join(f"{v}: {n}" for v, n in sorted(report.by_version.items())),
        )
        self.checks.append(answered_none(report.by_version, self.config.versions[2]))
        if self.config.quality_model is not None:
            self.checks.append(answered_none(report.by_version, self.config.quality_version))

    def check(self, name: str, ok: bool, detail: str = "") -> None:
        self.checks.append(Check(name, ok, detail))
        self.event(
            f"{'ok' if ok else 'FAILED'}: {name}" + (f" ({detail})" if detail and not ok else ""), "check"
        )

    # ------------------------------------------------------------------------------ helpers

    def elapsed(self) -> float:
        """Seconds since the scenario started (the time base of its events)."""
        return time.monotonic() - self._t0

    def event(self, text: str, kind: str = "step") -> None:
        ev = Event(self.elapsed(), time.time(), kind, text)
        self.events.append(ev)
        if self.on_event is not None:
            self.on_event(ev)

    def _write_manifests(self, sources: Mapping[str, Mapping[str, str]]) -> dict[str, Path]:
        folder = self.backend.workdir / "manifests"
        folder.mkdir(parents=True, exist_ok=True)
        out = {}
        for version, source in sources.items():
            path = folder / f"{self.backend.model_name}-{version}.yaml"
            # JSON is YAML: no dumper quirks, and kubectl reads it either way.
            manifest = model_manifest(self.backend, self.config, version, source)
            if self.config.quality_model is not None and version == self.config.quality_version:
                manifest = with_quality_gate(manifest)
            path.write_text(json.dumps(manifest, indent=2))
            out[version] = path
        return out

    async def _apply(self, manifest: Path, version: str) -> float:
        started = time.monotonic()
        result = await self.backend.kubectl("apply", "-f", str(manifest))
        if result.returncode != 0:
            raise ScenarioError(f"kubectl apply -f {manifest} failed: {result.stderr.strip()}")
        self.event(f"kubectl apply -f {manifest.name} ({version}): {result.stdout.strip()}")
        return started

    async def _wait(
        self, done: Callable[[dict[str, Any] | None], bool], started: float, timeout: float, what: str
    ) -> float:
        """Poll the RerankerModel until ``done``; seconds from ``started`` (monotonic)."""
        deadline = time.monotonic() + timeout
        while True:
            self.model = await self.backend.get_model()
            self._note_pods()
            if done(self.model):
                return time.monotonic() - started
            if time.monotonic() > deadline:
                raise ScenarioError(f"timed out after {timeout:.0f}s waiting for {what}: {self._brief()}")
            await asyncio.sleep(self.config.poll_seconds)

    async def _agents(self, pods: list[str]) -> dict[str, dict[str, Any]]:
        statuses = await asyncio.gather(*(self.backend.agent_status(pod) for pod in pods))
        return dict(zip(pods, statuses, strict=True))

    def _note_pods(self) -> None:
        """A "pod" event each time a pod's version or state changes in status."""
        for pod in ((self.model or {}).get("status") or {}).get("pods") or []:
            name, now = pod.get("name"), (pod.get("version"), pod.get("state"))
            before = self._pod_seen.get(name)
            if before == now:
                continue
            self._pod_seen[name] = now
            moved = f"{before[0]} -> {now[0]}" if before and before[0] != now[0] else f"{now[0]}"
            message = f" ({pod['message']})" if pod.get("message") else ""
            self.event(f"{name}: {moved} {now[1]}{message}", "pod")

    def _brief(self) -> str:
        status = (self.model or {}).get("status") or {}
        conds = ", ".join(
            f"{c.get('type')}={c.get('status')}/{c.get('reason')}" for c in status.get("conditions") or []
        )
        pods = ", ".join(
            f"{p.get('name')}:{p.get('version')}:{p.get('state')}" for p in status.get("pods") or []
        )
        rollout = status.get("rollout") or {}
        return (
            f"current={status.get('currentVersion')} rollout={rollout.get('version')}/{rollout.get('phase')} "
            f"{conds} pods=[{pods}]"
        )
