"""aiohttp client for the agent API (docs/contract.md, docs/agent.md).

Every call is bounded. Operations are driven to their end: POST it (the agent answers 202 with
the operation, or returns the same running one on a repeat), then poll ``/v1/status`` until that
operation finished. Transient trouble (connection refused, timeouts, 5xx, 409 because another
operation runs) is retried with exponential backoff until the deadline; a 4xx with a reason is final.
"""

from __future__ import annotations

import asyncio
import re
import time
from pathlib import Path
from typing import Any

import aiohttp
from hotswap_contract.retry import Backoff, retry

from .names import pod_url
from .observed import AgentStatus, Operation


class AgentError(Exception):
    """Base: something the operator reports as the reason of a failed step."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class AgentUnreachable(AgentError):
    """Transient: no connection, a timeout, a 5xx."""


class AgentRejected(AgentError):
    """Final: the agent refused the request (4xx) with a reason."""

    def __init__(self, message: str, status: int, error_type: str | None) -> None:
        super().__init__(message)
        self.status = status
        self.error_type = error_type


class OperationFailed(AgentError):
    """The operation ran and failed; ``error_type``, ``source_fault`` and ``result`` as the agent
    reported them."""

    def __init__(
        self,
        message: str,
        error_type: str | None,
        result: dict[str, Any] | None,
        source_fault: str | None = None,
    ) -> None:
        super().__init__(message)
        self.error_type = error_type
        self.result = result
        self.source_fault = source_fault


# Operation failures that say "not now" rather than "no": retried until the step's deadline.
TRANSIENT_ERROR_TYPES = frozenset({"server_unavailable", "cancelled", "operation_in_progress"})


class Deadline(AgentError):
    """The step did not finish within its bound."""


def is_transient(exc: Exception) -> bool:
    """Whether an operation is worth running again: the agent is unreachable, busy with another
    operation (409), or the operation failed for a reason that says "not now" (the server starts)."""
    if isinstance(exc, AgentRejected):
        return exc.status == 409 and exc.error_type in (None, "operation_in_progress")
    if isinstance(exc, OperationFailed):
        return exc.error_type in TRANSIENT_ERROR_TYPES
    return isinstance(exc, AgentUnreachable)


class TokenSource:
    """The agent token from a mounted Secret file, re-read when the file changes (rotation)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._mtime: float | None = None
        self._token = ""

    def get(self) -> str:
        try:
            mtime = self.path.stat().st_mtime
        except OSError:
            return self._token
        if mtime != self._mtime:
            self._token = self.path.read_text(encoding="utf-8").strip()
            self._mtime = mtime
        return self._token


class AgentClient:
    def __init__(
        self,
        session: aiohttp.ClientSession,
        token: TokenSource,
        *,
        port: int = 9090,
        scheme: str = "http",
        server_port: int = 8080,
        request_timeout: float = 10.0,
        poll_interval: float = 0.5,
        backoff_max: float = 10.0,
    ) -> None:
        self.session = session
        self.token = token
        self.port = port
        self.scheme = scheme
        self.server_port = server_port
        self.request_timeout = request_timeout
        self.poll_interval = poll_interval
        self.backoff_max = backoff_max

    # -- reads

    async def status(self, ip: str) -> AgentStatus:
        data = await self._call("GET", ip, "/v1/status")
        return AgentStatus.model_validate(data)

    async def server_metrics(self, ip: str) -> tuple[float, float]:
        """``(requests, errors)`` counted by the pod's server (its data-plane ``/metrics``)."""
        url = pod_url(ip, self.server_port, "/metrics", self.scheme)
        timeout = aiohttp.ClientTimeout(total=self.request_timeout)
        try:
            async with self.session.get(url, timeout=timeout) as resp:
                if resp.status != 200:
                    raise AgentUnreachable(f"server /metrics answered {resp.status}")
                return parse_request_counters(await resp.text())
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise AgentUnreachable(f"server /metrics: {_describe(exc)}") from None

    # -- operations

    async def run(self, ip: str, kind: str, body: dict[str, Any], *, timeout: float) -> dict[str, Any]:
        """Run operation ``kind`` (stage, preload, activate, rollback, verify) to its end; its result.

        Transient trouble is retried (0.1s doubling to ``backoff_max``) until ``timeout``, then
        :class:`Deadline` names the last reason."""
        deadline = time.monotonic() + timeout

        async def attempt() -> dict[str, Any]:
            reply = await self._call("POST", ip, f"/v1/{kind}", body, deadline=deadline)
            op = Operation.model_validate(reply.get("operation", reply)) if isinstance(reply, dict) else None
            if op is None or op.state is None:  # a synchronous answer
                return reply if isinstance(reply, dict) else {}
            return await self._wait(ip, op, deadline)

        def give_up(exc: Exception) -> Deadline:
            reason = exc.message if isinstance(exc, AgentError) else str(exc)
            return Deadline(f"{kind} did not finish within {timeout:.0f}s: {reason}")

        backoff = Backoff(0.1, self.backoff_max, deadline=deadline)
        return await retry(attempt, backoff, retry_if=is_transient, give_up=give_up)

    async def _wait(self, ip: str, op: Operation, deadline: float) -> dict[str, Any]:
        # Swaps and verifies take milliseconds: look early (20ms), then back off to the poll interval.
        poll = Backoff(0.02, self.poll_interval, factor=1.5, deadline=deadline)
        seen = op
        while True:
            if seen.state == "succeeded":
                return seen.result or {}
            if seen.state == "failed":
                raise OperationFailed(
                    seen.error or f"{op.kind} failed", seen.error_type, seen.result, seen.source_fault
                )
            delay = poll.next()
            if not poll.allows(delay):
                raise Deadline(
                    f"{op.kind} {op.version or ''} still running at the deadline".replace("  ", " ")
                )
            await asyncio.sleep(delay)
            try:
                status = await self._call("GET", ip, "/v1/status", deadline=deadline)
            except AgentUnreachable:
                continue  # bounded by the deadline; a restarted agent is seen as a lost operation below
            found = _find_operation(status, op.id)
            if found is None:
                raise AgentUnreachable(f"operation {op.id} vanished (the agent restarted?)")
            seen = found

    # -- plumbing

    async def _call(
        self,
        method: str,
        ip: str,
        path: str,
        body: dict[str, Any] | None = None,
        *,
        deadline: float | None = None,
    ) -> Any:
        budget = self.request_timeout
        if deadline is not None:
            budget = max(0.05, min(budget, deadline - time.monotonic()))
        headers = {"Authorization": f"Bearer {self.token.get()}"}
        url = pod_url(ip, self.port, path, self.scheme)
        try:
            async with self.session.request(
                method, url, json=body, headers=headers, timeout=aiohttp.ClientTimeout(total=budget)
            ) as resp:
                try:
                    data = await resp.json(content_type=None)
                except ValueError:
                    data = None
                if resp.status >= 500:
                    raise AgentUnreachable(f"{method} {path}: {resp.status} {_error(data)}")
                if resp.status >= 400:
                    error_type = data.get("error_type") if isinstance(data, dict) else None
                    raise AgentRejected(
                        f"{method} {path}: {resp.status} {_error(data)}", resp.status, error_type
                    )
                return data
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise AgentUnreachable(f"{method} {path}: {_describe(exc)}") from None


def _find_operation(status: Any, op_id: str | None) -> Operation | None:
    if not isinstance(status, dict):
        return None
    candidates = [status.get("operation"), *list(reversed(status.get("history") or []))]
    for raw in candidates:
        if isinstance(raw, dict) and raw.get("id") == op_id:
            return Operation.model_validate(raw)
    return None


def _error(data: Any) -> str:
    if isinstance(data, dict) and data.get("error"):
        return str(data["error"])
    return ""


def _describe(exc: BaseException) -> str:
    if isinstance(exc, asyncio.TimeoutError):
        return "timed out"
    return str(exc) or type(exc).__name__


_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+([-+0-9.eE]+|NaN|[+-]Inf)")
_CODE = re.compile(r'(?:code|status)="(\d+)"')
_ROUTE = re.compile(r'route="([^"]*)"')

# Counters that count data-plane requests, with the HTTP status as a label.
REQUEST_COUNTERS = ("hotswap_requests_total", "hotswap_http_requests_total", "http_requests_total")


def parse_request_counters(text: str) -> tuple[float, float]:
    """``(requests, errors)`` from a Prometheus exposition: errors are 5xx answers.

    A client's 4xx is the client's fault and not the model's, so it does not count as an error.
    """
    totals: dict[str, tuple[float, float]] = {}
    for line in text.splitlines():
        match = _SAMPLE.match(line)
        if not match or match.group(1) not in REQUEST_COUNTERS:
            continue
        labels = match.group(2) or ""
        route = _ROUTE.search(labels)
        if route and "rerank" not in route.group(1):
            continue  # only scoring routes: probes and scrapes say nothing about the model
        value = float(match.group(3))
        code = _CODE.search(labels)
        requests, errors = totals.get(match.group(1), (0.0, 0.0))
        requests += value
        if code and code.group(1).startswith("5"):
            errors += value
        totals[match.group(1)] = (requests, errors)
    for name in REQUEST_COUNTERS:
        if name in totals:
            return totals[name]
    return 0.0, 0.0
