"""``LocalCluster``: the API server, N pods on loopback addresses, and the real operator.

    async with LocalCluster(pods=3, flavour="real") as cluster:
        v1 = cluster.publish("v1", models / "tiny-xlmr-v1")
        await cluster.apply_model("v1", v1)
        await cluster.wait_ready("v1")
        async with cluster.load() as load:
            await cluster.apply_model("v2", cluster.publish("v2", models / "tiny-xlmr-v2"))
            await cluster.wait_ready("v2")
        assert load.report().failed == 0

Every pod has its own address 127.0.N.K (K = 2, 3, ...), so each can use the real ports: data plane
:8080, admin :8081, agent :9090. A pod is either *real* (``hotswap-server`` + ``hotswap-agent``) or
*fake* (``fakepod``: the agent API and a lexical scorer in one light process, for fast tests). A
small kubelet stand-in probes each pod's ``/readyz`` and keeps its Pod object's Ready condition and
the Service's endpoints current. Pods boot from the boot ConfigMap the operator keeps, like pods
that mount it. ``close()`` (or leaving the ``async with``, Ctrl-C included) stops everything.

``fault_points=True`` (real pods) puts the harness on the wires each agent uses (see ``faults``):
a test can hold a pod's swap at a step (``hold``), SIGKILL one of its containers meanwhile
(``kill_container``) and start it again as the kubelet would (``start_container``).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import fcntl
import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, TypeVar

import aiohttp
import kopf
import yaml
from hotswap_operator import crdgen, names
from hotswap_operator.kube import KubeClient, KubeError
from hotswap_operator.models import API_VERSION, KIND, RerankerModelStatus, parse_status
from hotswap_operator.patches import merge_patch

from devtools import dev_env

from .faults import PROXY_ADMIN_PORT, PROXY_DATA_PORT, Hold, HttpRegistry, PodProxy, close_all
from .load import Load, Service
from .procs import Proc

Flavour = Literal["real", "fake"]
Container = Literal["server", "agent"]
T = TypeVar("T")
LOCK_DIR = Path(tempfile.gettempdir()) / "hotswap-localcluster"
DATA_PORT, ADMIN_PORT, AGENT_PORT = 8080, 8081, 9090


class ClusterError(RuntimeError):
    pass


@dataclasses.dataclass
class LocalPod:
    name: str
    ip: str
    flavour: Flavour
    dir: Path
    procs: list[Proc] = dataclasses.field(default_factory=list)
    ready: bool = False
    stopping: bool = False  # out of the Service for good until its processes start again
    extra_server_args: tuple[str, ...] = ()
    proxies: dict[str, PodProxy] = dataclasses.field(default_factory=dict)  # "data" / "admin"
    generation: int = 0  # bumped on every (re)start of a container: names its log

    @property
    def url(self) -> str:
        return f"http://{self.ip}:{DATA_PORT}"

    @property
    def agent_url(self) -> str:
        return f"http://{self.ip}:{AGENT_PORT}"

    @property
    def running(self) -> bool:
        return bool(self.procs) and all(p.alive for p in self.procs)


class LocalCluster:
    def __init__(
        self,
        *,
        pods: int = 3,
        flavour: Flavour = "fake",
        workdir: Path | None = None,
        namespace: str = "default",
        model: str = "reranker",
        labels: Mapping[str, str] | None = None,
        operator: bool = True,
        operator_env: Mapping[str, str] | None = None,
        server_args: Sequence[str] = (),
        pod_server_args: Mapping[str, Sequence[str]] | None = None,
        keep_workdir: bool = False,
        fault_points: bool = False,
    ) -> None:
        self.initial_pods = pods
        self.flavour: Flavour = flavour
        self.namespace = namespace
        self.model = model
        self.labels = dict(labels or {"app": "reranker"})
        self.with_operator = operator
        self.operator_env = dict(operator_env or {})
        self.server_args = tuple(server_args)
        self.pod_server_args = {k: tuple(v) for k, v in (pod_server_args or {}).items()}
        if fault_points and flavour != "real":
            raise ClusterError("fault_points needs real pods (fake pods are scripted instead)")
        self.fault_points = fault_points
        self.registry: HttpRegistry | None = None
        self._own_workdir = workdir is None
        self.keep_workdir = keep_workdir
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix="hotswap-cluster-"))
        self.pods: dict[str, LocalPod] = {}
        self.service = Service()
        self.api_url = ""
        self.subnet = ""
        self._next_index = 0
        self._apiserver: Proc | None = None
        self._operator: Proc | None = None
        self._kube: KubeClient | None = None
        self._session: aiohttp.ClientSession | None = None
        self._kubelet: asyncio.Task[None] | None = None
        self._lock_file: Any = None
        self.agent_token = secrets.token_hex(24)
        self.admin_token = secrets.token_hex(24)
        self.liveness_port = 0

    # ------------------------------------------------------------------------------ lifecycle

    async def __aenter__(self) -> LocalCluster:
        try:
            await self.start()
        except BaseException:
            await self.close()
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        (self.workdir / "registry").mkdir(exist_ok=True)
        self._write_secret("agent-token", self.agent_token)
        self._write_secret("admin-token", self.admin_token)
        self.subnet = self._claim_subnet()
        await self._start_apiserver()
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5))
        info = kopf.ConnectionInfo(
            server=self.api_url, token="local-cluster", default_namespace=self.namespace
        )
        self._kube = KubeClient(info)
        await self.kube.create(names.core_path("namespaces"), {"metadata": {"name": self.namespace}})
        await self.kube.create("/apis/apiextensions.k8s.io/v1/customresourcedefinitions", crdgen.build_crd())
        self._kubelet = asyncio.create_task(self._kubelet_loop(), name="kubelet")
        if self.fault_points:
            self.registry = await HttpRegistry(f"{self.subnet}1", self.workdir / "registry").start()
        await asyncio.gather(*(self.add_pod(wait=False) for _ in range(self.initial_pods)))
        if self.with_operator:
            await self.start_operator()

    async def close(self) -> None:
        if self._kubelet is not None:
            self._kubelet.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._kubelet
            self._kubelet = None
        stops = [p.stop(grace=3) for pod in self.pods.values() for p in pod.procs]
        if self._operator is not None:
            stops.append(self._operator.stop(grace=3))
        await asyncio.gather(*stops, return_exceptions=True)
        if self._apiserver is not None:
            await self._apiserver.stop(grace=2)
        await close_all([*(p for pod in self.pods.values() for p in pod.proxies.values())])
        if self.registry is not None:
            await close_all([self.registry])
            self.registry = None
        if self._kube is not None:
            await self._kube.close()
        if self._session is not None:
            await self._session.close()
        if self._lock_file is not None:
            self._lock_file.close()
            self._lock_file = None
        if self._own_workdir and not self.keep_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    @property
    def kube(self) -> KubeClient:
        if self._kube is None:
            raise ClusterError("the cluster is not started")
        return self._kube

    @property
    def kubeconfig(self) -> Path:
        return self.workdir / "kubeconfig"

    def env(self) -> dict[str, str]:
        """Environment for kubectl and the operator: KUBECONFIG points at this cluster."""
        return {**dev_env(), "KUBECONFIG": str(self.kubeconfig)}

    # ------------------------------------------------------------------------------ the API

    async def _start_apiserver(self) -> None:
        ready = self.workdir / "apiserver.ready"
        ready.unlink(missing_ok=True)
        argv = [sys.executable, "-m", "devtools.localcluster.apiserver", "--ready-file", str(ready)]
        self._apiserver = Proc("apiserver", argv, log=self.workdir / "logs" / "apiserver.log").start()
        await self._until(lambda: ready.exists(), 30, "the API server to listen", proc=self._apiserver)
        self.api_url = json.loads(ready.read_text())["url"]
        kubeconfig = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "hotswap-local", "cluster": {"server": self.api_url}}],
            "users": [{"name": "hotswap-local", "user": {"token": "local-cluster"}}],
            "contexts": [
                {
                    "name": "hotswap-local",
                    "context": {
                        "cluster": "hotswap-local",
                        "user": "hotswap-local",
                        "namespace": self.namespace,
                    },
                }
            ],
            "current-context": "hotswap-local",
        }
        self.kubeconfig.write_text(yaml.safe_dump(kubeconfig))

    async def kubectl(
        self, *args: str, check: bool = True, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        """Run kubectl against this cluster (``--validate=false`` is added to apply/create)."""
        exe = (
            shutil.which("kubectl", path=str(Path(sys.executable).parent))
            or shutil.which("kubectl")
            or "kubectl"
        )
        argv = [exe, *args]
        if args and args[0] in ("apply", "create"):
            argv.append("--validate=false")

        def run() -> subprocess.CompletedProcess[str]:
            return subprocess.run(
                argv, env=self.env(), capture_output=True, text=True, timeout=timeout, check=False
            )

        result = await asyncio.to_thread(run)
        if check and result.returncode != 0:
            raise ClusterError(f"kubectl {' '.join(args)} failed: {result.stderr.strip()}")
        return result

    # ------------------------------------------------------------------------------ models

    def publish(self, version: str, folder: Path) -> dict[str, str]:
        """Put a model folder in the local registry; its source ``{uri, sha256}`` for the spec."""
        from hotswap_contract.digest import folder_digest  # stdlib only

        target = self.workdir / "registry" / version
        if not target.exists():
            tmp = target.with_name(f".{version}.tmp")
            shutil.rmtree(tmp, ignore_errors=True)
            shutil.copytree(folder, tmp, copy_function=_link_or_copy)
            tmp.rename(target)
        return {"uri": f"file://{target}", "sha256": folder_digest(target)}

    def publish_fake(self, version: str, *, broken: bool = False) -> dict[str, str]:
        """A small stand-in folder for fake pods (``broken``: fails preload like NaN weights)."""
        folder = self.workdir / "fake-src" / version
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "config.json").write_text(json.dumps({"version": version}))
        (folder / "model.safetensors").write_bytes(version.encode() * 64)
        if broken:
            (folder / "BROKEN").write_text("nan")
        return self.publish(version, folder)

    async def apply_model(
        self, version: str, source: Mapping[str, Any], *, name: str | None = None, **spec: Any
    ) -> dict[str, Any]:
        """Create the RerankerModel, or set its whole spec (``spec`` keys in camelCase; what is left
        out takes its default, as ``kubectl apply`` of a full manifest would)."""
        name = name or self.model
        body_spec = {
            "selector": {"matchLabels": self.labels},
            "version": version,
            "source": dict(source),
            **spec,
        }
        path = names.model_path(self.namespace, name)
        current = await self.kube.get(path)
        if current is None:
            body = {
                "apiVersion": API_VERSION,
                "kind": KIND,
                "metadata": {"name": name, "namespace": self.namespace},
                "spec": body_spec,
            }
            return await self.kube.create(names.model_path(self.namespace), body)
        return await self.kube.patch(path, {"spec": merge_patch(current.get("spec", {}), body_spec) or {}})

    async def patch_model(self, patch: dict[str, Any], name: str | None = None) -> dict[str, Any]:
        return await self.kube.patch(names.model_path(self.namespace, name or self.model), patch)

    async def get_model(self, name: str | None = None) -> dict[str, Any]:
        obj = await self.kube.get(names.model_path(self.namespace, name or self.model))
        if obj is None:
            raise ClusterError(f"RerankerModel {name or self.model} not found")
        return obj

    async def status(self, name: str | None = None) -> RerankerModelStatus:
        return parse_status((await self.get_model(name)).get("status"))

    async def wait_for_status(
        self, predicate: Callable[[RerankerModelStatus], bool], *, timeout: float = 60, what: str = "a status"
    ) -> RerankerModelStatus:
        last: list[RerankerModelStatus] = []

        async def check() -> bool:
            last[:] = [await self.status()]
            return predicate(last[0])

        await self._until(check, timeout, what, detail=lambda: _brief(last[0] if last else None))
        return last[0]

    async def wait_ready(self, version: str, *, timeout: float = 120) -> RerankerModelStatus:
        """Until Ready is True and every pod serves ``version`` (what ``kubectl wait`` + jsonpath say)."""

        def done(st: RerankerModelStatus) -> bool:
            ready = any(c.type == "Ready" and c.status == "True" for c in st.conditions)
            return ready and st.current_version == version and len(st.pods) == len(self.pods)

        return await self.wait_for_status(done, timeout=timeout, what=f"Ready on {version}")

    async def events(self) -> list[dict[str, Any]]:
        items = await self.kube.list(names.core_path("events", self.namespace))
        return sorted(items, key=lambda e: e.get("lastTimestamp") or "")

    async def boot_config(self) -> dict[str, Any] | None:
        cm = await self.kube.get(
            names.core_path("configmaps", self.namespace, names.boot_configmap(self.model))
        )
        if cm is None:
            return None
        return json.loads(cm["data"][names.BOOT_KEY])  # type: ignore[no-any-return]

    # ------------------------------------------------------------------------------ pods

    async def add_pod(self, *, wait: bool = True, server_args: Sequence[str] = ()) -> LocalPod:
        index = self._next_index
        self._next_index += 1
        name = f"{self.model}-{index}"
        pod = LocalPod(
            name=name,
            ip=f"{self.subnet}{index + 2}",
            flavour=self.flavour,
            dir=self.workdir / "pods" / name,
            extra_server_args=tuple(server_args) or self.pod_server_args.get(name, ()),
        )
        (pod.dir / "models").mkdir(parents=True, exist_ok=True)
        self.pods[name] = pod
        if self.fault_points:
            # The pod's "network": it outlives container restarts, as the pod's IP does.
            pod.proxies = {
                "data": await PodProxy(pod.ip, PROXY_DATA_PORT, pod.url).start(),
                "admin": await PodProxy(pod.ip, PROXY_ADMIN_PORT, f"http://{pod.ip}:{ADMIN_PORT}").start(),
            }
        body = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": name, "namespace": self.namespace, "labels": dict(self.labels)},
            "spec": {
                "nodeName": "localhost",
                "containers": [
                    {"name": "server", "image": "hotswap:local"},
                    {"name": "agent", "image": "hotswap:local"},
                ],
            },
        }
        await self.kube.create(names.core_path("pods", self.namespace), body)
        await self._start_processes(pod)
        if wait:
            await self.wait_pod_ready(name)
        return pod

    async def wait_pod_ready(self, name: str, timeout: float = 120) -> None:
        pod = self.pods[name]
        await self._until(
            lambda: pod.ready, timeout, f"pod {name} to be ready", proc=pod.procs[0] if pod.procs else None
        )

    async def restart_pod(self, name: str, *, wait: bool = False) -> None:
        """The pod's containers die and start again (same Pod, same IP): it boots on the boot ConfigMap."""
        await self.stop_pod(name, graceful=False)
        await self._start_processes(self.pods[name])
        if wait:
            await self.wait_pod_ready(name)

    async def stop_pod(self, name: str, *, graceful: bool = True) -> None:
        """Leave the Service (in-flight requests finish), then stop (SIGTERM) or kill (SIGKILL)."""
        pod = self.pods[name]
        pod.stopping = True
        await self.service.drain(name, pod.url)
        await self._set_pod_ready(pod, False)
        if graceful:
            await asyncio.gather(*(p.stop(grace=5) for p in pod.procs))
        else:
            for proc in pod.procs:
                proc.kill()
        await self._patch_pod_status(
            pod, {"phase": "Running", "containerStatuses": _container_statuses(False)}
        )

    async def agent_status(self, name: str) -> dict[str, Any]:
        assert self._session is not None
        headers = {"Authorization": f"Bearer {self.agent_token}"}
        async with self._session.get(self.pods[name].agent_url + "/v1/status", headers=headers) as resp:
            resp.raise_for_status()
            return await resp.json()  # type: ignore[no-any-return]

    async def active_versions(self) -> dict[str, str | None]:
        out: dict[str, str | None] = {}
        for name in sorted(self.pods):
            try:
                status = await self.agent_status(name)
            except (aiohttp.ClientError, TimeoutError):
                out[name] = None
                continue
            out[name] = (status.get("active") or {}).get("version")
        return out

    def script_fakes(self, script: Mapping[str, Any]) -> None:
        """Scripted failures and delays for fake pods (see ``fakepod``); read on every operation."""
        for pod in self.pods.values():
            (pod.dir / "script.json").write_text(json.dumps(script))
        (self.workdir / "script.json").write_text(json.dumps(script))

    def load(self, **kwargs: Any) -> Load:
        return Load(self.service, **kwargs)

    async def _start_processes(self, pod: LocalPod) -> None:
        pod.stopping = False
        boot = await self._write_boot_file(pod)
        pod.generation = self._next_generation(pod)
        if pod.flavour == "fake":
            script = self.workdir / "script.json"
            if script.exists():
                shutil.copy(script, pod.dir / "script.json")
            argv = [
                sys.executable, "-m", "devtools.localcluster.fakepod",
                "--host", pod.ip, "--port", str(AGENT_PORT), "--data-port", str(DATA_PORT),
                "--token-file", str(self.workdir / "agent-token"), "--pod-name", pod.name,
                "--allow", f"file://{self.workdir / 'registry'}/",
                "--script", str(pod.dir / "script.json"),
            ]  # fmt: skip
            if boot is not None:
                argv += ["--boot-file", str(pod.dir / "boot.json")]
            pod.procs = [Proc(pod.name, argv, log=self._log(pod, ""))]
        else:
            pod.procs = [self._container(pod, "server"), self._container(pod, "agent", boot=boot is not None)]
        for proc in pod.procs:
            proc.start()
        now = _now()
        await self._patch_pod_status(
            pod,
            {
                "phase": "Running",
                "podIP": pod.ip,
                "podIPs": [{"ip": pod.ip}],
                "hostIP": "127.0.0.1",
                "startTime": now,
                "conditions": [{"type": "Ready", "status": "False", "lastTransitionTime": now}],
                "containerStatuses": _container_statuses(False),
            },
        )

    async def _write_boot_file(self, pod: LocalPod) -> dict[str, Any] | None:
        """The boot ConfigMap as the pod's mounted file (absent while the ConfigMap is)."""
        boot = await self.boot_config()
        boot_file = pod.dir / "boot.json"
        boot_file.unlink(missing_ok=True)
        if boot is not None:
            boot_file.write_text(json.dumps(boot))
        return boot

    def _next_generation(self, pod: LocalPod) -> int:
        logs = self.workdir / "logs"
        return sum(1 for _ in logs.glob(f"{pod.name}-*.log")) if logs.exists() else 0

    def _log(self, pod: LocalPod, container: str) -> Path:
        suffix = f"-{container}" if container else ""
        return self.workdir / "logs" / f"{pod.name}-{pod.generation}{suffix}.log"

    def _container(self, pod: LocalPod, container: Container, *, boot: bool = False) -> Proc:
        """A real pod's container process (not started)."""
        agent_token, admin_token = self.workdir / "agent-token", self.workdir / "admin-token"
        if container == "server":
            server = [
                sys.executable, "-m", "hotswap_server",
                "--host", pod.ip, "--port", str(DATA_PORT),
                "--admin-host", pod.ip, "--admin-port", str(ADMIN_PORT),
                "--admin-token-file", str(admin_token), "--models-root", str(pod.dir / "models"),
                "--torch-threads", "1", *self.server_args, *pod.extra_server_args,
            ]  # fmt: skip
            return Proc(f"{pod.name}-server", server, log=self._log(pod, "server"))
        # With fault points the agent reaches its server through the pod's proxies.
        data_url = pod.proxies["data"].url if pod.proxies else pod.url
        admin_url = pod.proxies["admin"].url if pod.proxies else f"http://{pod.ip}:{ADMIN_PORT}"
        agent = [
            sys.executable, "-m", "hotswap_agent",
            "--host", pod.ip, "--port", str(AGENT_PORT), "--token-file", str(agent_token),
            "--models-root", str(pod.dir / "models"),
            "--server-url", data_url, "--server-admin-url", admin_url,
            "--server-admin-token-file", str(admin_token),
            "--allow", f"file://{self.workdir / 'registry'}/", "--pod-name", pod.name,
            "--boot-backoff-initial", "0.2", "--boot-backoff-max", "2",
        ]  # fmt: skip
        if self.registry is not None:
            agent += ["--allow", self.registry.url + "/"]
        if boot:
            agent += ["--boot-file", str(pod.dir / "boot.json")]
        return Proc(f"{pod.name}-agent", agent, log=self._log(pod, "agent"))

    # ------------------------------------------------------------------------------ faults

    def hold(self, pod: str | None, method: str, path: str) -> Hold:
        """Hold every request ``method path`` until the returned ``Hold`` is released.

        ``pod`` None: downloads from the http registry (any pod's: ``/<version>/manifest.json``,
        ``/<version>/<file>``). Else that pod's agent's calls to its server: ``/admin/v1/...`` on
        the admin plane, any other path (the canary's ``/v1/rerank``) on the data plane.
        """
        if not self.fault_points:
            raise ClusterError("holds need LocalCluster(fault_points=True)")
        if pod is None:
            assert self.registry is not None
            return self.registry.held.add(method, path)
        plane = "admin" if path.startswith("/admin/") else "data"
        return self.pods[pod].proxies[plane].held.add(method, path)

    def publish_http(self, version: str, folder: Path) -> dict[str, str]:
        """``publish``, with the source served by the http registry (so a stage can be held)."""
        if self.registry is None:
            raise ClusterError("the http registry needs LocalCluster(fault_points=True)")
        source = self.publish(version, folder)
        return {"uri": self.registry.uri(version), "sha256": source["sha256"]}

    async def kill_container(self, name: str, container: Container) -> None:
        """SIGKILL one container of a real pod: a crash or an OOM kill, no drain — its in-flight
        requests fail. The kubelet sees the container exit: the pod is not ready at once (out of
        the Service). It stays down until ``start_container`` (the kubelet restarting it)."""
        pod = self.pods[name]
        if pod.flavour != "real":
            raise ClusterError("kill_container: real pods only (a fake pod is one process)")
        pod.procs[0 if container == "server" else 1].kill()
        await self._set_pod_ready(pod, False)
        await self._patch_pod_status(pod, {"containerStatuses": _container_statuses(False)})

    async def start_container(self, name: str, container: Container) -> None:
        """The kubelet restarts a dead container (restartPolicy Always): same pod, same address,
        same volumes; a restarted agent reads the boot ConfigMap as mounted now."""
        pod = self.pods[name]
        index = 0 if container == "server" else 1
        if pod.procs[index].alive:
            raise ClusterError(f"{name}: its {container} container is running")
        boot = await self._write_boot_file(pod) if container == "agent" else None
        pod.generation = self._next_generation(pod)
        pod.procs[index] = self._container(pod, container, boot=boot is not None).start()

    async def _kubelet_loop(self) -> None:
        """Probe every pod's ``/readyz``; keep Ready and the Service's endpoints in step."""
        while True:
            await asyncio.gather(
                *(self._probe(pod) for pod in list(self.pods.values())), return_exceptions=True
            )
            await asyncio.sleep(0.1)

    async def _probe(self, pod: LocalPod) -> None:
        assert self._session is not None
        ready = False
        if pod.running and not pod.stopping:
            with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                async with self._session.get(
                    pod.url + "/readyz", timeout=aiohttp.ClientTimeout(total=1)
                ) as resp:
                    ready = resp.status == 200
        if pod.stopping:
            ready = False  # a probe that was in flight while the pod was being stopped
        if ready != pod.ready:
            await self._set_pod_ready(pod, ready)

    async def _set_pod_ready(self, pod: LocalPod, ready: bool) -> None:
        if not ready:
            self.service.set_ready(pod.name, pod.url, False)
        pod.ready = ready
        condition = {"type": "Ready", "status": "True" if ready else "False", "lastTransitionTime": _now()}
        with contextlib.suppress(KubeError):
            await self._patch_pod_status(
                pod, {"conditions": [condition], "containerStatuses": _container_statuses(ready)}
            )
        if ready and not pod.stopping:
            self.service.set_ready(pod.name, pod.url, True)

    async def _patch_pod_status(self, pod: LocalPod, status: dict[str, Any]) -> None:
        await self.kube.patch(
            names.core_path("pods", self.namespace, pod.name) + "/status", {"status": status}
        )

    # ------------------------------------------------------------------------------ operator

    async def start_operator(self) -> None:
        """The real operator: ``kopf run -m hotswap_operator.handlers --standalone -A``."""
        if self._operator is not None and self._operator.alive:
            return
        self.liveness_port = _free_port()
        env = {
            **self.env(),
            "HOTSWAP_OPERATOR_AGENT_TOKEN_FILE": str(self.workdir / "agent-token"),
            "HOTSWAP_OPERATOR_AGENT_PORT": str(AGENT_PORT),
            "HOTSWAP_OPERATOR_SERVER_PORT": str(DATA_PORT),
            "HOTSWAP_OPERATOR_POLL_SECONDS": "0.2",
            "HOTSWAP_OPERATOR_RESYNC_SECONDS": "2",
            "HOTSWAP_OPERATOR_FAILED_POD_RETRY_SECONDS": "2",
            "HOTSWAP_OPERATOR_REQUEST_TIMEOUT_SECONDS": "5",
            **self.operator_env,
        }
        argv = [
            sys.executable, "-m", "kopf", "run", "-m", "hotswap_operator.handlers",
            "--standalone", "--all-namespaces", f"--liveness=http://127.0.0.1:{self.liveness_port}/healthz",
        ]  # fmt: skip
        generation = len(list((self.workdir / "logs").glob("operator-*.log")))
        self._operator = Proc(
            "operator", argv, env=env, log=self.workdir / "logs" / f"operator-{generation}.log"
        )
        self._operator.start()
        assert self._session is not None

        async def alive() -> bool:
            assert self._session is not None
            try:
                async with self._session.get(f"http://127.0.0.1:{self.liveness_port}/healthz") as resp:
                    return resp.status == 200
            except (aiohttp.ClientError, TimeoutError):
                return False

        await self._until(alive, 60, "the operator to start", proc=self._operator)

    def kill_operator(self) -> None:
        """SIGKILL: no cleanup, no last status patch, as a node failure would do."""
        if self._operator is not None:
            self._operator.kill()

    # ------------------------------------------------------------------------------ helpers

    async def _until(
        self,
        check: Callable[[], bool | Awaitable[bool]],
        timeout: float,
        what: str,
        *,
        proc: Proc | None = None,
        detail: Callable[[], str] | None = None,
    ) -> None:
        deadline = time.monotonic() + timeout
        while True:
            result = check()
            if isinstance(result, Awaitable):
                result = await result
            if result:
                return
            if proc is not None and proc.popen is not None and not proc.alive:
                raise ClusterError(f"{proc.name} exited while waiting for {what}:\n{proc.tail()}")
            if time.monotonic() > deadline:
                extra = f" ({detail()})" if detail else ""
                raise ClusterError(f"timed out after {timeout:.0f}s waiting for {what}{extra}")
            await asyncio.sleep(0.05)

    def _write_secret(self, name: str, value: str) -> None:
        path = self.workdir / name
        path.write_text(value)
        path.chmod(0o600)

    def _claim_subnet(self) -> str:
        """A 127.0.N. prefix no other local cluster on this machine uses (a lock file per prefix)."""
        LOCK_DIR.mkdir(parents=True, exist_ok=True)
        for n in range(0, 250):
            prefix = f"127.0.{n}."
            handle = open(LOCK_DIR / f"{prefix}lock", "w")
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                handle.close()
                continue
            if all(_port_free(f"{prefix}{k}", port) for k in (2, 3) for port in (DATA_PORT, AGENT_PORT)):
                self._lock_file = handle
                return prefix
            handle.close()
        raise ClusterError("no free 127.0.N.0/24 loopback range for the local cluster")


def _brief(st: RerankerModelStatus | None) -> str:
    if st is None:
        return "no status"
    conds = ",".join(f"{c.type}={c.status}/{c.reason}" for c in st.conditions)
    pods = ",".join(f"{p.name}:{p.version}:{p.state}" for p in st.pods)
    phase = st.rollout.phase if st.rollout else None
    return f"current={st.current_version} phase={phase} {conds} pods=[{pods}]"


def _container_statuses(ready: bool) -> list[dict[str, Any]]:
    return [
        {"name": n, "ready": ready, "restartCount": 0, "image": "hotswap:local"} for n in ("server", "agent")
    ]


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _port_free(host: str, port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def _link_or_copy(src: str, dst: str) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)
