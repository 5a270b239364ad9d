"""Admin plane (pod-local): preload, activate, rollback, discard and state, behind a bearer token."""

from __future__ import annotations

import hmac
import json
from typing import Any

from aiohttp import web

from .errors import Handler, MalformedRequest, Unauthorized, ValidationError
from .state import STATE

routes = web.RouteTableDef()


@web.middleware
async def require_token(request: web.Request, handler: Handler) -> web.StreamResponse:
    expected = request.app[STATE].admin_token or ""
    header = request.headers.get("Authorization", "")
    scheme, _, given = header.partition(" ")
    # compare_digest runs in constant time: the token cannot be guessed byte by byte.
    if (
        not expected
        or scheme.lower() != "bearer"
        or not hmac.compare_digest(given.encode(), expected.encode())
    ):
        raise Unauthorized("missing or wrong bearer token")
    return await handler(request)


async def _json_object(request: web.Request) -> dict[str, Any]:
    raw = await request.read()
    if not raw.strip():
        return {}
    try:
        data = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise MalformedRequest(f"body is not valid JSON: {e}") from None
    if not isinstance(data, dict):
        raise ValidationError("body must be a JSON object")
    return data


def _required_str(body: dict[str, Any], key: str) -> str:
    value = body.get(key)
    if not isinstance(value, str) or not value:
        raise ValidationError(f"{key} is required and must be a non-empty string")
    return value


@routes.get("/admin/v1/state")
async def state(request: web.Request) -> web.Response:
    return web.json_response(request.app[STATE].swaps.state())


@routes.post("/admin/v1/preload")
async def preload(request: web.Request) -> web.Response:
    body = await _json_object(request)
    digest = body.get("digest")
    result = await request.app[STATE].swaps.preload(_required_str(body, "version"), body.get("path"), digest)
    return web.json_response(result)


@routes.post("/admin/v1/activate")
async def activate(request: web.Request) -> web.Response:
    body = await _json_object(request)
    return web.json_response(await request.app[STATE].swaps.activate(_required_str(body, "version")))


@routes.post("/admin/v1/rollback")
async def rollback(request: web.Request) -> web.Response:
    await _json_object(request)
    return web.json_response(await request.app[STATE].swaps.rollback())


@routes.post("/admin/v1/discard")
async def discard(request: web.Request) -> web.Response:
    await _json_object(request)
    return web.json_response(await request.app[STATE].swaps.discard())
