"""One pod on the process kubelet: its address, volumes, init containers, containers, probes and status.

The lifecycle follows the kubelet's: volumes first (a missing Secret keeps the pod Pending, retried),
init containers one after the other to completion, then every container at once; a container that
exits is restarted per ``restartPolicy`` with an exponential back-off (CrashLoopBackOff); startup,
readiness and liveness probes as specified; on deletion every container gets its preStop hook and
SIGTERM, SIGKILL when the grace period is over, and then the kubelet deletes the pod object.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from devtools.controlplane.client import STRATEGIC_PATCH, ApiError
from devtools.controlplane.kubeconfig import write_kubeconfig
from devtools.controlplane.kubelet_env import (
    ConfigError,
    Rewriter,
    container_env,
    mounts_env,
    resolve_argv,
    resolve_executable,
)
from devtools.controlplane.kubelet_probes import HandlerContext, run_handler
from devtools.controlplane.kubelet_volumes import VolumeError, Volumes
from devtools.controlplane.network import PodAddress
from devtools.controlplane.procs import Proc

if TYPE_CHECKING:
    from devtools.controlplane.kubelet import Kubelet

JSON = dict[str, Any]
log = logging.getLogger(__name__)

SA_MOUNT = "/var/run/secrets/kubernetes.io/serviceaccount"


def now_iso() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class Container:
    """One container of a pod: its process across restarts, its probes and its status."""

    def __init__(self, pod: PodRuntime, spec: JSON, *, init: bool) -> None:
        self.pod = pod
        self.spec = spec
        self.name: str = spec["name"]
        self.init = init
        self.restart_count = 0
        self.state: JSON = {"waiting": {"reason": "PodInitializing" if not init else "ContainerCreating"}}
        self.last_state: JSON = {}
        self.ready = False
        self.started = False
        self.proc: Proc | None = None
        self.log = pod.dir / "logs" / f"{self.name}.log"
        self.ctx: HandlerContext | None = None
        self._stopping = False

    # -- status ----------------------------------------------------------------------------------

    def status(self) -> JSON:
        status: JSON = {
            "name": self.name,
            "image": self.spec.get("image", ""),
            "imageID": "",
            "ready": self.ready,
            "started": self.started,
            "restartCount": self.restart_count,
            "state": self.state,
            "lastState": self.last_state,
        }
        if self.proc is not None:
            status["containerID"] = f"process://{self.proc.pid}"
        return status

    def _set(self, **state: JSON) -> None:
        self.state = state
        self.pod.dirty()

    # -- start -----------------------------------------------------------------------------------

    async def _prepare(self) -> tuple[list[str], dict[str, str]]:
        pod, kubelet = self.pod, self.pod.kubelet
        cfg = kubelet.config
        assert pod.volumes is not None and pod.ip is not None and pod.local_ip is not None
        # Env first (subPathExpr may use it), then mounts, then the env again with the paths remapped.
        lookup = pod.lookup

        base = kubelet.base_env(pod)
        plain = Rewriter({}, pod.local_ip)
        env = await _with_lookup(pod, self.spec, base, plain, lookup)
        mounts = pod.volumes.mounts(self.spec, env)
        rewrite = Rewriter(mounts, pod.local_ip)
        container_dir = pod.dir / "containers" / self.name
        container_dir.mkdir(parents=True, exist_ok=True)
        tmp = mounts.get("/tmp") or (container_dir / "tmp")
        tmp.mkdir(parents=True, exist_ok=True)
        base = {
            **base,
            "TMPDIR": str(tmp),
            "HOTSWAP_KUBELET_POD_DIR": str(pod.dir),
            "HOTSWAP_KUBELET_MOUNTS": mounts_env(mounts),
        }
        if SA_MOUNT in mounts:
            # In-cluster discovery reads /var/run/secrets/...: unreachable for a process, so the
            # same credentials (the pod's ServiceAccount token and the cluster CA) come through a
            # kubeconfig instead. It is rewritten whenever the kubelet renews the token.
            base["KUBECONFIG"] = str(pod.sa_kubeconfig(self.name, mounts[SA_MOUNT]))
        env = await _with_lookup(pod, self.spec, base, rewrite, lookup)
        argv = resolve_argv(
            self.spec, env, rewrite, images=cfg.images, commands=cfg.commands, search_path=cfg.search_path
        )
        workdir = self.spec.get("workingDir")
        cwd = Path(rewrite.host_path(workdir)) if workdir else container_dir
        if not cwd.is_dir():
            cwd = container_dir
        self.ctx = HandlerContext(
            pod_ip=pod.ip,
            ports={p["name"]: int(p["containerPort"]) for p in self.spec.get("ports", []) if p.get("name")},
            rewrite=rewrite,
            env=env,
            resolve=lambda a: resolve_executable(a, commands=cfg.commands, search_path=cfg.search_path),
            log=self.log,
            cwd=cwd,
        )
        return argv, env

    async def _start(self) -> bool:
        """Start the process; False (and a waiting state) if its configuration is not ready."""
        try:
            argv, env = await self._prepare()
        except (ConfigError, VolumeError) as exc:
            self._set(waiting={"reason": "CreateContainerConfigError", "message": str(exc)})
            self.pod.event("Warning", "Failed", f"Error: {exc}")
            return False
        assert self.ctx is not None
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log, "ab") as f:
            f.write(f"--- {now_iso()} starting {self.name} (restart {self.restart_count}): {argv}\n".encode())
        try:
            self.proc = Proc(
                f"{self.pod.key}/{self.name}", argv, env=env, log=self.log, cwd=self.ctx.cwd
            ).start()
        except OSError as exc:
            self._set(waiting={"reason": "CreateContainerError", "message": str(exc)})
            self.pod.event("Warning", "Failed", f"Error: {exc}")
            return False
        self._set(running={"startedAt": now_iso()})
        self.pod.event("Normal", "Started", f"Started container {self.name}")
        return True

    # -- run -------------------------------------------------------------------------------------

    async def run_init(self) -> bool:
        """Run to completion, retried per restartPolicy; True once it exits 0."""
        policy = self.pod.spec.get("restartPolicy", "Always")
        backoff = self.pod.kubelet.config.backoff_initial
        while not self.pod.terminating:
            if await self._start():
                assert self.proc is not None
                code = await self.proc.wait()
                self._terminated(code)
                if code == 0:
                    return True
                if policy == "Never":
                    return False
            await self._backoff(backoff)
            backoff = min(backoff * 2, self.pod.kubelet.config.backoff_max)
        return False

    async def run(self) -> int | None:
        """Run, restart per restartPolicy, until the pod terminates; the last exit code."""
        policy = self.pod.spec.get("restartPolicy", "Always")
        cfg = self.pod.kubelet.config
        backoff = cfg.backoff_initial
        code: int | None = None
        while not self.pod.terminating:
            if not await self._start():
                await self._backoff(backoff, reason="CreateContainerConfigError")
                continue
            assert self.proc is not None
            t0 = time.monotonic()
            probes = asyncio.create_task(self._probes())
            post_start = self.spec.get("lifecycle", {}).get("postStart")
            if post_start:
                assert self.ctx is not None
                ok, msg = await run_handler(post_start, self.ctx, timeout=30)
                if not ok:
                    self.pod.event("Warning", "FailedPostStartHook", msg)
                    await self.stop(self.pod.grace_period())
            code = await self.proc.wait()
            probes.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await probes
            self._terminated(code)
            if self.pod.terminating:
                break
            if policy == "Never" or (policy == "OnFailure" and code == 0):
                break
            if time.monotonic() - t0 >= cfg.backoff_reset:
                backoff = cfg.backoff_initial  # it ran long enough: a new crash starts a new back-off
            self.pod.event("Warning", "BackOff", f"Back-off restarting failed container {self.name}")
            await self._backoff(backoff)
            backoff = min(backoff * 2, cfg.backoff_max)
        return code

    def _terminated(self, code: int | None) -> None:
        self.ready = False
        self.started = False
        code = -1 if code is None else code
        # A process killed by a signal reports -N; a container runtime reports 128+N.
        exit_code = 128 - code if code < 0 else code
        started = self.state.get("running", {}).get("startedAt", now_iso())
        self._set(
            terminated={
                "exitCode": exit_code,
                "reason": "Completed" if exit_code == 0 else "Error",
                "startedAt": started,
                "finishedAt": now_iso(),
                "containerID": f"process://{self.proc.pid if self.proc else 0}",
            }
        )

    async def _backoff(self, seconds: float, reason: str = "CrashLoopBackOff") -> None:
        if self.pod.terminating:
            return
        if "terminated" in self.state:
            self.last_state = self.state
            self.restart_count += 1
            self._set(
                waiting={
                    "reason": reason,
                    "message": f"back-off {seconds:g}s restarting failed container={self.name} pod={self.pod.key}",
                }
            )
        await self.pod.sleep(seconds)

    # -- probes ----------------------------------------------------------------------------------

    async def _probes(self) -> None:
        startup = self.spec.get("startupProbe")
        if startup and not await self._probe_loop(startup, "Startup"):
            return
        self.started = True
        self.pod.dirty()
        tasks = []
        if self.spec.get("readinessProbe"):
            tasks.append(asyncio.create_task(self._probe_loop(self.spec["readinessProbe"], "Readiness")))
        else:
            self.ready = True
            self.pod.dirty()
        if self.spec.get("livenessProbe"):
            tasks.append(asyncio.create_task(self._probe_loop(self.spec["livenessProbe"], "Liveness")))
        try:
            await asyncio.gather(*tasks)
        finally:
            for t in tasks:
                t.cancel()

    async def _probe_loop(self, probe: JSON, kind: str) -> bool:
        """Startup: True once it succeeds. Readiness: runs forever. Liveness: returns after killing."""
        assert self.ctx is not None
        await asyncio.sleep(float(probe.get("initialDelaySeconds", 0)))
        period = float(probe.get("periodSeconds", 10))
        timeout = float(probe.get("timeoutSeconds", 1))
        need_ok = int(probe.get("successThreshold", 1))
        need_fail = int(probe.get("failureThreshold", 3))
        oks = fails = 0
        while True:
            ok, msg = await run_handler(probe, self.ctx, timeout)
            oks, fails = (oks + 1, 0) if ok else (0, fails + 1)
            if kind == "Startup" and ok:
                return True
            if kind == "Readiness":
                if ok and oks >= need_ok and not self.ready:
                    self.ready = True
                    self.pod.dirty()
                elif not ok and fails >= need_fail and self.ready:
                    self.ready = False
                    self.pod.dirty()
            if not ok:
                self.pod.event("Warning", "Unhealthy", f"{kind} probe failed: {msg}")
                if kind in ("Liveness", "Startup") and fails >= need_fail:
                    self.pod.event(
                        "Normal",
                        "Killing",
                        f"Container {self.name} failed {kind.lower()} probe, will be restarted",
                    )
                    await self.stop(self.pod.grace_period(probe))
                    return False
            await asyncio.sleep(period)

    # -- stop ------------------------------------------------------------------------------------

    async def stop(self, grace: float) -> None:
        """preStop hook, SIGTERM, SIGKILL at the end of ``grace`` (the hook's time counts)."""
        proc = self.proc
        if proc is None or not proc.alive or self._stopping:
            return
        self._stopping = True
        try:
            loop = asyncio.get_running_loop()
            deadline = loop.time() + grace
            pre_stop = self.spec.get("lifecycle", {}).get("preStop")
            if pre_stop and self.ctx is not None and not self.init:
                with contextlib.suppress(asyncio.TimeoutError):
                    ok, msg = await asyncio.wait_for(run_handler(pre_stop, self.ctx, grace), max(grace, 0.1))
                    if not ok:
                        self.pod.event("Warning", "FailedPreStopHook", msg)
            await proc.stop(grace=max(deadline - loop.time(), 0.0))
        finally:
            self._stopping = False


async def _with_lookup(
    pod: PodRuntime, spec: JSON, base: dict[str, str], rewrite: Rewriter, lookup: Any
) -> dict[str, str]:
    # ConfigMaps and Secrets are read up front (async), then the pure env computation runs on them.
    needed: dict[tuple[str, str], bool] = {}
    for src in spec.get("envFrom", []):
        for kind, key in (("configmap", "configMapRef"), ("secret", "secretRef")):
            if key in src:
                needed[(kind, src[key]["name"])] = bool(src[key].get("optional"))
    for item in spec.get("env", []):
        vf = item.get("valueFrom") or {}
        for kind, key in (("configmap", "configMapKeyRef"), ("secret", "secretKeyRef")):
            if key in vf:
                needed[(kind, vf[key]["name"])] = bool(vf[key].get("optional")) and needed.get(
                    (kind, vf[key]["name"]), True
                )
    data = {k: await lookup(k[0], k[1], opt) for k, opt in needed.items()}

    def sync_lookup(kind: str, name: str, key: str | None, optional: bool) -> Any:
        obj = data.get((kind, name))
        if obj is None:
            if optional:
                return None
            raise ConfigError(f"{kind} {name!r} not found")
        if key is None:
            return obj
        if key not in obj:
            if optional:
                return None
            raise ConfigError(f"couldn't find key {key} in {kind} {pod.namespace}/{name}")
        return obj[key]

    return container_env(
        pod.inside_view(),
        spec,
        base=base,
        lookup=sync_lookup,
        rewrite=rewrite,
        node_capacity=pod.kubelet.config.capacity,
    )


class PodRuntime:
    def __init__(self, kubelet: Kubelet, pod: JSON) -> None:
        self.kubelet = kubelet
        self.pod = pod
        meta = pod["metadata"]
        self.uid: str = meta["uid"]
        self.namespace: str = meta["namespace"]
        self.name: str = meta["name"]
        self.key = f"{self.namespace}/{self.name}"
        self.dir: Path = kubelet.root / "pods" / f"{self.namespace}_{self.name}_{self.uid[:8]}"
        # The pod IP (API, clients, probes) and the pod's own loopback address (see network.py).
        self.addr: PodAddress | None = None
        self.ip: str | None = None
        self.local_ip: str | None = None
        self.volumes: Volumes | None = None
        self.init_containers = [Container(self, c, init=True) for c in self.spec.get("initContainers", [])]
        self.containers = [Container(self, c, init=False) for c in self.spec.get("containers", [])]
        self.terminating = False
        self.initialized = False
        self.phase = "Pending"
        self.message = ""
        self.start_time: str | None = None
        self._transitions: dict[str, tuple[str, str]] = {}
        self._dirty = asyncio.Event()
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[Any]] = []
        self._main: asyncio.Task[None] | None = None
        self._sa_kubeconfigs: dict[str, tuple[Path, Path]] = {}
        self._api_conditions: list[JSON] = pod.get("status", {}).get("conditions", [])
        self.deleted = asyncio.Event()

    @property
    def spec(self) -> JSON:
        return self.pod["spec"]

    # -- helpers used by containers ----------------------------------------------------------------

    def dirty(self) -> None:
        self._dirty.set()

    def event(self, type_: str, reason: str, message: str) -> None:
        self.kubelet.event(self.pod, type_, reason, message)

    async def sleep(self, seconds: float) -> None:
        """Sleep, but wake up at once when the pod starts terminating."""
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._wake.wait(), seconds)

    def grace_period(self, probe: JSON | None = None) -> float:
        if probe is not None and probe.get("terminationGracePeriodSeconds") is not None:
            return float(probe["terminationGracePeriodSeconds"])
        return float(self.spec.get("terminationGracePeriodSeconds", 30))

    async def lookup(self, kind: str, name: str, optional: bool) -> dict[str, str] | None:
        assert self.volumes is not None
        try:
            data = await self.volumes.read_object(kind, name, optional)
        except VolumeError as exc:
            raise ConfigError(str(exc)) from None
        return None if data is None else {k: v.decode(errors="replace") for k, v in data.items()}

    def sa_kubeconfig(self, container: str, sa_dir: Path) -> Path:
        path = self.dir / "kubeconfigs" / f"{container}.yaml"
        self._sa_kubeconfigs[container] = (path, sa_dir)
        self._write_sa_kubeconfig(path, sa_dir)
        return path

    def _write_sa_kubeconfig(self, path: Path, sa_dir: Path) -> None:
        token = (sa_dir / "token").read_text() if (sa_dir / "token").exists() else None
        ns = (sa_dir / "namespace").read_text().strip() if (sa_dir / "namespace").exists() else self.namespace
        ca = sa_dir / "ca.crt" if (sa_dir / "ca.crt").exists() else self.kubelet.cp.pki.ca.cert
        write_kubeconfig(
            path, server=self.kubelet.cp.url, ca=ca, user="serviceaccount", token=token, namespace=ns
        )

    def inside_view(self) -> JSON:
        """The pod object as the pod itself sees it: its IP is its local address (what it binds)."""
        status = {**self.pod.get("status", {})}
        if self.local_ip is not None:
            status["podIP"], status["podIPs"] = self.local_ip, [{"ip": self.local_ip}]
        return {**self.pod, "status": status}

    # -- lifecycle -------------------------------------------------------------------------------

    def start(self) -> None:
        self._main = asyncio.create_task(self._run(), name=f"pod {self.key}")
        self._tasks.append(asyncio.create_task(self._status_writer(), name=f"pod status {self.key}"))

    def update(self, pod: JSON) -> None:
        """A newer version of the object: metadata (labels, annotations, deletion) is taken over;
        the status stays ours."""
        status = self.pod.get("status", {})
        # Conditions that others own (readiness gates) are read from the API's copy.
        self._api_conditions = pod.get("status", {}).get("conditions", [])
        self.pod = {**pod, "status": status}

    async def _run(self) -> None:
        self.addr = self.kubelet.network.allocate()
        self.ip, self.local_ip = self.addr.ip, self.addr.local
        status = self.pod.setdefault("status", {})
        status.update(
            {
                "podIP": self.ip,
                "podIPs": [{"ip": self.ip}],
                "hostIP": self.kubelet.network.node_ip,
                "hostIPs": [{"ip": self.kubelet.network.node_ip}],
            }
        )
        self.start_time = now_iso()
        self.dir.mkdir(parents=True, exist_ok=True)
        self.volumes = Volumes(
            self.pod,
            self.dir,
            self.kubelet.api,
            shared_root=self.kubelet.root,
            node_capacity=self.kubelet.config.capacity,
        )
        self.dirty()
        while not self.terminating:
            try:
                await self.volumes.sync()
                self.message = ""
                break
            except VolumeError as exc:
                self.message = str(exc)
                self.event("Warning", "FailedMount", f"MountVolume.SetUp failed: {exc}")
                self.dirty()
                await self.sleep(1.0)
        self._tasks.append(asyncio.create_task(self._volume_sync(), name=f"pod volumes {self.key}"))
        for container in self.init_containers:
            if not await container.run_init():
                if not self.terminating:
                    self.phase = "Failed"
                    self.dirty()
                return
        self.initialized = True
        self.dirty()
        if self.terminating:
            return
        codes = await asyncio.gather(*(c.run() for c in self.containers))
        if not self.terminating:
            self.phase = "Succeeded" if all(c == 0 for c in codes) else "Failed"
            self.dirty()

    async def _volume_sync(self) -> None:
        assert self.volumes is not None
        while not self.terminating:
            await self.sleep(self.kubelet.config.volume_sync)
            try:
                await self.volumes.sync()
                for path, sa_dir in self._sa_kubeconfigs.values():
                    self._write_sa_kubeconfig(path, sa_dir)
            except (VolumeError, OSError) as exc:  # keep the old files, as a kubelet does
                log.debug("pod %s: volume sync: %s", self.key, exc)
            except Exception:  # never let a transient API error end the sync loop
                log.exception("pod %s: volume sync", self.key)

    async def terminate(self, grace: float) -> None:
        """Stop every container (preStop, SIGTERM, SIGKILL after ``grace``) and post the final status."""
        if self.terminating:
            await self.deleted.wait()
            return
        self.terminating = True
        self._wake.set()
        running = self.init_containers + self.containers
        await asyncio.gather(*(c.stop(grace) for c in running))
        if self._main is not None:
            self._main.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._main
        for c in running:
            if c.proc is not None and c.proc.alive:
                c.proc.kill()
            if "running" in c.state:
                c._terminated(c.proc.returncode if c.proc else None)
            c.ready = False
        self.dirty()

    async def finish(self) -> None:
        """After terminate(): the last status, the address back to the pool, the tasks ended."""
        with contextlib.suppress(Exception):
            await self._patch_status()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self.addr is not None:
            self.kubelet.network.release(self.addr)
            self.addr = None
        self.deleted.set()

    # -- status ----------------------------------------------------------------------------------

    def _condition(self, type_: str, ok: bool, reason: str = "") -> JSON:
        status = "True" if ok else "False"
        prev = self._transitions.get(type_)
        if prev is None or prev[0] != status:
            self._transitions[type_] = (status, now_iso())
        cond: JSON = {
            "type": type_,
            "status": status,
            "lastProbeTime": None,
            "lastTransitionTime": self._transitions[type_][1],
        }
        if reason and not ok:
            cond["reason"] = reason
        return cond

    def status(self) -> JSON:
        ready = bool(self.containers) and all(c.ready for c in self.containers)
        gates = [g["conditionType"] for g in self.spec.get("readinessGates", [])]
        existing = {c["type"]: c.get("status") for c in self._api_conditions}
        gates_ok = all(existing.get(g) == "True" for g in gates)
        phase = self.phase
        if (
            phase == "Pending"
            and self.initialized
            and any("running" in c.state or c.restart_count for c in self.containers)
        ):
            phase = "Running"
        conditions = [
            self._condition("PodReadyToStartContainers", self.ip is not None and self.volumes is not None),
            self._condition("Initialized", self.initialized, "ContainersNotInitialized"),
            self._condition("ContainersReady", ready, "ContainersNotReady"),
            self._condition(
                "Ready", ready and gates_ok, "ContainersNotReady" if not ready else "ReadinessGatesNotReady"
            ),
        ]
        status: JSON = {
            "phase": phase,
            "conditions": conditions,
            "hostIP": self.kubelet.network.node_ip,
            "hostIPs": [{"ip": self.kubelet.network.node_ip}],
            "containerStatuses": [c.status() for c in self.containers],
        }
        if self.ip is not None:
            status["podIP"] = self.ip
            status["podIPs"] = [{"ip": self.ip}]
        if self.start_time:
            status["startTime"] = self.start_time
        if self.init_containers:
            status["initContainerStatuses"] = [c.status() for c in self.init_containers]
        if self.message:
            status["message"] = self.message
        return status

    async def _patch_status(self) -> None:
        body = {"status": self.status()}
        await self.kubelet.api.patch(
            f"/api/v1/namespaces/{self.namespace}/pods/{self.name}/status", body, STRATEGIC_PATCH
        )

    async def _status_writer(self) -> None:
        """Post the status whenever it changed, coalescing bursts; retry while the API is away."""
        last: JSON | None = None
        while True:
            await self._dirty.wait()
            self._dirty.clear()
            await asyncio.sleep(0.05)
            current = self.status()
            if current == last:
                continue
            try:
                await self._patch_status()
                last = current
            except ApiError as exc:
                if exc.status == 404:
                    return  # the pod is gone
                log.debug("pod %s: status patch: %s", self.key, exc)
                self._dirty.set()
                await asyncio.sleep(1.0)
            except Exception as exc:  # the API server may be restarting
                log.debug("pod %s: status patch: %s", self.key, exc)
                self._dirty.set()
                await asyncio.sleep(1.0)
