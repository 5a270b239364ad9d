"""The reconcile loop of one RerankerModel: observe, plan, execute, record, sleep, repeat.

One loop per resource (a kopf daemon) is the only writer of its status, so there are no races
between handlers and nothing depends on kopf delivering each event exactly once (kmock, the local
API server, has no resourceVersion and kopf may replay events). Each iteration:

1. reads the resource, its pods (by selector) and every pod's agent ``/v1/status``;
2. asks the pure planner (``planner.plan``) for the next actions and the new status;
3. patches status, posts Events and keeps the boot ConfigMap on the last-good version;
4. executes the actions (in parallel when the planner returns several: the prefetch), folding each
   outcome into status as it arrives; a spec change meanwhile cancels the waits (superseded);
5. sleeps until the planner's requeue time, or until a watch event on the resource or a pod wakes it.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import socket
from typing import Any

import aiohttp
from hotswap_contract import tracing
from hotswap_contract.retry import Backoff
from opentelemetry.trace import StatusCode
from pydantic import ValidationError

from . import conditions as cond
from . import names
from .actions import Action, EventSpec, Kind, Outcome, chains
from .agent_client import AgentClient, AgentError, AgentUnreachable, TokenSource
from .config import Config
from .kube import KubeClient, KubeError
from .models import (
    API_VERSION,
    KIND,
    LabelSelector,
    QualityCase,
    QualityGate,
    RerankerModelSpec,
    RerankerModelStatus,
    Step,
    VersionRef,
    parse_status,
)
from .observed import PodView
from .patches import merge_patch
from .planner import PlanInput, plan, rollback_target
from .progress import record
from .selectors import matches, to_query
from .timeutil import iso, now

# One span per action of a rollout (stage+preload, verify of the staged weights, activate, verify,
# soak): off unless the OTLP environment asks (hotswap_contract.tracing).
TRACER = tracing.tracer("hotswap_operator")


@dataclasses.dataclass
class Runtime:
    """Operator-wide state, made once at startup and shared by every resource's loop."""

    config: Config
    kube: KubeClient
    agents: AgentClient
    session: aiohttp.ClientSession
    wakers: dict[str, asyncio.Event] = dataclasses.field(default_factory=dict)
    selectors: dict[str, LabelSelector] = dataclasses.field(default_factory=dict)

    @classmethod
    async def start(cls, config: Config) -> Runtime:
        config.read_token()  # fail at startup, naming the variable, when the token is missing
        session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=64))
        agents = AgentClient(
            session,
            TokenSource(config.agent_token_file),
            port=config.agent_port,
            scheme=config.agent_scheme,
            server_port=config.server_port,
            request_timeout=config.request_timeout,
            poll_interval=config.poll_interval,
            backoff_max=config.retry_backoff_max,
        )
        return cls(config=config, kube=KubeClient.from_environment(), agents=agents, session=session)

    async def close(self) -> None:
        await self.kube.close()
        await self.session.close()

    def waker(self, key: str) -> asyncio.Event:
        return self.wakers.setdefault(key, asyncio.Event())

    def wake(self, key: str) -> None:
        if key in self.wakers:
            self.wakers[key].set()

    def wake_for_pod(self, namespace: str, labels: dict[str, str]) -> None:
        """A pod changed: wake every loop in its namespace whose selector matches it."""
        prefix = names.resource_key(namespace, "")
        for key, selector in list(self.selectors.items()):
            if key.startswith(prefix) and matches(selector, labels):
                self.wake(key)


async def sleep_or_wake(event: asyncio.Event, delay: float) -> None:
    """Sleep up to ``delay`` seconds, less if ``event`` is set.

    ``asyncio.timeout`` rather than ``asyncio.wait_for``: on Python 3.11 ``wait_for`` can swallow a
    cancellation that lands as the inner wait completes (python/cpython#86296), which left a
    cancelled task looping forever here.
    """
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(delay):
            await event.wait()


def boot_payload(ref: VersionRef) -> str | None:
    """The boot ConfigMap's ``boot.json`` for ``ref``, exactly as written (None: no source known)."""
    if ref.source is None:
        return None
    source = {"uri": ref.source.uri}
    sha = ref.source.sha256 or ref.digest
    if sha:
        source["sha256"] = sha
    return json.dumps({"version": ref.version, "source": source}, sort_keys=True)


class QualitySetError(Exception):
    """The quality gate's labelled set cannot be read (a missing ConfigMap or key, bad JSON)."""


class Superseded(Exception):
    """The spec changed (or the resource went away) while actions ran."""


class Reconciler:
    def __init__(self, runtime: Runtime, namespace: str, name: str, logger: logging.Logger | Any) -> None:
        self.rt = runtime
        self.cfg = runtime.config
        self.namespace = namespace
        self.name = name
        self.key = names.resource_key(namespace, name)
        self.log = logger
        self.path = names.model_path(namespace, name)
        self._status_lock = asyncio.Lock()
        # After a failed iteration: 1s, 2s, 4s, ... up to retry_backoff_max; reset by a good one.
        self._backoff = Backoff(1.0, self.cfg.retry_backoff_max)

    # -- the loop

    async def run(self, stopped: Any) -> None:
        wake = self.rt.waker(self.key)
        try:
            while not stopped:
                wake.clear()
                try:
                    delay = await self.iterate()
                    self._backoff.reset()
                except (TimeoutError, KubeError, aiohttp.ClientError, OSError) as exc:
                    delay = self._backoff.next()
                    self.log.warning(f"reconcile failed ({exc}); retrying in {delay:.1f}s")
                except Exception:  # a bug must not stall the resource: log it, back off, go on
                    delay = self._backoff.next()
                    self.log.exception(f"reconcile crashed; retrying in {delay:.1f}s")
                if delay > 0:
                    await sleep_or_wake(wake, delay)
        finally:
            self.rt.wakers.pop(self.key, None)
            self.rt.selectors.pop(self.key, None)

    async def iterate(self) -> float:
        obj = await self.rt.kube.get(self.path)
        if obj is None or obj.get("metadata", {}).get("deletionTimestamp"):
            return self.cfg.resync_interval
        meta = obj.get("metadata", {})
        try:
            spec = RerankerModelSpec.model_validate(obj.get("spec") or {})
        except ValidationError as exc:
            await self._invalid_spec(obj, exc)
            return self.cfg.resync_interval
        self.rt.selectors[self.key] = spec.selector
        status = parse_status(obj.get("status"))
        if await self._manual_rollback(obj, spec, status):
            return 0.0
        pods = await self.observe(spec)
        boot_name = names.boot_configmap(self.name, spec.boot_config_map)
        boot, boot_raw = await self.read_boot(boot_name)
        decision = plan(
            PlanInput(
                spec=spec,
                status=status,
                pods=pods,
                now=now(),
                generation=meta.get("generation"),
                boot=boot,
                poll_interval=self.cfg.poll_interval,
                resync_interval=self.cfg.resync_interval,
            )
        )
        # The boot ConfigMap first: once status says a version is last-good, new pods boot on it.
        # Compared as written (the digest goes into source.sha256, so a parsed ref never equals the
        # wanted one): a settled resource makes no write.
        wanted = boot_payload(decision.boot) if decision.boot is not None else None
        if wanted is not None and wanted != boot_raw:
            await self.write_boot(boot_name, decision.boot, exists=boot_raw is not None)
        await self.write_status(obj.get("status") or {}, decision.status)
        await self.post_events(obj, decision.events)
        if decision.actions:
            await self.execute(obj, spec, decision.status, decision.actions)
        return decision.requeue_after

    # -- observation

    async def observe(self, spec: RerankerModelSpec) -> list[PodView]:
        items = await self.rt.kube.list(
            names.core_path("pods", self.namespace), label_selector=to_query(spec.selector)
        )
        pods = [p for p in items if matches(spec.selector, p.get("metadata", {}).get("labels"))]
        return list(await asyncio.gather(*(self._view(p) for p in pods)))

    async def _view(self, pod: dict[str, Any]) -> PodView:
        meta, st = pod.get("metadata", {}), pod.get("status") or {}
        ready = any(
            c.get("type") == "Ready" and c.get("status") == "True" for c in st.get("conditions") or []
        )
        view = PodView(
            name=meta.get("name", ""),
            ip=st.get("podIP"),
            phase=st.get("phase"),
            ready=ready,
            deleting=bool(meta.get("deletionTimestamp")),
        )
        if not view.running or not view.ip:
            return view
        try:
            agent = await self.rt.agents.status(view.ip)
        except AgentError as exc:
            return dataclasses.replace(view, agent_error=exc.message)
        except ValidationError as exc:
            return dataclasses.replace(view, agent_error=f"unreadable agent status: {exc.errors()[0]['msg']}")
        return dataclasses.replace(view, agent=agent)

    # -- execution

    async def execute(
        self,
        obj: dict[str, Any],
        spec: RerankerModelSpec,
        status: RerankerModelStatus,
        actions: tuple[Action, ...],
    ) -> None:
        state = {"status": status}
        fingerprint = spec.fingerprint()

        async def one_pod(chain: list[Action]) -> None:
            for action in chain:  # in order, each recorded as it finishes; a failure ends the chain
                attributes = {"hotswap.pod": action.pod, "hotswap.version": action.version or ""}
                with TRACER.start_as_current_span(f"rollout.{action.step}", attributes=attributes) as span:
                    outcome = await self.perform(action)
                    if not outcome.ok:
                        span.set_status(StatusCode.ERROR, outcome.error or "failed")
                async with self._status_lock:
                    new, events = record(
                        state["status"],
                        spec,
                        action,
                        outcome,
                        now(),
                        failed_pod_retry=self.cfg.failed_pod_retry,
                    )
                    await self.write_status(
                        state["status"].model_dump(mode="json", by_alias=True, exclude_none=True), new
                    )
                    state["status"] = new
                await self.post_events(obj, events)
                if not outcome.ok:
                    self.log.warning(
                        f"{action.step} {action.version} on {action.pod} failed: {outcome.error}"
                    )
                    return

        work: asyncio.Future[Any] = asyncio.ensure_future(
            asyncio.gather(*(one_pod(chain) for chain in chains(actions)))
        )
        watcher: asyncio.Future[Any] = asyncio.ensure_future(self._watch_spec(fingerprint))
        try:
            done, _ = await asyncio.wait({work, watcher}, return_when=asyncio.FIRST_COMPLETED)
            if watcher in done and not work.done():
                work.cancel()
                with contextlib.suppress(asyncio.CancelledError, Superseded):
                    await work
                self.log.info("spec changed while acting: superseded")
            elif work.done():
                work.result()
        finally:
            watcher.cancel()
            await asyncio.wait({watcher}, timeout=5)

    async def _watch_spec(self, fingerprint: str) -> None:
        """Returns when the resource's spec no longer has ``fingerprint`` (or it is gone)."""
        wake = self.rt.waker(self.key)
        while True:
            await sleep_or_wake(wake, max(self.cfg.poll_interval, 0.2))
            wake.clear()
            try:
                obj = await self.rt.kube.get(self.path)
            except (TimeoutError, KubeError, aiohttp.ClientError):
                continue
            if obj is None or obj.get("metadata", {}).get("deletionTimestamp"):
                return
            try:
                if RerankerModelSpec.model_validate(obj.get("spec") or {}).fingerprint() != fingerprint:
                    wake.set()  # let the loop re-plan at once
                    return
            except ValidationError:
                return

    async def perform(self, action: Action) -> Outcome:
        """Run one action against its pod's agent; every failure becomes an Outcome with a reason."""
        agents, ip, v = self.rt.agents, action.ip, action.version
        step = action.step
        try:
            if action.kind is Kind.PREPARE:
                digest = None
                if action.needs_stage:
                    assert action.source is not None
                    body: dict[str, Any] = {"version": v, "uri": action.source.uri}
                    if action.source.sha256:
                        body["sha256"] = action.source.sha256
                    staged = await agents.run(ip, "stage", body, timeout=action.timeout)
                    digest = staged.get("digest")
                step = Step.PRELOAD
                loaded = await agents.run(ip, "preload", {"version": v}, timeout=action.timeout)
                return Outcome(ok=True, step=step, digest=loaded.get("digest") or digest)
            if action.kind in (Kind.ACTIVATE, Kind.REACTIVATE):
                op = "activate" if action.kind is Kind.ACTIVATE else "rollback"
                result = await agents.run(ip, op, {"version": v}, timeout=action.timeout)
                keys = ("mode", "pauseMs", "fromVersion", "via")
                return Outcome(
                    ok=True, step=step, swap={k: result[k] for k in keys if result.get(k) is not None}
                )
            if action.kind is Kind.EVALUATE:
                return await self._evaluate(action)
            if action.kind is Kind.VERIFY_STAGED:
                canary = [c.wire() for c in action.canary]
                body = {"canary": canary, "expectVersion": v, "staged": True}
                await agents.run(ip, "verify", body, timeout=action.timeout)
                return Outcome(ok=True, step=step)
            if action.kind is Kind.VERIFY:
                canary = [c.wire() for c in action.canary]
                await agents.run(ip, "verify", {"canary": canary, "expectVersion": v}, timeout=action.timeout)
                metrics = await agents.server_metrics(ip) if action.sample_metrics else None
                return Outcome(ok=True, step=step, metrics=metrics)
            return await self._soak(action)
        except AgentError as exc:
            failed: Any = getattr(exc, "result", None)
            return Outcome(
                ok=False,
                step=step,
                error=exc.message,
                error_type=getattr(exc, "error_type", None)
                or ("agent_unreachable" if isinstance(exc, AgentUnreachable) else None),
                source_fault=getattr(exc, "source_fault", None),
                quality=failed if action.kind is Kind.EVALUATE and isinstance(failed, dict) else None,
            )

    async def _evaluate(self, action: Action) -> Outcome:
        """The quality gate: the labelled set scored with the staged version and the active one."""
        gate = action.quality
        assert gate is not None
        try:
            cases = await self.quality_set(gate)
        except QualitySetError as exc:
            return Outcome(ok=False, step=Step.QUALITY, error=str(exc), error_type="quality_set_invalid")
        body: dict[str, Any] = {"version": action.version, "set": cases, "metric": gate.metric, "k": gate.k}
        if gate.floor is not None:
            body["floor"] = gate.floor
        if gate.max_drop is not None:
            body["maxDrop"] = gate.max_drop
        result = await self.rt.agents.run(action.ip, "evaluate", body, timeout=action.timeout)
        if result.get("passed") is False:  # an agent that scored without gating: the gate is ours
            problems = result.get("problems") or ["below the gate"]
            return Outcome(
                ok=False,
                step=Step.QUALITY,
                error=f"quality gate failed for {action.version}: {problems[0]}",
                error_type="quality_failed",
                quality=result,
            )
        return Outcome(ok=True, step=Step.QUALITY, quality=result)

    async def quality_set(self, gate: QualityGate) -> list[dict[str, Any]]:
        """The gate's labelled set: inline, or JSON under a key of a ConfigMap in this namespace."""
        if gate.cases is not None:
            return [c.wire() for c in gate.cases]
        ref = gate.config_map_ref
        assert ref is not None
        cm = await self.rt.kube.get(names.core_path("configmaps", self.namespace, ref.name))
        if cm is None:
            raise QualitySetError(f"quality set: ConfigMap {ref.name} not found")
        raw = (cm.get("data") or {}).get(ref.key)
        if raw is None:
            raise QualitySetError(f"quality set: ConfigMap {ref.name} has no key {ref.key}")
        try:
            data = json.loads(raw)
            items: Any = data.get("set") if isinstance(data, dict) else data
            cases = [QualityCase.model_validate(c) for c in items or []]
        except (ValueError, TypeError, ValidationError) as exc:
            raise QualitySetError(
                f"quality set: {ref.name}/{ref.key} is not a list of cases: {exc}"
            ) from None
        if not cases:
            raise QualitySetError(f"quality set: {ref.name}/{ref.key} holds no case")
        return [c.wire() for c in cases]

    async def _soak(self, action: Action) -> Outcome:
        requests, errors = await self.rt.agents.server_metrics(action.ip)
        base_req, base_err = action.baseline or (requests, errors)
        served, failed = max(0.0, requests - base_req), max(0.0, errors - base_err)
        rate = failed / served if served else 0.0
        if rate > action.max_error_rate:
            return Outcome(
                ok=False,
                step=Step.SOAK,
                error=f"error rate {rate:.3f} > {action.max_error_rate} ({failed:.0f}/{served:.0f} requests)",
            )
        return Outcome(ok=True, step=Step.SOAK)

    # -- writes

    async def write_status(self, old: dict[str, Any], new: RerankerModelStatus) -> None:
        wanted = new.model_dump(mode="json", by_alias=True, exclude_none=True)
        current = {k: v for k, v in old.items() if k != "kopf"}
        patch = merge_patch(current, wanted)
        if patch:
            await self.rt.kube.patch(names.model_path(self.namespace, self.name, "status"), {"status": patch})

    async def post_events(self, obj: dict[str, Any], events: tuple[EventSpec, ...]) -> None:
        for event in events:
            self.log.info(f"{event.reason}: {event.message}")
            stamp = iso(now())
            body = {
                "apiVersion": "v1",
                "kind": "Event",
                "metadata": {"name": names.event_name(self.name), "namespace": self.namespace},
                "involvedObject": {
                    "apiVersion": API_VERSION,
                    "kind": KIND,
                    "name": self.name,
                    "namespace": self.namespace,
                    "uid": obj.get("metadata", {}).get("uid"),
                },
                "type": event.type,
                "reason": event.reason,
                "message": event.message[:1024],
                "firstTimestamp": stamp,
                "lastTimestamp": stamp,
                "count": 1,
                "source": {"component": names.COMPONENT},
                "reportingComponent": names.COMPONENT,
                "reportingInstance": socket.gethostname(),
            }
            try:
                await self.rt.kube.create(names.core_path("events", self.namespace), body)
            except (TimeoutError, KubeError, aiohttp.ClientError) as exc:  # events are best effort
                self.log.warning(f"could not post event {event.reason}: {exc}")

    async def read_boot(self, name: str) -> tuple[VersionRef | None, str | None]:
        """The boot ConfigMap's ref (None: absent) and its raw ``boot.json`` ("" when absent there)."""
        cm = await self.rt.kube.get(names.core_path("configmaps", self.namespace, name))
        if cm is None:
            return None, None
        raw = (cm.get("data") or {}).get(names.BOOT_KEY, "")
        try:
            return VersionRef.model_validate(json.loads(raw)), raw
        except (ValueError, ValidationError):
            return VersionRef(version=""), raw  # present but unreadable: rewritten with last-good

    async def write_boot(self, name: str, ref: VersionRef | None, *, exists: bool) -> None:
        payload = boot_payload(ref) if ref is not None else None
        if ref is None or payload is None:
            return  # a boot file without a source is useless to a pod that lost its disk
        data = {names.BOOT_KEY: payload}
        path = names.core_path("configmaps", self.namespace, name)
        if not exists:
            body = {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {
                    "name": name,
                    "namespace": self.namespace,
                    "labels": {names.MANAGED_BY_LABEL: names.COMPONENT, names.MODEL_LABEL: self.name},
                },
                "data": data,
            }
            await self.rt.kube.create(names.core_path("configmaps", self.namespace), body)
        else:
            await self.rt.kube.patch(path, {"data": data})
        self.log.info(f"boot ConfigMap {name} now names {ref.version}")

    # -- special cases

    async def _manual_rollback(
        self, obj: dict[str, Any], spec: RerankerModelSpec, status: RerankerModelStatus
    ) -> bool:
        """``hotswap.dev/rollback`` sets spec back to a known-good version (like ``rollout undo``)."""
        annotations = obj.get("metadata", {}).get("annotations") or {}
        value = annotations.get(names.ROLLBACK_ANNOTATION)
        if value is None:
            return False
        patch: dict[str, Any] = {"metadata": {"annotations": {names.ROLLBACK_ANNOTATION: None}}}
        target = rollback_target(spec, status, value)
        if target is None or target.source is None:
            await self.rt.kube.patch(self.path, patch)
            why = f"no known-good version to roll back to for {value!r}"
            await self.post_events(obj, (EventSpec("Warning", "RollbackRefused", why),))
            return True
        patch["spec"] = {
            "version": target.version,
            "source": {"uri": target.source.uri, "sha256": target.source.sha256},
        }
        await self.rt.kube.patch(self.path, patch)
        message = f"spec set back to {target.version} (was {spec.version}) by the {names.ROLLBACK_ANNOTATION} annotation"
        await self.post_events(obj, (EventSpec("Normal", "ManualRollback", message),))
        return True

    async def _invalid_spec(self, obj: dict[str, Any], exc: ValidationError) -> None:
        status = parse_status(obj.get("status"))
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ()))
        message = f"invalid spec: {where}: {first.get('msg')}"
        conds = cond.set_condition(
            status.conditions,
            cond.DEGRADED,
            True,
            "InvalidSpec",
            message,
            now=iso(now()),
            generation=obj.get("metadata", {}).get("generation"),
        )
        await self.write_status(obj.get("status") or {}, status.model_copy(update={"conditions": conds}))
