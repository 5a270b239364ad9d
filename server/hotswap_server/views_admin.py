"""Admin plane (pod-local): preload, activate, rollback, discard, score and state, behind a bearer token.

``GET /admin/v1/openapi.json`` (this plane's OpenAPI document) is the one route without the token:
it holds no secrets, and the admin plane listens on loopback only.
"""

from __future__ import annotations

import hmac
import time
from typing import Any

from aiohttp import web
from hotswap_contract.admin import ScoreRequest, ScoreResult
from pydantic import ValidationError as PydanticValidationError

from .errors import Handler, NotLoaded, Unauthorized, ValidationError, parse_json, read_body
from .openapi import admin_openapi_document
from .scoring import to_relevance
from .state import STATE
from .views_data import score_documents
from .wire import clean_text, f32, pydantic_message

routes = web.RouteTableDef()
OPENAPI_PATH = "/admin/v1/openapi.json"
PUBLIC_PATHS = frozenset({OPENAPI_PATH})


def _bytes(text: str) -> bytes:
    # aiohttp decodes header bytes that are not UTF-8 with surrogateescape: encode them back the
    # same way, so any header compares (and fails) as bytes instead of raising.
    return text.encode("utf-8", "surrogateescape")


@web.middleware
async def require_token(request: web.Request, handler: Handler) -> web.StreamResponse:
    if request.path in PUBLIC_PATHS:
        return await handler(request)
    expected = request.app[STATE].admin_token or ""
    header = request.headers.get("Authorization", "")
    scheme, _, given = header.partition(" ")
    # compare_digest runs in constant time: the token cannot be guessed byte by byte.
    if (
        not expected
        or scheme.lower() != "bearer"
        or not hmac.compare_digest(_bytes(given.strip()), _bytes(expected))
    ):
        raise Unauthorized("missing or wrong bearer token")
    return await handler(request)


async def _json_object(request: web.Request) -> dict[str, Any]:
    raw = await read_body(request)
    if not raw.strip():
        return {}
    data = parse_json(raw)
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
    version = _required_str(body, "version")
    result = await request.app[STATE].swaps.preload(version, body.get("path"), digest)
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


@routes.post("/admin/v1/score")
async def score(request: web.Request) -> web.Response:
    """Score cases with a named version (staged: out of band, never the live model or the queue)."""
    body = await _json_object(request)
    try:
        req = ScoreRequest.model_validate(body)
    except PydanticValidationError as e:
        raise ValidationError(pydantic_message(e)) from None
    state = request.app[STATE]
    cases = [(clean_text(c.query), [clean_text(d) for d in c.documents]) for c in req.cases]

    async def run() -> dict[str, Any]:
        held = state.swaps.held(req.version)
        if held is None:
            raise NotLoaded(f"version {req.version} is not loaded (not active, staged or previous)")
        slot, loaded = held
        if slot == "active":
            # The active version is scored like any request: the same queue, the same admission.
            started = time.perf_counter()
            out = []
            for query, docs in cases:
                scored = await score_documents(state, query, docs, truncate=True)
                relevance = to_relevance(scored.raw, scored.kind)
                out.append({"scores": [f32(v) for v in relevance], "tokens": scored.tokens})
            ran = {
                "cases": out,
                "device": str(state.placement.device),
                "durationMs": round((time.perf_counter() - started) * 1000, 3),
            }
        else:
            ran = await state.swaps.score_copy(loaded, cases)
        result = {"version": loaded.version, "digest": loaded.digest, "slot": slot, **ran}
        return ScoreResult.model_validate(result).wire()

    # One control operation: no swap, preload or discard changes the version while it is scored.
    return web.json_response(await state.swaps.run_exclusive("score", run))


@routes.get(OPENAPI_PATH)
async def openapi(request: web.Request) -> web.Response:
    return web.json_response(admin_openapi_document())
