"""Client for the model server: its admin plane (docs/admin-api.md) and its data plane (canaries)."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import aiohttp
from hotswap_contract.retry import Backoff, retry
from hotswap_contract.wire import VERSION_HEADER

from hotswap_agent.errors import ServerRejected, ServerUnavailable

STATE_TIMEOUT_S = 3.0
RERANK_TIMEOUT_S = 60.0
BUSY = "operation_in_progress"
T = TypeVar("T")


@dataclass(frozen=True)
class RerankReply:
    status: int
    version: str | None
    body: Any
    latency_ms: float


class ServerClient:
    def __init__(
        self,
        session: aiohttp.ClientSession,
        *,
        admin_url: str,
        admin_token: str,
        data_url: str,
        timeout_s: float,
    ) -> None:
        self.session = session
        self.admin_url = admin_url.rstrip("/")
        self.data_url = data_url.rstrip("/")
        self.timeout_s = timeout_s
        self._auth = {"Authorization": f"Bearer {admin_token}"}

    async def _admin(self, method: str, path: str, body: dict[str, Any] | None, timeout_s: float) -> Any:
        url = f"{self.admin_url}/admin/v1/{path}"
        try:
            async with self.session.request(
                method, url, json=body, headers=self._auth, timeout=aiohttp.ClientTimeout(total=timeout_s)
            ) as resp:
                try:
                    data = await resp.json(content_type=None)
                except ValueError:
                    data = None
                status = resp.status
        except aiohttp.ClientError as exc:
            raise ServerUnavailable(
                f"server admin plane unreachable ({path}): {type(exc).__name__}"
            ) from None
        except TimeoutError:
            raise ServerUnavailable(
                f"server admin plane did not answer {path} within {timeout_s:g}s"
            ) from None
        if status >= 400:
            error = data.get("error") if isinstance(data, dict) else None
            error_type = data.get("error_type") if isinstance(data, dict) else None
            message = f"server refused {path} ({status}): {error or 'no reason given'}"
            raise ServerRejected(message, http_status=status, server_error_type=error_type)
        if not isinstance(data, dict):
            raise ServerUnavailable(f"server admin plane answered {path} with something that is not JSON")
        return data

    async def state(self, timeout_s: float = STATE_TIMEOUT_S) -> dict[str, Any]:
        result: dict[str, Any] = await self._admin("GET", "state", None, timeout_s)
        return result

    async def preload(self, version: str, path: str, digest: str | None) -> dict[str, Any]:
        body: dict[str, Any] = {"version": version, "path": path}
        if digest:
            body["digest"] = digest
        result: dict[str, Any] = await self._admin("POST", "preload", body, self.timeout_s)
        return result

    async def activate(self, version: str) -> dict[str, Any]:
        result: dict[str, Any] = await self._admin("POST", "activate", {"version": version}, self.timeout_s)
        return result

    async def rollback(self) -> dict[str, Any]:
        result: dict[str, Any] = await self._admin("POST", "rollback", {}, self.timeout_s)
        return result

    async def discard(self) -> dict[str, Any]:
        result: dict[str, Any] = await self._admin("POST", "discard", {}, self.timeout_s)
        return result

    async def rerank(self, query: str, documents: list[Any]) -> RerankReply:
        body = {"query": query, "documents": documents, "return_documents": False}
        started = time.perf_counter()
        try:
            async with self.session.post(
                f"{self.data_url}/v1/rerank", json=body, timeout=aiohttp.ClientTimeout(total=RERANK_TIMEOUT_S)
            ) as resp:
                try:
                    data = await resp.json(content_type=None)
                except ValueError:
                    data = None
                latency = (time.perf_counter() - started) * 1000
                return RerankReply(resp.status, resp.headers.get(VERSION_HEADER), data, latency)
        except aiohttp.ClientError as exc:
            raise ServerUnavailable(f"server data plane unreachable: {type(exc).__name__}") from None
        except TimeoutError:
            raise ServerUnavailable(
                f"server data plane did not answer within {RERANK_TIMEOUT_S:g}s"
            ) from None


async def retry_busy(call: Callable[[], Awaitable[T]], deadline_s: float) -> T:
    """Await ``call()`` again while the server says another control operation runs (409 busy).

    The agent is the server's only admin client, so "busy" means an earlier call of ours (cut off
    by a timeout or an agent restart) is still finishing: waiting for it is the idempotent answer.
    Delays 0.1s doubling to 2s; the busy error is raised once the next wait would pass ``deadline_s``.
    """
    backoff = Backoff(0.1, 2.0, deadline=time.monotonic() + deadline_s)
    return await retry(call, backoff, retry_if=_is_busy)


def _is_busy(exc: Exception) -> bool:
    return isinstance(exc, ServerRejected) and exc.server_error_type == BUSY
