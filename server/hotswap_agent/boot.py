"""Boot: bring an empty server up on the version named in the boot file (the last-good version).

The boot file is a mounted ConfigMap, JSON or YAML: ``{version, source: {uri, sha256?}}``. The
loop re-reads it on every attempt (the operator may update it) and acts only while the server has
no active model: a server that already serves (the agent restarted, or the operator activated a
version) is left alone. Each attempt is a ``boot`` operation (stage, preload, activate); a failed
attempt is retried with exponential backoff, the reason in ``status.boot`` and the log. Operations
the operator requests between attempts run normally.

Once booted, the loop keeps watching (``--server-watch-interval``): a server container that
restarts alone (OOM-killed, crashed) comes back empty, and is booted again from the boot file
without waiting for the operator, which may be down or holding a failed rollout. A server that is
unreachable meanwhile (still starting) or busy with an operation is looked at again later.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import yaml
from hotswap_contract.retry import Backoff

from hotswap_agent.agent import Agent, version_of
from hotswap_agent.bodies import StageRequest, parse_sha256
from hotswap_agent.errors import AgentError, BootFileError, OperationInProgress
from hotswap_agent.operations import Operation
from hotswap_agent.uris import SourceUri, parse_allowed_source
from hotswap_agent.volume import utcnow, validate_version

log = logging.getLogger(__name__)

MAX_BOOT_FILE = 1 << 20


@dataclass(frozen=True)
class BootSpec:
    version: str
    source: SourceUri
    sha256: str | None


def read_boot_file(path: Path, allow: tuple[str, ...]) -> BootSpec:
    try:
        raw = path.read_bytes()[: MAX_BOOT_FILE + 1]
    except FileNotFoundError:
        raise BootFileError(f"boot file {path} does not exist (yet)") from None
    except OSError as exc:
        raise BootFileError(f"boot file {path}: {exc.strerror}") from None
    if len(raw) > MAX_BOOT_FILE:
        raise BootFileError(f"boot file {path} is larger than {MAX_BOOT_FILE} bytes")
    try:
        data = yaml.safe_load(raw.decode("utf-8"))  # YAML is a superset of JSON
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise BootFileError(
            f"boot file {path} is neither JSON nor YAML: {str(exc).splitlines()[0]}"
        ) from None
    source = data.get("source") if isinstance(data, dict) else None
    if not isinstance(source, dict) or not isinstance(source.get("uri"), str):
        raise BootFileError(f"boot file {path} must hold {{version, source: {{uri, sha256?}}}}")
    try:
        return BootSpec(
            validate_version(data.get("version")),
            parse_allowed_source(source["uri"], allow),
            parse_sha256(source.get("sha256")),
        )
    except AgentError as exc:
        raise BootFileError(f"boot file {path}: {exc.message}") from None


class BootLoop:
    def __init__(self, agent: Agent, path: Path) -> None:
        self.agent = agent
        self.path = path
        s = agent.settings
        self.initial, self.maximum = s.boot_backoff_initial_s, s.boot_backoff_max_s
        self.status: dict[str, Any] = agent.boot_status
        self.status.clear()
        self.status.update(
            {
                "state": "pending",
                "file": str(path),
                "version": None,
                "attempts": 0,
                "lastError": None,
                "lastSourceFault": None,  # with a source_unavailable lastError: transient, gone, refused
                "nextAttemptAt": None,
                "startedAt": utcnow(),
                "finishedAt": None,
            }
        )

    def _finish(self, state: str, message: str) -> None:
        self.status.update(
            {"state": state, "message": message, "finishedAt": utcnow(), "nextAttemptAt": None}
        )
        log.info("boot %s: %s", state, message)

    async def run(self) -> None:
        while True:
            await self._boot()
            await self._until_empty()
            self.status["reboots"] = self.status.get("reboots", 0) + 1
            self.status.update({"state": "pending", "finishedAt": None, "startedAt": utcnow()})
            log.warning("the server serves no model (it restarted?): booting it again from %s", self.path)

    async def _until_empty(self) -> None:
        """Return once the server is reachable, idle and serves nothing."""
        interval = self.agent.settings.server_watch_interval_s
        while True:
            await asyncio.sleep(interval)
            await self.agent.ops.wait_idle()
            try:
                state = await self.agent.server_state()
            except AgentError:
                continue  # unreachable: restarting, or gone for good; the liveness probe decides
            if version_of(state, "active") is None and not self.agent.ops.running:
                return

    async def _boot(self) -> None:
        backoff = Backoff(self.initial, self.maximum, jitter=0.1)  # no deadline: boot never gives up
        while True:
            await self.agent.ops.wait_idle()
            try:
                if await self._attempt():
                    return
            except OperationInProgress:
                continue  # the operator got in first: wait for it, then look again
            except AgentError as exc:
                self.status["attempts"] += 1
                self.agent.metrics.boot_attempts.inc()
                self.status["lastError"] = exc.message
                self.status["lastSourceFault"] = exc.extra.get("source_fault")
                self.agent.note_error(exc.message, exc.error_type)
            wait = backoff.next()
            at = datetime.now(UTC) + timedelta(seconds=wait)
            self.status.update({"state": "retrying", "nextAttemptAt": at.isoformat()})
            log.warning(
                "boot attempt %d failed: %s; retrying in %.1fs",
                self.status["attempts"],
                self.status["lastError"],
                wait,
            )
            await asyncio.sleep(wait)

    async def _attempt(self) -> bool:
        """True when boot is over (done or not needed); raise ``AgentError`` to retry."""
        state = await self.agent.server_state()
        active = version_of(state, "active")
        if active is not None:  # checked first: a missing or broken boot file no longer matters
            with contextlib.suppress(AgentError):
                self.status["version"] = read_boot_file(self.path, self.agent.settings.allow).version
            how = "done" if active == self.status["version"] else "skipped"
            self._finish(how, f"server already serves {active}")
            return True
        spec = read_boot_file(self.path, self.agent.settings.allow)
        self.status["version"] = spec.version
        self.status["state"] = "running"
        req = StageRequest(spec.version, spec.source, spec.sha256)
        op, _ = await self.agent.ops.submit(
            "boot", spec.version, ("boot", *req.key), lambda o: self._work(o, req)
        )
        await op.done.wait()
        self.status["attempts"] += 1
        self.agent.metrics.boot_attempts.inc()
        if op.state == "succeeded":
            self._finish("done", f"{spec.version} staged, preloaded and activated")
            return True
        self.status["lastError"] = op.error
        self.status["lastSourceFault"] = op.source_fault
        return False

    async def _work(self, op: Operation, req: StageRequest) -> dict[str, Any]:
        staged = await self.agent.run_stage(op, req)
        await self.agent.run_preload(op, req.version)
        activated = await self.agent.run_activate(op, req.version)
        return {"version": req.version, "digest": staged["digest"], "stage": staged, "activate": activated}
