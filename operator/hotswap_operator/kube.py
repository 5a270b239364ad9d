"""A small asyncio Kubernetes API client for the few calls the reconcile loop makes itself.

kopf watches and spawns; the loop reads its resource, lists pods, patches status, keeps the boot
ConfigMap and posts Events through this client. Credentials come from kopf's own login helpers
(service account in a pod, else the kubeconfig), so the operator needs no Kubernetes client library.
"""

from __future__ import annotations

import asyncio
import base64
import os
import ssl
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import kopf

SA_TOKEN = Path("/var/run/secrets/kubernetes.io/serviceaccount/token")
MERGE_PATCH = "application/merge-patch+json"


class KubeError(Exception):
    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(f"{status} {reason}: {message}")
        self.status = status
        self.reason = reason
        self.message = message


class KubeClient:
    def __init__(self, info: kopf.ConnectionInfo, *, timeout: float = 15.0) -> None:
        self.server = info.server.rstrip("/")
        self._info = info
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._session: aiohttp.ClientSession | None = None
        self._token = info.token
        self._token_read = time.monotonic()
        self._tmp: list[str] = []

    @classmethod
    def from_environment(cls, *, timeout: float = 15.0) -> KubeClient:
        """In a pod: its service account; elsewhere: ``$KUBECONFIG`` or ``~/.kube/config``."""
        settings = kopf.OperatorSettings()
        info = kopf.login_with_service_account(settings=settings) or kopf.login_with_kubeconfig(
            settings=settings
        )
        if info is None:
            raise kopf.PermanentError("no Kubernetes credentials: neither a service account nor a kubeconfig")
        return cls(info, timeout=timeout)

    async def __aenter__(self) -> KubeClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
        for path in self._tmp:
            Path(path).unlink(missing_ok=True)
        self._tmp.clear()

    # -- verbs

    async def get(self, path: str) -> dict[str, Any] | None:
        try:
            return await self._request("GET", path)
        except KubeError as exc:
            if exc.status == 404:
                return None
            raise

    async def list(self, path: str, *, label_selector: str | None = None) -> list[dict[str, Any]]:
        params = {"labelSelector": label_selector} if label_selector else None
        body = await self._request("GET", path, params=params)
        return list(body.get("items") or [])

    async def patch(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        return await self._request("PATCH", path, json=body, content_type=MERGE_PATCH)

    async def create(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        return await self._request("POST", path, json=body)

    async def delete(self, path: str) -> None:
        try:
            await self._request("DELETE", path)
        except KubeError as exc:
            if exc.status != 404:
                raise

    # -- plumbing

    async def _request(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, str] | None = None,
        json: Any = None,
        content_type: str = "application/json",
    ) -> dict[str, Any]:
        session = self._ensure_session()
        headers = {"Accept": "application/json"}
        token = self._current_token()
        if token:
            headers["Authorization"] = f"Bearer {token}"
        elif self._info.username and self._info.password:
            raw = f"{self._info.username}:{self._info.password}".encode()
            headers["Authorization"] = "Basic " + base64.b64encode(raw).decode()
        if json is not None:
            headers["Content-Type"] = content_type
        delay = 0.1
        for attempt in range(4):
            try:
                async with session.request(
                    method, self.server + path, params=params, json=json, headers=headers
                ) as resp:
                    data = await resp.json(content_type=None) if resp.content_length != 0 else {}
                    if resp.status >= 400:
                        data = data if isinstance(data, dict) else {}
                        raise KubeError(
                            resp.status, str(data.get("reason", resp.reason)), str(data.get("message", ""))
                        )
                    return data if isinstance(data, dict) else {}
            except (TimeoutError, aiohttp.ClientConnectionError):
                if attempt == 3:
                    raise
                await asyncio.sleep(delay)
                delay *= 3
        raise AssertionError("unreachable")

    def _current_token(self) -> str | None:
        # Bound service-account tokens rotate: re-read the projected file once a minute.
        if SA_TOKEN.exists() and time.monotonic() - self._token_read > 60:
            self._token = SA_TOKEN.read_text(encoding="utf-8").strip() or self._token
            self._token_read = time.monotonic()
        return self._token

    def _ensure_session(self) -> aiohttp.ClientSession:
        if self._session is None:
            connector = aiohttp.TCPConnector(ssl=self._ssl_context(), limit=32)
            self._session = aiohttp.ClientSession(connector=connector, timeout=self._timeout)
        return self._session

    def _ssl_context(self) -> ssl.SSLContext | bool:
        info = self._info
        if not self.server.startswith("https"):
            return False
        if info.insecure:
            ctx = ssl.create_default_context()
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        else:
            cafile = os.fspath(info.ca_path) if info.ca_path else None
            cadata = _b64(info.ca_data).decode() if info.ca_data else None
            ctx = ssl.create_default_context(cafile=cafile, cadata=cadata)
        cert = os.fspath(info.certificate_path) if info.certificate_path else None
        key = os.fspath(info.private_key_path) if info.private_key_path else None
        if info.certificate_data:
            cert = self._tempfile(_b64(info.certificate_data))
        if info.private_key_data:
            key = self._tempfile(_b64(info.private_key_data))
        if cert:
            ctx.load_cert_chain(cert, key)  # type: ignore[arg-type]
        return ctx

    def _tempfile(self, data: bytes) -> str:
        fd, path = tempfile.mkstemp(prefix="hotswap-kube-")
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        self._tmp.append(path)
        return path


def _b64(value: str | bytes) -> bytes:
    raw = value.encode() if isinstance(value, str) else value
    try:
        return base64.b64decode(raw, validate=True)
    except ValueError:
        return raw
