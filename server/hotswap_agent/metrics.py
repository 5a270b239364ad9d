"""Prometheus metrics of one agent, in a registry of its own (several apps can live in one process)."""

from __future__ import annotations

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)

from hotswap_agent.operations import Operation

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
disable_created_metrics()  # no *_created series next to every counter and histogram


class AgentMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.operations = Counter(
            "hotswap_agent_operations",
            "Operations finished, by kind and result",
            ["kind", "result"],
            registry=r,
        )
        self.operation_seconds = Histogram(
            "hotswap_agent_operation_seconds",
            "Duration of finished operations, by kind",
            ["kind"],
            buckets=(0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800),
            registry=r,
        )
        self.staged_bytes = Counter(
            "hotswap_agent_staged_bytes", "Bytes downloaded into the models volume", registry=r
        )
        self.operation_running = Gauge(
            "hotswap_agent_operation_running", "1 while an operation runs", registry=r
        )
        self.boot_attempts = Counter("hotswap_agent_boot_attempts", "Boot attempts made", registry=r)
        self.server_reachable = Gauge(
            "hotswap_agent_server_reachable",
            "1 when the server's admin plane answered the last call",
            registry=r,
        )
        self.versions_on_disk = Gauge(
            "hotswap_agent_versions_on_disk", "Version folders on the models volume", registry=r
        )

    def finished(self, op: Operation, seconds: float) -> None:
        self.operations.labels(op.kind, op.state).inc()
        self.operation_seconds.labels(op.kind).observe(seconds)

    def render(self) -> bytes:
        return generate_latest(self.registry)
