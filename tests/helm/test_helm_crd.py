"""The chart's CRD is the generated one, it validates, and the chart's RerankerModel fits it.

crds/rerankermodels.hotswap.dev.yaml is generated from the operator's typed models
(hotswap_operator.crdgen); the chart ships a byte-identical copy in helm/hotswap/crds/. Until the
generated file exists these checks skip, saying so; every other chart test runs regardless.
"""

from __future__ import annotations

import copy
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml
from chartkit import CHART, KUBERNETES_VERSIONS, REPO, VALUE_SETS, HelmRun, Rendered, template_args

CRD_FILE = "rerankermodels.hotswap.dev.yaml"
GENERATED = REPO / "crds" / CRD_FILE
CHART_COPY = CHART / "crds" / CRD_FILE


@pytest.fixture(scope="module")
def crd() -> dict[str, Any]:
    if not GENERATED.exists():
        pytest.skip(
            "crds/rerankermodels.hotswap.dev.yaml is not generated yet (operator: python -m "
            "hotswap_operator.crdgen); CRD-specific chart checks skipped"
        )
    return yaml.safe_load(GENERATED.read_text())


def strict_schema(node: Any) -> Any:
    """The CRD schema with unknown fields refused, where the API server would silently prune them.

    A misspelt field in the chart's RerankerModel (say `expecttop`) would otherwise vanish on apply.
    """
    if isinstance(node, list):
        return [strict_schema(n) for n in node]
    if not isinstance(node, dict):
        return node
    out = {k: strict_schema(v) for k, v in node.items()}
    if (
        out.get("type") == "object"
        and "properties" in out
        and "additionalProperties" not in out
        and not out.get("x-kubernetes-preserve-unknown-fields")
    ):
        out["additionalProperties"] = False
    return out


def served_version(crd: dict[str, Any]) -> dict[str, Any]:
    (version,) = [v for v in crd["spec"]["versions"] if v["name"] == "v1alpha1"]
    return version


def test_chart_copy_is_byte_identical(crd: dict[str, Any]) -> None:
    assert CHART_COPY.exists(), (
        f"{CHART_COPY.relative_to(REPO)} missing: copy {GENERATED.relative_to(REPO)} there"
    )
    assert CHART_COPY.read_bytes() == GENERATED.read_bytes(), (
        "helm/hotswap/crds/ drifted from crds/: regenerate with python -m hotswap_operator.crdgen"
    )
    assert sorted(p.name for p in CHART_COPY.parent.iterdir()) == [CRD_FILE]


@pytest.mark.parametrize("k8s_version", KUBERNETES_VERSIONS)
def test_crd_validates_strictly(crd: dict[str, Any], k8s_version: str) -> None:
    kubernetes_validate.validate(crd, k8s_version, strict=True)


def test_crd_names_match_the_design(crd: dict[str, Any]) -> None:
    spec = crd["spec"]
    assert crd["metadata"]["name"] == "rerankermodels.hotswap.dev"
    assert spec["group"] == "hotswap.dev" and spec["scope"] == "Namespaced"
    assert spec["names"]["kind"] == "RerankerModel" and spec["names"]["plural"] == "rerankermodels"
    assert "rrm" in spec["names"]["shortNames"]
    version = served_version(crd)
    assert version["served"] and version["storage"]
    assert version["subresources"]["status"] == {}
    columns = {c["name"].lower() for c in version["additionalPrinterColumns"]}
    assert {"target", "current", "last-good", "ready", "age"} <= columns


def test_helm_installs_the_crd(crd: dict[str, Any], helm_run: HelmRun) -> None:
    proc = helm_run(*template_args(None, "--include-crds"))
    kinds = [o["kind"] for o in yaml.safe_load_all(proc.stdout) if o]
    assert kinds.count("CustomResourceDefinition") == 1


def rerankermodel_cases(rendered: Rendered) -> list[dict[str, Any]]:
    rrm = rendered.maybe("RerankerModel")
    return [] if rrm is None else [rrm]


def test_rendered_rerankermodels_fit_the_crd(crd: dict[str, Any], render_set) -> None:  # type: ignore[no-untyped-def]
    schema = strict_schema(served_version(crd)["schema"]["openAPIV3Schema"])
    validator = jsonschema.Draft7Validator(schema)
    checked = 0
    for name in VALUE_SETS:
        for rrm in rerankermodel_cases(render_set(name)):
            body = copy.deepcopy(rrm)
            errors = [f"{'.'.join(map(str, e.path))}: {e.message}" for e in validator.iter_errors(body)]
            assert not errors, f"{name}: RerankerModel does not fit the CRD:\n" + "\n".join(errors)
            checked += 1
    assert checked >= 2, "at least the default and one non-default RerankerModel"


def test_rendered_rerankermodels_parse_with_the_operator_models(render_set) -> None:  # type: ignore[no-untyped-def]
    """The operator's own models (cross-field rules such as expectTop < len(documents)) accept them."""
    models = pytest.importorskip("hotswap_operator.models")
    for name in VALUE_SETS:
        for rrm in rerankermodel_cases(render_set(name)):
            spec = models.RerankerModelSpec.model_validate(rrm["spec"])
            assert spec.version == rrm["spec"]["version"]


def test_strict_schema_refuses_a_misspelt_field(crd: dict[str, Any], default_render: Rendered) -> None:
    """Guard: the pruning-as-error schema really refuses what the API server would drop."""
    schema = strict_schema(served_version(crd)["schema"]["openAPIV3Schema"])
    body = copy.deepcopy(default_render.one("RerankerModel"))
    body["spec"]["rollout"]["canary"] = [{"query": "q", "documents": ["a", "b"], "expecttop": 1}]
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(body, schema, cls=jsonschema.Draft7Validator)
