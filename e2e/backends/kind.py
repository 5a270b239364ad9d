"""The kind backend: the scenario against a kind cluster where ``e2e/kind/`` installed the chart.

Everything this backend runs is built by a pure function below (``*_argv``, ``*_manifests``,
``*_values``), so the commands and manifests are unit-tested without a cluster
(``tests/e2e/test_kind_static.py``). How model versions reach the pods: the host folder
``$HOTSWAP_E2E_WORK/registry`` is mounted into the kind node (``extraMounts``), a small in-cluster
http server (``hotswap-models``: ``python -m http.server`` in the project's image) serves it, and
each version is published there as an http(s) folder source (files + ``manifest.json``, see
docs/agent.md) on the agents' allow-list. Client load runs in a pod (``e2e/kind/loadgen.py``)
against the Service's cluster DNS name, so kube-proxy spreads it over the pods the way it does for
real clients (``kubectl port-forward svc/...`` would tunnel every request to one pod).

``python -m e2e.backends.kind cluster-config | models-server | values | publish VERSION MODEL``
prints what the shell scripts in ``e2e/kind/`` feed to kind, kubectl and helm.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from .. import commands
from ..backend import LoadRun, LoadSummary
from ..scenario import ScenarioConfig

REPO = Path(__file__).resolve().parents[2]
LOADGEN = REPO / "e2e" / "kind" / "loadgen.py"
NODE_MODELS_DIR = "/hotswap-models"  # where the kind node sees the host's registry folder
MODELS_PORT = 8000
DATA_PORT = 8080
AGENT_PORT = 9090
AGENT_TOKEN_FILE = "/var/run/hotswap/agent-token/token"  # the chart's agentTokenDir + agentToken.key
CHART_NAME = "hotswap"
LOAD_POD = "hotswap-e2e-load"

# One source for the defaults: e2e/kind/common.sh sets the same (a test keeps them equal).
DEFAULTS = {
    "HOTSWAP_E2E_CLUSTER": "hotswap-e2e",
    "HOTSWAP_E2E_NAMESPACE": "hotswap-e2e",
    "HOTSWAP_E2E_RELEASE": "hotswap",
    "HOTSWAP_E2E_IMAGE": "reranker-hotswap:e2e",
    "HOTSWAP_E2E_WORK": "/tmp/hotswap-e2e",
}


@dataclasses.dataclass(frozen=True)
class KindConfig:
    cluster: str = DEFAULTS["HOTSWAP_E2E_CLUSTER"]
    namespace: str = DEFAULTS["HOTSWAP_E2E_NAMESPACE"]
    release: str = DEFAULTS["HOTSWAP_E2E_RELEASE"]
    image: str = DEFAULTS["HOTSWAP_E2E_IMAGE"]
    workdir: Path = Path(DEFAULTS["HOTSWAP_E2E_WORK"])
    model: str = "reranker"  # the RerankerModel; its boot ConfigMap is "<model>-boot"
    boot_version: str = "v1"
    boot_model: str = "tiny-xlmr-v1"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> KindConfig:
        env = os.environ if env is None else env

        def get(key: str) -> str:
            return env.get(key) or DEFAULTS[key]

        return cls(
            cluster=get("HOTSWAP_E2E_CLUSTER"),
            namespace=get("HOTSWAP_E2E_NAMESPACE"),
            release=get("HOTSWAP_E2E_RELEASE"),
            image=get("HOTSWAP_E2E_IMAGE"),
            workdir=Path(get("HOTSWAP_E2E_WORK")),
        )

    @property
    def context(self) -> str:
        return f"kind-{self.cluster}"

    @property
    def registry_dir(self) -> Path:
        """Published versions, on the host (mounted into the node at NODE_MODELS_DIR)."""
        return self.workdir / "registry"

    @property
    def models_dir(self) -> Path:
        """Generated test models, on the host."""
        return self.workdir / "testmodels"

    @property
    def models_url(self) -> str:
        return f"http://hotswap-models.{self.namespace}.svc.cluster.local:{MODELS_PORT}"

    @property
    def fullname(self) -> str:
        """The chart's fullname: the release name when it contains the chart name (_helpers.tpl)."""
        return self.release if CHART_NAME in self.release else f"{self.release}-{CHART_NAME}"

    @property
    def service_url(self) -> str:
        return f"http://{self.fullname}.{self.namespace}.svc.cluster.local:{DATA_PORT}"

    def selector(self) -> dict[str, str]:
        """The reranker pods' selector labels, as the chart sets them."""
        return {
            "app.kubernetes.io/name": CHART_NAME,
            "app.kubernetes.io/instance": self.release,
            "app.kubernetes.io/component": "reranker",
        }


# ---------------------------------------------------------------------------------- builders


def kubectl_argv(cfg: KindConfig, args: Sequence[str]) -> list[str]:
    return ["kubectl", "--context", cfg.context, "--namespace", cfg.namespace, *args]


def kind_cluster_config(cfg: KindConfig) -> dict[str, Any]:
    """One node; the host's registry folder mounted read-only where the models server reads it."""
    return {
        "kind": "Cluster",
        "apiVersion": "kind.x-k8s.io/v1alpha4",
        "nodes": [
            {
                "role": "control-plane",
                "extraMounts": [
                    {"hostPath": str(cfg.registry_dir), "containerPath": NODE_MODELS_DIR, "readOnly": True}
                ],
            }
        ],
    }


def _restricted_container() -> dict[str, Any]:
    return {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
    }


def _restricted_pod() -> dict[str, Any]:
    return {
        "runAsNonRoot": True,
        "runAsUser": 10001,
        "runAsGroup": 10001,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def models_server_manifests(cfg: KindConfig) -> list[dict[str, Any]]:
    """A Deployment + Service serving the registry folder over http (the project's image, stdlib
    ``http.server``): where the agents fetch versions from, like an in-cluster model mirror."""
    labels = {"app.kubernetes.io/name": "hotswap-models", "app.kubernetes.io/part-of": "hotswap-e2e"}
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "hotswap-models", "namespace": cfg.namespace, "labels": labels},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "automountServiceAccountToken": False,
                    "securityContext": _restricted_pod(),
                    "containers": [
                        {
                            "name": "http",
                            "image": cfg.image,
                            "imagePullPolicy": "Never",
                            "command": ["python", "-m", "http.server", str(MODELS_PORT)],
                            "args": ["--bind", "0.0.0.0", "--directory", "/srv/models"],
                            "ports": [{"name": "http", "containerPort": MODELS_PORT}],
                            "readinessProbe": {"tcpSocket": {"port": "http"}, "periodSeconds": 2},
                            "resources": {
                                "requests": {"cpu": "50m", "memory": "64Mi"},
                                "limits": {"memory": "256Mi"},
                            },
                            "securityContext": _restricted_container(),
                            "volumeMounts": [
                                {"name": "models", "mountPath": "/srv/models", "readOnly": True}
                            ],
                        }
                    ],
                    "volumes": [
                        {"name": "models", "hostPath": {"path": NODE_MODELS_DIR, "type": "Directory"}}
                    ],
                },
            },
        },
    }
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "hotswap-models", "namespace": cfg.namespace, "labels": labels},
        "spec": {
            "selector": labels,
            "ports": [{"name": "http", "port": MODELS_PORT, "targetPort": "http"}],
        },
    }
    return [deployment, service]


def generated_values(cfg: KindConfig, source: Mapping[str, str]) -> dict[str, Any]:
    """Helm values added to ``e2e/kind/values.yaml``: the image (``$HOTSWAP_E2E_IMAGE``), the
    agents' allow-list (the models server only) and the boot version (``model.*`` fills the boot
    ConfigMap; ``model.create`` is false there: the scenario applies the RerankerModel itself)."""
    repository, _, tag = cfg.image.rpartition(":")
    if not repository or "/" in tag:
        repository, tag = cfg.image, "latest"
    return {
        "image": {"repository": repository, "tag": tag, "pullPolicy": "Never"},
        "reranker": {"agent": {"allow": [f"{cfg.models_url}/"]}},
        "model": {
            "name": cfg.model,
            "version": cfg.boot_version,
            "source": {"uri": source["uri"], "sha256": source["sha256"]},
        },
    }


def loadgen_manifests(cfg: KindConfig, concurrency: int) -> list[dict[str, Any]]:
    """The load script as a ConfigMap, and the pod that runs it against the Service."""
    labels = {"app.kubernetes.io/name": LOAD_POD, "app.kubernetes.io/part-of": "hotswap-e2e"}
    configmap = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": LOAD_POD, "namespace": cfg.namespace, "labels": labels},
        "data": {"loadgen.py": LOADGEN.read_text()},
    }
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": LOAD_POD, "namespace": cfg.namespace, "labels": labels},
        "spec": {
            "restartPolicy": "Never",
            "automountServiceAccountToken": False,
            "securityContext": _restricted_pod(),
            "containers": [
                {
                    "name": "load",
                    "image": cfg.image,
                    "imagePullPolicy": "Never",
                    "command": ["python", "/loadgen/loadgen.py"],
                    "args": [
                        f"--url={cfg.service_url}/rerank",
                        f"--concurrency={concurrency}",
                        "--stop-file=/tmp/stop",
                    ],
                    "resources": {
                        "requests": {"cpu": "100m", "memory": "64Mi"},
                        "limits": {"memory": "256Mi"},
                    },
                    "securityContext": _restricted_container(),
                    "volumeMounts": [
                        {"name": "script", "mountPath": "/loadgen", "readOnly": True},
                        {"name": "tmp", "mountPath": "/tmp"},
                    ],
                }
            ],
            "volumes": [
                {"name": "script", "configMap": {"name": LOAD_POD}},
                {"name": "tmp", "emptyDir": {"sizeLimit": "16Mi"}},
            ],
        },
    }
    return [configmap, pod]


# The agent listens on the pod's every address; from inside the pod, 127.0.0.1 is not subject to
# the NetworkPolicy that admits its port from the operator only. The token is the mounted Secret.
AGENT_STATUS_SCRIPT = (
    "import urllib.request as u;"
    f"t=open('{AGENT_TOKEN_FILE}').read().strip();"
    f"r=u.Request('http://127.0.0.1:{AGENT_PORT}/v1/status',headers={{'Authorization':'Bearer '+t}});"
    "print(u.urlopen(r,timeout=10).read().decode())"
)


def agent_status_argv(cfg: KindConfig, pod: str) -> list[str]:
    return kubectl_argv(cfg, ["exec", pod, "--container", "agent", "--", "python", "-c", AGENT_STATUS_SCRIPT])


def parse_load_result(logs: str) -> LoadSummary:
    """The ``RESULT {json}`` line loadgen prints when it stops."""
    for line in reversed(logs.splitlines()):
        if line.startswith("RESULT "):
            data = json.loads(line[len("RESULT ") :])
            return LoadSummary(
                total=int(data["total"]),
                failed=int(data["failed"]),
                by_version=dict(data["by_version"]),
                by_pod={},
                failures=list(data["failures"]),
                p50_ms=float(data["p50_ms"]),
                p99_ms=float(data["p99_ms"]),
                clients=int(data["clients"]),
                seconds=float(data["seconds"]),
            )
    raise commands.CommandError(f"the load pod printed no RESULT line:\n{logs[-2000:]}")


def publish_folder(cfg: KindConfig, version: str, folder: Path) -> dict[str, str]:
    """Copy ``folder`` into the registry as ``version`` with its ``manifest.json`` (the http folder
    format, docs/agent.md); its source for the spec. The digest is of the model files: the manifest
    is not part of the version. Publishing the same files again changes nothing."""
    from hotswap_agent.manifest import MANIFEST_NAME, build_manifest
    from hotswap_contract.digest import folder_digest

    manifest = build_manifest(folder)
    target = cfg.registry_dir / version
    published = target / MANIFEST_NAME
    if not published.is_file() or json.loads(published.read_text()) != manifest:
        cfg.registry_dir.mkdir(parents=True, exist_ok=True)
        tmp = cfg.registry_dir / f".{version}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.copytree(folder, tmp)
        (tmp / MANIFEST_NAME).write_text(json.dumps(manifest, indent=1) + "\n")
        for path in [tmp, *tmp.rglob("*")]:  # readable by the models server's uid
            path.chmod(0o755 if path.is_dir() else 0o644)
        shutil.rmtree(target, ignore_errors=True)
        tmp.rename(target)
    return {"uri": f"{cfg.models_url}/{version}", "sha256": folder_digest(folder)}


# ---------------------------------------------------------------------------------- the backend


def scenario_config(config: ScenarioConfig) -> ScenarioConfig:
    """The scenario's settings on kind: real-cluster room in the waits (pods boot on a laptop, the
    load pod pulls nothing but starts), more clients, a gentler poll of the API."""
    return dataclasses.replace(
        config,
        install_timeout=900,
        change_timeout=600,
        pod_timeout_seconds=300,
        concurrency=max(config.concurrency, 8),
        poll_seconds=1.0,
    )


class KindBackend:
    name = "kind"

    def __init__(self, cfg: KindConfig) -> None:
        self.cfg = cfg
        self.namespace = cfg.namespace
        self.model_name = cfg.model
        self.workdir = cfg.workdir

    def selector(self) -> dict[str, str]:
        return self.cfg.selector()

    async def pods(self) -> list[str]:
        selector = ",".join(f"{k}={v}" for k, v in self.selector().items())
        result = await self.kubectl("get", "pods", "--selector", selector, "--output", "json")
        if result.returncode != 0:
            raise commands.CommandError(f"kubectl get pods: {result.stderr.strip()}")
        items = json.loads(result.stdout).get("items", [])
        return sorted(
            p["metadata"]["name"]
            for p in items
            if p.get("status", {}).get("phase") == "Running" and not p["metadata"].get("deletionTimestamp")
        )

    def publish(self, version: str, model: str) -> dict[str, str]:
        from devtools.testmodels import generate

        generate(self.cfg.models_dir, [model])
        return publish_folder(self.cfg, version, self.cfg.models_dir / model)

    async def kubectl(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return await commands.run(kubectl_argv(self.cfg, args), timeout=timeout)

    async def get_model(self) -> dict[str, Any] | None:
        result = await self.kubectl(
            "get", "rerankermodels", self.model_name, "--ignore-not-found", "--output", "json"
        )
        if result.returncode != 0:
            raise commands.CommandError(f"kubectl get rrm: {result.stderr.strip()}")
        return json.loads(result.stdout) if result.stdout.strip() else None

    async def agent_status(self, pod: str) -> dict[str, Any]:
        result = await commands.run(agent_status_argv(self.cfg, pod), timeout=60, check=True)
        return json.loads(result.stdout)  # type: ignore[no-any-return]

    @contextlib.asynccontextmanager
    async def load(self, concurrency: int) -> AsyncIterator[LoadRun]:
        manifests = yaml.safe_dump_all(loadgen_manifests(self.cfg, concurrency))
        await self.kubectl("delete", "pod", LOAD_POD, "--ignore-not-found", "--wait=true", timeout=120)
        await commands.run(kubectl_argv(self.cfg, ["apply", "-f", "-"]), stdin=manifests, check=True)
        await commands.run(
            kubectl_argv(self.cfg, ["wait", "--for=condition=Ready", f"pod/{LOAD_POD}", "--timeout=180s"]),
            timeout=200,
            check=True,
        )
        run = LoadRun(concurrency, time.time())
        try:
            yield run
        finally:
            await self.kubectl("exec", LOAD_POD, "--", "touch", "/tmp/stop")
            await self.kubectl(
                "wait",
                "--for=jsonpath={.status.phase}=Succeeded",
                f"pod/{LOAD_POD}",
                "--timeout=90s",
                timeout=120,
            )
            logs = await self.kubectl("logs", LOAD_POD, timeout=60)
            run.summary = parse_load_result(logs.stdout)
            await self.kubectl("delete", "pod", LOAD_POD, "--ignore-not-found", "--wait=false")

    def kubectl_hint(self) -> str:
        return f"kubectl --context {self.cfg.context} --namespace {self.cfg.namespace}"


if TYPE_CHECKING:  # mypy holds the backend to the interface the scenario uses
    from ..backend import Backend

    _conforms: Backend = KindBackend(KindConfig())


# ---------------------------------------------------------------------------------- CLI


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m e2e.backends.kind", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("cluster-config", help="the kind cluster config (YAML)")
    sub.add_parser("models-server", help="the in-cluster models http server (YAML)")
    sub.add_parser("values", help="publish the boot version; the generated Helm values (YAML)")
    pub = sub.add_parser("publish", help="publish a test model as a version; print its source (JSON)")
    pub.add_argument("version")
    pub.add_argument("model")
    args = parser.parse_args(argv)
    cfg = KindConfig.from_env()
    if args.command == "cluster-config":
        out: str = yaml.safe_dump(kind_cluster_config(cfg), sort_keys=False)
    elif args.command == "models-server":
        out = yaml.safe_dump_all(models_server_manifests(cfg), sort_keys=False)
    elif args.command == "values":
        source = KindBackend(cfg).publish(cfg.boot_version, cfg.boot_model)
        out = yaml.safe_dump(generated_values(cfg, source), sort_keys=False)
    else:
        out = json.dumps(KindBackend(cfg).publish(args.version, args.model)) + "\n"
    sys.stdout.write(out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
