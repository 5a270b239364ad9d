"""Shared pieces of the chart tests: paths, the values sets, and the parsed output of `helm template`."""

from __future__ import annotations

import copy
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "helm" / "hotswap"
VALUES_DIR = Path(__file__).resolve().parent / "values"
GET_HELM = REPO / "scripts" / "get-helm.sh"
RELEASE = "rr"
NAMESPACE = "ml"

# The default values, and non-default files that between them turn every optional branch on.
VALUE_SETS: dict[str, Path | None] = {
    "default": None,
    "gpu-pvc-canary": VALUES_DIR / "gpu-pvc-canary.yaml",
    "cluster-ephemeral": VALUES_DIR / "cluster-ephemeral.yaml",
    "platform": VALUES_DIR / "platform.yaml",
}

# Kinds without a built-in schema: the RerankerModel (checked against its CRD in test_helm_crd.py)
# and the Prometheus Operator's (checked for what they must say in test_helm_platform.py).
CUSTOM_KINDS = {"RerankerModel", "ServiceMonitor", "PodMonitor", "PrometheusRule"}

# Helm hook objects: `helm template` renders them, `helm install` creates them only at their hook.
HOOK_ANNOTATION = "helm.sh/hook"

# Oldest supported (Chart.yaml kubeVersion), a middle one, and the newest kubectl/helm speak.
KUBERNETES_VERSIONS = ("1.28.0", "1.31.0", "1.35.0")

CLUSTER_SCOPED = {"ClusterRole", "ClusterRoleBinding", "CustomResourceDefinition", "Namespace"}

HelmRun = Callable[..., subprocess.CompletedProcess[str]]


def merge_values(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """Helm's coalescing: maps merge key by key, anything else (lists too) replaces, null deletes."""
    out = copy.deepcopy(base)
    for key, value in override.items():
        if value is None:
            out.pop(key, None)
        elif isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge_values(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


@dataclass(frozen=True)
class Rendered:
    """One `helm template` output, parsed, with the values that produced it."""

    name: str
    values: dict[str, Any]
    objects: list[dict[str, Any]] = field(repr=False)

    def all(self, kind: str) -> list[dict[str, Any]]:
        return [o for o in self.objects if o["kind"] == kind]

    def one(self, kind: str, component: str | None = None) -> dict[str, Any]:
        found = [
            o
            for o in self.all(kind)
            if component is None or o["metadata"]["labels"].get("app.kubernetes.io/component") == component
        ]
        assert len(found) == 1, f"{self.name}: expected one {kind} (component={component}), got {len(found)}"
        return found[0]

    def named(self, kind: str, name: str) -> dict[str, Any]:
        found = [o for o in self.all(kind) if o["metadata"]["name"] == name]
        assert len(found) == 1, f"{self.name}: expected one {kind} named {name}, got {len(found)}"
        return found[0]

    def maybe(self, kind: str, component: str | None = None) -> dict[str, Any] | None:
        found = [
            o
            for o in self.all(kind)
            if component is None or o["metadata"]["labels"].get("app.kubernetes.io/component") == component
        ]
        assert len(found) <= 1
        return found[0] if found else None


def template_args(values_file: Path | None, *extra: str) -> list[str]:
    args = ["template", RELEASE, str(CHART), "--namespace", NAMESPACE]
    if values_file is not None:
        args += ["--values", str(values_file)]
    return [*args, *extra]
