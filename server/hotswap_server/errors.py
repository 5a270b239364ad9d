"""Domain errors and their HTTP mapping: every status a client sees is decided here."""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

log = logging.getLogger(__name__)


class HotswapError(Exception):
    """Base of every error a client may see. ``error_type`` follows TEI's names where TEI has one."""

    status = 500
    error_type = "Backend"
    headers: dict[str, str] | None = None

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class BackendError(HotswapError):
    """The model could not score a request: a device or model fault, not the client's input."""

    status = 500
    error_type = "Backend"


class TokenizerError(HotswapError):
    """This request's input cannot be scored (it failed alone, in a batch of its own); TEI's name."""

    status = 422
    error_type = "Tokenizer"


class ValidationError(HotswapError):
    """A well-formed request with a value we cannot accept."""

    status = 422
    error_type = "Validation"


class MalformedRequest(HotswapError):
    status = 400
    error_type = "Validation"


class PayloadTooLarge(HotswapError):
    status = 413
    error_type = "Validation"


class Overloaded(HotswapError):
    status = 429
    error_type = "Overloaded"


class NotReady(HotswapError):
    status = 503
    error_type = "Unhealthy"


class Unauthorized(HotswapError):
    status = 401
    error_type = "unauthorized"
    headers = {"WWW-Authenticate": 'Bearer realm="hotswap-admin"'}


class Forbidden(HotswapError):
    status = 403
    error_type = "forbidden"


class NotFound(HotswapError):
    status = 404
    error_type = "not_found"


class NotLoaded(HotswapError):
    """The server holds no such version (not active, staged or previous)."""

    status = 404
    error_type = "not_loaded"


class Busy(HotswapError):
    """Another control operation is running."""

    status = 409
    error_type = "operation_in_progress"


class VersionConflict(HotswapError):
    """A version id already names other content (another folder or digest)."""

    status = 409
    error_type = "version_conflict"


class NotStaged(HotswapError):
    status = 409
    error_type = "not_staged"


class NoPrevious(HotswapError):
    status = 409
    error_type = "no_previous"


class InvalidModel(HotswapError):
    """A model folder that must not be loaded; the message is the precise reason."""

    status = 422
    error_type = "invalid_model"


class DigestMismatch(HotswapError):
    status = 422
    error_type = "digest_mismatch"


class ScoreFailed(HotswapError):
    """A held (staged or previous) version failed to score the cases: that version's fault."""

    status = 422
    error_type = "score_failed"


class ScoreTimeout(HotswapError):
    """An admin score call ran past its time bound (checked between batches)."""

    status = 504
    error_type = "score_timeout"


def error_response(
    status: int, message: str, error_type: str, headers: dict[str, str] | None = None
) -> web.Response:
    return web.json_response({"error": message, "error_type": error_type}, status=status, headers=headers)


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

# aiohttp's own HTTP exceptions (unknown route, wrong method, body over client_max_size)
_HTTP_ERROR_TYPES = {404: "not_found", 405: "method_not_allowed", 413: "Validation"}
# Headers of aiohttp's HTTP errors that the JSON answer keeps (405 says what is allowed).
_KEPT_HEADERS = ("Allow", "WWW-Authenticate")


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def parse_json(raw: bytes) -> Any:
    """The body as JSON, or :class:`MalformedRequest` (400) for every way it can fail to be JSON.

    Covers what ``json.loads`` raises beyond ``JSONDecodeError``: ``ValueError`` for an integer
    over Python's digit limit (4300) and ``RecursionError`` for nesting deeper than the stack.
    ``NaN`` and ``Infinity`` are not JSON (RFC 8259) and are refused too.
    """
    try:
        return json.loads(raw, parse_constant=_reject_constant)
    except RecursionError:
        raise MalformedRequest("body is not valid JSON: nested too deep") from None
    except UnicodeDecodeError:
        raise MalformedRequest("body is not valid JSON: not UTF-8") from None
    except ValueError as e:  # JSONDecodeError, the integer digit limit, NaN/Infinity
        raise MalformedRequest(f"body is not valid JSON: {str(e)[:200]}") from None


async def read_body(request: web.Request) -> bytes:
    """The raw body; a body that cannot be decoded (a broken ``Content-Encoding``) is a 400."""
    try:
        return await request.read()  # over client_max_size: aiohttp raises 413, mapped by the middleware
    except HttpProcessingError as e:
        raise MalformedRequest(f"body cannot be read: {e.message or type(e).__name__}") from None
    except web.RequestPayloadError:  # e.g. a Content-Encoding the body does not follow
        raise MalformedRequest("body cannot be read: it does not follow its Content-Encoding") from None


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except HotswapError as e:
        return error_response(e.status, e.message, e.error_type, e.headers)
    except web.HTTPException as e:
        if e.status < 400:
            raise
        message = e.reason if e.status != 413 else "request body too large"
        headers = {k: e.headers[k] for k in _KEPT_HEADERS if k in e.headers}
        return error_response(e.status, message, _HTTP_ERROR_TYPES.get(e.status, "http_error"), headers)
    except HttpProcessingError as e:  # the body or a header aiohttp parses lazily is malformed
        return error_response(400, e.message or "malformed request", "Validation")
    except web.RequestPayloadError:
        return error_response(400, "body cannot be read", "Validation")
    except Exception:
        # Never echo a raw exception to a client: it goes to the log only.
        log.exception("unhandled error on %s %s", request.method, request.path)
        return error_response(500, "internal error", "Backend")
