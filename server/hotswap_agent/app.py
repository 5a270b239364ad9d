"""The agent's HTTP API: ``create_app(settings)``, its routes, auth and error middleware.

``/healthz`` and ``/metrics`` are open; every other path needs ``Authorization: Bearer <token>``,
compared in constant time. Operations answer 202 with ``{"operation": ...}`` when they start or
are already running, 200 when an identical finished operation still holds, 409 when another runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from hotswap_contract.access import access_middleware

from hotswap_agent.agent import Agent
from hotswap_agent.bodies import parse_evaluate, parse_stage, parse_verify, parse_version
from hotswap_agent.boot import BootLoop
from hotswap_agent.errors import AgentError, BadRequest, Unauthorized
from hotswap_agent.metrics import CONTENT_TYPE
from hotswap_agent.openapi import openapi_document
from hotswap_agent.operations import Operation
from hotswap_agent.settings import Settings

log = logging.getLogger(__name__)

SETTINGS = web.AppKey("settings", Settings)
AGENT = web.AppKey("agent", Agent)
PUBLIC_PATHS = frozenset({"/healthz", "/metrics", "/openapi.json"})
MAX_BODY = 1 << 20

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def error_response(
    status: int, message: str, error_type: str, extra: dict[str, Any] | None = None
) -> web.Response:
    body = {"error": message, "error_type": error_type, **(extra or {})}
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return web.json_response(body, status=status, headers=headers)


@web.middleware
async def errors_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Domain errors to their status; HTTP errors as JSON; anything else a bare 500 (details logged)."""
    try:
        return await handler(request)
    except AgentError as exc:
        return error_response(exc.status, exc.message, exc.error_type, exc.extra)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        response = error_response(exc.status, exc.reason, exc.reason.lower().replace(" ", "_"))
        if "Allow" in exc.headers:  # a 405 says which methods the path has
            response.headers["Allow"] = exc.headers["Allow"]
        return response
    except (HttpProcessingError, web.RequestPayloadError):  # a body aiohttp cannot decode
        return error_response(400, "body cannot be read", "bad_request")
    except asyncio.CancelledError:
        raise
    except Exception:
        log.exception("unhandled error on %s %s", request.method, request.path)
        return error_response(500, "internal error", "internal")


@web.middleware
async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    if request.path in PUBLIC_PATHS:
        return await handler(request)
    expected = request.app[SETTINGS].token.encode("utf-8")
    header = request.headers.get("Authorization", "")
    scheme, _, supplied = header.partition(" ")
    # Header bytes that are not UTF-8 reach us surrogate-escaped: encode them back the same way, so
    # they compare (and fail) as bytes instead of raising.
    given = supplied.strip().encode("utf-8", "surrogateescape")
    if scheme.lower() != "bearer" or not hmac.compare_digest(given, expected):
        raise Unauthorized("missing or wrong bearer token")
    return await handler(request)


async def read_json(request: web.Request) -> Any:
    if request.content_length is not None and request.content_length > MAX_BODY:
        raise BadRequest(f"body larger than {MAX_BODY} bytes")
    try:
        raw = await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise BadRequest(f"body larger than {MAX_BODY} bytes") from None
    except HttpProcessingError as exc:
        raise BadRequest(f"body cannot be read: {exc.message or type(exc).__name__}") from None
    except web.RequestPayloadError:  # e.g. a Content-Encoding the body does not follow
        raise BadRequest("body cannot be read: it does not follow its Content-Encoding") from None
    try:
        data = json.loads(raw or b"null", parse_constant=_not_json)
    except RecursionError:
        raise BadRequest("body must be JSON: nested too deep") from None
    except ValueError:  # JSONDecodeError, UnicodeDecodeError, an integer over the digit limit, NaN
        raise BadRequest("body must be JSON") from None
    if not _valid_unicode(data):
        raise BadRequest("body holds a string with a lone UTF-16 surrogate: not valid Unicode")
    return data


def _not_json(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _valid_unicode(value: Any) -> bool:
    """Whether every string in ``value`` (keys included) can be encoded as UTF-8.

    A JSON ``\\ud800`` escape parses to a lone surrogate that no file name, URL or header can hold;
    the agent refuses it whole rather than fail later inside an operation.
    """
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            if not item.isascii():
                try:
                    item.encode("utf-8")
                except UnicodeEncodeError:
                    return False
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return True


def operation_response(op: Operation, started: bool) -> web.Response:
    status = 202 if started or op.state == "running" else 200
    return web.json_response({"operation": op.to_json()}, status=status)


# --- handlers ---------------------------------------------------------------------------------------
async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def metrics(request: web.Request) -> web.Response:
    return web.Response(body=request.app[AGENT].metrics.render(), headers={"Content-Type": CONTENT_TYPE})


async def openapi(request: web.Request) -> web.Response:
    return web.json_response(openapi_document())


async def status(request: web.Request) -> web.Response:
    return web.json_response(await request.app[AGENT].status())


async def stage(request: web.Request) -> web.Response:
    agent = request.app[AGENT]
    req = parse_stage(await read_json(request), agent.settings.allow)
    return operation_response(*await agent.request_stage(req))


async def preload(request: web.Request) -> web.Response:
    version = parse_version(await read_json(request))
    return operation_response(*await request.app[AGENT].request_preload(version))


async def activate(request: web.Request) -> web.Response:
    version = parse_version(await read_json(request))
    return operation_response(*await request.app[AGENT].request_activate(version))


async def rollback(request: web.Request) -> web.Response:
    version = parse_version(await read_json(request))
    return operation_response(*await request.app[AGENT].request_rollback(version))


async def verify(request: web.Request) -> web.Response:
    req = parse_verify(await read_json(request))
    return operation_response(*await request.app[AGENT].request_verify(req))


async def evaluate(request: web.Request) -> web.Response:
    req = parse_evaluate(await read_json(request))
    return operation_response(*await request.app[AGENT].request_evaluate(req))


def add_routes(app: web.Application) -> None:
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/openapi.json", openapi)
    app.router.add_get("/v1/status", status)
    app.router.add_post("/v1/stage", stage)
    app.router.add_post("/v1/preload", preload)
    app.router.add_post("/v1/activate", activate)
    app.router.add_post("/v1/verify", verify)
    app.router.add_post("/v1/evaluate", evaluate)
    app.router.add_post("/v1/rollback", rollback)


# --- lifecycle --------------------------------------------------------------------------------------
async def agent_context(app: web.Application) -> AsyncIterator[None]:
    """Clean the volume, open the server session, start boot; undo it all at shutdown."""
    settings = app[SETTINGS]
    connector = aiohttp.TCPConnector(limit=16)
    async with aiohttp.ClientSession(connector=connector, trust_env=False) as session:
        agent = Agent(settings, session)
        await asyncio.to_thread(agent.volume.ensure)
        removed = await asyncio.to_thread(agent.volume.clean_leftovers)
        if removed:
            log.info("removed leftovers of an interrupted run: %s", ", ".join(removed))
        await asyncio.to_thread(agent.volume.record_missing_digests)
        app[AGENT] = agent
        boot_task = None
        if settings.boot_file is not None:
            boot_task = asyncio.create_task(BootLoop(agent, settings.boot_file).run(), name="boot")
        try:
            yield
        finally:
            if boot_task is not None:
                boot_task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await boot_task
            await agent.ops.shutdown()


def create_app(settings: Settings) -> web.Application:
    app = web.Application(
        middlewares=[access_middleware("agent"), errors_middleware, auth_middleware], client_max_size=MAX_BODY
    )
    app[SETTINGS] = settings
    add_routes(app)
    app.cleanup_ctx.append(agent_context)
    return app
