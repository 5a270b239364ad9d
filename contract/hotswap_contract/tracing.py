"""OpenTelemetry tracing, off by default, switched on by the standard OTLP environment variables.

Each process calls :func:`setup` once at start. Tracing is on when ``OTEL_TRACES_EXPORTER`` is
``otlp`` or an ``OTEL_EXPORTER_OTLP_(TRACES_)ENDPOINT`` is set (and ``OTEL_SDK_DISABLED`` is not
``true``); the exporter then reads the usual variables itself (endpoint, headers, protocol,
``OTEL_SERVICE_NAME``, ``OTEL_RESOURCE_ATTRIBUTES``). Without them every span is the API's no-op
span: nothing is recorded, nothing is sent, and the cost is a function call.

The SDK and the OTLP exporter are the ``tracing`` extra (the image installs it); without them a
request for tracing is logged and ignored.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from typing import Any

from opentelemetry import trace

log = logging.getLogger(__name__)


def requested(env: Mapping[str, str] | None = None) -> bool:
    env = os.environ if env is None else env
    if env.get("OTEL_SDK_DISABLED", "").lower() == "true":
        return False
    exporters = {e.strip() for e in env.get("OTEL_TRACES_EXPORTER", "").split(",")}
    if "none" in exporters:
        return False
    endpoint = env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or env.get("OTEL_EXPORTER_OTLP_ENDPOINT")
    return "otlp" in exporters or bool(endpoint)


def setup(service: str, env: Mapping[str, str] | None = None, exporter: Any = None) -> bool:
    """Install a tracer provider exporting over OTLP when the environment asks for it (or export to
    ``exporter``, for tests). Returns whether spans are recorded."""
    if exporter is None and not requested(env):
        return False
    try:
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor
    except ImportError:
        log.warning("OTLP tracing requested, but the tracing extra (opentelemetry-sdk) is not installed")
        return False
    provider = TracerProvider(resource=Resource.create({"service.name": service}))
    if exporter is not None:
        provider.add_span_processor(SimpleSpanProcessor(exporter))
    else:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(provider)
    log.info("tracing on: spans of %s exported over OTLP", service)
    return True


def tracer(name: str) -> trace.Tracer:
    return trace.get_tracer(name)


def past_span(t: trace.Tracer, name: str, start_ns: int, end_ns: int, **attributes: Any) -> None:
    """A child span of the current one for a stretch of time measured elsewhere (a request's wait in
    the queue, the forward that scored it: they happen on the engine's loop and thread)."""
    if start_ns and end_ns >= start_ns:
        t.start_span(name, start_time=start_ns, attributes=attributes).end(end_time=end_ns)
