"""``ControlPlane``: etcd, kube-apiserver, kube-controller-manager, kube-scheduler and a kubelet.

    async with ControlPlane.start(workdir) as cp:
        cp.kubeconfig        # admin kubeconfig (system:masters) for kubectl, helm, tests
        cp.url               # https://127.0.0.1:<port>
        await cp.restart_apiserver()

Everything lives under ``workdir`` (certificates, etcd data, kubeconfigs, logs/, the kubelet's
pods/), binds loopback only, on free ports, so several control planes can run side by side. Flags
follow what kubeadm and hack/local-up-cluster.sh give each component, minus what needs a real
node or a cloud.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp

from devtools.controlplane import pki as pkimod
from devtools.controlplane.binaries import bin_dir as find_bin_dir
from devtools.controlplane.client import ApiError, Client, wait_until
from devtools.controlplane.kubeconfig import write_kubeconfig
from devtools.controlplane.kubelet import Kubelet, KubeletConfig
from devtools.controlplane.network import PodNetwork
from devtools.controlplane.network import allocate as allocate_network
from devtools.controlplane.procs import Proc

log = logging.getLogger(__name__)

# The issuer (and default audience) of ServiceAccount tokens, as kubeadm sets it.
SA_ISSUER = "https://kubernetes.default.svc.cluster.local"


class ControlPlaneError(RuntimeError):
    pass


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass(frozen=True)
class Ports:
    etcd: int
    etcd_peer: int
    apiserver: int


class ControlPlane:
    def __init__(self, workdir: Path, bins: Path, pki: pkimod.Pki, ports: Ports, network: PodNetwork) -> None:
        self.workdir = workdir
        self.bins = bins
        self.pki = pki
        self.ports = ports
        self.network = network
        self.url = f"https://127.0.0.1:{ports.apiserver}"
        self.kubeconfig = workdir / "admin.kubeconfig"
        self.logs = workdir / "logs"
        self.etcd: Proc | None = None
        self.apiserver: Proc | None = None
        self.controller_manager: Proc | None = None
        self.scheduler: Proc | None = None
        self.kubelet: Kubelet | None = None
        self._client: Client | None = None

    # -- public API ------------------------------------------------------------------------------

    @classmethod
    @contextlib.asynccontextmanager
    async def start(
        cls,
        workdir: Path,
        *,
        bin_dir: Path | None = None,
        kubelet: KubeletConfig | None = KubeletConfig(),
        pod_network: str = "auto",
        timeout: float = 90.0,
    ) -> AsyncIterator[ControlPlane]:
        """Start everything (about 5-10 s once built), yield, then stop it all in reverse order.

        ``kubelet=None`` runs no node (API-only tests). ``pod_network``: see :mod:`network`.
        """
        workdir = Path(workdir).resolve()
        workdir.mkdir(parents=True, exist_ok=True)
        bins = bin_dir or find_bin_dir()
        pki = await asyncio.to_thread(pkimod.create, workdir / "pki")
        ports = Ports(etcd=free_port(), etcd_peer=free_port(), apiserver=free_port())
        network = allocate_network(pod_network)
        cp = cls(workdir, bins, pki, ports, network)
        try:
            await cp._start_all(kubelet, timeout)
            yield cp
        finally:
            await cp.stop()

    def client(self) -> Client:
        """The admin client (system:masters), shared; closed by stop()."""
        if self._client is None:
            self._client = Client(
                self.url, ca=self.pki.ca.cert, cert=self.pki.admin.cert, key=self.pki.admin.key
            )
        return self._client

    def client_for_token(self, token: str) -> Client:
        """A new client that authenticates with ``token`` (close it yourself)."""
        return Client(self.url, ca=self.pki.ca.cert, token=token)

    async def restart_apiserver(self, downtime: float = 0.0) -> None:
        """Stop kube-apiserver (SIGTERM, as a rolling control-plane upgrade does), wait
        ``downtime`` seconds, start it again on the same port and wait until it is ready."""
        assert self.apiserver is not None
        await self.apiserver.stop(grace=30)
        if downtime:
            await asyncio.sleep(downtime)
        self.apiserver = self._proc("kube-apiserver", self._apiserver_argv()).start()
        await self._wait_apiserver_ready(60)

    async def stop(self) -> None:
        """Stop the kubelet (its pods first), then the controllers, the API server and etcd."""
        if self.kubelet is not None:
            with contextlib.suppress(Exception):
                await self.kubelet.stop()
            self.kubelet = None
        for proc in (self.scheduler, self.controller_manager, self.apiserver, self.etcd):
            if proc is not None:
                await proc.stop(grace=10)
        if self._client is not None:
            await self._client.close()
            self._client = None
        self.network.close()

    # -- starting --------------------------------------------------------------------------------

    def _proc(self, name: str, argv: list[str]) -> Proc:
        return Proc(name, argv, log=self.logs / f"{name}.log", cwd=self.workdir)

    async def _start_all(self, kubelet: KubeletConfig | None, timeout: float) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        self.etcd = self._proc("etcd", self._etcd_argv()).start()
        await self._wait_etcd(deadline - loop.time())
        self.apiserver = self._proc("kube-apiserver", self._apiserver_argv()).start()
        write_kubeconfig(
            self.kubeconfig,
            server=self.url,
            ca=self.pki.ca.cert,
            user="admin",
            cert=self.pki.admin.cert,
            key=self.pki.admin.key,
        )
        kcm_kubeconfig = write_kubeconfig(
            self.workdir / "controller-manager.kubeconfig",
            server=self.url,
            ca=self.pki.ca.cert,
            user="system:kube-controller-manager",
            cert=self.pki.controller_manager.cert,
            key=self.pki.controller_manager.key,
        )
        sched_kubeconfig = write_kubeconfig(
            self.workdir / "scheduler.kubeconfig",
            server=self.url,
            ca=self.pki.ca.cert,
            user="system:kube-scheduler",
            cert=self.pki.scheduler.cert,
            key=self.pki.scheduler.key,
        )
        await self._wait_apiserver_ready(deadline - loop.time())
        # The controllers start once the API server is ready: started earlier they only log
        # connection errors and back off, which makes the start slower, not faster.
        self.controller_manager = self._proc(
            "kube-controller-manager", self._controller_manager_argv(kcm_kubeconfig)
        ).start()
        self.scheduler = self._proc("kube-scheduler", self._scheduler_argv(sched_kubeconfig)).start()
        if kubelet is not None:
            self.kubelet = Kubelet(self, kubelet)
            await self.kubelet.start()
        await self._wait_cluster_ready(deadline - loop.time())

    def _etcd_argv(self) -> list[str]:
        p = self.ports
        return [
            str(self.bins / "etcd"),
            "--name=default",
            f"--data-dir={self.workdir / 'etcd'}",
            f"--listen-client-urls=http://127.0.0.1:{p.etcd}",
            f"--advertise-client-urls=http://127.0.0.1:{p.etcd}",
            f"--listen-peer-urls=http://127.0.0.1:{p.etcd_peer}",
            f"--initial-advertise-peer-urls=http://127.0.0.1:{p.etcd_peer}",
            f"--initial-cluster=default=http://127.0.0.1:{p.etcd_peer}",
            # A throw-away store: fsync buys durability we do not want to wait for (envtest does
            # the same). Loopback only, so plain HTTP.
            "--unsafe-no-fsync",
            "--log-level=warn",
        ]

    def _apiserver_argv(self) -> list[str]:
        k = self.pki
        return [
            str(self.bins / "kube-apiserver"),
            f"--etcd-servers=http://127.0.0.1:{self.ports.etcd}",
            "--bind-address=127.0.0.1",
            "--advertise-address=127.0.0.1",
            # The `kubernetes` Service gets no endpoints: the API server refuses to publish a
            # loopback address there, and no ClusterIP routes here anyway (pods are given
            # KUBERNETES_SERVICE_HOST=127.0.0.1 by the kubelet).
            "--endpoint-reconciler-type=none",
            f"--secure-port={self.ports.apiserver}",
            f"--tls-cert-file={k.serving.cert}",
            f"--tls-private-key-file={k.serving.key}",
            f"--client-ca-file={k.ca.cert}",
            f"--service-account-issuer={SA_ISSUER}",
            f"--service-account-key-file={k.sa_pub}",
            f"--service-account-signing-key-file={k.sa_key}",
            f"--service-cluster-ip-range={pkimod.SERVICE_CIDR}",
            # Node: the kubelet gets exactly what a kubelet may touch (its pods' secrets and
            # tokens); RBAC: everything else, the chart's roles included.
            "--authorization-mode=Node,RBAC",
            # The defaults stay on (ServiceAccount, NamespaceLifecycle, ...); NodeRestriction is
            # what kubeadm adds, and it checks the kubelet's token requests and pod updates.
            "--enable-admission-plugins=NodeRestriction",
            "--allow-privileged=true",
            "--profiling=false",
            # On SIGTERM: stop listening at once (no load balancer to drain), end the watches
            # (their clients reconnect and resume from their resourceVersion), then exit. Without
            # the watch grace period the open watches hold the process for --request-timeout (60 s).
            "--shutdown-delay-duration=0s",
            "--shutdown-watch-termination-grace-period=5s",
        ]

    def _controller_manager_argv(self, kubeconfig: Path) -> list[str]:
        k = self.pki
        return [
            str(self.bins / "kube-controller-manager"),
            f"--kubeconfig={kubeconfig}",
            f"--authentication-kubeconfig={kubeconfig}",
            f"--authorization-kubeconfig={kubeconfig}",
            # No HTTPS endpoint: nothing scrapes it, and a fixed port would clash between runs.
            "--secure-port=0",
            "--leader-elect=false",
            # Each controller acts as its own ServiceAccount (kube-system/deployment-controller,
            # ...), so RBAC applies to the controllers as in a kubeadm cluster.
            "--use-service-account-credentials=true",
            f"--service-account-private-key-file={k.sa_key}",
            f"--root-ca-file={k.ca.cert}",
            f"--cluster-signing-cert-file={k.ca.cert}",
            f"--cluster-signing-key-file={k.ca.key}",
            # Every default controller (deployment, replicaset, endpointslice, garbage-collector,
            # serviceaccount(-token), namespace, disruption, node-lifecycle, root-ca publisher ...).
            "--controllers=*",
            f"--service-cluster-ip-range={pkimod.SERVICE_CIDR}",
        ]

    def _scheduler_argv(self, kubeconfig: Path) -> list[str]:
        return [
            str(self.bins / "kube-scheduler"),
            f"--kubeconfig={kubeconfig}",
            f"--authentication-kubeconfig={kubeconfig}",
            f"--authorization-kubeconfig={kubeconfig}",
            "--secure-port=0",
            "--leader-elect=false",
        ]

    # -- waiting ---------------------------------------------------------------------------------

    def _check_alive(self, *procs: Proc | None) -> None:
        for proc in procs:
            if proc is not None and not proc.alive:
                raise ControlPlaneError(
                    f"{proc.name} exited with status {proc.returncode}; last lines of {proc.log}:\n{proc.tail(40)}"
                )

    async def _wait_etcd(self, timeout: float) -> None:
        async with aiohttp.ClientSession() as session:

            async def healthy() -> bool:
                self._check_alive(self.etcd)
                async with session.get(
                    f"http://127.0.0.1:{self.ports.etcd}/health", timeout=aiohttp.ClientTimeout(total=2)
                ) as resp:
                    return resp.status == 200 and '"true"' in await resp.text()

            await self._wait(healthy, timeout, "etcd /health", self.etcd)

    async def _wait_apiserver_ready(self, timeout: float) -> None:
        client = self.client()

        async def ready() -> bool:
            self._check_alive(self.etcd, self.apiserver)
            try:
                await client.request("GET", "/readyz", timeout=5)
            except ApiError:
                return False
            return True

        await self._wait(ready, timeout, "kube-apiserver /readyz", self.apiserver)

    async def _wait_cluster_ready(self, timeout: float) -> None:
        """Ready for workloads: the controller manager has made the `default` ServiceAccount
        (pods in `default` are refused until it exists) and the node, if any, is Ready and untainted."""
        client = self.client()

        async def ready() -> bool:
            self._check_alive(self.etcd, self.apiserver, self.controller_manager, self.scheduler)
            await client.get("/api/v1/namespaces/default/serviceaccounts/default")
            if self.kubelet is not None:
                node = await client.get(f"/api/v1/nodes/{self.kubelet.node_name}")
                conds = {c["type"]: c["status"] for c in node.get("status", {}).get("conditions", [])}
                # A new node carries the not-ready NoSchedule taint until the node-lifecycle
                # controller has seen it Ready: waiting for that here spares every test a first
                # pod that sits unschedulable for the scheduler's back-off.
                taints = [
                    t for t in node.get("spec", {}).get("taints", []) if t.get("effect") == "NoSchedule"
                ]
                return conds.get("Ready") == "True" and not taints
            return True

        await self._wait(
            ready, timeout, "the default ServiceAccount and a Ready node", self.controller_manager
        )

    async def _wait(self, predicate, timeout: float, what: str, proc: Proc | None) -> None:  # type: ignore[no-untyped-def]
        try:
            await wait_until(predicate, timeout=max(timeout, 1.0), interval=0.1, what=what)
        except TimeoutError as exc:
            tail = f"\nlast lines of {proc.log}:\n{proc.tail(40)}" if proc is not None else ""
            raise ControlPlaneError(f"{exc}{tail}") from None
