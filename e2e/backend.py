"""What the scenario needs from a cluster: the backend interface, and the client load it reports.

Two implementations: ``e2e.backends.local.LocalBackend`` (the local cluster: kmock API server,
loopback pods, the real operator) and ``e2e.backends.kind.KindBackend`` (a kind cluster with the
Helm chart). The scenario talks to the cluster the way a user does, through ``kubectl``, except
where a backend has a cheaper equivalent of a read (``get_model``).
"""

from __future__ import annotations

import dataclasses
import subprocess
import time
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any, Protocol


class Sample(Protocol):
    """One client request as the load saw it (the local harness's ``load.Sample`` has this shape)."""

    at: float  # seconds since the load started
    pod: str
    ok: bool
    status: int
    version: str | None
    latency_ms: float
    error: str


@dataclasses.dataclass
class LoadSummary:
    total: int
    failed: int
    by_version: dict[str, int]
    by_pod: dict[str, int]  # empty where the client cannot tell (behind a real Service)
    failures: list[str]  # the first few, "<pod>: <status> <error>"
    p50_ms: float
    p99_ms: float
    clients: int = 0
    seconds: float = 0.0  # how long the load ran

    @property
    def ok(self) -> int:
        return self.total - self.failed


class LoadRun:
    """Client load in progress: ``samples`` grows while it runs (where the backend sees each
    request), ``summary`` is set once it has stopped."""

    def __init__(self, concurrency: int, started_wall: float) -> None:
        self.concurrency = concurrency
        self.started_wall = started_wall  # time.time() when the first client started
        self.samples: list[Any] = []  # Sample-shaped objects, in completion order
        self.summary: LoadSummary | None = None

    def live(self) -> LoadSummary | None:
        """A summary of what has been seen so far (None where requests are not seen one by one)."""
        if not self.samples:
            return self.summary
        return summarize(self.samples, self.concurrency, time.time() - self.started_wall)


def summarize(samples: list[Any], clients: int = 0, seconds: float = 0.0) -> LoadSummary:
    ok = [s for s in samples if s.ok]
    latencies = sorted(s.latency_ms for s in ok) or [0.0]
    by_version: dict[str, int] = {}
    by_pod: dict[str, int] = {}
    for s in samples:
        by_pod[s.pod] = by_pod.get(s.pod, 0) + 1
        if s.ok:
            by_version[s.version or "-"] = by_version.get(s.version or "-", 0) + 1
    return LoadSummary(
        total=len(samples),
        failed=len(samples) - len(ok),
        by_version=by_version,
        by_pod=by_pod,
        failures=[f"{s.pod}: {s.status} {s.error}" for s in samples if not s.ok][:20],
        p50_ms=latencies[len(latencies) // 2],
        p99_ms=latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))],
        clients=clients,
        seconds=seconds,
    )


class Backend(Protocol):
    name: str  # "local" or "kind"
    namespace: str
    model_name: str  # the RerankerModel's name (its boot ConfigMap is "<name>-boot")
    workdir: Path  # where the scenario writes the manifests it applies

    def selector(self) -> dict[str, str]:
        """matchLabels of the reranker pods."""
        ...

    async def pods(self) -> list[str]:
        """The reranker pods' names, sorted."""
        ...

    def publish(self, version: str, model: str) -> dict[str, str]:
        """Make the test model folder ``model`` fetchable by the pods as ``version``; its ``{uri, sha256}``."""
        ...

    async def kubectl(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        """kubectl against this cluster and namespace; never raises for a non-zero exit."""
        ...

    async def get_model(self) -> dict[str, Any] | None:
        """The RerankerModel as the API returns it, or None."""
        ...

    async def agent_status(self, pod: str) -> dict[str, Any]:
        """``GET /v1/status`` of the pod's agent (docs/agent.md)."""
        ...

    def load(self, concurrency: int) -> AbstractAsyncContextManager[LoadRun]:
        """Client load on the data-plane Service while the block runs; ``summary`` set on exit."""
        ...

    def kubectl_hint(self) -> str:
        """The command prefix a person types to look at this cluster (``kubectl --kubeconfig ... -n ...``)."""
        ...
