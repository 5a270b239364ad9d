"""Every rendered object validates offline with kubernetes-validate --strict, for several versions.

The in-process call (``kubernetes_validate.validate(..., strict=True)``) is exactly what the
``kubernetes-validate --strict`` command runs per document; one test also runs the command itself.
RerankerModel objects have no built-in schema: test_helm_crd.py checks them against the CRD;
the Prometheus Operator kinds are checked in test_helm_platform.py.
"""

from __future__ import annotations

import copy
import subprocess
import sys
from pathlib import Path

import kubernetes_validate
import pytest
import yaml
from chartkit import CUSTOM_KINDS, KUBERNETES_VERSIONS, VALUE_SETS, Rendered


@pytest.mark.parametrize("k8s_version", KUBERNETES_VERSIONS)
def test_every_object_validates_strictly(rendered: Rendered, k8s_version: str) -> None:
    errors = []
    for obj in rendered.objects:
        if obj["kind"] in CUSTOM_KINDS:
            continue
        try:
            kubernetes_validate.validate(obj, k8s_version, strict=True)
        except kubernetes_validate.ValidationError as e:
            path = ".".join(str(p) for p in e.path)
            errors.append(f"{obj['kind']}/{obj['metadata']['name']}: {path}: {e.message}")
        except kubernetes_validate.SchemaNotFoundError as e:
            errors.append(f"{obj['kind']}/{obj['metadata']['name']}: no schema: {e}")
    assert not errors, f"{rendered.name} against {k8s_version}:\n" + "\n".join(errors)


def test_strict_validation_rejects_an_unknown_field(default_render: Rendered) -> None:
    """Guard: strict mode really refuses a misspelt field (else the test above proves little)."""
    deployment = copy.deepcopy(default_render.one("Deployment", "reranker"))
    deployment["spec"]["template"]["spec"]["containers"][0]["readOnlyRootFileSystem"] = True
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBERNETES_VERSIONS[-1], strict=True)


def test_kubernetes_validate_command(default_render: Rendered, tmp_path: Path) -> None:
    manifest = tmp_path / "default.yaml"
    builtin = [o for o in default_render.objects if o["kind"] not in CUSTOM_KINDS]
    manifest.write_text(yaml.safe_dump_all(builtin))
    cli = Path(sys.executable).with_name("kubernetes-validate")
    for version in (KUBERNETES_VERSIONS[0], KUBERNETES_VERSIONS[-1]):
        proc = subprocess.run(
            [str(cli), "--strict", "--quiet", "-k", version, str(manifest)],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert "ERROR" not in proc.stdout and "WARN" not in proc.stdout, proc.stdout


def test_value_sets_cover_the_optional_objects(render_set) -> None:  # type: ignore[no-untyped-def]
    """Between them the values sets render every template (so every template is validated)."""
    kinds = {(o["kind"]) for name in VALUE_SETS for o in render_set(name).objects}
    assert {
        "ServiceAccount",
        "Role",
        "RoleBinding",
        "ClusterRole",
        "ClusterRoleBinding",
        "Deployment",
        "Service",
        "NetworkPolicy",
        "PodDisruptionBudget",
        "Secret",
        "ConfigMap",
        "PersistentVolumeClaim",
        "RerankerModel",
        "HorizontalPodAutoscaler",
        "Job",
        "ServiceMonitor",
        "PodMonitor",
        "PrometheusRule",
    } <= kinds
