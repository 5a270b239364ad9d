"""The end-to-end scenario on the real control plane: kube-apiserver, the controllers, the process
kubelet, ``helm install`` of the unchanged chart (the operator as its Deployment under its
ServiceAccount, RBAC enforced), three reranker pods on tiny models, load spread over the Service's
EndpointSlice.

Runs in ``make test-controlplane``, inside a network namespace of the run's own
(scripts/netns-run.sh); ``make unit`` ignores this file. Skipped when the control-plane binaries
are not built, unless HOTSWAP_REQUIRE_CONTROLPLANE is set: then a missing build, or a run outside
the namespace, fails.
"""

from __future__ import annotations

import dataclasses
import itertools
from pathlib import Path

import pytest
import yaml

from e2e.backends.controlplane import ControlPlaneBackend, controlplane_backend, scenario_config
from e2e.result import ScenarioResult
from e2e.scenario import TINY, Scenario, ScenarioConfig, ScenarioError
from tests.e2e.controlplane_marks import CONTROLPLANE

pytestmark = [*CONTROLPLANE]


def assert_checks(result: ScenarioResult) -> None:
    assert result.ok, "failed checks:\n" + "\n".join(result.checks_lines())


async def _revoke_status_patch(backend: ControlPlaneBackend) -> str:
    """Take ``patch`` on rerankermodels/status out of the chart's operator Role: what a chart that
    forgot it would give. Returns the Role's name."""
    client = backend.cp.client()
    name = f"{backend.cfg.fullname}-operator"
    path = f"/apis/rbac.authorization.k8s.io/v1/namespaces/{backend.namespace}/roles/{name}"
    role = await client.get(path)
    for rule in role["rules"]:
        if "rerankermodels/status" in rule.get("resources", []):
            rule["verbs"] = [v for v in rule["verbs"] if v not in ("patch", "update")]
    await client.put(path, role)
    return name


async def test_scenario_on_the_real_api_server(testmodels_dir: Path) -> None:
    config = scenario_config(ScenarioConfig(models=TINY, concurrency=4))
    async with controlplane_backend(testmodels_dir, boot_model=TINY.v1) as b:
        print(f"timings: {b.timings}")
        result = await Scenario(b, config).run()
        print("\n".join(result.summary_lines()))
        assert_checks(result)
        pods = result.pods
        assert len(pods) == 3 and all(p.startswith("hotswap-reranker-") for p in pods)
        assert result.load.failed == 0, result.load.failures
        assert result.load.by_version.get("v1", 0) > 0 and result.load.by_version.get("v2", 0) > 0
        assert set(result.load.by_pod) == set(pods)  # the EndpointSlice listed every pod
        swaps = [result.rollout[p] for p in pods]
        for prev, nxt in itertools.pairwise(swaps):
            assert prev.verified_at is not None and prev.verified_at <= nxt.at
        assert all(s.mode == "inplace" for s in swaps), swaps
        assert result.degraded["status"] == "True" and result.degraded["reason"] == "RolloutFailed"
        assert result.final == dict.fromkeys(pods, "v2")
        # The chart's RBAC was enough: the API server refused the operator nothing.
        assert b.forbidden() == []

        # A RerankerModel with only what a user must write takes the CRD's defaults, and the
        # defaults pass the CRD's own CEL rules (server-side dry run: validation, defaulting, CEL).
        minimal = {
            "apiVersion": "hotswap.dev/v1alpha1",
            "kind": "RerankerModel",
            "metadata": {"name": "minimal", "namespace": b.namespace},
            "spec": {
                "selector": {"matchLabels": {"app": "none"}},
                "version": "v1",
                "source": {"uri": "hf://BAAI/bge-reranker-v2-m3"},
            },
        }
        manifest = b.workdir / "minimal.yaml"
        manifest.write_text(yaml.safe_dump(minimal))
        dry = await b.kubectl("apply", "--dry-run=server", "-f", str(manifest))
        assert dry.returncode == 0, dry.stderr

        # A permission missing from the chart fails the scenario, and the API server's own message
        # is what the run reports.
        role = await _revoke_status_patch(b)
        quick = dataclasses.replace(config, install_timeout=45, baseline_seconds=0.2)
        with pytest.raises(ScenarioError):
            await Scenario(b, quick).run()
        refused = b.forbidden()
        assert refused, "the operator logged no refusal after its Role lost patch on rerankermodels/status"
        text = "\n".join(refused)
        print(f"the API server refused the operator: {refused[0]}")
        assert "rerankermodels/status" in text or "rerankermodels" in text, text
        assert f"system:serviceaccount:{b.namespace}:{role}" in text, text
