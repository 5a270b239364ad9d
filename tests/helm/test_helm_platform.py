"""What a platform team turns on: autoscaling, cloud identity, monitoring, the uninstall hook, extras.

The `platform` values set (values/platform.yaml) turns everything on; a few cases render the chart
again with `--set` overrides. The Prometheus Operator kinds have no offline schema, so their
content is checked here: selectors that match the chart's Service and pods, the job labels the
alerts select on, alerts restricted to the rerank routes, and metric names the processes export.
"""

from __future__ import annotations

import json
import re
import ssl
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from chartkit import HOOK_ANNOTATION, NAMESPACE, RELEASE, HelmRun, Rendered, merge_values, template_args

MONITORING_KINDS = ("HorizontalPodAutoscaler", "ServiceMonitor", "PodMonitor", "PrometheusRule")
RERANK_ROUTES = {"/rerank", "/v1/rerank", "/v2/rerank"}
# Series from kube-state-metrics: its own, and the custom resource state of docs/operations.md.
KSM_SERIES = {
    "kube_deployment_status_replicas_available",
    "hotswap_rerankermodel_condition",
    "hotswap_rerankermodel_rollout_phase",
    "hotswap_rerankermodel_info",
}


@pytest.fixture(scope="module")
def render(helm_run: HelmRun, chart_defaults: dict[str, Any]) -> Callable[..., Rendered]:
    """Render the chart with `--set`-style overrides (a dict merged like Helm merges values)."""

    def run(override: dict[str, Any], tmp: Path | None = None) -> Rendered:
        assert tmp is not None
        path = tmp / f"values-{abs(hash(json.dumps(override, sort_keys=True)))}.yaml"
        path.write_text(yaml.safe_dump(override))
        proc = helm_run(*template_args(path))
        objects = [o for o in yaml.safe_load_all(proc.stdout) if o]
        return Rendered("override", merge_values(chart_defaults, override), objects)

    return run


@pytest.fixture
def platform(render_set: Callable[[str], Rendered]) -> Rendered:
    return render_set("platform")


def pod_spec(obj: dict[str, Any]) -> dict[str, Any]:
    return obj["spec"]["template"]["spec"]


def reranker(r: Rendered) -> dict[str, Any]:
    return r.one("Deployment", "reranker")


def names(items: list[dict[str, Any]]) -> list[str]:
    return [i["name"] for i in items]


# ------------------------------------------------------------------------------------- defaults


def test_defaults_render_none_of_the_optional_platform_objects(default_render: Rendered) -> None:
    kinds = {o["kind"] for o in default_render.objects}
    assert not kinds & set(MONITORING_KINDS)
    dashboards = [
        o for o in default_render.all("ConfigMap") if o["metadata"]["labels"].get("grafana_dashboard")
    ]
    assert not dashboards
    assert reranker(default_render)["spec"]["replicas"] == 2
    assert (
        "--log-format=json"
        not in default_render.one("Deployment", "operator")["spec"]["template"]["spec"]["containers"][0][
            "args"
        ]
    )


# ----------------------------------------------------------------------------------- autoscaling


def test_hpa_owns_the_replicas(platform: Rendered) -> None:
    deployment = reranker(platform)
    assert "replicas" not in deployment["spec"], "helm upgrade would reset the HPA's count"
    hpa = platform.one("HorizontalPodAutoscaler")
    a = platform.values["reranker"]["autoscaling"]
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": deployment["metadata"]["name"],
    }
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (a["minReplicas"], a["maxReplicas"])
    cpu, *extra = hpa["spec"]["metrics"]
    # The server's CPU only (the agent idles between rollouts), then the values' own metrics.
    assert cpu["type"] == "ContainerResource"
    assert cpu["containerResource"]["container"] == "server"
    assert cpu["containerResource"]["target"]["averageUtilization"] == a["targetCPUUtilizationPercentage"]
    assert extra == a["metrics"]
    assert hpa["spec"]["behavior"] == a["behavior"]


def test_external_autoscaler_gets_no_hpa_and_no_replicas(
    render: Callable[..., Rendered], tmp_path: Path
) -> None:
    r = render({"reranker": {"autoscaling": {"external": True}}}, tmp_path)
    assert "replicas" not in reranker(r)["spec"]
    assert r.maybe("HorizontalPodAutoscaler") is None


@pytest.mark.parametrize(
    ("override", "message"),
    [
        (
            ["--set", "reranker.autoscaling.enabled=true", "--set", "reranker.autoscaling.external=true"],
            "not both",
        ),
        (
            ["--set", "reranker.autoscaling.enabled=true", "--set", "reranker.autoscaling.maxReplicas=1"],
            "maxReplicas",
        ),
        (
            [
                "--set",
                "reranker.autoscaling.enabled=true",
                "--set",
                "reranker.autoscaling.targetCPUUtilizationPercentage=0",
            ],
            "targetCPUUtilizationPercentage or metrics",
        ),
        (["--set", "reranker.serviceAccount.create=false"], "reranker.serviceAccount.name is required"),
        (["--set", "operator.logFormat=yaml"], "operator/logFormat"),
        (["--set", "serviceMonitor.interval=often"], "serviceMonitor/interval"),
        (["--set", "grafana.dashboard.bogus=1"], "additional properties 'bogus' not allowed"),
    ],
    ids=[
        "hpa-and-external",
        "max-below-min",
        "no-metric",
        "sa-without-name",
        "log-format",
        "interval",
        "unknown",
    ],
)
def test_bad_platform_values_fail(helm_run: HelmRun, override: list[str], message: str) -> None:
    proc = helm_run(*template_args(None, *override), check=False)
    assert proc.returncode != 0, f"helm template accepted {override}"
    assert message in proc.stderr, proc.stderr


# -------------------------------------------------------------------------------- cloud identity


def test_reranker_service_account_carries_the_cloud_identity(platform: Rendered) -> None:
    spec = pod_spec(reranker(platform))
    sa = platform.named("ServiceAccount", spec["serviceAccountName"])
    values = platform.values["reranker"]["serviceAccount"]
    assert sa["metadata"]["annotations"] == values["annotations"]
    assert sa["metadata"]["labels"]["team"] == "search"
    # IRSA/GKE/Azure bring their own projected token; the API token stays unmounted.
    assert sa["automountServiceAccountToken"] is False and spec["automountServiceAccountToken"] is False
    assert (
        reranker(platform)["spec"]["template"]["metadata"]["labels"]["azure.workload.identity/use"] == "true"
    )


def test_an_existing_service_account_is_used_as_named(
    render: Callable[..., Rendered], tmp_path: Path
) -> None:
    r = render({"reranker": {"serviceAccount": {"create": False, "name": "ml-models-reader"}}}, tmp_path)
    spec = pod_spec(reranker(r))
    assert spec["serviceAccountName"] == "ml-models-reader"
    assert spec["automountServiceAccountToken"] is False
    assert not [sa for sa in r.all("ServiceAccount") if sa["metadata"]["name"] == "ml-models-reader"]


# ------------------------------------------------------------------------------------ monitoring


def exported_series() -> set[str]:
    """Every series name the server and the agent export, from their metric registries."""
    server = pytest.importorskip("hotswap_server.metrics")
    agent = pytest.importorskip("hotswap_agent.metrics")
    series: set[str] = set()
    for registry in (server.ServerMetrics().registry, agent.AgentMetrics().registry):
        for family in registry.collect():
            suffixes = {
                "counter": ["_total"],
                "histogram": ["_bucket", "_count", "_sum"],
                "info": ["_info"],
            }.get(family.type, [""])
            series |= {family.name + s for s in suffixes}
    return series


def selector_of(expr: str, metric: str) -> list[dict[str, str]]:
    """The label matchers of every use of `metric` in a PromQL expression."""
    found = []
    for m in re.finditer(re.escape(metric) + r"\{([^}]*)\}", expr):
        matchers = {}
        for part in re.finditer(r'(\w+)\s*(=~|!=|=)\s*"([^"]*)"', m.group(1)):
            matchers[part.group(1) + ("" if part.group(2) == "=" else part.group(2))] = part.group(3)
        found.append(matchers)
    return found


def test_monitors_scrape_the_servers_and_the_agents(platform: Rendered) -> None:
    sm_values = platform.values["serviceMonitor"]
    deployment = reranker(platform)
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    service = platform.one("Service")
    server_ports = {p["name"] for c in pod_spec(deployment)["containers"] for p in c.get("ports", [])}

    sm = platform.one("ServiceMonitor")
    pm = platform.one("PodMonitor")
    for monitor in (sm, pm):
        assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
        assert monitor["metadata"]["namespace"] == sm_values["namespace"]
        assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
        assert monitor["spec"]["namespaceSelector"] == {"matchNames": [NAMESPACE]}
    # The ServiceMonitor selects the data-plane Service and scrapes its one port.
    assert all(
        service["metadata"]["labels"].get(k) == v for k, v in sm["spec"]["selector"]["matchLabels"].items()
    )
    (endpoint,) = sm["spec"]["endpoints"]
    assert endpoint["port"] in {p["name"] for p in service["spec"]["ports"]}
    # The PodMonitor selects the reranker pods and scrapes the agent port, which no Service has.
    assert all(pod_labels.get(k) == v for k, v in pm["spec"]["selector"]["matchLabels"].items())
    (pod_endpoint,) = pm["spec"]["podMetricsEndpoints"]
    assert pod_endpoint["port"] == "agent" and "agent" in server_ports
    for ep in (endpoint, pod_endpoint):
        assert ep["path"] == "/metrics"
        assert ep["interval"] == sm_values["interval"] and ep["scrapeTimeout"] == sm_values["scrapeTimeout"]
        assert ep["metricRelabelings"] == sm_values["metricRelabelings"]
        assert ep["relabelings"][0]["targetLabel"] == "job"
    assert endpoint["relabelings"][0]["replacement"] == f"{RELEASE}-hotswap-server"
    assert pod_endpoint["relabelings"][0]["replacement"] == f"{RELEASE}-hotswap-agent"


def test_networkpolicy_admits_prometheus_to_both_metrics_ports(platform: Rendered) -> None:
    policy = platform.one("NetworkPolicy")["spec"]
    mon = platform.values["networkPolicy"]["monitoring"]
    peer = {"namespaceSelector": mon["namespaceSelector"], "podSelector": mon["podSelector"]}
    by_port = {rule["ports"][0]["port"]: rule["from"] for rule in policy["ingress"]}
    assert peer in by_port[9090] and peer in by_port[8080]


def test_agent_port_stays_operator_only_without_a_monitoring_namespace(
    render: Callable[..., Rendered], tmp_path: Path
) -> None:
    r = render({"serviceMonitor": {"enabled": True}}, tmp_path)
    (agent_rule,) = [x for x in r.one("NetworkPolicy")["spec"]["ingress"] if x["ports"][0]["port"] == 9090]
    assert [set(p) for p in agent_rule["from"]] == [{"podSelector"}]


def alert_rules(r: Rendered) -> dict[str, dict[str, Any]]:
    rule = r.one("PrometheusRule")
    return {x["alert"]: x for group in rule["spec"]["groups"] for x in group["rules"]}


def test_alerts_count_rerank_routes_only(platform: Rendered) -> None:
    """Probe 503s while a pod boots or drains (/readyz) must never feed an error or latency alert."""
    views = pytest.importorskip("hotswap_server.views_data")
    routes = {r.path for r in views.routes}
    scoring = {r for r in routes if r.endswith("rerank")}
    assert scoring == RERANK_ROUTES, "a new scoring route: add it to hotswap.metrics.rerankRoutes"
    chart_rules = {k: v for k, v in alert_rules(platform).items() if k != "HotswapNoTraffic"}
    checked = 0
    for name, rule in chart_rules.items():
        for metric in ("hotswap_requests_total", "hotswap_request_duration_seconds_bucket"):
            for matchers in selector_of(rule["expr"], metric):
                pattern = matchers["route=~"]
                allowed = {route for route in routes if re.fullmatch(pattern, route)}
                assert allowed == RERANK_ROUTES, f"{name}: {pattern} admits {allowed}"
                assert "/readyz" not in allowed and "/healthz" not in allowed and "/metrics" not in allowed
                checked += 1
    assert checked >= 3


def test_alerts_select_this_release_and_known_series(platform: Rendered) -> None:
    exported = exported_series()
    jobs = {
        "server": f"{RELEASE}-hotswap-server",
        "agent": f"{RELEASE}-hotswap-agent",
    }
    rules = alert_rules(platform)
    expected = {
        "HotswapRerankErrors",
        "HotswapRerankLatencyHigh",
        "HotswapQueueBackingUp",
        "HotswapPodNotServing",
        "HotswapSwapPauseLong",
        "HotswapVersionsDiverge",
        "HotswapAgentCannotReachServer",
        "HotswapRolloutFailed",
        "HotswapRolloutStuck",
        "HotswapOperatorDown",
        "HotswapNoTraffic",
    }
    assert set(rules) == expected
    for name, rule in rules.items():
        if name == "HotswapNoTraffic":
            assert rule["labels"] == {"severity": "info"}
            continue
        assert rule["labels"]["team"] == "search" and rule["labels"]["severity"] in ("warning", "critical")
        assert rule["annotations"]["summary"]
        used = set(re.findall(r"\b(hotswap_[a-z_]+|kube_[a-z_]+)\{", rule["expr"]))
        assert used, name
        for metric in used:
            assert metric in exported or metric in KSM_SERIES, f"{name}: {metric} is exported by nobody"
            for matchers in selector_of(rule["expr"], metric):
                assert matchers["namespace"] == NAMESPACE, name
                if metric.startswith("hotswap_agent_"):
                    assert matchers["job"] == jobs["agent"], name
                elif metric in exported:
                    assert matchers["job"] == jobs["server"], name
                elif metric.startswith("hotswap_rerankermodel_"):
                    assert matchers["name"] == f"{RELEASE}-hotswap", name
    # Not on probes: "not serving" waits for a boot to fail, not for a pod to drain.
    assert (
        rules["HotswapPodNotServing"]["for"]
        == platform.values["prometheusRule"]["thresholds"]["notServingFor"]
    )
    assert "0.005" in rules["HotswapRerankErrors"]["expr"]
    assert rules["HotswapRerankErrors"]["labels"]["severity"] == "critical"


def test_rule_without_kube_state_metrics(render: Callable[..., Rendered], tmp_path: Path) -> None:
    r = render({"prometheusRule": {"enabled": True, "kubeStateMetrics": False}}, tmp_path)
    rules = alert_rules(r)
    assert not {"HotswapRolloutFailed", "HotswapRolloutStuck", "HotswapOperatorDown"} & set(rules)
    assert "HotswapVersionsDiverge" in rules, "a stuck rollout still shows as diverging versions"
    assert r.one("PrometheusRule")["metadata"]["namespace"] == NAMESPACE


def test_grafana_dashboard(platform: Rendered) -> None:
    (cm,) = [o for o in platform.all("ConfigMap") if o["metadata"]["labels"].get("grafana_dashboard") == "1"]
    assert cm["metadata"]["namespace"] == "monitoring"
    assert cm["metadata"]["annotations"] == {"grafana_folder": "ML"}
    (raw,) = cm["data"].values()
    assert "__" + "SERVER__" not in raw and "__MODEL__" not in raw and "__AGENT__" not in raw
    dashboard = json.loads(raw)
    assert len(dashboard["uid"]) <= 40 and NAMESPACE in dashboard["title"]
    titles = " | ".join(p["title"].lower() for p in dashboard["panels"])
    for topic in (
        "swap pause",
        "version per pod",
        "rollout phase",
        "latency",
        "5xx",
        "queued",
        "agent operations",
    ):
        assert topic in titles, topic
    exported = exported_series()
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for panel in dashboard["panels"]:
        assert panel["datasource"]["uid"] == "${datasource}"
        for target in panel["targets"]:
            for metric in re.findall(r"\b(hotswap_[a-z_]+)\{", target["expr"]):
                assert metric in exported or metric in KSM_SERIES, f"{panel['title']}: {metric}"
                for matchers in selector_of(target["expr"], metric):
                    assert matchers["namespace"] == NAMESPACE, panel["title"]


# ------------------------------------------------------------------------------ uninstall hook


def hook_objects(r: Rendered) -> list[dict[str, Any]]:
    return [o for o in r.objects if HOOK_ANNOTATION in o["metadata"].get("annotations", {})]


def test_uninstall_hook_objects_clean_up_after_themselves(default_render: Rendered) -> None:
    hooks = hook_objects(default_render)
    assert sorted(o["kind"] for o in hooks) == ["Job", "Role", "RoleBinding", "ServiceAccount"]
    weights = {}
    for obj in hooks:
        annotations = obj["metadata"]["annotations"]
        assert annotations[HOOK_ANNOTATION] == "pre-delete"
        policy = set(annotations["helm.sh/hook-delete-policy"].split(","))
        assert policy == {"before-hook-creation", "hook-succeeded"}
        weights[obj["kind"]] = int(annotations["helm.sh/hook-weight"])
    # The RBAC exists before the Job starts.
    assert max(weights[k] for k in ("ServiceAccount", "Role", "RoleBinding")) < weights["Job"]


def test_uninstall_hook_rbac_is_one_object_only(default_render: Rendered) -> None:
    (role,) = [
        r
        for r in default_render.all("Role")
        if r["metadata"]["labels"]["app.kubernetes.io/component"] == "uninstall"
    ]
    model = default_render.one("RerankerModel")["metadata"]["name"]
    assert role["rules"] == [
        {
            "apiGroups": ["hotswap.dev"],
            "resources": ["rerankermodels"],
            "resourceNames": [model],
            "verbs": ["get", "delete", "patch"],
        }
    ]
    (binding,) = [
        b
        for b in default_render.all("RoleBinding")
        if b["metadata"]["labels"]["app.kubernetes.io/component"] == "uninstall"
    ]
    job = default_render.one("Job", "uninstall")
    sa = pod_spec(job)["serviceAccountName"]
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "Role",
        "name": role["metadata"]["name"],
    }
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": sa, "namespace": NAMESPACE}]
    assert (
        default_render.named("ServiceAccount", sa)["metadata"]["annotations"][HOOK_ANNOTATION] == "pre-delete"
    )
    # Nothing else binds the hook's account, and it binds nothing but its Role.
    for other in default_render.all("RoleBinding") + default_render.all("ClusterRoleBinding"):
        if other is not binding:
            assert all(s["name"] != sa for s in other["subjects"])
    spec = pod_spec(job)
    assert spec["restartPolicy"] == "Never" and spec["automountServiceAccountToken"] is True
    env = {e["name"]: e["value"] for e in spec["containers"][0]["env"]}
    assert env["MODEL"] == model and env["NAMESPACE"] == NAMESPACE
    assert env["FINALIZER"] == "hotswap.dev/operator"
    assert job["spec"]["activeDeadlineSeconds"] > int(env["TIMEOUT_SECONDS"])


def test_operator_finalizer_is_the_one_the_hook_removes() -> None:
    handlers = Path(__file__).resolve().parents[2] / "operator" / "hotswap_operator" / "handlers.py"
    assert 'settings.persistence.finalizer = f"{GROUP}/operator"' in handlers.read_text()


@pytest.mark.parametrize(
    "override",
    [{"uninstallHook": {"enabled": False}}, {"model": {"create": False}}],
    ids=["disabled", "no-model"],
)
def test_no_uninstall_hook(render: Callable[..., Rendered], tmp_path: Path, override: dict[str, Any]) -> None:
    assert not hook_objects(render(override, tmp_path))


class FakeApi:
    """The RerankerModel endpoint of an API server, with an operator that may or may not run."""

    def __init__(self, operator_running: bool, exists: bool = True) -> None:
        self.operator_running = operator_running
        self.obj: dict[str, Any] | None = (
            {
                "metadata": {
                    "name": "rr-hotswap",
                    "resourceVersion": "7",
                    "finalizers": ["hotswap.dev/operator"],
                }
            }
            if exists
            else None
        )
        self.calls: list[tuple[str, Any]] = []
        self.gets_after_delete = 0

    def urlopen(self, req: urllib.request.Request, context: Any = None, timeout: float = 0) -> Any:
        assert (
            req.full_url
            == "https://10.0.0.1:443/apis/hotswap.dev/v1alpha1/namespaces/ml/rerankermodels/rr-hotswap"
        )
        assert req.headers["Authorization"] == "Bearer sa-token"
        body: Any = json.loads(req.data) if isinstance(req.data, bytes) else None
        self.calls.append((req.get_method(), body))
        if self.obj is None:
            raise urllib.error.HTTPError(req.full_url, 404, "not found", {}, None)  # type: ignore[arg-type]
        method = req.get_method()
        if method == "DELETE":
            self.obj["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:00Z"
        elif method == "PATCH":
            assert req.headers["Content-type"] == "application/merge-patch+json"
            assert body["metadata"]["resourceVersion"] == "7"
            self.obj["metadata"]["finalizers"] = body["metadata"]["finalizers"]
        elif method == "GET" and self.obj["metadata"].get("deletionTimestamp"):
            self.gets_after_delete += 1
            if self.operator_running and self.gets_after_delete >= 3:
                self.obj["metadata"]["finalizers"] = []
        if self.obj["metadata"].get("deletionTimestamp") and not self.obj["metadata"]["finalizers"]:
            self.obj = None
            raise urllib.error.HTTPError(req.full_url, 404, "not found", {}, None)  # type: ignore[arg-type]
        return _Response(self.obj)


class _Response:
    def __init__(self, obj: dict[str, Any]) -> None:
        self.data = json.dumps(obj).encode()

    def __enter__(self) -> _Response:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def read(self, *args: Any) -> bytes:
        return self.data


def run_hook(default_render: Rendered, api: FakeApi, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> int:
    container = pod_spec(default_render.one("Job", "uninstall"))["containers"][0]
    assert container["command"][:2] == ["python", "-c"]
    script = container["command"][2]
    sa_dir = "/var/run/secrets/kubernetes.io/serviceaccount"
    assert sa_dir in script
    (tmp_path / "token").write_text("sa-token\n")
    (tmp_path / "ca.crt").write_text("")
    script = script.replace(sa_dir, str(tmp_path))
    for e in container["env"]:
        monkeypatch.setenv(e["name"], e["value"])
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.0.0.1")
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", "443")
    clock = [0.0]
    monkeypatch.setattr(time, "monotonic", lambda: clock[0])
    monkeypatch.setattr(time, "sleep", lambda s: clock.__setitem__(0, clock[0] + s))
    monkeypatch.setattr(ssl, "create_default_context", lambda cafile=None: None)
    monkeypatch.setattr(urllib.request, "urlopen", api.urlopen)
    with pytest.raises(SystemExit) as done:
        exec(compile(script, "uninstall-hook", "exec"), {"__name__": "__main__"})
    code = done.value.code
    assert code is None or isinstance(code, int), code
    return code or 0


def test_uninstall_hook_lets_the_running_operator_release_the_model(
    default_render: Rendered, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    api = FakeApi(operator_running=True)
    assert run_hook(default_render, api, tmp_path, monkeypatch) == 0
    methods = [m for m, _ in api.calls]
    assert methods[:2] == ["GET", "DELETE"] and "PATCH" not in methods, methods
    assert api.obj is None


def test_uninstall_hook_removes_the_finalizer_when_no_operator_runs(
    default_render: Rendered, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    api = FakeApi(operator_running=False)
    assert run_hook(default_render, api, tmp_path, monkeypatch) == 0
    patches = [body for m, body in api.calls if m == "PATCH"]
    assert patches == [{"metadata": {"resourceVersion": "7", "finalizers": []}}]
    assert api.obj is None


def test_uninstall_hook_with_the_model_already_gone(
    default_render: Rendered, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    api = FakeApi(operator_running=False, exists=False)
    assert run_hook(default_render, api, tmp_path, monkeypatch) == 0
    assert [m for m, _ in api.calls] == ["GET"]


# ---------------------------------------------------------------------------------------- extras


def test_extra_volumes_containers_and_init_containers(platform: Rendered) -> None:
    spec = pod_spec(reranker(platform))
    r = platform.values["reranker"]
    assert names(spec["initContainers"]) == ["admin-token", *names(r["extraInitContainers"])]
    assert names(spec["containers"]) == ["server", "agent", *names(r["extraContainers"])]
    assert spec["containers"][2] == r["extraContainers"][0]
    volumes = names(spec["volumes"])
    for v in r["extraVolumes"]:
        assert v in spec["volumes"]
    assert len(volumes) == len(set(volumes))
    for name in ("server", "agent"):
        (c,) = [c for c in spec["containers"] if c["name"] == name]
        for mount in r[name]["extraVolumeMounts"]:
            assert mount in c["volumeMounts"]
            assert mount["name"] in volumes


def test_operator_json_logs(platform: Rendered) -> None:
    args = platform.one("Deployment", "operator")["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args.count("--log-format=json") == 1


def test_notes_name_the_rollback_annotation(helm_run: HelmRun) -> None:
    proc = helm_run("install", RELEASE, str(Path(__file__).resolve().parents[2] / "helm" / "hotswap"),
                    "--namespace", NAMESPACE, "--dry-run=client")  # fmt: skip
    notes = proc.stdout.split("NOTES:", 1)[1]
    assert f"kubectl -n {NAMESPACE} annotate rrm {RELEASE}-hotswap hotswap.dev/rollback=true" in notes
    assert "pre-delete" in notes
