"""Trace spans of a rerank request (rerank > tokenize, queue, forward) and their switch."""

from __future__ import annotations

import pytest
from hotswap_contract import tracing
from opentelemetry import trace
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter


@pytest.fixture(scope="module")
def spans() -> InMemorySpanExporter:
    # The global tracer provider can be set once per process: one exporter for this module.
    exporter = InMemorySpanExporter()
    if not tracing.setup("hotswap-server-test", exporter=exporter):
        pytest.fail("tracing.setup refused an explicit exporter")
    return exporter


def test_tracing_is_off_unless_the_otlp_environment_asks() -> None:
    assert not tracing.requested({})
    assert tracing.requested({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"})
    assert tracing.requested({"OTEL_TRACES_EXPORTER": "otlp"})
    assert not tracing.requested({"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://x"})
    assert not tracing.requested({"OTEL_SDK_DISABLED": "true", "OTEL_TRACES_EXPORTER": "otlp"})
    assert not tracing.setup("x", env={})


async def test_a_rerank_request_has_queue_tokenize_and_forward_spans(
    make_clients, spans: InMemorySpanExporter
) -> None:
    data, _, _ = await make_clients()
    spans.clear()
    r = await data.post("/rerank", json={"query": "q", "texts": ["a", "b"]})
    assert r.status == 200
    trace.get_tracer_provider().force_flush()  # type: ignore[attr-defined]
    by_name = {s.name: s for s in spans.get_finished_spans()}
    assert {"rerank", "tokenize", "queue", "forward"} <= set(by_name)
    root = by_name["rerank"]
    assert root.attributes is not None and root.attributes["hotswap.version"] == "v1"
    for child in ("tokenize", "queue", "forward"):
        span = by_name[child]
        assert span.parent is not None and span.parent.span_id == root.context.span_id, child
    queue, forward = by_name["queue"], by_name["forward"]
    assert queue.start_time is not None and forward.end_time is not None
    assert queue.start_time <= queue.end_time <= forward.start_time + 1 <= forward.end_time + 1  # type: ignore[operator]
