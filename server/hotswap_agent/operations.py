"""One operation at a time, run in the background and polled through status.

``submit`` is the only way in. While an operation runs, the same request (same kind and key)
gets that operation back and any other gets ``OperationInProgress`` (409). When none runs and the
latest one is the same request and succeeded, it is returned as is if ``still_valid`` says its
outcome still holds (a repeat after a client timeout); otherwise a new operation starts.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections import deque
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass, field
from typing import Any

from hotswap_contract import tracing
from opentelemetry.trace import StatusCode

from hotswap_agent.errors import AgentError, OperationInProgress
from hotswap_agent.progress import Progress
from hotswap_agent.volume import utcnow

log = logging.getLogger(__name__)
TRACER = tracing.tracer("hotswap_agent")

RUNNING, SUCCEEDED, FAILED = "running", "succeeded", "failed"
HISTORY = 20


@dataclass
class Operation:
    kind: str
    version: str | None
    key: Hashable
    id: str = field(default_factory=lambda: secrets.token_hex(6))
    state: str = RUNNING
    progress: Progress = field(default_factory=Progress)
    error: str | None = None
    error_type: str | None = None
    source_fault: str | None = None  # with source_unavailable: transient, gone or refused
    result: dict[str, Any] | None = None
    started_at: str = field(default_factory=utcnow)
    finished_at: str | None = None
    started_mono: float = field(default_factory=time.monotonic)
    done: asyncio.Event = field(default_factory=asyncio.Event)

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "kind": self.kind,
            "version": self.version,
            "state": self.state,
            "step": self.progress.step,
            "progress": self.progress.to_json(),
            "error": self.error,
            "errorType": self.error_type,
            "sourceFault": self.source_fault,
            "result": self.result,
            "startedAt": self.started_at,
            "finishedAt": self.finished_at,
            "stepSeconds": self.progress.timings(),
        }

    def summary(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "kind": self.kind,
            "version": self.version,
            "state": self.state,
            "error": self.error,
            # The operator finds its operation here once another has become the current one: it
            # needs to know what kind of failure it was as much as the current one's poller does.
            "errorType": self.error_type,
            "sourceFault": self.source_fault,
            "startedAt": self.started_at,
            "finishedAt": self.finished_at,
            "stepSeconds": self.progress.timings(),
        }


Work = Callable[[Operation], Awaitable[dict[str, Any]]]
Validity = Callable[[Operation], Awaitable[bool]]
Listener = Callable[[Operation], None]


class OperationManager:
    def __init__(self) -> None:
        self.latest: Operation | None = None
        self.history: deque[Operation] = deque(maxlen=HISTORY)
        self._task: asyncio.Task[None] | None = None
        self._idle = asyncio.Event()
        self._idle.set()
        self.listeners: list[Listener] = []

    @property
    def running(self) -> Operation | None:
        op = self.latest
        return op if op is not None and op.state == RUNNING else None

    async def submit(
        self, kind: str, version: str | None, key: Hashable, work: Work, still_valid: Validity | None = None
    ) -> tuple[Operation, bool]:
        """Start ``work`` or return the matching operation; ``(operation, started_now)``."""
        while True:
            running = self.running
            if running is not None:
                if running.kind == kind and running.key == key:
                    return running, False
                raise self._conflict(running)
            latest = self.latest
            if (
                still_valid is not None
                and latest is not None
                and latest.kind == kind
                and latest.key == key
                and latest.state == SUCCEEDED
            ):
                valid = await still_valid(latest)
                if self.latest is not latest:  # another request started one while we checked
                    continue
                if valid:
                    return latest, False
            return self._start(kind, version, key, work), True

    def _conflict(self, running: Operation) -> OperationInProgress:
        what = f"{running.kind} {running.version}" if running.version else running.kind
        err = OperationInProgress(f"another operation is running: {what} ({running.id})")
        err.extra = {"operation": running.to_json()}
        return err

    def _start(self, kind: str, version: str | None, key: Hashable, work: Work) -> Operation:
        op = Operation(kind=kind, version=version, key=key)
        op.progress.step = "starting"
        self.latest = op
        self.history.append(op)
        self._idle.clear()
        self._task = asyncio.create_task(self._run(op, work), name=f"operation-{kind}-{op.id}")
        log.info("operation %s started: %s %s", op.id, kind, version or "")
        return op

    async def _run(self, op: Operation, work: Work) -> None:
        span = TRACER.start_span(
            f"agent.{op.kind}", attributes={"hotswap.operation": op.id, "hotswap.version": op.version or ""}
        )
        try:
            op.result = await work(op)
            op.state = SUCCEEDED
            op.progress.step = "done"
        except asyncio.CancelledError:
            op.state, op.error, op.error_type = FAILED, "cancelled: the agent is shutting down", "cancelled"
            raise
        except AgentError as exc:
            op.state, op.error, op.error_type = FAILED, exc.message, exc.error_type
            op.source_fault = exc.extra.get("source_fault")
            if exc.result is not None:
                op.result = exc.result
        except Exception:
            log.exception("operation %s (%s %s) crashed", op.id, op.kind, op.version)
            op.state, op.error, op.error_type = FAILED, "internal error: see the agent's log", "internal"
        finally:
            if op.state != SUCCEEDED:
                span.set_status(StatusCode.ERROR, f"{op.error_type}: {op.error}")
            span.end()
            op.progress.finish()
            op.finished_at = utcnow()
            op.done.set()
            self._idle.set()
            level = logging.INFO if op.state == SUCCEEDED else logging.WARNING
            log.log(
                level,
                "operation %s %s: %s %s%s",
                op.id,
                op.state,
                op.kind,
                op.version or "",
                f": {op.error}" if op.error else "",
            )
            for listener in self.listeners:
                try:
                    listener(op)
                except Exception:  # a listener must never break the operation's bookkeeping
                    log.exception("operation listener failed")

    async def wait_idle(self) -> None:
        await self._idle.wait()

    async def shutdown(self) -> None:
        task = self._task
        if task is not None and not task.done():
            if self.latest is not None:
                self.latest.progress.cancel.set()
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass
