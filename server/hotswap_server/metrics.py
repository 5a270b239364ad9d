"""Prometheus metrics, one registry per app so tests and several apps in a process stay apart."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info, disable_created_metrics

# Counters and histograms would also export a *_created series each: noise that doubles the
# series count for no use here (process-wide switch, so the agent's registry is covered too).
disable_created_metrics()

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


class ServerMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "hotswap_requests", "HTTP requests by route and status", ["route", "status"], registry=r
        )
        self.latency = Histogram(
            "hotswap_request_duration_seconds",
            "Request latency",
            ["route"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.pairs = Counter("hotswap_scored_pairs", "Pairs scored, by version", ["version"], registry=r)
        self.batch_size = Histogram(
            "hotswap_batch_size", "Pairs per model forward", buckets=BATCH_BUCKETS, registry=r
        )
        self.queue_depth = Gauge("hotswap_queue_pairs", "Pairs waiting to be scored", registry=r)
        # Where a request's time goes: waiting for its first batch, and each model forward.
        self.queue_wait = Histogram(
            "hotswap_queue_wait_seconds",
            "Time from a request's arrival to its first pair entering a batch",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.forward = Histogram(
            "hotswap_forward_seconds",
            "Duration of one model forward (a batch)",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.swaps = Counter("hotswap_swaps", "Completed swaps by mode", ["mode"], registry=r)
        self.swap_pause = Histogram(
            "hotswap_swap_pause_seconds",
            "Time new requests waited during a swap",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.last_swap_pause = Gauge("hotswap_last_swap_pause_seconds", "Pause of the last swap", registry=r)
        self.active = Info("hotswap_active_model", "The active model version", registry=r)
        self.ready = Gauge(
            "hotswap_ready", "1 when a model is active and the server is not draining", registry=r
        )

    def set_active(self, record: dict[str, str] | None) -> None:
        if record is None:
            self.active.info({"version": "", "digest": "", "kind": "", "device": "", "dtype": ""})
            return
        self.active.info({k: str(record[k]) for k in ("version", "digest", "kind", "device", "dtype")})
