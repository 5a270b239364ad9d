"""The controlplane backend: the scenario on a real Kubernetes API server (devtools/controlplane).

etcd, kube-apiserver, kube-controller-manager and kube-scheduler built from Go modules
(scripts/get-controlplane.sh), a process kubelet that runs pods as local processes, and the
**unchanged** Helm chart ``helm/hotswap`` installed by ``helm install`` with
``e2e/controlplane/values.yaml`` plus generated values (the kind backend's ``generated_values``):
the operator runs as the chart's Deployment under the chart's ServiceAccount (RBAC enforced), the
reranker pods run ``hotswap-server`` and ``hotswap-agent`` from ``.venv/bin``.

Model versions are folders of a registry on this machine (``<workdir>/registry/<version>``), the
source ``file://`` of one, the only prefix on the agents' allow-list. Client load goes from the
harness to the ready endpoints of the Service's EndpointSlices (no kube-proxy here: the requests
are spread over the ready endpoints, re-read as they change), counted by the version header as on
the other backends.

Pod IPs are routed only inside a network namespace of the run's own (``scripts/netns-run.sh``,
docs/controlplane.md): run it there (``make e2e-controlplane`` does), or EndpointSlices stay empty
and this backend refuses to start. helm comes from ``scripts/get-helm.sh`` (cached; fetch it
before entering the namespace: nothing in there reaches the network).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aiohttp
import yaml

from devtools.controlplane import ApiError, ControlPlane, KubeletConfig
from devtools.controlplane.network import in_run_netns
from devtools.localcluster.load import Load, Service

from .. import commands
from ..backend import LoadRun, summarize
from ..scenario import ScenarioConfig, ScenarioError
from .kind import AGENT_PORT, DATA_PORT, KindConfig, generated_values
from .local import kubectl_path

REPO = Path(__file__).resolve().parents[2]
VALUES = REPO / "e2e" / "controlplane" / "values.yaml"
CHART = REPO / "helm" / "hotswap"
CRD_API = "/apis/hotswap.dev/v1alpha1"


class ControlPlaneBackendError(ScenarioError):
    """The cluster never got where the scenario starts: not in the namespace, helm failed, ..."""


@dataclasses.dataclass(frozen=True)
class ControlPlaneConfig(KindConfig):
    """The kind backend's settings (namespace, release, chart names, selector), with the model
    registry a folder of this machine: sources are ``file://<workdir>/registry/<version>``."""

    image: str = "reranker-hotswap:controlplane"  # never pulled (values.yaml)
    helm_timeout: str = "15m"

    @property
    def models_url(self) -> str:
        return f"file://{self.registry_dir}"

    @property
    def kubeconfig(self) -> Path:
        return self.workdir / "cluster" / "admin.kubeconfig"


# ---------------------------------------------------------------------------------- builders


def kubectl_argv(cfg: ControlPlaneConfig, args: Sequence[str]) -> list[str]:
    return [kubectl_path(), "--kubeconfig", str(cfg.kubeconfig), "--namespace", cfg.namespace, *args]


def helm_install_argv(helm: str, cfg: ControlPlaneConfig, generated: Path) -> list[str]:
    return [
        helm,
        "install",
        cfg.release,
        str(CHART),
        "--kubeconfig",
        str(cfg.kubeconfig),
        "--namespace",
        cfg.namespace,
        "--create-namespace",
        "--values",
        str(VALUES),
        "--values",
        str(generated),
        "--wait",
        "--timeout",
        cfg.helm_timeout,
    ]


def helm_upgrade_argv(
    helm: str, cfg: ControlPlaneConfig, *values: Path, extra: Sequence[str] = ()
) -> list[str]:
    """``helm upgrade`` of the release with ``e2e/controlplane/values.yaml`` and ``values`` files."""
    argv = [helm, "upgrade", cfg.release, str(CHART), "--kubeconfig", str(cfg.kubeconfig)]
    argv += ["--namespace", cfg.namespace, "--values", str(VALUES)]
    for v in values:
        argv += ["--values", str(v)]
    return [*argv, "--wait", "--timeout", cfg.helm_timeout, *extra]


def helm_uninstall_argv(helm: str, cfg: ControlPlaneConfig, *extra: str) -> list[str]:
    return [
        helm,
        "uninstall",
        cfg.release,
        "--kubeconfig",
        str(cfg.kubeconfig),
        "--namespace",
        cfg.namespace,
        *extra,
    ]


def merge_values(base: dict[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    """``extra`` merged into ``base`` (maps deeply, everything else replaced), as helm merges values."""
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key] = merge_values(out[key], value)
        else:
            out[key] = value
    return out


def publish_file(cfg: ControlPlaneConfig, version: str, folder: Path) -> dict[str, str]:
    """Copy ``folder`` into the registry as ``version`` (once); its ``file://`` source, pinned."""
    from hotswap_contract.digest import folder_digest

    target = cfg.registry_dir / version
    if not target.is_dir():
        cfg.registry_dir.mkdir(parents=True, exist_ok=True)
        tmp = cfg.registry_dir / f".{version}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.copytree(folder, tmp)
        tmp.rename(target)
    return {"uri": f"{cfg.models_url}/{version}", "sha256": folder_digest(target)}


def ready_endpoints(slices: Mapping[str, Any], port: int = DATA_PORT) -> dict[str, str]:
    """Pod name -> data-plane URL of every ready endpoint in an EndpointSlice list."""
    out: dict[str, str] = {}
    for s in slices.get("items", []):
        for ep in s.get("endpoints") or []:
            if not (ep.get("conditions") or {}).get("ready"):
                continue
            name = (ep.get("targetRef") or {}).get("name") or ep["addresses"][0]
            out[name] = f"http://{ep['addresses'][0]}:{port}"
    return out


def scenario_config(config: ScenarioConfig) -> ScenarioConfig:
    """Room for three servers importing torch at once on two cores, and a gentler poll."""
    return dataclasses.replace(config, install_timeout=600, change_timeout=300, poll_seconds=0.5)


# ---------------------------------------------------------------------------------- the backend


class ControlPlaneBackend:
    name = "controlplane"

    def __init__(self, cfg: ControlPlaneConfig, cp: ControlPlane, models_dir: Path) -> None:
        self.cfg = cfg
        self.cp = cp
        self.models_dir = models_dir
        self.namespace = cfg.namespace
        self.model_name = cfg.model
        self.workdir = cfg.workdir
        self.timings: dict[str, float] = {}
        self.helm_warnings: list[str] = []  # what helm (and the API server through it) warned about
        self.keep_workdir = False  # set it to keep the work folder (every log) when the block ends
        self._agent_token: str | None = None
        self.helm = "helm"  # helm's path (controlplane_backend sets it)
        self._session: aiohttp.ClientSession | None = None

    def selector(self) -> dict[str, str]:
        return self.cfg.selector()

    def _selector_param(self) -> str:
        return ",".join(f"{k}={v}" for k, v in self.selector().items())

    async def _pod_objects(self) -> list[dict[str, Any]]:
        pods = await self.cp.client().get(
            f"/api/v1/namespaces/{self.namespace}/pods", labelSelector=self._selector_param()
        )
        return [
            p
            for p in pods.get("items", [])
            if p.get("status", {}).get("phase") == "Running" and not p["metadata"].get("deletionTimestamp")
        ]

    async def pods(self) -> list[str]:
        return sorted(p["metadata"]["name"] for p in await self._pod_objects())

    def publish(self, version: str, model: str) -> dict[str, str]:
        from devtools.testmodels import generate

        generate(self.models_dir, [model])
        return publish_file(self.cfg, version, self.models_dir / model)

    async def kubectl(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return await commands.run(kubectl_argv(self.cfg, args), timeout=timeout)

    async def get_model(self) -> dict[str, Any] | None:
        try:
            return await self.cp.client().get(  # type: ignore[no-any-return]
                f"{CRD_API}/namespaces/{self.namespace}/rerankermodels/{self.model_name}"
            )
        except ApiError as exc:
            if exc.status == 404:
                return None
            raise

    async def agent_token(self) -> str:
        """The chart's agent token (its Secret, generated at install), as the operator presents it."""
        if self._agent_token is None:
            name = f"{self.cfg.fullname}-agent-token"
            secret = await self.cp.client().get(f"/api/v1/namespaces/{self.namespace}/secrets/{name}")
            self._agent_token = base64.b64decode(secret["data"]["token"]).decode().strip()
        return self._agent_token

    async def agent_status(self, pod: str) -> dict[str, Any]:
        obj = await self.cp.client().get(f"/api/v1/namespaces/{self.namespace}/pods/{pod}")
        url = f"http://{obj['status']['podIP']}:{AGENT_PORT}/v1/status"
        headers = {"Authorization": f"Bearer {await self.agent_token()}"}
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session,
            session.get(url, headers=headers) as resp,
        ):
            resp.raise_for_status()
            return await resp.json()  # type: ignore[no-any-return]

    async def _follow_endpoints(self, service: Service, stop: asyncio.Event) -> None:
        """Keep ``service`` equal to the ready endpoints of the Service's EndpointSlices."""
        path = f"/apis/discovery.k8s.io/v1/namespaces/{self.namespace}/endpointslices"
        selector = f"kubernetes.io/service-name={self.cfg.fullname}"
        while not stop.is_set():
            with contextlib.suppress(ApiError, aiohttp.ClientError, TimeoutError):
                ready = ready_endpoints(await self.cp.client().get(path, labelSelector=selector))
                for name in service.endpoints:
                    if name not in ready:
                        service.set_ready(name, "", False)
                for name, url in ready.items():
                    service.set_ready(name, url, True)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 0.25)

    @contextlib.asynccontextmanager
    async def load(self, concurrency: int) -> AsyncIterator[LoadRun]:
        service = Service()
        stop = asyncio.Event()
        follower = asyncio.create_task(self._follow_endpoints(service, stop))
        try:
            for _ in range(200):  # the first read, so the load starts on the ready endpoints
                if service.endpoints:
                    break
                await asyncio.sleep(0.05)
            load = Load(service, concurrency=concurrency)
            run = LoadRun(concurrency, time.time())
            run.samples = load.samples  # appended to as answers come
            started = time.monotonic()
            async with load:
                run.started_wall = time.time()
                yield run
            run.summary = summarize(load.samples, concurrency, time.monotonic() - started)
        finally:
            stop.set()
            await follower

    def kubectl_hint(self) -> str:
        """kubectl against this cluster: the API server listens on the loopback of the run's network
        namespace, so from another shell enter it first (nsenter, as root)."""
        enter = f"nsenter --net=/proc/{os.getpid()}/ns/net " if os.environ.get("HOTSWAP_NETNS") else ""
        return f"{enter}{kubectl_path()} --kubeconfig {self.cfg.kubeconfig} --namespace {self.namespace}"

    @property
    def logs_dir(self) -> Path:
        """Where the logs are: the control plane's in cluster/logs, each pod's in cluster/kubelet/pods."""
        return self.workdir

    # -- diagnostics -------------------------------------------------------------------------------

    def operator_log(self) -> str:
        """The operator container's log (every restart), as ``kubectl logs`` would show it."""
        kubelet = self.cp.kubelet
        if kubelet is None:
            return ""
        texts = []
        for runtime in list(kubelet.pods.values()):
            if runtime.namespace == self.namespace and runtime.name.startswith(
                f"{self.cfg.fullname}-operator-"
            ):
                path = kubelet.log_path(self.namespace, runtime.name, "operator")
                if path is not None and path.exists():
                    texts.append(path.read_text(errors="replace"))
        return "\n".join(texts)

    def forbidden(self) -> list[str]:
        """What the API server refused the operator (RBAC): the lines of its log that say so."""
        return [
            line.strip()
            for line in self.operator_log().splitlines()
            if "forbidden" in line.lower() or " 403" in line
        ]


if TYPE_CHECKING:  # mypy holds the backend to the interface the scenario uses
    from ..backend import Backend

    _conforms: Backend = ControlPlaneBackend(ControlPlaneConfig(), ControlPlane.__new__(ControlPlane), Path())


def find_helm() -> str:
    """helm from scripts/get-helm.sh (cached: run it before entering the network namespace)."""
    res = subprocess.run(
        [str(REPO / "scripts" / "get-helm.sh")], capture_output=True, text=True, check=False, timeout=300
    )
    if res.returncode != 0:
        raise ControlPlaneBackendError(
            f"scripts/get-helm.sh failed (fetch helm before entering the network namespace):\n{res.stderr[-2000:]}"
        )
    return res.stdout.strip().splitlines()[-1]


@contextlib.asynccontextmanager
async def controlplane_backend(
    models_dir: Path,
    *,
    boot_model: str = "tiny-xlmr-v1",
    replicas: int = 3,
    swap_mode: str = "inplace",
    workdir: Path | None = None,
    keep_logs_on_error: bool = True,
    log: Any = None,
    extra_values: Mapping[str, Any] | None = None,
) -> AsyncIterator[ControlPlaneBackend]:
    """A control plane, the chart ``helm install``ed on it, for the block; everything stops on exit.

    ``log(text)`` gets progress lines (default: stderr). When the block raises, the work folder
    (logs of every component and pod) is kept and named, with what the API server refused the
    operator, if anything. ``extra_values`` are merged into the generated values (e.g.
    ``{"model": {"create": True}}``); the backend keeps helm's path in ``backend.helm``.
    """
    say = log or (lambda text: print(text, file=sys.stderr, flush=True))
    why = in_run_netns()
    if why is not None:
        raise ControlPlaneBackendError(
            f"the controlplane backend needs routed pod IPs for the Service's EndpointSlices: {why}"
        )
    helm = find_helm()
    own_workdir = workdir is None
    workdir = Path(workdir or tempfile.mkdtemp(prefix="hotswap-e2e-controlplane-"))
    cfg = ControlPlaneConfig(workdir=workdir, boot_model=boot_model)
    keep = False
    try:
        t0 = time.monotonic()
        kubelet = KubeletConfig(volume_sync=1.0, backoff_initial=0.5, backoff_max=8.0)
        async with ControlPlane.start(workdir / "cluster", kubelet=kubelet, pod_network="routed") as cp:
            backend = ControlPlaneBackend(cfg, cp, models_dir)
            backend.helm = helm
            backend.timings["controlplane_start_s"] = time.monotonic() - t0
            say(f"control plane ready in {backend.timings['controlplane_start_s']:.1f} s ({cp.url})")
            try:
                source = backend.publish(cfg.boot_version, cfg.boot_model)
                generated = workdir / "values-generated.yaml"
                values = generated_values(cfg, source)
                values["reranker"].update({"replicas": replicas, "server": {"swapMode": swap_mode}})
                values = merge_values(values, extra_values or {})
                generated.write_text(yaml.safe_dump(values, sort_keys=False))
                t1 = time.monotonic()
                say(f"helm install {cfg.release} helm/hotswap --namespace {cfg.namespace} --wait ...")
                res = await commands.run(
                    helm_install_argv(helm, cfg, generated),
                    timeout=1200,
                    env={**os.environ, "HOME": str(workdir)},
                )
                backend.timings["helm_install_s"] = time.monotonic() - t1
                if res.returncode != 0:
                    raise ControlPlaneBackendError(
                        f"helm install failed:\n{res.stderr.strip()[-3000:]}{_refused(backend)}"
                    )
                (workdir / "helm-install.log").write_text(res.stdout + res.stderr)
                backend.helm_warnings = [line for line in res.stderr.splitlines() if line.strip()]
                for line in backend.helm_warnings:
                    say(f"helm: {line}")
                say(f"helm install: deployed, every pod Ready, in {backend.timings['helm_install_s']:.1f} s")
                yield backend
                keep = backend.keep_workdir
            except BaseException as exc:
                if keep_logs_on_error and not isinstance(exc, (KeyboardInterrupt, asyncio.CancelledError)):
                    keep = True
                    refused = backend.forbidden()
                    if refused:
                        say("the API server refused the operator:\n  " + "\n  ".join(refused[:10]))
                    say(f"control plane and pod logs kept in {workdir}")
                raise
    finally:
        if own_workdir and not keep:
            shutil.rmtree(workdir, ignore_errors=True)


def _refused(backend: ControlPlaneBackend) -> str:
    lines = backend.forbidden()
    return ("\nthe API server refused the operator:\n  " + "\n  ".join(lines[:10])) if lines else ""
