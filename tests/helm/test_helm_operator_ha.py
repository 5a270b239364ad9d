"""operator.replicas: one replica runs kopf --standalone; more run with kopf peering.

Renders the chart with overrides and checks: one replica has no peering objects, no peering RBAC
and --standalone; two replicas get --peering, kopf's peering CRD (KopfPeering for namespace scope,
ClusterKopfPeering for cluster scope), the RBAC kopf peering needs (and create: the operator makes
the peering object itself), the downward-API pod name the per-pod priority is derived from
(hotswap_operator/peering.py) and the lifetime value.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from chartkit import HelmRun, Rendered, merge_values, template_args

PEERING_VERBS = {"get", "list", "watch", "patch", "create"}


@pytest.fixture(scope="module")
def render(helm_run: HelmRun, chart_defaults: dict[str, Any]) -> Callable[..., Any]:
    def run(override: dict[str, Any], tmp: Path, check: bool = True) -> Any:
        path = tmp / f"values-{abs(hash(json.dumps(override, sort_keys=True)))}.yaml"
        path.write_text(yaml.safe_dump(override))
        proc = helm_run(*template_args(path), check=check)
        if not check:
            return proc
        objects = [o for o in yaml.safe_load_all(proc.stdout) if o]
        return Rendered("override", merge_values(chart_defaults, override), objects)

    return run


def operator(r: Rendered) -> dict[str, Any]:
    return r.one("Deployment", "operator")


def container(r: Rendered) -> dict[str, Any]:
    (c,) = operator(r)["spec"]["template"]["spec"]["containers"]
    return dict(c)


def env(r: Rendered) -> dict[str, dict[str, Any]]:
    return {e["name"]: e for e in container(r)["env"]}


def peering_rules(r: Rendered, kind: str) -> list[dict[str, Any]]:
    return [rule for role in r.all(kind) for rule in role["rules"] if "kopf.dev" in rule.get("apiGroups", [])]


def crds(r: Rendered) -> list[str]:
    return sorted(o["metadata"]["name"] for o in r.all("CustomResourceDefinition"))


def test_one_replica_is_standalone_without_peering(default_render: Rendered) -> None:
    assert default_render.values["operator"]["replicas"] == 1
    dep = operator(default_render)
    assert dep["spec"]["replicas"] == 1 and dep["spec"]["strategy"] == {"type": "Recreate"}
    args = container(default_render)["args"]
    assert "--standalone" in args and not [a for a in args if a.startswith("--peering")]
    assert not {"POD_ID", "POD_NAME", "HOTSWAP_OPERATOR_PEERING_LIFETIME_SECONDS"} & set(env(default_render))
    assert crds(default_render) == []
    assert peering_rules(default_render, "Role") == []
    assert "affinity" not in dep["spec"]["template"]["spec"]


def test_two_replicas_peer_namespaced(render: Callable[..., Rendered], tmp_path: Path) -> None:
    r = render({"operator": {"replicas": 2, "peering": {"lifetimeSeconds": 12}}}, tmp_path)
    dep = operator(r)
    assert dep["spec"]["replicas"] == 2
    # Recreate also with peering: an upgrade never runs a standalone and a peering replica at once.
    assert dep["spec"]["strategy"] == {"type": "Recreate"}
    args = container(r)["args"]
    assert "--standalone" not in args
    assert "--peering=rr-hotswap-operator" in args and "--namespace=ml" in args
    # No fixed --priority: each pod derives its own from POD_NAME (equal priorities pause all).
    assert not [a for a in args if a.startswith(("--priority", "-p"))]
    e = env(r)
    for name in ("POD_ID", "POD_NAME"):
        assert e[name]["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.name"}}, name
    assert e["HOTSWAP_OPERATOR_PEERING_LIFETIME_SECONDS"]["value"] == "12"

    (crd,) = r.all("CustomResourceDefinition")
    assert crd["metadata"]["name"] == "kopfpeerings.kopf.dev"
    assert crd["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    assert crd["spec"]["scope"] == "Namespaced" and crd["spec"]["names"]["kind"] == "KopfPeering"
    (version,) = crd["spec"]["versions"]
    assert version["name"] == "v1" and version["served"] and version["storage"]
    status = version["schema"]["openAPIV3Schema"]["properties"]["status"]
    assert status["x-kubernetes-preserve-unknown-fields"] is True  # kopf writes {identity: {...}}
    kubernetes_validate.validate(crd, "1.35.0", strict=True)

    (rule,) = peering_rules(r, "Role")
    assert rule["resources"] == ["kopfpeerings"] and set(rule["verbs"]) == PEERING_VERBS
    anti = dep["spec"]["template"]["spec"]["affinity"]["podAntiAffinity"]
    term = anti["preferredDuringSchedulingIgnoredDuringExecution"][0]["podAffinityTerm"]
    assert term["topologyKey"] == "kubernetes.io/hostname"
    assert term["labelSelector"]["matchLabels"] == dep["spec"]["selector"]["matchLabels"]


def test_extra_watch_namespaces_get_peering_rbac(render: Callable[..., Rendered], tmp_path: Path) -> None:
    r = render({"operator": {"replicas": 3, "extraWatchNamespaces": ["other"]}}, tmp_path)
    roles = {
        role["metadata"]["namespace"]: role
        for role in r.all("Role")
        if role["metadata"]["name"] == "rr-hotswap-operator"
    }
    assert set(roles) == {"ml", "other"}
    for role in roles.values():
        assert [x["resources"] for x in role["rules"] if "kopf.dev" in x["apiGroups"]] == [["kopfpeerings"]]
    assert {"--namespace=ml", "--namespace=other"} <= set(container(r)["args"])


def test_cluster_scope_peers_cluster_wide(render: Callable[..., Rendered], tmp_path: Path) -> None:
    r = render({"operator": {"replicas": 2, "scope": "cluster"}}, tmp_path)
    args = container(r)["args"]
    assert "--all-namespaces" in args and "--peering=ml-rr-hotswap-operator" in args
    (crd,) = r.all("CustomResourceDefinition")
    assert crd["metadata"]["name"] == "clusterkopfpeerings.kopf.dev"
    assert crd["spec"]["scope"] == "Cluster" and crd["spec"]["names"]["kind"] == "ClusterKopfPeering"
    (rule,) = peering_rules(r, "ClusterRole")
    assert rule["resources"] == ["clusterkopfpeerings"] and set(rule["verbs"]) == PEERING_VERBS
    assert peering_rules(r, "Role") == []


def test_peering_with_one_replica_and_crd_managed_elsewhere(
    render: Callable[..., Rendered], tmp_path: Path
) -> None:
    r = render({"operator": {"peering": {"enabled": True, "installCRD": False, "name": "ops"}}}, tmp_path)
    assert operator(r)["spec"]["replicas"] == 1
    assert "--peering=ops" in container(r)["args"]
    assert crds(r) == [] and len(peering_rules(r, "Role")) == 1


@pytest.mark.parametrize(
    "override",
    [{"replicas": 0}, {"peering": {"lifetimeSeconds": 1}}, {"peering": {"leader": True}}],
)
def test_schema_refuses(render: Callable[..., Any], tmp_path: Path, override: dict[str, Any]) -> None:
    proc = render({"operator": override}, tmp_path, check=False)
    assert proc.returncode != 0 and "values don't meet the specifications" in proc.stderr, proc.stderr
