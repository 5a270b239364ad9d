"""The rendered objects say what docs/contract.md requires, not just that they parse.

Every test runs against each values set (default and the non-default files in values/).
"""

from __future__ import annotations

import base64
import json
import re
from typing import Any

import pytest
from chartkit import CLUSTER_SCOPED, HOOK_ANNOTATION, NAMESPACE, Rendered

DATA_PORT, ADMIN_PORT, AGENT_PORT = 8080, 8081, 9090


# ----------------------------------------------------------------------------------------- helpers


def pod_spec(deployment: dict[str, Any]) -> dict[str, Any]:
    return deployment["spec"]["template"]["spec"]


def pod_labels(deployment: dict[str, Any]) -> dict[str, str]:
    return deployment["spec"]["template"]["metadata"]["labels"]


def container(deployment: dict[str, Any], name: str) -> dict[str, Any]:
    found = [c for c in pod_spec(deployment)["containers"] if c["name"] == name]
    assert len(found) == 1, f"container {name}"
    return found[0]


def all_containers(deployment: dict[str, Any]) -> list[dict[str, Any]]:
    spec = pod_spec(deployment)
    return [*spec.get("initContainers", []), *spec["containers"]]


def flags(c: dict[str, Any]) -> dict[str, list[str]]:
    """--name=value arguments of a container, by name (a flag may repeat)."""
    out: dict[str, list[str]] = {}
    for arg in c.get("args", []):
        m = re.fullmatch(r"--([a-z0-9-]+)(?:=(.*))?", arg)
        assert m, f"argument not in --flag=value form: {arg!r}"
        out.setdefault(m.group(1), []).append(m.group(2) or "")
    return out


def env(c: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in c.get("env", [])}


def selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


def mounts(c: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {m["mountPath"]: m for m in c.get("volumeMounts", [])}


def volume(deployment: dict[str, Any], name: str) -> dict[str, Any]:
    found = [v for v in pod_spec(deployment)["volumes"] if v["name"] == name]
    assert len(found) == 1, f"volume {name}"
    return found[0]


def file_in_mounts(c: dict[str, Any], path: str) -> tuple[dict[str, Any], str]:
    """The mount holding `path` in container c, and the path relative to the mount."""
    for mount_path, mount in mounts(c).items():
        if path.startswith(mount_path.rstrip("/") + "/"):
            return mount, path[len(mount_path.rstrip("/")) + 1 :]
    raise AssertionError(f"{path} is on no volume of container {c['name']}")


def reranker(r: Rendered) -> dict[str, Any]:
    return r.one("Deployment", "reranker")


def operator(r: Rendered) -> dict[str, Any]:
    return r.one("Deployment", "operator")


def component(obj: dict[str, Any]) -> str | None:
    return obj["metadata"]["labels"].get("app.kubernetes.io/component")


def monitoring_peer(r: Rendered) -> dict[str, Any] | None:
    """The NetworkPolicy peer networkPolicy.monitoring describes, or None when it is unset."""
    mon = r.values["networkPolicy"]["monitoring"]
    if not mon["namespaceSelector"]:
        return None
    peer = {"namespaceSelector": mon["namespaceSelector"]}
    if mon["podSelector"]:
        peer["podSelector"] = mon["podSelector"]
    return peer


def chart_containers(deployment: dict[str, Any], r: Rendered) -> list[dict[str, Any]]:
    """The containers the chart itself defines (not reranker.extraContainers/extraInitContainers)."""
    extra = {
        c["name"] for key in ("extraContainers", "extraInitContainers") for c in r.values["reranker"][key]
    }
    return [c for c in all_containers(deployment) if c["name"] not in extra]


# ------------------------------------------------------------------------------------------ service


def test_service_exposes_only_the_data_plane(rendered: Rendered) -> None:
    services = rendered.all("Service")
    assert len(services) == 1, "only the data-plane Service; never one for the admin plane or agent"
    svc = services[0]
    assert [p["port"] for p in svc["spec"]["ports"]] == [DATA_PORT]
    deployment = reranker(rendered)
    assert selects(svc["spec"]["selector"], pod_labels(deployment))
    target = svc["spec"]["ports"][0]["targetPort"]
    server_ports = {p["name"]: p["containerPort"] for p in container(deployment, "server")["ports"]}
    assert server_ports.get(target, target) == DATA_PORT
    assert not selects(svc["spec"]["selector"], pod_labels(operator(rendered)))


# ------------------------------------------------------------------------------------ networkpolicy


def test_networkpolicy_admits_the_agent_port_only_from_the_operator(rendered: Rendered) -> None:
    policy = rendered.one("NetworkPolicy")["spec"]
    assert policy["policyTypes"] == ["Ingress"]
    rerank_labels = pod_labels(reranker(rendered))
    operator_labels = pod_labels(operator(rendered))
    assert selects(policy["podSelector"]["matchLabels"], rerank_labels)

    ports = sorted(p["port"] for rule in policy["ingress"] for p in rule["ports"])
    assert ports == [DATA_PORT, AGENT_PORT], "ingress names exactly 8080 and 9090 (never 8081)"
    for rule in policy["ingress"]:
        assert rule.get("ports"), "a rule without ports would admit every port"

    (agent_rule,) = [r for r in policy["ingress"] if r["ports"][0]["port"] == AGENT_PORT]
    assert agent_rule["from"], "9090 must never be open to everyone"
    monitoring = monitoring_peer(rendered)
    peers = agent_rule["from"]
    if monitoring is not None:
        # Prometheus, from the namespace the values name, for /metrics (the rest needs the token).
        assert peers[-1] == monitoring
        peers = peers[:-1]
    for peer in peers:
        assert set(peer) == {"podSelector"}, f"9090 admitted from more than pods in this namespace: {peer}"
        selector = peer["podSelector"]["matchLabels"]
        assert selects(selector, operator_labels)
        assert not selects(selector, rerank_labels), "reranker pods must not reach each other's agents"


def test_networkpolicy_data_plane_peers(rendered: Rendered) -> None:
    policy = rendered.one("NetworkPolicy")["spec"]
    (data_rule,) = [r for r in policy["ingress"] if r["ports"][0]["port"] == DATA_PORT]
    configured = rendered.values["networkPolicy"]["dataPlaneFrom"]
    if not configured:
        assert "from" not in data_rule, "empty dataPlaneFrom means from anywhere"
    else:
        peers = data_rule["from"]
        assert peers[: len(configured)] == configured
        # The operator reads /metrics during the soak, so it is always admitted.
        operator_labels = pod_labels(operator(rendered))
        assert any(
            selects(p.get("podSelector", {}).get("matchLabels", {"x": "y"}), operator_labels) for p in peers
        )
        # So is Prometheus, when networkPolicy.monitoring names it.
        monitoring = monitoring_peer(rendered)
        assert (monitoring in peers) == (monitoring is not None)


# ---------------------------------------------------------------------------------- reranker pods


def test_reranker_pods_are_locked_down(rendered: Rendered) -> None:
    deployment = reranker(rendered)
    spec = pod_spec(deployment)
    assert spec["automountServiceAccountToken"] is False
    pod_sc = spec["securityContext"]
    assert pod_sc["runAsNonRoot"] is True
    assert pod_sc.get("runAsUser", 1) != 0 and pod_sc.get("runAsGroup", 1) != 0
    assert pod_sc["seccompProfile"]["type"] == "RuntimeDefault"
    for c in all_containers(deployment):
        sc = c["securityContext"]
        assert sc["runAsNonRoot"] is True, c["name"]
        assert sc["readOnlyRootFilesystem"] is True, c["name"]
        assert sc["allowPrivilegeEscalation"] is False, c["name"]
        assert sc.get("privileged", False) is False, c["name"]
        assert sc["capabilities"]["drop"] == ["ALL"] and not sc["capabilities"].get("add"), c["name"]
        assert sc["seccompProfile"]["type"] == "RuntimeDefault", c["name"]
        assert "runAsUser" not in sc or sc["runAsUser"] != 0, c["name"]
    # Read-only root: every long-running container gets a writable /tmp of its own.
    for name in ("server", "agent"):
        tmp = mounts(container(deployment, name))["/tmp"]
        assert "emptyDir" in volume(deployment, tmp["name"]), name
    assert not spec.get("hostNetwork") and not spec.get("hostPID") and not spec.get("hostIPC")


def test_reranker_service_account_has_no_api_access(rendered: Rendered) -> None:
    deployment = reranker(rendered)
    sa_name = pod_spec(deployment)["serviceAccountName"]
    sa = rendered.named("ServiceAccount", sa_name)
    assert sa["automountServiceAccountToken"] is False
    # Cloud identity annotations never turn the API token back on (the webhooks project their own).
    assert (
        sa["metadata"].get("annotations", {}) == rendered.values["reranker"]["serviceAccount"]["annotations"]
    )
    for binding in rendered.all("RoleBinding") + rendered.all("ClusterRoleBinding"):
        for subject in binding["subjects"]:
            assert subject["name"] != sa_name, f"{binding['kind']} {binding['metadata']['name']} binds it"
    assert sa_name != pod_spec(operator(rendered))["serviceAccountName"]


def test_server_container(rendered: Rendered) -> None:
    deployment = reranker(rendered)
    server = container(deployment, "server")
    args = flags(server)
    assert server["command"] == ["hotswap-server"]
    assert "model" not in args, "pods start empty: the agent activates the boot version"
    assert args["admin-host"] == ["127.0.0.1"], "the admin plane never leaves the pod"
    assert args["admin-port"] == [str(ADMIN_PORT)]
    assert args["port"] == [str(DATA_PORT)]
    assert [p["containerPort"] for p in server["ports"]] == [DATA_PORT], "8081 is never a container port"
    assert server["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert server["livenessProbe"]["httpGet"]["path"] == "/healthz"
    for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
        port = server[probe]["httpGet"]["port"]
        assert port in ("http", DATA_PORT), f"{probe} must use the data plane, not {port}"
    # The admin token is a file on a pod-local memory volume, shared with the agent only.
    admin_token = args["admin-token-file"][0]
    mount, _ = file_in_mounts(server, admin_token)
    assert volume(deployment, mount["name"])["emptyDir"]["medium"] == "Memory"
    assert mount.get("readOnly") is True
    # The server never sees the agent token.
    agent_secret = volume(deployment, "agent-token")["secret"]["secretName"]
    for m in server["volumeMounts"]:
        assert volume(deployment, m["name"]).get("secret", {}).get("secretName") != agent_secret


def test_graceful_termination_outlasts_the_drain(rendered: Rendered) -> None:
    deployment = reranker(rendered)
    server = container(deployment, "server")
    drain = float(flags(server)["drain-timeout"][0])
    pre_stop = server["lifecycle"]["preStop"]["exec"]["command"]
    assert pre_stop[0] == "sleep"
    sleep = float(pre_stop[1])
    assert sleep > 0
    grace = pod_spec(deployment)["terminationGracePeriodSeconds"]
    assert grace > sleep + drain, f"grace {grace}s must exceed preStop {sleep}s + drain {drain}s"
    assert drain == rendered.values["reranker"]["server"]["drainTimeoutSeconds"]


def test_agent_container(rendered: Rendered) -> None:
    deployment = reranker(rendered)
    agent = container(deployment, "agent")
    server = container(deployment, "server")
    args = flags(agent)
    assert agent["command"] == ["hotswap-agent"]
    assert args["port"] == [str(AGENT_PORT)]
    assert [p["containerPort"] for p in agent["ports"]] == [AGENT_PORT]
    assert args["server-url"] == [f"http://127.0.0.1:{DATA_PORT}"]
    assert args["server-admin-url"] == [f"http://127.0.0.1:{ADMIN_PORT}"]
    assert args["server-admin-token-file"] == flags(server)["admin-token-file"]
    assert args["models-root"] == flags(server)["models-root"]
    assert int(args["keep"][0]) == rendered.values["reranker"]["agent"]["keep"]
    assert agent["livenessProbe"]["httpGet"]["path"] == "/healthz"
    probe = rendered.values["reranker"]["agent"]["livenessProbe"]
    assert {k: agent["livenessProbe"][k] for k in probe} == probe  # the values, not constants

    # Its token file is the agent-token Secret's key.
    token_mount, token_key = file_in_mounts(agent, args["token-file"][0])
    secret_volume = volume(deployment, token_mount["name"])["secret"]
    assert secret_volume["secretName"] == operator_token_secret(rendered)
    assert [i["key"] for i in secret_volume["items"]] == [token_key]
    assert token_key == rendered.values["agentToken"]["key"]

    # Its boot file is the boot ConfigMap's key, the same ConfigMap the RerankerModel names.
    boot_mount, boot_key = file_in_mounts(agent, args["boot-file"][0])
    boot_cm = volume(deployment, boot_mount["name"])["configMap"]["name"]
    configmap = rendered.named("ConfigMap", boot_cm)
    assert boot_key in configmap["data"]
    rrm = rendered.maybe("RerankerModel")
    if rrm is not None:
        assert rrm["spec"]["bootConfigMap"] == boot_cm


def test_agent_allows_the_models_source(rendered: Rendered) -> None:
    """The chart's own RerankerModel must not be refused by the chart's own agents."""
    allow = flags(container(reranker(rendered), "agent"))["allow"]
    assert allow == rendered.values["reranker"]["agent"]["allow"]
    uri = rendered.values["model"]["source"]["uri"]
    assert any(uri.startswith(prefix) for prefix in allow), f"{uri} not in {allow}"


def test_models_volume_is_shared_and_read_only_for_the_server(rendered: Rendered) -> None:
    deployment = reranker(rendered)
    models = rendered.values["reranker"]["models"]
    server_mount = mounts(container(deployment, "server"))[models["mountPath"]]
    agent_mount = mounts(container(deployment, "agent"))[models["mountPath"]]
    assert server_mount["name"] == agent_mount["name"]
    assert server_mount.get("readOnly") is True, "only the agent writes versions"
    assert not agent_mount.get("readOnly")
    vol = volume(deployment, server_mount["name"])
    kind = models["type"]
    assert kind in vol
    if kind == "persistentVolumeClaim":
        # A claim shared by every pod: each pod in its own folder.
        assert server_mount["subPathExpr"] == agent_mount["subPathExpr"] == "$(POD_NAME)"
        for name in ("server", "agent"):
            assert env(container(deployment, name))["POD_NAME"] == {
                "fieldRef": {"fieldPath": "metadata.name"}
            }
        claim = vol["persistentVolumeClaim"]["claimName"]
        if not models["persistentVolumeClaim"]["existingClaim"]:
            pvc = rendered.named("PersistentVolumeClaim", claim)
            assert pvc["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    else:
        assert "subPathExpr" not in server_mount


def test_gpu_resources(rendered: Rendered) -> None:
    deployment = reranker(rendered)
    gpu = rendered.values["reranker"]["gpu"]
    server_limits = container(deployment, "server")["resources"].get("limits", {})
    if gpu["enabled"]:
        assert server_limits[gpu["resourceName"]] == gpu["count"]
    else:
        assert not any(k.endswith("/gpu") for k in server_limits)
    for c in all_containers(deployment):
        if c["name"] != "server":
            assert not any(k.endswith("/gpu") for k in c["resources"].get("limits", {})), c["name"]


def test_replicas_and_pdb(rendered: Rendered) -> None:
    deployment = reranker(rendered)
    autoscaling = rendered.values["reranker"]["autoscaling"]
    if autoscaling["enabled"] or autoscaling["external"]:
        # The autoscaler owns the count: a `helm upgrade` must not reset it.
        assert "replicas" not in deployment["spec"]
    else:
        assert deployment["spec"]["replicas"] == rendered.values["reranker"]["replicas"]
    hpa = rendered.maybe("HorizontalPodAutoscaler")
    assert (hpa is not None) == autoscaling["enabled"]
    pdb = rendered.maybe("PodDisruptionBudget")
    if rendered.values["reranker"]["podDisruptionBudget"]["enabled"]:
        assert pdb is not None
        assert selects(pdb["spec"]["selector"]["matchLabels"], pod_labels(deployment))
        assert (
            pdb["spec"]["maxUnavailable"]
            == rendered.values["reranker"]["podDisruptionBudget"]["maxUnavailable"]
        )
    else:
        assert pdb is None


# -------------------------------------------------------------------------------------- operator


def operator_token_secret(r: Rendered) -> str:
    return r.values["agentToken"]["existingSecret"] or r.one("Secret", "agent-token")["metadata"]["name"]


def test_operator_deployment(rendered: Rendered) -> None:
    deployment = operator(rendered)
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}
    op = container(deployment, "operator")
    args = flags(op)
    assert "standalone" in args, "kopf peering is off: one operator, no peering objects"
    liveness_url = args["liveness"][0]
    port = int(re.fullmatch(r"http://0\.0\.0\.0:(\d+)/healthz", liveness_url).group(1))  # type: ignore[union-attr]
    probe = op["livenessProbe"]["httpGet"]
    assert probe["path"] == "/healthz"
    named = {p["name"]: p["containerPort"] for p in op["ports"]}
    assert named.get(probe["port"], probe["port"]) == port
    variables = env(op)
    assert variables["HOTSWAP_OPERATOR_AGENT_PORT"] == str(AGENT_PORT)
    assert variables["HOTSWAP_OPERATOR_SERVER_PORT"] == str(DATA_PORT)
    mount, key = file_in_mounts(op, variables["HOTSWAP_OPERATOR_AGENT_TOKEN_FILE"])
    secret_volume = volume(deployment, mount["name"])["secret"]
    assert secret_volume["secretName"] == operator_token_secret(rendered)
    assert [i["key"] for i in secret_volume["items"]] == [key]
    # Non-root and read-only like everything else; it does use its API token.
    sc = op["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True and sc["capabilities"]["drop"] == ["ALL"]
    assert pod_spec(deployment)["securityContext"]["runAsNonRoot"] is True
    # Scope flags.
    if rendered.values["operator"]["scope"] == "cluster":
        assert "all-namespaces" in args and "namespace" not in args
    else:
        expected = [NAMESPACE, *rendered.values["operator"]["extraWatchNamespaces"]]
        assert args["namespace"] == expected and "all-namespaces" not in args


# Per resource, the verbs the operator may have: exactly what it needs.
ALLOWED_VERBS = {
    ("hotswap.dev", "rerankermodels"): {"get", "list", "watch", "patch"},
    ("hotswap.dev", "rerankermodels/status"): {"get", "patch"},
    ("", "pods"): {"get", "list", "watch"},
    ("", "events"): {"create"},
    ("", "configmaps"): {"get", "create", "patch"},
    ("", "namespaces"): {"list", "watch"},
}


def rbac_grants(role: dict[str, Any]) -> dict[tuple[str, str], set[str]]:
    grants: dict[tuple[str, str], set[str]] = {}
    for rule in role["rules"]:
        assert "nonResourceURLs" not in rule
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                grants.setdefault((group, resource), set()).update(rule["verbs"])
    return grants


def test_operator_rbac_is_least_privilege(rendered: Rendered) -> None:
    """The operator's roles; the uninstall hook's Role is test_helm_platform.py's."""
    scope = rendered.values["operator"]["scope"]
    roles = [r for r in rendered.all("Role") + rendered.all("ClusterRole") if component(r) == "operator"]
    assert roles
    for role in roles:
        for rule in role["rules"]:
            for field in ("apiGroups", "resources", "verbs"):
                assert "*" not in rule[field], f"wildcard {field} in {role['metadata']['name']}"
        grants = rbac_grants(role)
        assert not any(resource == "secrets" for _, resource in grants), "the token is a mounted file"
        for key, verbs in grants.items():
            assert key in ALLOWED_VERBS, f"unexpected grant {key}"
            assert verbs <= ALLOWED_VERBS[key], f"{key}: {verbs - ALLOWED_VERBS[key]} not needed"
        for verb in ("escalate", "bind", "impersonate", "delete", "deletecollection", "update"):
            assert not any(verb in verbs for verbs in grants.values()), verb
        assert ("", "namespaces") not in grants or scope == "cluster", "namespaces only when cluster-wide"
        required = {k: v for k, v in ALLOWED_VERBS.items() if k != ("", "namespaces")}
        assert {k: grants.get(k) for k in required} == required, "the operator needs all of these"

    sa = pod_spec(operator(rendered))["serviceAccountName"]

    def ours(kind: str) -> list[dict[str, Any]]:
        return [o for o in rendered.all(kind) if component(o) == "operator"]

    if scope == "cluster":
        assert not ours("Role") and not ours("RoleBinding")
        (binding,) = ours("ClusterRoleBinding")
        (role,) = ours("ClusterRole")
        assert ("", "namespaces") in rbac_grants(role)
    else:
        assert not rendered.all("ClusterRole") and not rendered.all("ClusterRoleBinding")
        namespaces = [NAMESPACE, *rendered.values["operator"]["extraWatchNamespaces"]]
        assert sorted(r["metadata"]["namespace"] for r in ours("Role")) == sorted(namespaces)
        assert sorted(b["metadata"]["namespace"] for b in ours("RoleBinding")) == sorted(namespaces)
    for binding in ours("RoleBinding") + ours("ClusterRoleBinding"):
        assert binding["subjects"] == [{"kind": "ServiceAccount", "name": sa, "namespace": NAMESPACE}]
        kind = "ClusterRole" if binding["kind"] == "ClusterRoleBinding" else "Role"
        assert binding["roleRef"]["kind"] == kind
        assert any(
            r["metadata"]["name"] == binding["roleRef"]["name"]
            and r["metadata"].get("namespace") == binding["metadata"].get("namespace")
            for r in rendered.all(kind)
        )


# ------------------------------------------------------------------------- secret, boot, resource


def test_agent_token_secret_is_generated_once_and_kept(rendered: Rendered) -> None:
    secret = rendered.maybe("Secret", "agent-token")
    existing = rendered.values["agentToken"]["existingSecret"]
    if existing:
        assert secret is None, "an existing Secret is used as-is"
        return
    assert secret is not None
    assert secret["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    token = base64.b64decode(secret["data"][rendered.values["agentToken"]["key"]])
    assert len(token) >= 32 and token.isalnum()


def test_boot_configmap_is_created_once_for_the_operator(rendered: Rendered) -> None:
    deployment = reranker(rendered)
    name = volume(deployment, "boot")["configMap"]["name"]
    configmap = rendered.named("ConfigMap", name)
    assert configmap["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    (raw,) = configmap["data"].values()
    boot = json.loads(raw)
    model = rendered.values["model"]
    source = {"uri": model["source"]["uri"]}
    if model["source"]["sha256"]:
        source["sha256"] = model["source"]["sha256"]
    assert boot == {"version": model["version"], "source": source}


def test_reranker_model(rendered: Rendered) -> None:
    rrm = rendered.maybe("RerankerModel")
    model = rendered.values["model"]
    if not model["create"]:
        assert rrm is None
        return
    assert rrm is not None
    assert rrm["apiVersion"] == "hotswap.dev/v1alpha1"
    spec = rrm["spec"]
    selector = spec["selector"]["matchLabels"]
    assert selects(selector, pod_labels(reranker(rendered)))
    assert not selects(selector, pod_labels(operator(rendered)))
    assert spec["version"] == model["version"]
    assert spec["source"]["uri"] == model["source"]["uri"]
    assert spec["source"].get("sha256", "") == model["source"]["sha256"]
    rollout = spec["rollout"]
    assert rollout.get("canary", []) == model["rollout"]["canary"]
    assert rollout["analysis"] == model["rollout"]["analysis"]
    assert rollout["prefetch"] == model["rollout"]["prefetch"]
    assert spec["rollback"] == model["rollback"]
    assert spec["historyLimit"] == model["historyLimit"]


# -------------------------------------------------------------------------------------- hygiene


def test_every_object_is_labelled_and_namespaced(rendered: Rendered) -> None:
    for obj in rendered.objects:
        meta = obj["metadata"]
        where = f"{obj['kind']}/{meta['name']}"
        assert len(meta["name"]) <= 63 or obj["kind"] in CLUSTER_SCOPED, where
        labels = meta["labels"]
        assert labels["app.kubernetes.io/managed-by"] == "Helm", where
        assert labels["app.kubernetes.io/instance"] == "rr", where
        assert labels["app.kubernetes.io/part-of"] == "hotswap", where
        for key, value in rendered.values["commonLabels"].items():
            assert labels[key] == value, where
        if obj["kind"] in CLUSTER_SCOPED:
            assert "namespace" not in meta, where
        else:
            # Monitoring objects may live where Prometheus and Grafana look for them.
            values = rendered.values
            allowed = {
                NAMESPACE,
                *values["operator"]["extraWatchNamespaces"],
                values["serviceMonitor"]["namespace"] or NAMESPACE,
                values["prometheusRule"]["namespace"] or NAMESPACE,
                values["grafana"]["dashboard"]["namespace"] or NAMESPACE,
            }
            assert meta["namespace"] in allowed, where
            if (
                meta["namespace"] != NAMESPACE
                and meta["namespace"] not in values["operator"]["extraWatchNamespaces"]
            ):
                assert obj["kind"] in ("ServiceMonitor", "PodMonitor", "PrometheusRule", "ConfigMap"), where
        if HOOK_ANNOTATION in meta.get("annotations", {}):
            assert component(obj) == "uninstall", f"{where}: the only hooks are the uninstall hook's"


def test_one_image_for_every_container(rendered: Rendered) -> None:
    """The chart's own containers (the uninstall hook's too) run the one image; extras are yours."""
    images = {c["image"] for d in rendered.all("Deployment") for c in chart_containers(d, rendered)}
    images |= {c["image"] for j in rendered.all("Job") for c in j["spec"]["template"]["spec"]["containers"]}
    assert len(images) == 1
    image = rendered.values["image"]
    (ref,) = images
    if image["digest"]:
        assert ref == f"{image['repository']}@{image['digest']}"
    else:
        assert ref.startswith(image["repository"] + ":") and not ref.endswith(":latest")


@pytest.mark.parametrize("component", ["operator", "reranker"])
def test_selector_labels_are_stable(rendered: Rendered, component: str) -> None:
    """Deployment selectors are immutable: they must not carry the chart or app version."""
    deployment = rendered.one("Deployment", component)
    selector = deployment["spec"]["selector"]["matchLabels"]
    assert set(selector) == {
        "app.kubernetes.io/name",
        "app.kubernetes.io/instance",
        "app.kubernetes.io/component",
    }
    assert selects(selector, pod_labels(deployment))


# Volume types the Pod Security Standards "restricted" profile allows.
RESTRICTED_VOLUMES = {
    "configMap",
    "csi",
    "downwardAPI",
    "emptyDir",
    "ephemeral",
    "persistentVolumeClaim",
    "projected",
    "secret",
}


@pytest.mark.parametrize("component", ["operator", "reranker", "uninstall"])
def test_pods_meet_pod_security_restricted(rendered: Rendered, component: str) -> None:
    """Every pod runs in a namespace labelled pod-security.kubernetes.io/enforce=restricted."""
    kind = "Job" if component == "uninstall" else "Deployment"
    deployment = rendered.maybe(kind, component)
    if deployment is None:
        assert kind == "Job" and not rendered.values["model"]["create"]
        return
    spec = pod_spec(deployment)
    for vol in spec.get("volumes", []):
        kinds = set(vol) - {"name"}
        assert kinds <= RESTRICTED_VOLUMES, f"{vol['name']}: {kinds}"
    assert spec["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
    for c in all_containers(deployment):
        sc = c["securityContext"]
        assert sc["allowPrivilegeEscalation"] is False and sc["capabilities"]["drop"] == ["ALL"], c["name"]
        assert sc["runAsNonRoot"] is True, c["name"]
        assert not any(p.get("hostPort") for p in c.get("ports", [])), c["name"]
