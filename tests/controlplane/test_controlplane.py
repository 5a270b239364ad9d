"""The real control plane as a test harness: what kmock could not prove, proven on kube-apiserver.

One control plane (etcd, kube-apiserver, kube-controller-manager, kube-scheduler, process kubelet)
serves the whole module; the last tests restart its API server and SIGKILL a second harness.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from devtools.controlplane import ApiError, Client, ControlPlane
from devtools.controlplane.client import wait_until
from devtools.controlplane.network import in_run_netns
from tests.controlplane.conftest import BIN_DIR, REQUIRED, requires_controlplane

pytestmark = [requires_controlplane, pytest.mark.asyncio(loop_scope="module")]

REPO = Path(__file__).resolve().parents[2]


def _ns() -> str:
    return f"t-{uuid.uuid4().hex[:8]}"


async def _namespace(client: Client) -> str:
    name = _ns()
    await client.create(
        "/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}
    )
    # Pods are refused until the ServiceAccount controller has made the namespace's `default` SA.
    await wait_until(
        lambda: client.get(f"/api/v1/namespaces/{name}/serviceaccounts/default"),
        timeout=20,
        what="default SA",
    )
    return name


async def _pod(client: Client, ns: str, name: str) -> Any:
    return await client.get(f"/api/v1/namespaces/{ns}/pods/{name}")


def _ready(pod: Any) -> bool:
    conds = {c["type"]: c["status"] for c in pod.get("status", {}).get("conditions", [])}
    return conds.get("Ready") == "True"


async def _log_text(cp: ControlPlane, ns: str, pod: str, container: str) -> str:
    assert cp.kubelet is not None
    path = cp.kubelet.log_path(ns, pod, container)
    return path.read_text(errors="replace") if path is not None and path.exists() else ""


async def test_apiserver_is_ready_and_reports_its_release(cp: ControlPlane) -> None:
    client = cp.client()
    assert await client.request("GET", "/readyz") == "ok"
    version = await client.get("/version")
    assert version["gitVersion"].startswith("v1.3"), version
    assert version["major"] == "1"
    nodes = await client.get("/api/v1/nodes")
    assert [n["metadata"]["name"] for n in nodes["items"]] == ["hotswap-node"]


async def test_crd_cel_rule_refuses_a_bad_object_with_the_rules_message(cp: ControlPlane) -> None:
    client = cp.client()
    message = "spec.min must not exceed spec.max"
    crd = {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": "widgets.cel.hotswap.dev"},
        "spec": {
            "group": "cel.hotswap.dev",
            "names": {"kind": "Widget", "plural": "widgets", "singular": "widget"},
            "scope": "Namespaced",
            "versions": [
                {
                    "name": "v1",
                    "served": True,
                    "storage": True,
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "properties": {
                                "spec": {
                                    "type": "object",
                                    "properties": {"min": {"type": "integer"}, "max": {"type": "integer"}},
                                    "x-kubernetes-validations": [
                                        {"rule": "self.min <= self.max", "message": message}
                                    ],
                                }
                            },
                        }
                    },
                }
            ],
        },
    }
    await client.create("/apis/apiextensions.k8s.io/v1/customresourcedefinitions", crd)

    async def established() -> bool:
        got = await client.get(
            "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/widgets.cel.hotswap.dev"
        )
        return any(
            c["type"] == "Established" and c["status"] == "True"
            for c in (got.get("status") or {}).get("conditions") or []
        )

    await wait_until(established, timeout=20, what="CRD Established")
    path = "/apis/cel.hotswap.dev/v1/namespaces/default/widgets"

    def widget(name: str, lo: int, hi: int) -> dict[str, Any]:
        return {
            "apiVersion": "cel.hotswap.dev/v1",
            "kind": "Widget",
            "metadata": {"name": name},
            "spec": {"min": lo, "max": hi},
        }

    # Discovery of a new group can lag Established by a moment: retry a 404 only.
    async def create_good() -> Any:
        return await client.create(path, widget("good", 1, 2))

    await wait_until(create_good, timeout=10, what="the Widget endpoint")
    with pytest.raises(ApiError) as refused:
        await client.create(path, widget("bad", 3, 2))
    assert refused.value.status == 422
    assert message in refused.value.message


async def test_deployment_replicaset_pod_runs_as_a_process_ready_behind_a_service(cp: ControlPlane) -> None:
    client = cp.client()
    ns = await _namespace(client)
    labels = {"app": "web"}
    container = {
        "name": "web",
        "image": "python:3.11",
        "command": ["python", "-m", "http.server", "8000", "--bind", "$(POD_IP)"],
        "env": [{"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}],
        "ports": [{"name": "http", "containerPort": 8000}],
        "readinessProbe": {"httpGet": {"path": "/", "port": "http"}, "periodSeconds": 1},
    }
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web"},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": labels},
            "template": {"metadata": {"labels": labels}, "spec": {"containers": [container]}},
        },
    }
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "web"},
        "spec": {"selector": labels, "ports": [{"name": "http", "port": 80, "targetPort": "http"}]},
    }
    await client.create(f"/api/v1/namespaces/{ns}/services", service)
    await client.create(f"/apis/apps/v1/namespaces/{ns}/deployments", deployment)

    async def ready_pod() -> Any:
        pods = (await client.get(f"/api/v1/namespaces/{ns}/pods"))["items"]
        return next((p for p in pods if _ready(p)), None)

    pod = await wait_until(ready_pod, timeout=30, what="a Ready pod of the Deployment")
    # Deployment -> ReplicaSet -> Pod, each owned by the one before.
    rs_ref = pod["metadata"]["ownerReferences"][0]
    assert rs_ref["kind"] == "ReplicaSet"
    rs = await client.get(f"/apis/apps/v1/namespaces/{ns}/replicasets/{rs_ref['name']}")
    assert rs["metadata"]["ownerReferences"][0]["kind"] == "Deployment"
    assert pod["spec"]["nodeName"] == "hotswap-node"  # bound by kube-scheduler
    status = pod["status"]
    ip = status["podIP"]
    assert status["phase"] == "Running"
    assert status["containerStatuses"][0]["ready"] is True
    assert {c["type"] for c in status["conditions"]} >= {
        "Ready",
        "ContainersReady",
        "Initialized",
        "PodScheduled",
    }
    # The process bound what it sees as its IP (its local address); the pod IP reaches it.
    async with aiohttp.ClientSession() as session, session.get(f"http://{ip}:8000/") as resp:
        assert resp.status == 200

    if not cp.network.routed:
        # Routed pod IPs exist only inside a network namespace of the run's own (scripts/netns-run.sh,
        # as `make test-controlplane` runs these tests); anywhere else pod IPs are loopback addresses.
        why = in_run_netns() or "no CAP_NET_ADMIN or no nft (see the harness's log)"
        if REQUIRED:
            pytest.fail(f"pod addresses are loopback, which EndpointSlices refuse: {why}")
        pytest.skip(f"pod addresses are loopback, which the API server refuses in EndpointSlices: {why}")

    async def endpoint() -> Any:
        slices = await client.get(
            f"/apis/discovery.k8s.io/v1/namespaces/{ns}/endpointslices",
            labelSelector="kubernetes.io/service-name=web",
        )
        for s in slices["items"]:
            for ep in s.get("endpoints") or []:
                if ip in ep["addresses"] and ep.get("conditions", {}).get("ready"):
                    return s
        return None

    slice_ = await wait_until(endpoint, timeout=20, what="an EndpointSlice with the pod's address")
    assert slice_["ports"][0]["port"] == 8000


async def test_serviceaccount_token_in_a_pod_meets_rbac(cp: ControlPlane) -> None:
    client = cp.client()
    ns = await _namespace(client)
    await client.create(f"/api/v1/namespaces/{ns}/serviceaccounts", {"metadata": {"name": "reader"}})
    # The process reads its token and CA where a container would (the kubelet remaps the paths)
    # and asks the API server, through KUBERNETES_SERVICE_HOST/PORT, for the namespace's ConfigMaps.
    script = (
        "import os, ssl, time, urllib.request, urllib.error\n"
        "sa = '/var/run/secrets/kubernetes.io/serviceaccount'\n"
        "ctx = ssl.create_default_context(cafile=sa + '/ca.crt')\n"
        "url = 'https://%s:%s/api/v1/namespaces/%s/configmaps' % (os.environ['KUBERNETES_SERVICE_HOST'],"
        " os.environ['KUBERNETES_SERVICE_PORT'], open(sa + '/namespace').read())\n"
        "while True:\n"
        "    req = urllib.request.Request(url, headers={'Authorization': 'Bearer ' + open(sa + '/token').read()})\n"
        "    try:\n"
        "        code = urllib.request.urlopen(req, context=ctx).status\n"
        "    except urllib.error.HTTPError as e:\n"
        "        code = e.code\n"
        "    print('status', code, flush=True)\n"
        "    time.sleep(0.3)\n"
    )
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "reader"},
        "spec": {
            "serviceAccountName": "reader",
            "containers": [{"name": "main", "image": "python:3.11", "command": ["python", "-c", script]}],
        },
    }
    await client.create(f"/api/v1/namespaces/{ns}/pods", pod)

    async def saw(code: int) -> bool:
        return f"status {code}" in await _log_text(cp, ns, "reader", "main")

    await wait_until(lambda: saw(403), timeout=30, what="403 without a Role")
    assert not await saw(200)
    await client.create(
        f"/apis/rbac.authorization.k8s.io/v1/namespaces/{ns}/roles",
        {
            "metadata": {"name": "read-configmaps"},
            "rules": [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["list"]}],
        },
    )
    await client.create(
        f"/apis/rbac.authorization.k8s.io/v1/namespaces/{ns}/rolebindings",
        {
            "metadata": {"name": "reader"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "read-configmaps"},
            "subjects": [{"kind": "ServiceAccount", "name": "reader", "namespace": ns}],
        },
    )
    await wait_until(lambda: saw(200), timeout=20, what="200 with a Role")
    # The token was bound to this pod by the TokenRequest API, not a legacy Secret token.
    assert cp.kubelet is not None
    runtime = cp.kubelet.pod(ns, "reader")
    assert runtime is not None and runtime.volumes is not None
    token_dirs = [d for n, d in runtime.volumes.dirs.items() if n.startswith("kube-api-access-")]
    assert token_dirs and (token_dirs[0] / "token").read_text().count(".") == 2


async def test_pod_init_containers_volumes_and_env_value_from(cp: ControlPlane) -> None:
    client = cp.client()
    ns = await _namespace(client)
    await client.create(
        f"/api/v1/namespaces/{ns}/secrets",
        {
            "metadata": {"name": "creds"},
            "stringData": {"password": "s3cret"},
        },
    )
    await client.create(
        f"/api/v1/namespaces/{ns}/configmaps",
        {
            "metadata": {"name": "settings"},
            "data": {"mode": "blue"},
        },
    )
    script = (
        "import os, time\n"
        "print('env', os.environ['FROM_SECRET'], os.environ['FROM_CM'], os.environ['NS'], flush=True)\n"
        "print('init', open('/work/init.txt').read().strip(), flush=True)\n"
        "print('secret', open('/etc/secret/password').read(), flush=True)\n"
        "while True:\n"
        "    print('mode', open('/etc/config/mode').read(), flush=True)\n"
        "    time.sleep(0.3)\n"
    )
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "volumes"},
        "spec": {
            "initContainers": [
                {
                    "name": "init",
                    "image": "busybox",
                    "command": ["sh", "-c", "echo init-done > /work/init.txt"],
                    "volumeMounts": [{"name": "work", "mountPath": "/work"}],
                }
            ],
            "containers": [
                {
                    "name": "main",
                    "image": "python:3.11",
                    "command": ["python", "-c", script],
                    "env": [
                        {
                            "name": "FROM_SECRET",
                            "valueFrom": {"secretKeyRef": {"name": "creds", "key": "password"}},
                        },
                        {
                            "name": "FROM_CM",
                            "valueFrom": {"configMapKeyRef": {"name": "settings", "key": "mode"}},
                        },
                        {"name": "NS", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
                    ],
                    "readinessProbe": {
                        "exec": {"command": ["test", "-f", "/work/init.txt"]},
                        "periodSeconds": 1,
                    },
                    "volumeMounts": [
                        {"name": "work", "mountPath": "/work"},
                        {"name": "secret", "mountPath": "/etc/secret", "readOnly": True},
                        {"name": "config", "mountPath": "/etc/config", "readOnly": True},
                    ],
                }
            ],
            "volumes": [
                {"name": "work", "emptyDir": {}},
                {"name": "secret", "secret": {"secretName": "creds", "defaultMode": 0o440}},
                {"name": "config", "configMap": {"name": "settings"}},
            ],
        },
    }
    await client.create(f"/api/v1/namespaces/{ns}/pods", pod)
    await wait_until(lambda: _ready_pod(client, ns, "volumes"), timeout=30, what="pod Ready")
    got = await _pod(client, ns, "volumes")
    assert got["status"]["initContainerStatuses"][0]["state"]["terminated"]["exitCode"] == 0
    text = await _log_text(cp, ns, "volumes", "main")
    assert f"env s3cret blue {ns}" in text
    assert "init init-done" in text and "secret s3cret" in text
    # A ConfigMap change reaches the mounted file (the boot ConfigMap relies on it).
    await client.patch(f"/api/v1/namespaces/{ns}/configmaps/settings", {"data": {"mode": "green"}})

    async def green() -> bool:
        return "mode green" in await _log_text(cp, ns, "volumes", "main")

    await wait_until(green, timeout=15, what="the new ConfigMap value in the volume")


async def test_deleting_a_pod_sigterms_its_process_then_removes_the_object(cp: ControlPlane) -> None:
    client = cp.client()
    ns = await _namespace(client)
    script = (
        "import signal, sys, time\n"
        "def term(*_):\n"
        "    print('got SIGTERM', flush=True)\n"
        "    sys.exit(0)\n"
        "signal.signal(signal.SIGTERM, term)\n"
        "print('started', flush=True)\n"
        "while True:\n"
        "    time.sleep(0.1)\n"
    )
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "graceful"},
        "spec": {
            "terminationGracePeriodSeconds": 20,
            "containers": [{"name": "main", "image": "python:3.11", "command": ["python", "-c", script]}],
        },
    }
    await client.create(f"/api/v1/namespaces/{ns}/pods", pod)
    await wait_until(lambda: _ready_pod(client, ns, "graceful"), timeout=30, what="pod running")
    assert cp.kubelet is not None
    runtime = cp.kubelet.pod(ns, "graceful")
    assert runtime is not None and runtime.containers[0].proc is not None
    pid = runtime.containers[0].proc.pid
    log = cp.kubelet.log_path(ns, "graceful", "main")  # the runtime goes with the pod
    assert log is not None
    t0 = time.monotonic()
    await client.delete(f"/api/v1/namespaces/{ns}/pods/graceful")

    async def gone() -> bool:
        try:
            await _pod(client, ns, "graceful")
        except ApiError as exc:
            return exc.status == 404
        return False

    await wait_until(gone, timeout=15, what="the pod object deleted by the kubelet")
    assert time.monotonic() - t0 < 15  # it exited on SIGTERM, not at the end of the 20 s grace
    assert "got SIGTERM" in log.read_text()
    assert pid is not None and not Path(f"/proc/{pid}").exists()


async def _ready_pod(client: Client, ns: str, name: str) -> bool:
    return _ready(await _pod(client, ns, name))


async def test_a_container_that_exits_is_restarted_with_backoff(cp: ControlPlane) -> None:
    client = cp.client()
    ns = await _namespace(client)
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "crasher"},
        "spec": {
            "containers": [{"name": "main", "image": "busybox", "command": ["sh", "-c", "echo run; exit 3"]}]
        },
    }
    await client.create(f"/api/v1/namespaces/{ns}/pods", pod)

    async def restarted() -> Any:
        st = (await _pod(client, ns, "crasher")).get("status", {}).get("containerStatuses") or [{}]
        return st[0] if st[0].get("restartCount", 0) >= 2 else None

    status = await wait_until(restarted, timeout=30, what="two restarts")
    assert status["lastState"]["terminated"]["exitCode"] == 3
    assert (await _log_text(cp, ns, "crasher", "main")).count("run") >= 3


async def test_kube_apiserver_restart_keeps_the_node_and_new_pods_running(cp: ControlPlane) -> None:
    client = cp.client()
    ns = await _namespace(client)
    await cp.restart_apiserver()
    assert await client.request("GET", "/readyz") == "ok"
    # The kubelet's watch broke with the restart; a pod created now must still be run.
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "after-restart"},
        "spec": {"containers": [{"name": "main", "image": "busybox", "command": ["sleep", "300"]}]},
    }
    await client.create(f"/api/v1/namespaces/{ns}/pods", pod)
    await wait_until(
        lambda: _ready_pod(client, ns, "after-restart"), timeout=30, what="pod after the restart"
    )


# -- SIGKILL of the harness -----------------------------------------------------------------------


def _stat(pid: int) -> tuple[int, int, str] | None:
    """(ppid, pgid, state) of ``pid``, None if it does not exist."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = raw[raw.rindex(")") + 2 :].split()
    return int(fields[1]), int(fields[2]), fields[0]


def _tree(root: int) -> set[int]:
    """``root``'s descendants, and every process in their process groups (orphans included)."""
    procs = {int(p): s for p in os.listdir("/proc") if p.isdigit() and (s := _stat(int(p))) is not None}
    found = {root}
    changed = True
    while changed:
        changed = False
        for pid, (ppid, _, _) in procs.items():
            if ppid in found and pid not in found:
                found.add(pid)
                changed = True
    groups = {procs[p][1] for p in found if p in procs and p != root}
    found |= {pid for pid, (_, pgid, _) in procs.items() if pgid in groups}
    found.discard(root)
    return found


def _alive(pid: int) -> bool:
    st = _stat(pid)
    return st is not None and st[2] != "Z"


def _host_network_state() -> set[str]:
    """The pod-network routes and NAT tables on this host (a harness adds one of each)."""
    out = subprocess.run(
        ["ip", "-4", "route", "show", "table", "local"], capture_output=True, text=True, check=False
    )
    state = {line for line in out.stdout.splitlines() if "198.18." in line or "198.19." in line}
    if shutil.which("nft"):
        tables = subprocess.run(["nft", "list", "tables"], capture_output=True, text=True, check=False)
        state |= {line for line in tables.stdout.splitlines() if "hotswap_" in line}
    return state


async def test_sigkill_of_the_harness_leaves_no_process_behind(tmp_path: Path) -> None:
    network_before = _host_network_state()
    env = {**os.environ, "PYTHONPATH": str(REPO), "HOTSWAP_CONTROLPLANE_BIN": str(BIN_DIR)}
    with open(tmp_path / "harness.log", "wb") as harness_log:
        harness = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "devtools.controlplane",
            "up",
            "--workdir",
            str(tmp_path),
            stdout=subprocess.PIPE,
            stderr=harness_log,
            env=env,
            cwd=REPO,
        )
    try:
        assert harness.stdout is not None
        line = await asyncio.wait_for(harness.stdout.readline(), 60)
        assert line.strip().endswith(b"admin.kubeconfig"), (tmp_path / "harness.log").read_text()
        pki = tmp_path / "pki"
        url = "https://127.0.0.1:" + _server_port(Path(line.decode().strip()))
        async with Client(url, ca=pki / "ca.crt", cert=pki / "admin.crt", key=pki / "admin.key") as client:
            # A pod whose process leaves an orphan grandchild: PDEATHSIG cannot reach that one,
            # only the watchdog's kill of the process group does.
            pod = {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": "orphans"},
                "spec": {
                    "containers": [
                        {
                            "name": "main",
                            "image": "busybox",
                            "command": ["sh", "-c", "(sleep 301 &); sleep 302"],
                        }
                    ]
                },
            }
            await wait_until(
                lambda: client.get("/api/v1/namespaces/default/serviceaccounts/default"),
                timeout=20,
                what="SA",
            )
            await client.create("/api/v1/namespaces/default/pods", pod)
            await wait_until(lambda: _ready_pod(client, "default", "orphans"), timeout=30, what="orphans pod")
        tree = set()
        for _ in range(50):  # the orphan appears a moment after the pod is Running
            tree = _tree(harness.pid)
            cmdlines = [Path(f"/proc/{p}/cmdline").read_bytes() for p in tree if _alive(p)]
            if any(b"sleep\x00301" in c for c in cmdlines) and any(b"sleep\x00302" in c for c in cmdlines):
                break
            await asyncio.sleep(0.1)
        names = {Path(f"/proc/{p}/comm").read_text().strip() for p in tree if _alive(p)}
        assert {"etcd", "kube-apiserver", "sleep"} <= names, names
    finally:
        harness.send_signal(signal.SIGKILL)
        await harness.wait()

    async def all_gone() -> bool:
        return not [p for p in tree if _alive(p)]

    with contextlib.suppress(TimeoutError):
        await wait_until(all_gone, timeout=15, what="every process of the harness gone")
    survivors = {p: Path(f"/proc/{p}/cmdline").read_bytes()[:80] for p in tree if _alive(p)}
    assert not survivors, survivors
    assert _host_network_state() == network_before  # the pod network's route and NAT are gone too


def _server_port(kubeconfig: Path) -> str:
    import yaml

    server = yaml.safe_load(kubeconfig.read_text())["clusters"][0]["cluster"]["server"]
    return str(server).rsplit(":", 1)[1]
