"""Domain errors and their HTTP mapping: every status a client sees is decided here."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from aiohttp import web

log = logging.getLogger(__name__)


class HotswapError(Exception):
    """Base of every error a client may see. ``error_type`` follows TEI's names where TEI has one."""

    status = 500
    error_type = "Backend"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


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


class Forbidden(HotswapError):
    status = 403
    error_type = "forbidden"


class NotFound(HotswapError):
    status = 404
    error_type = "not_found"


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


def error_response(status: int, message: str, error_type: str) -> web.Response:
    return web.json_response({"error": message, "error_type": error_type}, status=status)


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

# aiohttp's own HTTP exceptions (unknown route, wrong method, body over client_max_size)
_HTTP_ERROR_TYPES = {404: "not_found", 405: "method_not_allowed", 413: "Validation"}


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except HotswapError as e:
        return error_response(e.status, e.message, e.error_type)
    except web.HTTPException as e:
        if e.status < 400:
            raise
        message = e.reason if e.status != 413 else "request body too large"
        return error_response(e.status, message, _HTTP_ERROR_TYPES.get(e.status, "http_error"))
    except Exception:
        # Never echo a raw exception to a client: it goes to the log only.
        log.exception("unhandled error on %s %s", request.method, request.path)
        return error_response(500, "internal error", "Backend")
