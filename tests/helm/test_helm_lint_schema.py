"""The chart lints strictly, its values schema rejects what it should, and every key is documented."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from chartkit import (
    CHART,
    GET_HELM,
    KUBERNETES_VERSIONS,
    REPO,
    VALUE_SETS,
    HelmRun,
    merge_values,
    template_args,
)

SCHEMA = json.loads((CHART / "values.schema.json").read_text())


@pytest.mark.parametrize("values_set", list(VALUE_SETS))
def test_helm_lint_strict(helm_run: HelmRun, values_set: str) -> None:
    values_file = VALUE_SETS[values_set]
    args = ["lint", "--strict", str(CHART), "--namespace", "ml"]
    if values_file is not None:
        args += ["--values", str(values_file)]
    proc = helm_run(*args)
    assert "0 chart(s) failed" in proc.stdout, proc.stdout
    assert "[WARNING]" not in proc.stdout and "[ERROR]" not in proc.stdout, proc.stdout


@pytest.mark.parametrize(
    ("override", "message"),
    [
        (["--set", "replicas=3"], "additional properties 'replicas' not allowed"),
        (["--set", "reranker.server.bogus=1"], "additional properties 'bogus' not allowed"),
        (["--set", "reranker.models.emptyDir.size=1Gi"], "additional properties 'size' not allowed"),
        (["--set", "model.rollout.analysis.soak=5"], "additional properties 'soak' not allowed"),
        (["--set", "operator.scope=everywhere"], "operator/scope"),
        (["--set", "model.version=V_1"], "model/version"),
        (["--set", "podSecurity.runAsUser=0"], "podSecurity/runAsUser"),
        (["--set", "model.source.uri=ftp://example.com/m"], "model/source/uri"),
        (["--set", "reranker.agent.allow=null"], "reranker/agent"),
    ],
    ids=["top", "nested", "deep", "deeper", "enum", "version", "root-uid", "uri-scheme", "allow-required"],
)
def test_schema_rejects_bad_values(helm_run: HelmRun, override: list[str], message: str) -> None:
    proc = helm_run(*template_args(None, *override), check=False)
    assert proc.returncode != 0, f"helm template accepted {override}"
    assert message in proc.stderr, proc.stderr


def _object_nodes(node: Any, path: str = "$") -> list[tuple[str, dict[str, Any]]]:
    """Every schema node that describes an object, with its path."""
    found: list[tuple[str, dict[str, Any]]] = []
    if isinstance(node, dict):
        if node.get("type") == "object":
            found.append((path, node))
        for key, child in node.items():
            found += _object_nodes(child, f"{path}.{key}")
    elif isinstance(node, list):
        for i, child in enumerate(node):
            found += _object_nodes(child, f"{path}[{i}]")
    return found


def test_schema_closes_every_object() -> None:
    """additionalProperties at every level: false, or a typed map (labels, annotations, quantities).

    The only open objects are Kubernetes objects passed through verbatim (affinity terms,
    valueFrom, label selectors), which the API server validates; they say so in their description.
    """
    open_nodes = []
    for path, node in _object_nodes(SCHEMA):
        if "additionalProperties" in node:
            assert node["additionalProperties"] is False or isinstance(node["additionalProperties"], dict), (
                path
            )
        elif "Kubernetes object" not in node.get("description", ""):
            open_nodes.append(path)
    assert not open_nodes, f"schema objects without additionalProperties: {open_nodes}"
    assert SCHEMA["additionalProperties"] is False


def _schema_keys(node: dict[str, Any], prefix: str = "") -> set[str]:
    """The keys the schema requires (optional ones are Kubernetes fields such as affinity's)."""
    keys: set[str] = set()
    for key, child in node.get("properties", {}).items():
        if key not in node.get("required", []):
            continue
        keys.add(prefix + key)
        if child.get("type") == "object" and child.get("additionalProperties") is False:
            keys |= _schema_keys(child, f"{prefix}{key}.")
    return keys


def _value_keys(values: dict[str, Any], schema: dict[str, Any], prefix: str = "") -> set[str]:
    keys: set[str] = set()
    for key, value in values.items():
        keys.add(prefix + key)
        child = schema.get("properties", {}).get(key, {})
        if isinstance(value, dict) and child.get("additionalProperties") is False:
            keys |= _value_keys(value, child, f"{prefix}{key}.")
    return keys


def test_values_yaml_and_schema_agree(chart_defaults: dict[str, Any]) -> None:
    """values.yaml is valid, and sets every key the schema knows (so every key is documented there)."""
    jsonschema.Draft7Validator(SCHEMA).validate(chart_defaults)
    missing = _schema_keys(SCHEMA) - _value_keys(chart_defaults, SCHEMA)
    assert not missing, f"schema keys that values.yaml does not set (and so does not document): {missing}"


@pytest.mark.parametrize("values_set", [name for name, path in VALUE_SETS.items() if path])
def test_test_values_files_are_valid(values_set: str, chart_defaults: dict[str, Any]) -> None:
    path = VALUE_SETS[values_set]
    assert path is not None
    merged = merge_values(chart_defaults, yaml.safe_load(path.read_text()))
    jsonschema.Draft7Validator(SCHEMA).validate(merged)


def test_every_values_key_has_a_comment_above_it() -> None:
    """A comment line directly above every key of values.yaml (zero-to-jupyterhub style)."""
    lines = (CHART / "values.yaml").read_text().splitlines()
    key = re.compile(r"^\s*[A-Za-z][A-Za-z0-9]*:")
    missing = []
    for i, line in enumerate(lines):
        if key.match(line):
            above = lines[i - 1].strip() if i else ""
            if not above.startswith("#"):
                missing.append(f"line {i + 1}: {line.strip()}")
    assert not missing, "keys without a comment above them:\n" + "\n".join(missing)


def test_get_helm_is_idempotent_and_caches_outside_the_repo(helm: Path) -> None:
    again = subprocess.run([str(GET_HELM)], capture_output=True, text=True, timeout=60, check=True)
    assert Path(again.stdout.strip()) == helm
    assert REPO not in helm.resolve().parents
    version = subprocess.run([str(helm), "version", "--short"], capture_output=True, text=True, check=True)
    assert re.match(r"v[34]\.", version.stdout), version.stdout


def test_chart_kube_version_covers_the_validated_versions(helm_run: HelmRun) -> None:
    """Chart.yaml's kubeVersion admits every version the objects are validated against, not older."""
    for version in KUBERNETES_VERSIONS:
        helm_run(*template_args(None, "--kube-version", version))
    too_old = helm_run(*template_args(None, "--kube-version", "1.27.0"), check=False)
    assert too_old.returncode != 0 and "kubeVersion" in too_old.stderr, too_old.stderr
