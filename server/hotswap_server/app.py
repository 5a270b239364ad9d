"""Building the two aiohttp apps (data plane, admin plane) and running them until SIGTERM."""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from collections.abc import AsyncIterator

import torch
from aiohttp import web
from hotswap_contract.access import access_middleware

from . import views_admin, views_data
from .devices import resolve_placement
from .engine import Engine
from .errors import Handler, error_middleware
from .metrics import ServerMetrics
from .settings import Settings, read_token
from .state import STATE, ServerState
from .swap import SwapManager

log = logging.getLogger(__name__)


def create_state(settings: Settings) -> ServerState:
    """Everything but the event-loop-bound parts is built here, so a bad setting fails before listening."""
    if settings.torch_threads:
        torch.set_num_threads(settings.torch_threads)
    placement = resolve_placement(settings.device, settings.dtype)
    metrics = ServerMetrics()
    engine = Engine(settings.max_batch_size, settings.max_queue_pairs, metrics)
    swaps = SwapManager(settings, placement, engine, metrics)
    token = read_token(settings.admin_token_file) if settings.admin_token_file else None
    return ServerState(settings, placement, metrics, engine, swaps, token)


@web.middleware
async def metrics_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    started = time.perf_counter()
    response = await handler(request)
    resource = request.match_info.route.resource
    route = resource.canonical if resource is not None else "unmatched"
    views_data.observe(request.app[STATE], route, response.status, started)
    return response


def create_data_app(state: ServerState) -> web.Application:
    # metrics outside the error middleware so error responses are counted with their status
    app = web.Application(
        middlewares=[access_middleware("server"), metrics_middleware, error_middleware],
        client_max_size=state.settings.max_body_bytes,
    )
    app[STATE] = state
    app.add_routes(views_data.routes)
    app.cleanup_ctx.append(_engine_ctx)
    return app


def create_admin_app(state: ServerState) -> web.Application:
    # Score calls carry cases (a canary set, a labelled set): the data plane's body limit applies.
    app = web.Application(
        middlewares=[access_middleware("server-admin"), error_middleware, views_admin.require_token],
        client_max_size=max(64 * 1024, state.settings.max_body_bytes),
    )
    app[STATE] = state
    app.add_routes(views_admin.routes)
    return app


async def _engine_ctx(app: web.Application) -> AsyncIterator[None]:
    state = app[STATE]
    state.engine.start()
    boot: asyncio.Task[None] | None = None
    if state.settings.model is not None:
        version = state.settings.version or state.settings.model.name
        # Listen while the boot model loads: /healthz answers, /readyz says 503 until it is active.
        boot = asyncio.create_task(_boot(state, version))
    yield
    if boot is not None and not boot.done():
        boot.cancel()
    await state.engine.stop()
    state.swaps.close()


async def _boot(state: ServerState, version: str) -> None:
    assert state.settings.model is not None
    try:
        await state.swaps.boot(state.settings.model, version)
        state.metrics.ready.set(1)
    except Exception:
        log.exception("could not load the boot model %s", state.settings.model)
        raise


async def serve(settings: Settings) -> None:
    state = create_state(settings)
    data_runner = web.AppRunner(create_data_app(state), access_log=None, handle_signals=False)
    await data_runner.setup()
    await web.TCPSite(data_runner, settings.host, settings.port).start()
    admin_runner: web.AppRunner | None = None
    if settings.admin_enabled:
        admin_runner = web.AppRunner(create_admin_app(state), access_log=None, handle_signals=False)
        await admin_runner.setup()
        await web.TCPSite(admin_runner, settings.admin_host, settings.admin_port).start()
    log.info(
        "serving on http://%s:%d (admin %s:%d) device=%s dtype=%s",
        settings.host, settings.port, settings.admin_host, settings.admin_port,
        state.placement.device, state.placement.dtype_name,
    )  # fmt: skip
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    # Graceful shutdown: readiness drops first, queued work drains, then the sockets close.
    log.info("shutting down: draining queued work (up to %.0fs)", settings.drain_timeout_s)
    state.draining = True
    state.metrics.ready.set(0)
    drained = await state.engine.drain(settings.drain_timeout_s)
    if not drained:
        log.warning("drain timeout: answering the remaining requests with 503")
    if admin_runner is not None:
        await admin_runner.cleanup()
    await data_runner.cleanup()
    log.info("stopped")
