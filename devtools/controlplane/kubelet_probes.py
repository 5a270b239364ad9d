"""Probe and lifecycle-hook handlers (httpGet, tcpSocket, exec, sleep), as a kubelet runs them.

httpGet and tcpSocket go to the pod's address (``host`` when set, remapped like everything else);
a named port is looked up in the container's ``ports``. An HTTP answer from 200 to 399 is a success.
exec runs the command as a process with the container's environment, remapped like its command.
gRPC probes are not supported: they fail, with a message that says so.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from devtools.controlplane.kubelet_env import ConfigError, Rewriter
from devtools.controlplane.procs import Proc

JSON = dict[str, Any]

_INSECURE = ssl.create_default_context()
_INSECURE.check_hostname = False
_INSECURE.verify_mode = ssl.CERT_NONE


@dataclass
class HandlerContext:
    pod_ip: str
    ports: Mapping[str, int]  # the container's named ports
    rewrite: Rewriter
    env: Mapping[str, str]
    resolve: Callable[[list[str]], list[str]]  # argv -> argv with the executable found
    log: Path
    cwd: Path


def _port(value: Any, ctx: HandlerContext) -> int:
    if isinstance(value, int) or (isinstance(value, str) and value.isdigit()):
        return int(value)
    if value in ctx.ports:
        return ctx.ports[value]
    raise ConfigError(f"no container port named {value!r}")


async def run_handler(handler: JSON, ctx: HandlerContext, timeout: float) -> tuple[bool, str]:
    """(success, message) of one probe or hook handler."""
    try:
        if "httpGet" in handler:
            return await _http_get(handler["httpGet"], ctx, timeout)
        if "tcpSocket" in handler:
            spec = handler["tcpSocket"]
            host = ctx.rewrite(spec["host"]) if spec.get("host") else ctx.pod_ip
            port = _port(spec["port"], ctx)
            _, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()
            return True, ""
        if "exec" in handler:
            return await _exec(handler["exec"].get("command", []), ctx, timeout)
        if "sleep" in handler:
            await asyncio.sleep(float(handler["sleep"]["seconds"]))
            return True, ""
        if "grpc" in handler:
            return False, "grpc probes are not supported by the process kubelet"
        return False, f"unsupported handler {sorted(handler)}"
    except ConfigError as exc:
        return False, str(exc)
    except TimeoutError:
        return False, f"timed out after {timeout:g} s"
    except (OSError, aiohttp.ClientError) as exc:
        return False, f"{type(exc).__name__}: {exc}"


async def _http_get(spec: JSON, ctx: HandlerContext, timeout: float) -> tuple[bool, str]:
    host = ctx.rewrite(spec["host"]) if spec.get("host") else ctx.pod_ip
    scheme = str(spec.get("scheme", "HTTP")).lower()
    port = _port(spec["port"], ctx)
    path = spec.get("path", "/") or "/"
    if not path.startswith("/"):
        path = "/" + path
    headers = {h["name"]: h["value"] for h in spec.get("httpHeaders", [])}
    headers.setdefault("User-Agent", "kube-probe/hotswap-process-kubelet")
    url = f"{scheme}://{host}:{port}{path}"
    async with aiohttp.ClientSession() as session:
        async with session.get(
            url,
            headers=headers,
            ssl=_INSECURE if scheme == "https" else True,
            allow_redirects=False,
            timeout=aiohttp.ClientTimeout(total=timeout),
        ) as resp:
            await resp.read()
            if 200 <= resp.status < 400:
                return True, ""
            return False, f"HTTP probe failed with statuscode: {resp.status}"


async def _exec(command: list[str], ctx: HandlerContext, timeout: float) -> tuple[bool, str]:
    argv = ctx.resolve([ctx.rewrite(str(c)) for c in command])
    proc = Proc("exec", argv, env=dict(ctx.env), log=ctx.log, cwd=ctx.cwd).start()
    code = await proc.wait(timeout)
    if proc.alive:
        proc.kill()
        return False, f"command {command} timed out after {timeout:g} s"
    return code == 0, "" if code == 0 else f"command {command} exited with {code}"
