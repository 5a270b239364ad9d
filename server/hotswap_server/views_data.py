"""Data plane: TEI- and Cohere/Jina-compatible rerank, info, health and metrics."""

from __future__ import annotations

import time
import uuid
from typing import Any, TypeVar

from aiohttp import web
from hotswap_contract import tracing
from hotswap_contract.wire import VERSION_HEADER
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel
from pydantic import ValidationError as PydanticValidationError

from . import __version__
from .engine import Scored
from .errors import NotReady, PayloadTooLarge, ValidationError, parse_json, read_body
from .openapi import openapi_document
from .scoring import AdmittedTokens, admission_tokens, clip_documents, query_overhead, to_relevance
from .state import STATE, ServerState
from .wire import CohereRerankRequest, TeiRerankRequest, f32, pydantic_message, ranked

M = TypeVar("M", bound=BaseModel)
routes = web.RouteTableDef()
TRACER = tracing.tracer("hotswap_server")


async def parse_body(request: web.Request, model: type[M]) -> M:
    data = parse_json(await read_body(request))
    if not isinstance(data, dict):
        raise ValidationError("body must be a JSON object")
    try:
        return model.model_validate(data)
    except PydanticValidationError as e:
        raise ValidationError(pydantic_message(e)) from None


async def score_documents(
    state: ServerState, query: str, docs: list[str], *, truncate: bool, max_tokens_per_doc: int | None = None
) -> Scored:
    """Admission checks shared by every rerank shape, then the engine; one trace span with its parts."""
    with TRACER.start_as_current_span("rerank", attributes={"hotswap.documents": len(docs)}) as span:
        scored = await _admit_and_score(
            state, query, docs, truncate=truncate, max_tokens_per_doc=max_tokens_per_doc
        )
        span.set_attribute("hotswap.version", scored.version)
        span.set_attribute("hotswap.tokens", scored.tokens)
        tracing.past_span(TRACER, "queue", scored.queued_ns, scored.started_ns)
        tracing.past_span(
            TRACER, "forward", scored.started_ns, scored.finished_ns, **{"hotswap.version": scored.version}
        )
        return scored


async def _admit_and_score(
    state: ServerState, query: str, docs: list[str], *, truncate: bool, max_tokens_per_doc: int | None
) -> Scored:
    if not docs:
        raise ValidationError("at least one document is required")
    if len(docs) > state.settings.max_documents:
        raise PayloadTooLarge(
            f"{len(docs)} documents; this server accepts at most {state.settings.max_documents}"
        )
    active = state.swaps.active
    if active is None or not state.engine.ready:
        raise NotReady("no model is active yet" if active is None else "server is shutting down")
    overhead = query_overhead(active, query)
    if overhead >= active.max_length:
        # Pairs are truncated on the document side only: a query this long leaves no room.
        raise PayloadTooLarge(
            f"query is {overhead} tokens with the special tokens; the model's limit per pair is {active.max_length}"
        )
    admitted: AdmittedTokens | None = None
    with TRACER.start_as_current_span("tokenize"):
        if max_tokens_per_doc is not None:
            docs = clip_documents(active, docs, max_tokens_per_doc)
        if not truncate:
            admitted = admission_tokens(active, query, docs)
            lengths = admitted.lengths
            worst = max(range(len(lengths)), key=lengths.__getitem__)
            if lengths[worst] > active.max_length:
                raise PayloadTooLarge(
                    f"input of document {worst} is {lengths[worst]} tokens, the model's limit is "
                    f"{active.max_length}; set truncate to true to truncate documents"
                )
    return await state.engine.score(query, docs, admitted)


def _scored_response(body: Any, scored: Scored) -> web.Response:
    return web.json_response(body, headers={VERSION_HEADER: scored.version})


@routes.post("/rerank")
async def tei_rerank(request: web.Request) -> web.Response:
    state = request.app[STATE]
    req = await parse_body(request, TeiRerankRequest)
    docs = req.texts
    if req.truncation_direction.lower() == "left":
        raise ValidationError("truncation_direction Left is not supported by this server; use Right")
    scored = await score_documents(state, req.query, docs, truncate=bool(req.truncate))
    scores = scored.raw if req.raw_scores else to_relevance(scored.raw, scored.kind)
    out = []
    for i in ranked(scores):
        item: dict[str, Any] = {"index": i, "score": f32(scores[i])}
        if req.return_text:
            item["text"] = docs[i]
        out.append(item)
    return _scored_response(out, scored)


async def _cohere(request: web.Request, api_version: str) -> web.Response:
    state = request.app[STATE]
    req = await parse_body(request, CohereRerankRequest)
    docs = req.texts()
    scored = await score_documents(
        state, req.query, docs, truncate=True, max_tokens_per_doc=req.max_tokens_per_doc
    )
    scores = to_relevance(scored.raw, scored.kind)
    # Cohere's v1 API returned documents unless told otherwise; v2 returns them only when asked.
    with_docs = req.return_documents if req.return_documents is not None else api_version == "1"
    results = []
    for i in ranked(scores, req.top_n):
        item: dict[str, Any] = {"index": i, "relevance_score": f32(scores[i])}
        if with_docs:
            item["document"] = {"text": docs[i]}
        results.append(item)
    body = {
        "id": str(uuid.uuid4()),
        "model": req.model or state.model_id,
        "results": results,
        "meta": {"api_version": {"version": api_version}, "billed_units": {"search_units": 1}},
        "usage": {"total_tokens": scored.tokens},
    }
    return _scored_response(body, scored)


@routes.post("/v1/rerank")
async def cohere_v1(request: web.Request) -> web.Response:
    return await _cohere(request, "1")


@routes.post("/v2/rerank")
async def cohere_v2(request: web.Request) -> web.Response:
    return await _cohere(request, "2")


@routes.get("/info")
async def info(request: web.Request) -> web.Response:
    state = request.app[STATE]
    s = state.settings
    active = state.swaps.active
    record = active.record() if active else None
    return web.json_response(
        {
            "model_id": state.model_id,
            "model_sha": record["digest"] if record else None,
            "model_dtype": record["dtype"] if record else state.placement.dtype_name,
            "model_type": {"reranker": {"id2label": {"0": "LABEL_0"}, "label2id": {"LABEL_0": 0}}},
            # TEI's /info says which server answers (its "version"); ours says it as server_version,
            # since "version" is the model version here.
            "server_version": __version__,
            "version": record["version"] if record else None,
            "digest": record["digest"] if record else None,
            "kind": record["kind"] if record else None,
            "architecture": record["architecture"] if record else None,
            "dtype": record["dtype"] if record else state.placement.dtype_name,
            "device": str(state.placement.device),
            "max_input_length": active.max_length if active else None,
            "max_client_batch_size": s.max_documents,
            "max_batch_size": s.max_batch_size,
            # snake_case like every other key of the data plane (TEI's convention)
            "limits": {
                "max_documents": s.max_documents,
                "max_body_bytes": s.max_body_bytes,
                "max_batch_size": s.max_batch_size,
                "max_queue_pairs": s.max_queue_pairs,
                "max_input_length": active.max_length if active else s.max_input_length,
            },
            "swap_mode": s.swap_mode,
        }
    )


@routes.get("/openapi.json")
async def openapi(request: web.Request) -> web.Response:
    return web.json_response(openapi_document())


@routes.get("/healthz")
async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


@routes.get("/readyz")
async def readyz(request: web.Request) -> web.Response:
    state = request.app[STATE]
    if state.draining or not state.engine.ready:
        reason = "draining" if state.draining else "no model is active"
        return web.json_response({"status": "unavailable", "reason": reason}, status=503)
    active = state.swaps.active
    return web.json_response({"status": "ready", "version": active.version if active else None})


@routes.get("/metrics")
async def metrics(request: web.Request) -> web.Response:
    state = request.app[STATE]
    body = generate_latest(state.metrics.registry)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


def observe(state: ServerState, route: str, status: int, started: float) -> None:
    state.metrics.requests.labels(route, str(status)).inc()
    state.metrics.latency.labels(route).observe(time.perf_counter() - started)
