"""The kind path, checked as far as it can be here (no Docker engine, no kind).

The scripts parse (``bash -n``, and shellcheck when installed); their settings match the Python
backend's; the chart renders with the kind values (schema-validated by helm) into objects that fit
what the backend assumes (names, labels, the allow-list, the boot ConfigMap, the token path); every
manifest the backend builds validates with kubernetes-validate --strict; and the two pieces that
run inside the cluster run here for real: a version published by the backend is fetched and
digest-checked by a real ``hotswap-agent`` from the models server's exact command, and the load
generator counts answers and failures against a loopback server.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import kubernetes_validate
import pytest
import yaml
from aiohttp import web

from e2e.backends import kind
from e2e.backends.kind import KindConfig

REPO = Path(__file__).resolve().parents[2]
SCRIPTS = sorted((REPO / "e2e" / "kind").glob("*.sh"))
# Every shell script of the repository is shellchecked (the kind ones above, and scripts/).
ALL_SCRIPTS = [*SCRIPTS, *sorted((REPO / "scripts").glob("*.sh"))]
K8S_VERSIONS = ("1.28.0", "1.35.0")
CFG = KindConfig()


def test_scripts_parse() -> None:
    assert {p.name for p in SCRIPTS} >= {
        "common.sh",
        "create-cluster.sh",
        "build-image.sh",
        "install.sh",
        "run.sh",
        "down.sh",
    }
    for script in SCRIPTS:
        proc = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True, check=False)
        assert proc.returncode == 0, f"{script.name}: {proc.stderr}"
        if script.name != "common.sh":
            assert os.access(script, os.X_OK), f"{script.name} is not executable"


@pytest.mark.skipif(
    shutil.which("shellcheck") is None, reason="shellcheck not installed (apt install shellcheck)"
)
def test_shellcheck() -> None:
    proc = subprocess.run(
        ["shellcheck", "-x", "-P", "SCRIPTDIR", *map(str, ALL_SCRIPTS)],
        capture_output=True,
        text=True,
        check=False,
        cwd=SCRIPTS[0].parent,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_script_defaults_match_the_backend() -> None:
    common = (REPO / "e2e" / "kind" / "common.sh").read_text()
    found = dict(re.findall(r'^export (HOTSWAP_E2E_\w+)="\$\{\1:-([^}]*)\}"$', common, re.M))
    assert found == kind.DEFAULTS


def test_scripts_call_existing_builder_commands() -> None:
    used = set()
    for script in SCRIPTS:
        used |= set(re.findall(r"\bkindpy ([a-z-]+)", script.read_text()))
    assert used == {"cluster-config", "models-server", "values"}
    for command in used:
        with pytest.raises(SystemExit) as exc:
            kind.main([command, "--help"])
        assert exc.value.code == 0


def test_config_from_env() -> None:
    cfg = KindConfig.from_env(
        {"HOTSWAP_E2E_NAMESPACE": "ns1", "HOTSWAP_E2E_RELEASE": "rr", "HOTSWAP_E2E_WORK": "/w"}
    )
    assert (cfg.namespace, cfg.release, cfg.cluster, cfg.workdir) == ("ns1", "rr", "hotswap-e2e", Path("/w"))
    assert cfg.context == "kind-hotswap-e2e"
    assert cfg.fullname == "rr-hotswap" and CFG.fullname == "hotswap"
    assert cfg.service_url == "http://rr-hotswap.ns1.svc.cluster.local:8080"
    assert cfg.models_url == "http://hotswap-models.ns1.svc.cluster.local:8000"
    assert cfg.registry_dir == Path("/w/registry")


def test_generated_values_name_the_image() -> None:
    source = {"uri": "u", "sha256": "s"}
    values = kind.generated_values(KindConfig(image="registry.local:5000/hs:1.2"), source)
    assert values["image"] == {"repository": "registry.local:5000/hs", "tag": "1.2", "pullPolicy": "Never"}
    assert kind.generated_values(KindConfig(image="hs"), source)["image"]["tag"] == "latest"


def test_command_builders() -> None:
    assert kind.kubectl_argv(CFG, ["get", "rrm"]) == [
        "kubectl", "--context", "kind-hotswap-e2e", "--namespace", "hotswap-e2e", "get", "rrm",
    ]  # fmt: skip
    argv = kind.agent_status_argv(CFG, "hotswap-reranker-abc")
    assert argv[:7] == [*kind.kubectl_argv(CFG, []), "exec", "hotswap-reranker-abc"]
    assert argv[7:12] == ["--container", "agent", "--", "python", "-c"]
    compile(argv[12], "<agent-status>", "exec")  # a valid one-liner
    assert kind.AGENT_TOKEN_FILE in argv[12] and ":9090/v1/status" in argv[12]


def test_kind_cluster_config_mounts_the_registry_where_the_models_server_reads() -> None:
    config = kind.kind_cluster_config(CFG)
    assert config["apiVersion"] == "kind.x-k8s.io/v1alpha4" and config["kind"] == "Cluster"
    (mount,) = config["nodes"][0]["extraMounts"]
    assert mount == {
        "hostPath": str(CFG.registry_dir),
        "containerPath": kind.NODE_MODELS_DIR,
        "readOnly": True,
    }
    deployment, service = kind.models_server_manifests(CFG)
    volume = deployment["spec"]["template"]["spec"]["volumes"][0]
    assert volume["hostPath"]["path"] == kind.NODE_MODELS_DIR
    assert service["metadata"]["name"] + "." + CFG.namespace in CFG.models_url
    assert service["spec"]["ports"][0]["port"] == kind.MODELS_PORT


def test_backend_manifests_validate_strictly() -> None:
    objects = [*kind.models_server_manifests(CFG), *kind.loadgen_manifests(CFG, concurrency=8)]
    for version in K8S_VERSIONS:
        for obj in objects:
            kubernetes_validate.validate(obj, version, strict=True)
    pod = objects[-1]
    args = pod["spec"]["containers"][0]["args"]
    assert f"--url={CFG.service_url}/rerank" in args and "--concurrency=8" in args
    assert objects[-2]["data"]["loadgen.py"] == kind.LOADGEN.read_text()


def test_load_result_parsing() -> None:
    logs = 'PROGRESS {"total": 3}\nRESULT ' + json.dumps(
        {
            "total": 10,
            "failed": 1,
            "by_version": {"v1": 9},
            "failures": ["status 503"],
            "p50_ms": 2.0,
            "p99_ms": 9.0,
            "clients": 2,
            "seconds": 1.5,
        }
    )
    summary = kind.parse_load_result(logs)
    assert (summary.total, summary.failed, summary.ok, summary.by_version) == (10, 1, 9, {"v1": 9})
    with pytest.raises(kind.commands.CommandError):
        kind.parse_load_result("Traceback ...\n")


# ------------------------------------------------------------------------------------- the chart


@pytest.fixture(scope="module")
def helm() -> Path:
    proc = subprocess.run(
        [str(REPO / "scripts" / "get-helm.sh")], capture_output=True, text=True, timeout=300, check=False
    )
    assert proc.returncode == 0, proc.stderr
    return Path(proc.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def rendered(helm: Path, tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    """`helm template` exactly as install.sh installs: the kind values, then the generated boot values."""
    home = tmp_path_factory.mktemp("helm")
    boot = home / "values-generated.yaml"
    boot.write_text(
        yaml.safe_dump(kind.generated_values(CFG, {"uri": f"{CFG.models_url}/v1", "sha256": "ab" * 32}))
    )
    install = (REPO / "e2e" / "kind" / "install.sh").read_text()
    assert (
        '--values "$REPO/e2e/kind/values.yaml" --values "$HOTSWAP_E2E_WORK/values-generated.yaml"' in install
    )
    env = {
        **os.environ,
        "HELM_CONFIG_HOME": str(home),
        "HELM_CACHE_HOME": str(home),
        "KUBECONFIG": "/nonexistent",
    }
    argv = [str(helm), "template", CFG.release, str(REPO / "helm" / "hotswap"), "--namespace", CFG.namespace,
            "--values", str(REPO / "e2e" / "kind" / "values.yaml"), "--values", str(boot)]  # fmt: skip
    proc = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr  # includes values.schema.json: no unknown keys
    return [o for o in yaml.safe_load_all(proc.stdout) if o]


def _one(objects: list[dict[str, Any]], kind_: str, component: str) -> dict[str, Any]:
    found = [
        o
        for o in objects
        if o["kind"] == kind_ and o["metadata"]["labels"].get("app.kubernetes.io/component") == component
    ]
    assert len(found) == 1, (kind_, component, len(found))
    return found[0]


def test_chart_with_kind_values_fits_the_backend(rendered: list[dict[str, Any]]) -> None:
    kinds = [o["kind"] for o in rendered]
    assert "RerankerModel" not in kinds, "the scenario applies its own RerankerModel"
    deployment = _one(rendered, "Deployment", "reranker")
    assert deployment["spec"]["replicas"] == 3
    pod = deployment["spec"]["template"]
    assert CFG.selector().items() <= pod["metadata"]["labels"].items(), (
        "the scenario's selector picks the pods"
    )
    containers = {c["name"]: c for c in pod["spec"]["containers"]}
    for c in containers.values():
        assert (c["image"], c["imagePullPolicy"]) == (CFG.image, "Never")
    assert f"--allow={CFG.models_url}/" in containers["agent"]["args"]
    assert "--swap-mode=inplace" in containers["server"]["args"]
    token_mount = next(m for m in containers["agent"]["volumeMounts"] if m["name"] == "agent-token")
    assert kind.AGENT_TOKEN_FILE == f"{token_mount['mountPath']}/token"

    service = _one(rendered, "Service", "reranker")
    assert service["metadata"]["name"] == CFG.fullname, "the load pod's URL names this Service"
    assert service["spec"]["selector"] == CFG.selector()

    boot = next(
        o for o in rendered if o["kind"] == "ConfigMap" and o["metadata"]["name"] == f"{CFG.model}-boot"
    )
    assert json.loads(boot["data"]["boot.json"]) == {
        "version": "v1",
        "source": {"uri": f"{CFG.models_url}/v1", "sha256": "ab" * 32},
    }
    for version in K8S_VERSIONS:
        for obj in rendered:
            kubernetes_validate.validate(obj, version, strict=True)


# ------------------------------------------------------------------------------------- real runs


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def procs() -> Iterator[list[subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for p in started:
        p.terminate()
    for p in started:
        try:
            p.wait(timeout=10)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def _spawn(argv: list[str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


async def _until_up(url: str, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 30
    async with aiohttp.ClientSession() as session:
        while time.monotonic() < deadline:
            assert proc.poll() is None, f"{proc.args} exited {proc.returncode}"
            try:
                async with session.get(url, timeout=aiohttp.ClientTimeout(total=1)) as resp:
                    if resp.status < 500:
                        return
            except (aiohttp.ClientError, TimeoutError):
                pass
            await asyncio.sleep(0.1)
    raise AssertionError(f"{url} never answered")


async def test_published_version_is_staged_by_a_real_agent_from_the_models_server(
    testmodels_dir: Path, tmp_path: Path, procs: list[subprocess.Popen[bytes]]
) -> None:
    cfg = KindConfig(workdir=tmp_path / "work")
    source = kind.publish_folder(cfg, "v1", testmodels_dir / "tiny-xlmr-v1")
    assert source["uri"] == f"{cfg.models_url}/v1"
    assert kind.publish_folder(cfg, "v1", testmodels_dir / "tiny-xlmr-v1") == source, "idempotent"

    # The models server, with the manifest's own command and arguments (address and folder local).
    container = kind.models_server_manifests(cfg)[0]["spec"]["template"]["spec"]["containers"][0]
    http_port = _free_port()
    assert container["command"] == ["python", "-m", "http.server", str(kind.MODELS_PORT)]
    local = {"--bind": "127.0.0.1", "--directory": str(cfg.registry_dir)}
    args = container["args"]
    argv = [sys.executable, "-m", "http.server", str(http_port)]
    argv += [local[args[i - 1]] if i and args[i - 1] in local else a for i, a in enumerate(args)]
    procs.append(_spawn(argv))
    base = f"http://127.0.0.1:{http_port}"
    await _until_up(base + "/", procs[-1])

    # A real agent, allowed to fetch from that server only.
    token = tmp_path / "token"
    token.write_text(secrets.token_hex(24))
    agent_port = _free_port()
    models_root = tmp_path / "models"
    models_root.mkdir()
    agent = [
        sys.executable, "-m", "hotswap_agent", "--host", "127.0.0.1", "--port", str(agent_port),
        "--token-file", str(token), "--server-admin-token-file", str(token), "--models-root", str(models_root),
        "--server-url", f"http://127.0.0.1:{_free_port()}", "--server-admin-url", f"http://127.0.0.1:{_free_port()}",
        "--allow", f"{base}/", "--pod-name", "e2e-test",
    ]  # fmt: skip
    procs.append(_spawn(agent))
    agent_url = f"http://127.0.0.1:{agent_port}"
    await _until_up(agent_url + "/healthz", procs[-1])

    uri = source["uri"].replace(cfg.models_url, base)
    headers = {"Authorization": f"Bearer {token.read_text()}"}
    async with aiohttp.ClientSession(headers=headers) as session:
        body = {"version": "v1", "uri": uri, "sha256": source["sha256"]}
        async with session.post(agent_url + "/v1/stage", json=body) as resp:
            assert resp.status in (200, 202), await resp.text()
        deadline = time.monotonic() + 60
        while True:
            async with session.get(agent_url + "/v1/status") as resp:
                status = await resp.json()
            op = status.get("operation") or {}
            if op.get("kind") == "stage" and op.get("state") in ("succeeded", "failed"):
                break
            assert time.monotonic() < deadline, status
            await asyncio.sleep(0.1)
    assert op["state"] == "succeeded", op
    assert {"version": "v1", "digest": source["sha256"]}.items() <= status["onDisk"][0].items()
    assert not (models_root / "v1" / "manifest.json").exists(), "the manifest is not part of the version"

    # The status one-liner the backend runs with `kubectl exec` in the agent container.
    script = kind.AGENT_STATUS_SCRIPT.replace(kind.AGENT_TOKEN_FILE, str(token)).replace(
        f"127.0.0.1:{kind.AGENT_PORT}", f"127.0.0.1:{agent_port}"
    )
    out = await asyncio.to_thread(
        subprocess.run, [sys.executable, "-c", script], capture_output=True, text=True, timeout=30, check=True
    )
    assert json.loads(out.stdout)["onDisk"][0]["version"] == "v1"


@pytest.fixture
async def fake_service() -> AsyncIterator[tuple[str, list[int]]]:
    """A loopback rerank endpoint: 200 with one version header, except a 503 on every 7th call."""
    calls = [0]

    async def rerank(request: web.Request) -> web.Response:
        calls[0] += 1
        n = calls[0]  # before any await: other requests move the counter meanwhile
        await request.read()
        if n % 7 == 0:
            return web.json_response({"error": "busy"}, status=503)
        return web.json_response([{"index": 0, "score": 0.9}], headers={"X-Hotswap-Model-Version": "v1"})

    app = web.Application()
    app.router.add_post("/rerank", rerank)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    yield f"http://127.0.0.1:{port}/rerank", calls
    await runner.cleanup()


async def test_loadgen_counts_answers_and_failures(
    fake_service: tuple[str, list[int]], tmp_path: Path
) -> None:
    url, calls = fake_service
    stop = tmp_path / "stop"
    proc = await asyncio.create_subprocess_exec(
        sys.executable, str(kind.LOADGEN), f"--url={url}", "--concurrency=3", f"--stop-file={stop}",
        "--progress-seconds=0.2", stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert proc.stdout is not None
    first = await asyncio.wait_for(proc.stdout.readline(), 30)  # running, and reporting progress
    assert first.startswith(b"PROGRESS "), first
    assert calls[0] > 0
    stop.touch()
    rest, _ = await asyncio.wait_for(proc.communicate(), 30)
    out = first + rest
    assert proc.returncode == 0
    summary = kind.parse_load_result(out.decode())
    assert summary.total == calls[0] and summary.clients == 3
    assert summary.failed == calls[0] // 7 > 0
    assert summary.by_version == {"v1": summary.total - summary.failed}
    assert summary.failures[0] == "status 503"
