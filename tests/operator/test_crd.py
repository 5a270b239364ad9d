"""The CRD is generated from the models, does not drift, is structural, and the docs' examples fit it."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml
from hotswap_operator import crdgen
from hotswap_operator.models import RerankerModelSpec, RerankerModelStatus, Step

REPO = Path(__file__).resolve().parents[2]
DOCS = REPO / "docs" / "operator.md"


def crd_schema() -> dict[str, Any]:
    crd = crdgen.build_crd()
    return crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]


def test_generated_files_do_not_drift() -> None:
    assert crdgen.main(["--check", "--root", str(REPO)]) == 0, "run: python -m hotswap_operator.crdgen"
    for rel in crdgen.TARGETS:
        assert (REPO / rel).read_text() == crdgen.render()


def test_check_mode_fails_on_drift(tmp_path: Path) -> None:
    assert crdgen.main(["--check", "--root", str(tmp_path)]) == 1
    assert crdgen.main(["--root", str(tmp_path)]) == 0
    assert crdgen.main(["--check", "--root", str(tmp_path)]) == 0
    (tmp_path / crdgen.TARGETS[1]).write_text("tampered")
    assert crdgen.main(["--check", "--root", str(tmp_path)]) == 1


@pytest.mark.parametrize("k8s", ["1.30.0", "1.33.0"])
def test_crd_validates_against_kubernetes(k8s: str) -> None:
    kubernetes_validate.validate(crdgen.build_crd(), k8s, strict=True)


def _walk(node: Any, path: str = "") -> list[tuple[str, dict[str, Any]]]:
    out = []
    if isinstance(node, dict):
        out.append((path, node))
        for key, sub in node.get("properties", {}).items():
            out.extend(_walk(sub, f"{path}.{key}"))
        if isinstance(node.get("items"), dict):
            out.extend(_walk(node["items"], f"{path}[]"))
        if isinstance(node.get("additionalProperties"), dict):
            out.extend(_walk(node["additionalProperties"], f"{path}{{}}"))
    return out


def test_schema_is_structural() -> None:
    for path, node in _walk(crd_schema()):
        assert "$ref" not in node and "anyOf" not in node and "allOf" not in node, path
        assert "title" not in node, path
        assert node.get("type") or node.get("x-kubernetes-preserve-unknown-fields"), f"{path} has no type"
        assert not ("properties" in node and "additionalProperties" in node), path


def test_schema_validates_user_fields_and_keeps_kopf_progress() -> None:
    schema = crd_schema()
    spec = schema["properties"]["spec"]["properties"]
    assert (
        spec["version"]["pattern"] == r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
        and spec["version"]["maxLength"] == 63
    )
    assert spec["source"]["properties"]["uri"]["pattern"].startswith("^(file|s3|https?|hf)://")
    assert spec["source"]["properties"]["sha256"]["pattern"] == "^[a-fA-F0-9]{64}$"
    assert spec["rollout"]["default"] == {} and spec["rollout"]["properties"]["prefetch"]["default"] is True
    assert spec["selector"]["x-kubernetes-validations"]
    status = schema["properties"]["status"]["properties"]
    assert status["kopf"]["x-kubernetes-preserve-unknown-fields"] is True
    # No `default: {}` in status: an empty default object would fail its own required fields.
    assert not [path for path, node in _walk(schema["properties"]["status"]) if node.get("default") == {}]
    version = crdgen.build_crd()["spec"]["versions"][0]
    assert version["subresources"] == {"status": {}}
    columns = [c["name"] for c in version["additionalPrinterColumns"]]
    assert columns[:4] == ["Target", "Current", "Last-Good", "Ready"] and columns[-1] == "Age"
    assert crdgen.build_crd()["spec"]["names"]["shortNames"] == ["rrm"]


def test_status_written_by_the_planner_fits_the_schema() -> None:
    from .sim import Sim, boot_ref, fleet, make_spec

    sim = Sim(spec=make_spec("v3"), pods=fleet(3), boot=boot_ref("v1"))
    sim.failures[("pod-2", Step.VERIFY, "v3")] = "bad"
    sim.run()
    status = sim.status.model_dump(mode="json", by_alias=True, exclude_none=True)
    jsonschema.validate(status, strict(crd_schema()["properties"]["status"]))
    assert RerankerModelStatus.model_validate(status) == sim.status


def strict(node: Any) -> Any:
    """Refuse unknown fields where the API server would silently prune them (a typo would vanish)."""
    if isinstance(node, list):
        return [strict(n) for n in node]
    if not isinstance(node, dict):
        return node
    out = {k: strict(v) for k, v in node.items()}
    if (
        out.get("type") == "object"
        and "properties" in out
        and not out.get("x-kubernetes-preserve-unknown-fields")
    ):
        out.setdefault("additionalProperties", False)
    return out


def doc_examples() -> list[dict[str, Any]]:
    text = DOCS.read_text(encoding="utf-8")
    docs = []
    for block in re.findall(r"```yaml\n(.*?)```", text, flags=re.S):
        for doc in yaml.safe_load_all(block):
            if isinstance(doc, dict) and doc.get("kind") == "RerankerModel":
                docs.append(doc)
    return docs


def test_docs_examples_validate_against_the_crd() -> None:
    examples = doc_examples()
    assert len(examples) >= 2, "docs/operator.md shows at least a minimal and a full example"
    schema = strict(crd_schema())
    for example in examples:
        jsonschema.validate(example, schema)
        RerankerModelSpec.model_validate(example["spec"])


def test_schema_rejects_what_the_models_reject() -> None:
    schema = strict(crd_schema())
    good = {"apiVersion": "hotswap.dev/v1alpha1", "kind": "RerankerModel", "metadata": {"name": "m"}}
    good["spec"] = {"selector": {"matchLabels": {"app": "r"}}, "version": "v1", "source": {"uri": "s3://b/k"}}
    jsonschema.validate(good, schema)
    for bad_spec in (
        {**good["spec"], "version": "V1"},
        {**good["spec"], "source": {"uri": "gopher://x"}},
        {**good["spec"], "source": {"uri": "s3://b/k", "sha256": "XYZ"}},
        {**good["spec"], "rollout": {"pauseSeconds": -1}},
        {**good["spec"], "typo": 1},
    ):
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate({**good, "spec": bad_spec}, schema)
