"""reranker.modelCache: the model cache shared by pods, mounted into the agent only.

Renders the chart with `--set`-style overrides (the style of test_helm_platform.py) and checks the
agent's flags, its mount, the volume (a claim the chart makes or names, or a hostPath), that the
server never sees the cache, and that the schema refuses what the agent could not use.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from chartkit import HelmRun, Rendered, merge_values, template_args


@pytest.fixture(scope="module")
def render(helm_run: HelmRun, chart_defaults: dict[str, Any]) -> Callable[..., Rendered]:
    def run(override: dict[str, Any], tmp: Path, check: bool = True) -> Rendered:
        path = tmp / f"values-{abs(hash(json.dumps(override, sort_keys=True)))}.yaml"
        path.write_text(yaml.safe_dump(override))
        proc = helm_run(*template_args(path), check=check)
        if not check:
            return proc  # type: ignore[return-value]
        objects = [o for o in yaml.safe_load_all(proc.stdout) if o]
        return Rendered("override", merge_values(chart_defaults, override), objects)

    return run


def cache(**values: Any) -> dict[str, Any]:
    return {"reranker": {"modelCache": {"enabled": True, **values}}}


def containers(r: Rendered) -> dict[str, dict[str, Any]]:
    spec = r.one("Deployment", "reranker")["spec"]["template"]["spec"]
    return {c["name"]: c for c in spec["containers"]}


def volumes(r: Rendered) -> dict[str, dict[str, Any]]:
    spec = r.one("Deployment", "reranker")["spec"]["template"]["spec"]
    return {v["name"]: v for v in spec["volumes"]}


def cache_claims(r: Rendered) -> list[dict[str, Any]]:
    return [
        o
        for o in r.all("PersistentVolumeClaim")
        if o["metadata"]["labels"].get("app.kubernetes.io/component") == "model-cache"
    ]


def test_off_by_default(default_render: Rendered) -> None:
    assert default_render.values["reranker"]["modelCache"]["enabled"] is False
    agent = containers(default_render)["agent"]
    assert not [a for a in agent["args"] if a.startswith("--cache")]
    assert "model-cache" not in volumes(default_render) and cache_claims(default_render) == []


def test_pvc_created_and_mounted_into_the_agent_only(render: Callable[..., Rendered], tmp_path: Path) -> None:
    r = render(cache(), tmp_path)
    c = containers(r)
    assert "--cache-dir=/model-cache" in c["agent"]["args"]
    assert "--cache-max-bytes=80Gi" in c["agent"]["args"]
    mount = next(m for m in c["agent"]["volumeMounts"] if m["name"] == "model-cache")
    assert mount == {"name": "model-cache", "mountPath": "/model-cache"}  # read-write, no subPath
    assert all(m["name"] != "model-cache" for m in c["server"]["volumeMounts"])
    (claim,) = cache_claims(r)
    assert claim["spec"]["accessModes"] == ["ReadWriteMany"]
    assert claim["spec"]["resources"]["requests"]["storage"] == "100Gi"
    assert "storageClassName" not in claim["spec"]
    assert "helm.sh/resource-policy" not in (claim["metadata"].get("annotations") or {})
    assert volumes(r)["model-cache"] == {
        "name": "model-cache",
        "persistentVolumeClaim": {"claimName": claim["metadata"]["name"]},
    }
    # The models volume is unchanged: each pod keeps its own versions and retention.
    assert "emptyDir" in volumes(r)["models"]


def test_existing_claim_storage_class_and_byte_limit(render: Callable[..., Rendered], tmp_path: Path) -> None:
    r = render(cache(existingClaim="shared-cache", maxBytes=85899345920), tmp_path)
    assert cache_claims(r) == []
    assert volumes(r)["model-cache"]["persistentVolumeClaim"] == {"claimName": "shared-cache"}
    assert "--cache-max-bytes=85899345920" in containers(r)["agent"]["args"]  # not 8.58e+10

    r = render(
        cache(storageClass="nfs-client", size="500Gi", accessModes=["ReadWriteOnce"], maxBytes=0), tmp_path
    )
    (claim,) = cache_claims(r)
    assert claim["spec"]["storageClassName"] == "nfs-client"
    assert claim["spec"]["accessModes"] == ["ReadWriteOnce"]
    assert claim["spec"]["resources"]["requests"]["storage"] == "500Gi"
    assert "--cache-max-bytes=0" in containers(r)["agent"]["args"]


def test_host_path(render: Callable[..., Rendered], tmp_path: Path) -> None:
    r = render(cache(type="hostPath", hostPath={"path": "/mnt/fast/hotswap-cache"}), tmp_path)
    assert cache_claims(r) == []
    assert volumes(r)["model-cache"]["hostPath"] == {
        "path": "/mnt/fast/hotswap-cache",
        "type": "DirectoryOrCreate",
    }
    assert "--cache-dir=/model-cache" in containers(r)["agent"]["args"]


def test_flags_are_ones_the_agent_accepts(render: Callable[..., Rendered], tmp_path: Path) -> None:
    from hotswap_agent.settings import build_parser

    r = render(cache(mountPath="/cache", maxBytes="20G"), tmp_path)
    args = [a for a in containers(r)["agent"]["args"] if a.startswith("--cache")]
    assert args == ["--cache-dir=/cache", "--cache-max-bytes=20G"]
    parsed = build_parser().parse_args([*args, "--token-file=x", "--server-admin-token-file=y"])
    assert str(parsed.cache_dir) == "/cache"

    from hotswap_agent.settings import _byte_size

    assert _byte_size("20G") == 20 * 10**9 and _byte_size("80Gi") == 80 << 30


@pytest.mark.parametrize(
    "bad",
    [
        {"type": "nfs"},
        {"maxBytes": "lots"},
        {"maxBytes": -1},
        {"maxBytes": "1.5Gi"},
        {"accessModes": []},
        {"hostPath": {"path": "relative"}},
        {"unknown": 1},
    ],
)
def test_schema_refuses(render: Callable[..., Rendered], tmp_path: Path, bad: dict[str, Any]) -> None:
    proc: Any = render(cache(**bad), tmp_path, check=False)
    assert proc.returncode != 0 and "modelCache" in proc.stderr, proc.stderr
