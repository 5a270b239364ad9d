"""The access middleware every HTTP plane of the server and the agent uses (aiohttp, no torch).

It gives each request an id (the client's ``X-Request-Id`` when it is sane, else a new one), echoes
it on the response, and writes one access-log line with the version that scored the request.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

from aiohttp import web
from aiohttp.typedefs import Middleware

from . import logs
from .wire import REQUEST_ID_HEADER, VERSION_HEADER

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
REQUEST_ID = web.RequestKey("request_id", str)  # where handlers find the id: request[REQUEST_ID]


def access_middleware(plane: str) -> Middleware:
    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        started = time.perf_counter()
        rid = logs.request_id(request.headers.get(REQUEST_ID_HEADER))
        request[REQUEST_ID] = rid
        status, version = 500, None
        try:
            response = await handler(request)
            status, version = response.status, response.headers.get(VERSION_HEADER)
            response.headers[REQUEST_ID_HEADER] = rid
            return response
        except web.HTTPException as e:  # a redirect, or an error no inner middleware turned into JSON
            status = e.status
            e.headers[REQUEST_ID_HEADER] = rid
            raise
        finally:
            seconds = time.perf_counter() - started
            logs.log_access(plane, request.method, request.path, status, seconds, rid, version)

    return middleware
