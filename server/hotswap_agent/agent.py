"""The agent's work: each control operation, its idempotence checks, and the status it reports.

Handlers in ``app.py`` only parse bodies and call ``request_*``; the operation bodies (``run_stage``,
``run_preload``, ...) run in the background under ``OperationManager``. The server is the truth for
active / staged / previous; the models volume is the truth for what is on disk.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import aiohttp
from hotswap_contract.agent import AgentStatus, EvaluateRequest

from hotswap_agent import __version__
from hotswap_agent.bodies import StageRequest, VerifyRequest
from hotswap_agent.errors import AgentError, NotOnDisk, NotStaged, VerifyFailed
from hotswap_agent.metrics import AgentMetrics
from hotswap_agent.operations import Operation, OperationManager
from hotswap_agent.server_client import ServerClient, retry_busy
from hotswap_agent.settings import Settings
from hotswap_agent.sources import Sources
from hotswap_agent.staging import Stager
from hotswap_agent.verify import run_canaries, run_evaluate, run_staged_canaries
from hotswap_agent.volume import ModelsVolume, utcnow

log = logging.getLogger(__name__)


def record(state: dict[str, Any] | None, slot: str) -> dict[str, Any] | None:
    """``{version, digest}`` of the server's ``active`` / ``staged`` / ``previous`` slot, or None."""
    rec = state.get(slot) if isinstance(state, dict) else None
    if not isinstance(rec, dict) or not isinstance(rec.get("version"), str):
        return None
    return {"version": rec["version"], "digest": rec.get("digest")}


def version_of(state: dict[str, Any] | None, slot: str) -> str | None:
    rec = record(state, slot)
    return rec["version"] if rec else None


class Agent:
    def __init__(self, settings: Settings, session: aiohttp.ClientSession) -> None:
        self.settings = settings
        self.volume = ModelsVolume(settings.models_root)
        self.stager = Stager(self.volume, Sources(settings))
        self.client = ServerClient(
            session,
            admin_url=settings.server_admin_url,
            admin_token=settings.server_admin_token,
            data_url=settings.server_url,
            timeout_s=settings.server_timeout_s,
        )
        self.ops = OperationManager()
        self.ops.listeners.append(self._on_finished)
        self.metrics = AgentMetrics()
        self.metrics.operation_running.set_function(lambda: 1.0 if self.ops.running else 0.0)
        self.metrics.versions_on_disk.set_function(lambda: float(len(self.volume.versions())))
        self.started_at = utcnow()
        self.last_error: dict[str, Any] | None = None
        self.last_activation: dict[str, Any] | None = None
        self.last_verify: dict[str, Any] | None = None
        self.server_state_cache: dict[str, Any] | None = None
        self.server_state_at: str | None = None
        self.server_error: str | None = None
        self.boot_status: dict[str, Any] = {"state": "disabled"}

    # --- bookkeeping --------------------------------------------------------------------------
    def _on_finished(self, op: Operation) -> None:
        self.metrics.finished(op, time.monotonic() - op.started_mono)
        if op.state == "failed":
            self.note_error(op.error or "failed", op.error_type or "internal", op)

    def note_error(self, message: str, error_type: str, op: Operation | None = None) -> None:
        self.last_error = {
            "message": message,
            "type": error_type,
            "at": utcnow(),
            "operationId": op.id if op else None,
            "kind": op.kind if op else None,
            "version": op.version if op else None,
            "sourceFault": op.source_fault if op else None,
        }

    async def server_state(self) -> dict[str, Any]:
        """Fresh admin state (raises ``ServerUnavailable``); remembered for status."""
        try:
            state = await self.client.state()
        except AgentError as exc:
            self.server_error = exc.message
            self.metrics.server_reachable.set(0)
            raise
        self.server_state_cache, self.server_state_at, self.server_error = state, utcnow(), None
        self.metrics.server_reachable.set(1)
        return state

    async def _blocking(self, fn: Any) -> Any:
        return await asyncio.to_thread(fn)

    # --- requests (called by the handlers) ----------------------------------------------------
    async def request_stage(self, req: StageRequest) -> tuple[Operation, bool]:
        async def still_valid(op: Operation) -> bool:
            if not self.volume.exists(req.version):
                return False
            return req.sha256 is None or self.volume.info(req.version).digest == req.sha256

        return await self.ops.submit(
            "stage", req.version, ("stage", *req.key), lambda op: self.run_stage(op, req), still_valid
        )

    async def request_preload(self, version: str) -> tuple[Operation, bool]:
        async def still_valid(op: Operation) -> bool:
            try:
                state = await self.server_state()
            except AgentError:
                return False  # a new attempt will say why
            return version in (version_of(state, "staged"), version_of(state, "active"))

        self._require_on_disk(version)
        return await self.ops.submit(
            "preload", version, ("preload", version), lambda op: self.run_preload(op, version), still_valid
        )

    async def request_activate(self, version: str) -> tuple[Operation, bool]:
        return await self.ops.submit(
            "activate",
            version,
            ("activate", version),
            lambda op: self.run_activate(op, version),
            self._is_active,
        )

    async def request_rollback(self, version: str) -> tuple[Operation, bool]:
        self._require_on_disk(version)
        return await self.ops.submit(
            "rollback",
            version,
            ("rollback", version),
            lambda op: self.run_rollback(op, version),
            self._is_active,
        )

    async def request_verify(self, req: VerifyRequest) -> tuple[Operation, bool]:
        # Verify is a read-only check: a repeat after it finished runs it again, on the current state.
        return await self.ops.submit(
            "verify", req.expect_version, ("verify", req.key), lambda op: self.run_verify(op, req)
        )

    async def request_evaluate(self, req: EvaluateRequest) -> tuple[Operation, bool]:
        # Read-only too: each request is scored anew.
        key = ("evaluate", req.model_dump_json())
        return await self.ops.submit("evaluate", req.version, key, lambda op: self.run_evaluate(op, req))

    async def _is_active(self, op: Operation) -> bool:
        try:
            return version_of(await self.server_state(), "active") == op.version
        except AgentError:
            return False

    def _require_on_disk(self, version: str) -> None:
        if self.ops.running is None and not self.volume.exists(version):
            raise NotOnDisk(f"{version} is not on disk: stage it first")

    # --- operation bodies ---------------------------------------------------------------------
    async def run_stage(self, op: Operation, req: StageRequest) -> dict[str, Any]:
        done_before = op.progress.bytes_done
        result = await self.stager.stage(req.version, req.source, req.sha256, op.progress)
        if not result.noop:
            self.metrics.staged_bytes.inc(op.progress.bytes_done - done_before)
        await self.prune(also_keep={req.version})
        return result.to_json()

    async def prune(self, also_keep: set[str] | None = None) -> list[str]:
        """Retention, best effort: without the server's state nothing is deleted."""
        try:
            state = await self.server_state()
        except AgentError as exc:
            log.warning("retention skipped: %s", exc.message)
            return []
        protected = {version_of(state, s) for s in ("active", "previous", "staged")} | (also_keep or set())
        removed: list[str] = await self._blocking(
            lambda: self.stager.prune(self.settings.keep, {v for v in protected if v})
        )
        return removed

    async def run_preload(self, op: Operation, version: str) -> dict[str, Any]:
        if not self.volume.exists(version):
            raise NotOnDisk(f"{version} is not on disk: stage it first")
        op.progress.step = "checking"
        digest: str = await self._blocking(lambda: self.volume.digest(version))
        state = await self.server_state()
        staged, active = record(state, "staged"), record(state, "active")
        if active and active["version"] == version:
            return {"version": version, "digest": digest, "noop": True, "reason": "already active"}
        if staged and staged["version"] == version and staged.get("digest") in (None, digest):
            return {"version": version, "digest": digest, "noop": True, "reason": "already preloaded"}
        deadline = self.settings.server_timeout_s
        if staged:
            op.progress.step = "discarding " + staged["version"]
            await retry_busy(self.client.discard, deadline)
        op.progress.step = "preloading"
        reply = await retry_busy(lambda: self.client.preload(version, version, digest), deadline)
        return {
            "version": version,
            "digest": digest,
            "noop": False,
            "compatible": reply.get("compatible"),
            "staged": reply.get("staged"),
        }

    async def run_activate(self, op: Operation, version: str) -> dict[str, Any]:
        op.progress.step = "checking"
        state = await self.server_state()
        active, staged = version_of(state, "active"), version_of(state, "staged")
        if active == version:
            return {"version": version, "noop": True, "mode": "noop"}
        if staged != version:
            raise NotStaged(f"{version} is not preloaded on the server (staged: {staged}): preload it first")
        op.progress.step = "activating"
        reply = await retry_busy(lambda: self.client.activate(version), self.settings.server_timeout_s)
        self._activated(op, version, active, reply)
        await self.prune()
        return {
            "version": version,
            "noop": False,
            "fromVersion": active,
            "mode": reply.get("mode"),
            "pauseMs": reply.get("pauseMs"),
        }

    def _activated(
        self, op: Operation, version: str, from_version: str | None, reply: dict[str, Any]
    ) -> None:
        self.last_activation = {
            "version": version,
            "fromVersion": from_version,
            "at": utcnow(),
            "kind": op.kind,
            "operationId": op.id,
            "mode": reply.get("mode"),
            "pauseMs": reply.get("pauseMs"),
        }

    async def run_rollback(self, op: Operation, version: str) -> dict[str, Any]:
        op.progress.step = "checking"
        state = await self.server_state()
        active, previous = version_of(state, "active"), version_of(state, "previous")
        if active == version:
            return {"version": version, "noop": True, "via": "noop"}
        deadline = self.settings.server_timeout_s
        if previous == version:
            op.progress.step = "rolling back"
            reply = await retry_busy(self.client.rollback, deadline)
            via = "rollback"
        else:
            await self.run_preload(op, version)
            op.progress.step = "activating"
            reply = await retry_busy(lambda: self.client.activate(version), deadline)
            via = "preload+activate"
        self._activated(op, version, active, reply)
        await self.prune()
        return {
            "version": version,
            "noop": False,
            "fromVersion": active,
            "via": via,
            "mode": reply.get("mode"),
            "pauseMs": reply.get("pauseMs"),
        }

    async def run_verify(self, op: Operation, req: VerifyRequest) -> dict[str, Any]:
        op.progress.step = "checking"
        state = await self.server_state()
        target = "staged" if req.staged else "active"
        expected = req.expect_version or version_of(state, target)
        op.version = expected
        if expected is None:
            if req.staged:
                raise NotStaged("the server has no staged version to verify: preload it first")
            raise VerifyFailed("the server has no active version to verify")
        op.progress.step = "canaries" if not req.staged else "canaries (staged)"
        try:
            if req.staged:
                deadline = max(self.settings.server_timeout_s, 1.0)
                result = await run_staged_canaries(self.client, req.canary, expected, deadline)
            else:
                result = await run_canaries(self.client, req.canary, expected)
        except VerifyFailed as exc:
            self.last_verify = {
                "version": expected, "ok": False, "at": utcnow(), "operationId": op.id, "target": target,
                "errorType": exc.error_type,
            }  # fmt: skip
            raise exc
        self.last_verify = {
            "version": expected,
            "ok": True,
            "at": utcnow(),
            "operationId": op.id,
            "target": target,
        }
        return result

    async def run_evaluate(self, op: Operation, req: EvaluateRequest) -> dict[str, Any]:
        op.progress.step = "checking"
        state = await self.server_state()
        held = {version_of(state, slot) for slot in ("staged", "active", "previous")}
        if req.version not in held:
            staged = version_of(state, "staged")
            raise NotStaged(f"{req.version} is not loaded on the server (staged: {staged}): preload it first")
        op.progress.step = "scoring"
        deadline = max(self.settings.server_timeout_s, 1.0)
        return await run_evaluate(self.client, req, version_of(state, "active"), deadline)

    # --- status ---------------------------------------------------------------------------------
    async def status(self) -> dict[str, Any]:
        try:
            await self.server_state()
            reachable = True
        except AgentError:
            reachable = False
        state = self.server_state_cache
        on_disk = await self._blocking(self.volume.list_info)
        latest = self.ops.latest
        # Built through the contract's model: what the operator parses is what was emitted.
        status = {
            "pod": self.settings.pod_name,
            "agent": {"version": __version__, "startedAt": self.started_at, "keep": self.settings.keep},
            "active": record(state, "active"),
            "previous": record(state, "previous"),
            "staged": record(state, "staged"),
            "onDisk": [i.to_json() for i in on_disk],
            "operation": latest.to_json() if latest else None,
            "lastError": self.last_error,
            "lastActivation": self.last_activation,
            "lastVerify": self.last_verify,
            "history": [op.summary() for op in self.ops.history],
            "boot": dict(self.boot_status),
            "server": {
                "reachable": reachable,
                "error": self.server_error,
                "stateAt": self.server_state_at,
                "state": state,
            },
        }
        return AgentStatus.model_validate(status).wire()
