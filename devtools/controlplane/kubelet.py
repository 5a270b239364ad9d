"""A process kubelet: a Node of the real API server whose pods run as local processes.

It authenticates as ``system:node:<name>`` (group ``system:nodes``), so the Node authorizer and the
NodeRestriction admission plugin hold it to what a real kubelet may do: read only its own pods'
Secrets and ConfigMaps, ask tokens only for their ServiceAccounts, update only their status.

Pods are scheduled by the real kube-scheduler (the kubelet binds nothing itself): the chart's
pods then meet the real scheduling rules (resource requests against the node's allocatable,
taints such as not-ready, node selectors), and a pod that cannot be scheduled stays Pending with
the scheduler's reason, as in a cluster.

What it does not do, by construction: images (a container's command, or its image's entrypoint
from :attr:`KubeletConfig.images`, runs from the host's .venv/bin or PATH), network namespaces (a
pod is one local address; NetworkPolicy is not enforced), cgroups (resources are not limited),
mounts (volumes are folders; paths in the spec are rewritten), ``kubectl logs/exec/port-forward``
(no kubelet API: logs are files, see :meth:`Kubelet.log_path`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import platform
import secrets
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from devtools.controlplane.client import STRATEGIC_PATCH, ApiError, Client, Gone
from devtools.controlplane.kubelet_pod import PodRuntime, now_iso

if TYPE_CHECKING:
    from devtools.controlplane.cluster import ControlPlane

JSON = dict[str, Any]
log = logging.getLogger(__name__)

_REPO = Path(__file__).resolve().parents[2]


def _default_search_path() -> list[Path]:
    # The project's virtualenv first (console scripts such as hotswap-server live there), then the
    # folder of the interpreter running the harness (the same venv, usually).
    paths = [_REPO / ".venv" / "bin", Path(sys.executable).parent]
    return [p for i, p in enumerate(paths) if p.is_dir() and p not in paths[:i]]


def _micro_time() -> str:
    import datetime as dt

    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass
class KubeletConfig:
    node_name: str = "hotswap-node"
    # Where a container's command is looked up before PATH.
    search_path: list[Path] = field(default_factory=_default_search_path)
    # Image name (no tag/digest; with or without registry) -> entrypoint argv, for containers that
    # set no command (a container runtime would take the entrypoint from the image).
    images: dict[str, list[str]] = field(default_factory=dict)
    # Command name -> argv prefix, e.g. {"hotswap-server": ["/path/to/hotswap-server"]}.
    commands: dict[str, list[str]] = field(default_factory=dict)
    # Extra variables for every container (e.g. PYTHONPATH for code that is not installed).
    extra_env: dict[str, str] = field(default_factory=dict)
    # Declared, not measured: the scheduler fits requests against this; nothing enforces limits.
    capacity: dict[str, str] = field(
        default_factory=lambda: {"cpu": "32", "memory": "128Gi", "pods": "110", "ephemeral-storage": "100Gi"}
    )
    labels: dict[str, str] = field(default_factory=dict)
    # CrashLoopBackOff: first delay, cap, and how long a run must last to reset it. A kubelet uses
    # 10 s / 300 s / 600 s; shorter here so that a test sees a restart in seconds.
    backoff_initial: float = 1.0
    backoff_max: float = 30.0
    backoff_reset: float = 60.0
    # How often Secret/ConfigMap/token volumes are refreshed (a kubelet: about a minute).
    volume_sync: float = 2.0
    lease_duration: int = 40
    heartbeat: float = 10.0


class Kubelet:
    def __init__(self, cp: ControlPlane, config: KubeletConfig) -> None:
        self.cp = cp
        self.config = config
        self.node_name = config.node_name
        pair = cp.pki.kubelet(self.node_name)
        self.api = Client(cp.url, ca=cp.pki.ca.cert, cert=pair.cert, key=pair.key)
        self.network = cp.network
        self.root = cp.workdir / "kubelet" / self.node_name
        self.pods: dict[str, PodRuntime] = {}
        self._tasks: list[asyncio.Task[Any]] = []
        self._background: set[asyncio.Task[Any]] = set()
        self._version = "v0.0.0"

    # -- public ----------------------------------------------------------------------------------

    async def start(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(Exception):
            self._version = (await self.api.get("/version"))["gitVersion"]
        await self._register()
        self._tasks.append(asyncio.create_task(self._heartbeat(), name="kubelet heartbeat"))
        self._tasks.append(asyncio.create_task(self._watch_pods(), name="kubelet pods"))

    async def stop(self, grace: float = 5.0) -> None:
        """Stop every pod's processes (up to ``grace`` s each) and the kubelet's loops. The pod
        objects stay: the control plane is going away with it."""
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        pods = list(self.pods.values())
        await asyncio.gather(
            *(p.terminate(min(grace, p.grace_period())) for p in pods), return_exceptions=True
        )
        await asyncio.gather(*(p.finish() for p in pods), return_exceptions=True)
        background = list(self._background)
        for task in background:
            task.cancel()
        await asyncio.gather(*background, return_exceptions=True)
        await self.api.close()

    def pod(self, namespace: str, name: str) -> PodRuntime | None:
        for runtime in self.pods.values():
            if runtime.namespace == namespace and runtime.name == name:
                return runtime
        return None

    def log_path(self, namespace: str, name: str, container: str) -> Path | None:
        """The log file of a container (stdout and stderr, every restart): `kubectl logs` here."""
        runtime = self.pod(namespace, name)
        return None if runtime is None else runtime.dir / "logs" / f"{container}.log"

    def base_env(self, pod: PodRuntime) -> dict[str, str]:
        """What the kubelet puts in every container's environment before the spec's own."""
        port = str(self.cp.ports.apiserver)
        env = {
            "PATH": os.pathsep.join([*(str(p) for p in self.config.search_path), os.environ.get("PATH", "")]),
            "HOSTNAME": pod.name,
            # The `kubernetes` Service's ClusterIP is not routable here: the API server's own address.
            "KUBERNETES_SERVICE_HOST": "127.0.0.1",
            "KUBERNETES_SERVICE_PORT": port,
            "KUBERNETES_SERVICE_PORT_HTTPS": port,
            "KUBERNETES_PORT": f"tcp://127.0.0.1:{port}",
        }
        env.update(self.config.extra_env)
        return env

    def event(self, pod: JSON, type_: str, reason: str, message: str) -> None:
        """Post a core/v1 Event about ``pod`` (fire and forget: events are best effort)."""
        meta = pod["metadata"]
        ts = now_iso()
        body = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"name": f"{meta['name']}.{secrets.token_hex(8)}", "namespace": meta["namespace"]},
            "involvedObject": {
                "apiVersion": "v1",
                "kind": "Pod",
                "name": meta["name"],
                "namespace": meta["namespace"],
                "uid": meta["uid"],
            },
            "reason": reason,
            "message": message[:1000],
            "type": type_,
            "source": {"component": "kubelet", "host": self.node_name},
            "reportingComponent": "kubelet",
            "reportingInstance": self.node_name,
            "firstTimestamp": ts,
            "lastTimestamp": ts,
            "count": 1,
        }

        async def post() -> None:
            with contextlib.suppress(Exception):
                await self.api.create(f"/api/v1/namespaces/{meta['namespace']}/events", body)

        task = asyncio.create_task(post())
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    # -- node ------------------------------------------------------------------------------------

    def _node_status(self) -> JSON:
        ts = now_iso()
        conds = [
            ("Ready", "True", "KubeletReady", "process kubelet is posting ready status"),
            (
                "MemoryPressure",
                "False",
                "KubeletHasSufficientMemory",
                "kubelet has sufficient memory available",
            ),
            ("DiskPressure", "False", "KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
            ("PIDPressure", "False", "KubeletHasSufficientPID", "kubelet has sufficient PID available"),
        ]
        return {
            "conditions": [
                {
                    "type": t,
                    "status": s,
                    "reason": r,
                    "message": m,
                    "lastHeartbeatTime": ts,
                    "lastTransitionTime": self._transition_time,
                }
                for t, s, r, m in conds
            ],
            "addresses": [
                {"type": "InternalIP", "address": self.network.node_ip},
                {"type": "Hostname", "address": self.node_name},
            ],
            "capacity": self.config.capacity,
            "allocatable": self.config.capacity,
            "daemonEndpoints": {"kubeletEndpoint": {"Port": 10250}},
            "nodeInfo": {
                "machineID": "",
                "systemUUID": "",
                "bootID": "",
                "kernelVersion": platform.release(),
                "osImage": "hotswap process kubelet",
                "containerRuntimeVersion": "process://0.1",
                "kubeletVersion": self._version,
                "kubeProxyVersion": "",
                "operatingSystem": "linux",
                "architecture": {"x86_64": "amd64", "aarch64": "arm64"}.get(
                    platform.machine(), platform.machine()
                ),
            },
        }

    async def _register(self) -> None:
        self._transition_time = now_iso()
        labels = {
            "kubernetes.io/hostname": self.node_name,
            "kubernetes.io/os": "linux",
            "kubernetes.io/arch": self._node_status()["nodeInfo"]["architecture"],
            **self.config.labels,
        }
        node = {"apiVersion": "v1", "kind": "Node", "metadata": {"name": self.node_name, "labels": labels}}
        try:
            created = await self.api.create("/api/v1/nodes", node)
        except ApiError as exc:
            if exc.status != 409:
                raise
            created = await self.api.get(f"/api/v1/nodes/{self.node_name}")
        self._node_uid = created["metadata"]["uid"]
        await self.api.patch(
            f"/api/v1/nodes/{self.node_name}/status", {"status": self._node_status()}, STRATEGIC_PATCH
        )
        await self._renew_lease()

    async def _renew_lease(self) -> None:
        path = f"/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/{self.node_name}"
        spec = {
            "holderIdentity": self.node_name,
            "leaseDurationSeconds": self.config.lease_duration,
            "renewTime": _micro_time(),
        }
        try:
            await self.api.patch(path, {"spec": spec})
        except ApiError as exc:
            if exc.status != 404:
                raise
            lease = {
                "apiVersion": "coordination.k8s.io/v1",
                "kind": "Lease",
                "metadata": {
                    "name": self.node_name,
                    "namespace": "kube-node-lease",
                    "ownerReferences": [
                        {"apiVersion": "v1", "kind": "Node", "name": self.node_name, "uid": self._node_uid}
                    ],
                },
                "spec": spec,
            }
            await self.api.create("/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases", lease)

    async def _heartbeat(self) -> None:
        beats = 0
        while True:
            await asyncio.sleep(self.config.heartbeat)
            beats += 1
            try:
                await self._renew_lease()
                if beats % 6 == 0:  # the status itself every minute, as a kubelet reports it unchanged
                    await self.api.patch(
                        f"/api/v1/nodes/{self.node_name}/status",
                        {"status": self._node_status()},
                        STRATEGIC_PATCH,
                    )
            except Exception as exc:  # the API server may be restarting: next beat
                log.debug("kubelet heartbeat: %s", exc)

    # -- pods ------------------------------------------------------------------------------------

    async def _watch_pods(self) -> None:
        """List, then watch, this node's pods; relist on 410 Gone or any error (an API server
        restart ends every watch)."""
        selector = f"spec.nodeName={self.node_name}"
        while True:
            try:
                listing = await self.api.get("/api/v1/pods", fieldSelector=selector)
                seen = set()
                for pod in listing.get("items", []):
                    seen.add(pod["metadata"]["uid"])
                    self._on_pod(pod)
                for uid in [u for u in self.pods if u not in seen]:
                    self._on_gone(uid)
                rv = listing["metadata"]["resourceVersion"]
                while True:
                    async for event in self.api.watch(
                        "/api/v1/pods", resource_version=rv, fieldSelector=selector, timeout_seconds=240
                    ):
                        obj = event["object"]
                        rv = obj.get("metadata", {}).get("resourceVersion", rv)
                        if event["type"] == "BOOKMARK":
                            continue
                        if event["type"] == "DELETED":
                            self._on_gone(obj["metadata"]["uid"])
                        else:
                            self._on_pod(obj)
            except asyncio.CancelledError:
                raise
            except Gone:
                continue
            except Exception as exc:
                log.debug("kubelet pod watch: %s; relisting", exc)
                await asyncio.sleep(0.5)

    def _on_pod(self, pod: JSON) -> None:
        uid = pod["metadata"]["uid"]
        runtime = self.pods.get(uid)
        deleting = pod["metadata"].get("deletionTimestamp") is not None
        if runtime is None:
            if pod.get("status", {}).get("phase") in ("Succeeded", "Failed") and not deleting:
                return  # finished before this kubelet started: nothing to run
            runtime = PodRuntime(self, pod)
            self.pods[uid] = runtime
            if deleting:
                self._spawn(self._delete(runtime, 0.0))
                return
            runtime.start()
            return
        runtime.update(pod)
        if deleting and not runtime.terminating:
            grace = pod["metadata"].get("deletionGracePeriodSeconds")
            self._spawn(self._delete(runtime, float(grace if grace is not None else runtime.grace_period())))

    def _on_gone(self, uid: str) -> None:
        """The object is gone (deleted with grace 0, say): stop what still runs, at once."""
        runtime = self.pods.get(uid)
        if runtime is not None and not runtime.terminating:
            self._spawn(self._delete(runtime, 0.0, object_gone=True))

    async def _delete(self, runtime: PodRuntime, grace: float, object_gone: bool = False) -> None:
        runtime.event("Normal", "Killing", "Stopping pod") if not object_gone else None
        await runtime.terminate(grace)
        await runtime.finish()
        if not object_gone:
            # As a kubelet does once the containers are gone: remove the object for good. The uid
            # precondition keeps a new pod with the same name (a StatefulSet's) from being hit.
            body = {
                "apiVersion": "v1",
                "kind": "DeleteOptions",
                "gracePeriodSeconds": 0,
                "preconditions": {"uid": runtime.uid},
            }
            for _ in range(20):
                try:
                    await self.api.delete(f"/api/v1/namespaces/{runtime.namespace}/pods/{runtime.name}", body)
                    break
                except ApiError as exc:
                    if exc.status in (404, 409):
                        break
                    await asyncio.sleep(0.5)
                except Exception:
                    await asyncio.sleep(0.5)
        self.pods.pop(runtime.uid, None)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)
