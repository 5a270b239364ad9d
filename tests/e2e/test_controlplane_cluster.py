"""What only a real cluster proves (issues 8 and 12), on the real control plane (devtools/controlplane).

One control plane and one ``helm install`` of the unchanged chart (``model.create: true``: the
chart's own RerankerModel, its uninstall hook) for the module; the tests run in order on it:

1. ``kubectl wait --for=condition=Ready rrm/NAME`` returns after a rollout (and only then: the
   fleet serves the new version); after an automatic rollback Ready is False with reason
   RolledBack and waiting on Ready times out; ``kubectl describe rrm`` shows the operator's events.
2. Structural pruning keeps everything the operator writes in status (and kopf's ``status.kopf``).
3. ``helm upgrade`` after ``kubectl apply --server-side -f helm/hotswap/crds/``: the agent token
   Secret kept by ``lookup``, the boot ConfigMap not rendered again (the operator's content stays).
4. kube-apiserver restarted mid-rollout: the rollout completes, no pod swapped twice.
5. A scale-up during a rollout (issue 12): the new pod boots the last-good version and the operator
   brings it to the target; then ``helm uninstall`` removes everything, no RerankerModel left
   Terminating (the chart's pre-delete hook).

Runs in ``make test-controlplane`` inside the run's network namespace (scripts/netns-run.sh).
Skipped when the binaries are not built or outside the namespace, unless
HOTSWAP_REQUIRE_CONTROLPLANE is set: then either is an error.
"""

from __future__ import annotations

import asyncio
import base64
import datetime
import json
import os
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
import yaml

from devtools.controlplane import ApiError
from devtools.testmodels import CANARY
from e2e import commands
from e2e.backends.controlplane import (
    CHART,
    CRD_API,
    ControlPlaneBackend,
    controlplane_backend,
    helm_uninstall_argv,
    helm_upgrade_argv,
    merge_values,
)
from e2e.checks import forbidden_outside, swaps_to
from e2e.scenario import TINY
from tests.e2e.controlplane_marks import CONTROLPLANE

pytestmark = [*CONTROLPLANE, pytest.mark.asyncio(loop_scope="module")]

MODEL = "reranker"
REPLICAS = 2  # one pod at a time is visible with two; a third comes with the scale-up
ROLLOUT = {
    "prefetch": True,
    "podTimeoutSeconds": 300,
    "pauseSeconds": 0,
    "canary": [dict(CANARY)],
    "analysis": {"soakSeconds": 0, "maxErrorRate": 0.01},
}
EXTRA_VALUES: dict[str, Any] = {
    "model": {"create": True, "rollout": ROLLOUT},
    "uninstallHook": {"timeoutSeconds": 60},
}


def utcnow() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def b(testmodels_dir: Path) -> AsyncIterator[ControlPlaneBackend]:
    async with controlplane_backend(
        testmodels_dir, boot_model=TINY.v1, replicas=REPLICAS, extra_values=EXTRA_VALUES
    ) as backend:
        print(f"timings: {backend.timings}")
        yield backend


# ------------------------------------------------------------------------------------------ helpers


def condition(model: dict[str, Any] | None, kind: str) -> dict[str, Any]:
    for c in ((model or {}).get("status") or {}).get("conditions") or []:
        if c.get("type") == kind:
            return dict(c)
    return {}


async def wait_model(
    b: ControlPlaneBackend, pred: Callable[[dict[str, Any]], bool], timeout: float, what: str
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    model: dict[str, Any] | None = None
    while time.monotonic() < deadline:
        model = await b.get_model()
        if model is not None and pred(model):
            return model
        await asyncio.sleep(0.5)
    raise AssertionError(
        f"timed out after {timeout:.0f}s waiting for {what}; status: {(model or {}).get('status')}"
    )


async def patch_spec(b: ControlPlaneBackend, spec: dict[str, Any]) -> int:
    """``kubectl patch rrm`` (merge); the new generation."""
    res = await b.kubectl("patch", "rrm", MODEL, "--type", "merge", "-p", json.dumps({"spec": spec}))
    assert res.returncode == 0, res.stderr
    model = await b.get_model()
    assert model is not None
    return int(model["metadata"]["generation"])


async def agents(b: ControlPlaneBackend) -> dict[str, dict[str, Any]]:
    return {pod: await b.agent_status(pod) for pod in await b.pods()}


def served(agent_map: dict[str, dict[str, Any]]) -> dict[str, str | None]:
    return {pod: (a.get("active") or {}).get("version") for pod, a in agent_map.items()}


def settled_on(version: str, generation: int | None = None) -> Callable[[dict[str, Any]], bool]:
    def pred(m: dict[str, Any]) -> bool:
        st = m.get("status") or {}
        ready = condition(m, "Ready")
        return (
            st.get("currentVersion") == version
            and ready.get("status") == "True"
            and (generation is None or st.get("observedGeneration") == generation)
        )

    return pred


async def kubectl_ok(b: ControlPlaneBackend, *args: str, timeout: float = 60) -> str:
    res = await b.kubectl(*args, timeout=timeout)
    assert res.returncode == 0, f"kubectl {' '.join(args)}: {res.stderr.strip()}"
    return res.stdout


async def helm(b: ControlPlaneBackend, argv: list[str], timeout: float = 600) -> str:
    res = await commands.run(argv, timeout=timeout, env={**os.environ, "HOME": str(b.workdir)})
    assert res.returncode == 0, f"{' '.join(argv[:3])} failed:\n{res.stderr.strip()[-3000:]}"
    return res.stdout + res.stderr


# -------------------------------------------------------------------------------------------- tests


async def test_kubectl_wait_ready_after_rollout_and_rollback_and_describe_events(
    b: ControlPlaneBackend,
) -> None:
    name = f"rrm/{MODEL}"
    await kubectl_ok(b, "wait", "--for=condition=Ready", name, "--timeout=300s", timeout=320)
    assert set(served(await agents(b)).values()) == {"v1"}

    v2 = b.publish("v2", TINY.v2)
    generation = await patch_spec(b, {"version": "v2", "source": v2})
    t0 = time.monotonic()
    # Straight after the change: Ready (True for v1) must not satisfy the wait for this generation.
    await kubectl_ok(b, "wait", "--for=condition=Ready", name, "--timeout=240s", timeout=260)
    waited = time.monotonic() - t0
    model = await b.get_model()
    st = (model or {}).get("status") or {}
    ready = condition(model, "Ready")
    print(f"kubectl wait --for=condition=Ready returned {waited:.1f}s after the change to v2: {ready}")
    assert st.get("currentVersion") == "v2", st
    assert st.get("observedGeneration") == generation, st
    assert served(await agents(b)) == dict.fromkeys(await b.pods(), "v2")

    described = await kubectl_ok(b, "describe", "rrm", MODEL)
    events = described.split("Events:", 1)[1] if "Events:" in described else ""
    print(f"kubectl describe rrm {MODEL} (events):{events}")
    assert "RolloutStarted" in events and "RolloutSucceeded" in events, described[-3000:]

    # The broken v3 (ranks backwards): refused by its canary, rolled back automatically.
    v3 = b.publish("v3", TINY.v3)
    since = utcnow()
    await patch_spec(b, {"version": "v3", "source": v3})
    t1 = time.monotonic()
    model = await wait_model(
        b, lambda m: condition(m, "Ready").get("reason") == "RolledBack", 240, "the rollback of v3"
    )
    print(f"v3 rolled back in {time.monotonic() - t1:.1f}s: {condition(model, 'Ready')}")
    assert condition(model, "Ready")["status"] == "False"
    timed_out = await b.kubectl("wait", "--for=condition=Ready", name, "--timeout=5s", timeout=30)
    assert timed_out.returncode != 0, timed_out.stdout
    assert "timed out" in timed_out.stderr, timed_out.stderr
    await kubectl_ok(
        b,
        "wait",
        "--for=jsonpath={.status.conditions[?(@.type=='Ready')].reason}=RolledBack",
        name,
        "--timeout=30s",
    )
    agent_map = await agents(b)
    assert served(agent_map) == dict.fromkeys(agent_map, "v2")
    assert not any(swaps_to(agent_map, "v3", since).values()), "a pod served the broken v3"
    described = await kubectl_ok(b, "describe", "rrm", MODEL)
    events = described.split("Events:", 1)[1]
    assert "Warning" in events and "RolledBack" in events, events


async def test_structural_pruning_keeps_the_operator_status(b: ControlPlaneBackend) -> None:
    from hotswap_operator.models import RerankerModelStatus

    model = await b.get_model()
    assert model is not None
    status = model["status"]
    # What the operator writes is its typed status dumped (rollout.write_status): everything the
    # API server kept reads back into it unchanged, so nothing it wrote is missing (a pruned field
    # would differ, and make the operator patch it again on every resync).
    ours = {k: v for k, v in status.items() if k != "kopf"}
    parsed = RerankerModelStatus.model_validate(ours)
    assert parsed.model_dump(mode="json", by_alias=True, exclude_none=True) == ours
    assert (status.get("rollout") or {}).get("failure"), status  # the v3 failure, kept in full
    assert any(h.get("result") == "RolledBack" for h in status.get("history") or []), status.get("history")
    assert "hotswap.dev/operator" in (model["metadata"].get("finalizers") or [])

    # A status with every part the operator writes, and kopf's progress record, patched through
    # the status subresource as a server-side dry run: the API server returns all of it.
    probe = json.loads(json.dumps(ours))
    probe["kopf"] = {
        "progress": {
            "hotswap/handler": {
                "started": "2026-01-01T00:00:00.000000+00:00",
                "stopped": None,
                "delayed": "2026-01-01T00:00:01.000000+00:00",
                "purpose": "update",
                "retries": 1,
                "success": False,
                "failure": False,
                "message": "probe",
                "subrefs": ["a"],
            }
        },
        "dummy": "2026-01-01T00:00:00",
    }
    path = f"{CRD_API}/namespaces/{b.namespace}/rerankermodels/{MODEL}/status"
    got = await b.cp.client().request(
        "PATCH",
        path,
        body={"status": probe},
        params={"dryRun": "All"},
        content_type="application/merge-patch+json",
    )
    expected = json.loads(json.dumps(probe))
    del expected["kopf"]["progress"]["hotswap/handler"]["stopped"]  # a merge patch's null deletes
    assert got["status"] == expected

    # Settled, the operator finds nothing to patch on its resyncs (5 s here): no status churn.
    generation = await patch_spec(b, {"version": "v2", "source": b.publish("v2", TINY.v2)})
    settled = await wait_model(b, settled_on("v2", generation), 120, "v2 settled again")
    await asyncio.sleep(12)
    again = await b.get_model()
    assert again is not None
    assert again["metadata"]["resourceVersion"] == settled["metadata"]["resourceVersion"] or (
        again["status"] == settled["status"]
    ), "the operator keeps patching a settled status"


async def test_helm_upgrade_after_server_side_crd_apply_keeps_token_and_boot_configmap(
    b: ControlPlaneBackend,
) -> None:
    client = b.cp.client()
    ns = b.namespace
    secret_path = f"/api/v1/namespaces/{ns}/secrets/{b.cfg.fullname}-agent-token"
    boot_path = f"/api/v1/namespaces/{ns}/configmaps/{MODEL}-boot"
    token_before = (await client.get(secret_path))["data"]["token"]
    boot_before = await client.get(boot_path)
    boot_file = json.loads(next(iter(boot_before["data"].values())))
    assert boot_file["version"] == "v2", boot_file  # the operator rewrote it after the v2 rollout

    crds = await kubectl_ok(b, "apply", "--server-side", "-f", str(CHART / "crds"))
    print(f"kubectl apply --server-side -f helm/hotswap/crds/: {crds.strip()}")

    # The values of the install, with the version the fleet now serves (model.create: the chart
    # renders the RerankerModel, so its values must name the version to keep).
    values = yaml.safe_load((b.workdir / "values-generated.yaml").read_text())
    model = await b.get_model()
    assert model is not None
    values = merge_values(values, {"model": {"version": "v2", "source": model["spec"]["source"]}})
    upgrade = b.workdir / "values-upgrade.yaml"
    upgrade.write_text(yaml.safe_dump(values, sort_keys=False))
    t0 = time.monotonic()
    out = await helm(b, helm_upgrade_argv(b.helm, b.cfg, upgrade))
    print(f"helm upgrade in {time.monotonic() - t0:.1f}s:\n{out[-1500:]}")
    assert "has been upgraded" in out or "STATUS: deployed" in out, out

    assert (await client.get(secret_path))["data"]["token"] == token_before
    assert base64.b64decode(token_before).strip()
    boot_after = await client.get(boot_path)
    assert boot_after["data"] == boot_before["data"], "helm upgrade rewrote the boot ConfigMap"
    assert boot_after["metadata"]["uid"] == boot_before["metadata"]["uid"]
    model = await wait_model(b, settled_on("v2"), 120, "v2 still settled after the upgrade")
    assert model["spec"]["version"] == "v2"
    agent_map = await agents(b)
    assert served(agent_map) == dict.fromkeys(agent_map, "v2")


async def test_apiserver_restart_mid_rollout(b: ControlPlaneBackend) -> None:
    v1 = b.publish("v1", TINY.v1)
    since = utcnow()
    generation = await patch_spec(b, {"version": "v1", "source": v1, "rollout": {"pauseSeconds": 4}})
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:  # the first pod swapped: the rollout is half done
        if "v1" in served(await agents(b)).values():
            break
        await asyncio.sleep(0.3)
    else:
        raise AssertionError("no pod swapped to v1")
    t0 = time.monotonic()
    down_at = datetime.datetime.now()  # local wall time, as kopf stamps its log lines
    await b.cp.restart_apiserver(downtime=2.0)
    up_at = datetime.datetime.now()
    print(f"kube-apiserver restarted mid-rollout ({time.monotonic() - t0:.1f}s down)")
    await wait_model(b, settled_on("v1", generation), 240, "the rollout to v1 after the restart")
    await kubectl_ok(b, "wait", "--for=condition=Ready", f"rrm/{MODEL}", "--timeout=30s")
    agent_map = await agents(b)
    assert served(agent_map) == dict.fromkeys(agent_map, "v1")
    swaps = swaps_to(agent_map, "v1", since)
    assert {pod: len(s) for pod, s in swaps.items()} == dict.fromkeys(agent_map, 1), swaps
    # A starting kube-apiserver answers requests before its RBAC authorizer's informers have synced
    # (its /readyz waits for them; kopf retries as soon as the port accepts connections), so a 403
    # while it restarts is the API server's, not the chart's RBAC: allowed only inside that window
    # (plus a few seconds), and any other 403 still fails the test.
    refused = b.forbidden()
    outside = forbidden_outside(refused, down_at, up_at + datetime.timedelta(seconds=5))
    print(f"403s while kube-apiserver restarted (retried): {len(refused) - len(outside)}")
    assert outside == []


async def test_scale_up_during_rollout_then_helm_uninstall(b: ControlPlaneBackend) -> None:
    client = b.cp.client()
    ns = b.namespace
    deployment = f"/apis/apps/v1/namespaces/{ns}/deployments/{b.cfg.fullname}-reranker"
    before = set(await b.pods())
    assert len(before) == REPLICAS
    v2 = b.publish("v2", TINY.v2)
    since = utcnow()
    generation = await patch_spec(b, {"version": "v2", "source": v2, "rollout": {"pauseSeconds": 3}})
    await wait_model(
        b, lambda m: (m.get("status") or {}).get("targetVersion") == "v2", 60, "the rollout to start"
    )
    # What an HPA does: the scale subresource, 2 -> 3, while the rollout runs.
    await client.patch(f"{deployment}/scale", {"spec": {"replicas": REPLICAS + 1}})
    t0 = time.monotonic()
    model = await wait_model(
        b,
        lambda m: settled_on("v2", generation)(m) and (m.get("status") or {}).get("readyPods") == "3/3",
        400,
        "three pods on v2",
    )
    print(
        f"scaled up mid-rollout: three pods on v2 {time.monotonic() - t0:.1f}s after the scale; {model['status'].get('serving')}"
    )
    agent_map = await agents(b)
    assert len(agent_map) == REPLICAS + 1
    assert served(agent_map) == dict.fromkeys(agent_map, "v2")
    (new,) = set(agent_map) - before
    # The new pod booted what the boot ConfigMap held when its agent read it (the last-good
    # version: v1 while the rollout ran, v2 once it completed), then ended on the target.
    history = agent_map[new].get("history") or []
    print(
        f"new pod {new}: "
        + ", ".join(f"{op.get('kind')} {op.get('version')} {op.get('state')}" for op in history)
    )
    assert history and history[0].get("version") in ("v1", "v2"), history
    # Or no boot at all: its server was still starting when the operator found the empty pod and
    # brought it onto v2 itself (the boot then saw a serving server and stepped aside).
    booted = next((op.get("version") for op in history if op.get("kind") == "boot"), None)
    assert booted in ("v1", "v2", None), history
    swaps = {pod: len(s) for pod, s in swaps_to(agent_map, "v2", since).items()}
    # Each old pod swapped once; the new one once if it booted v1 or nothing, never if it booted v2.
    assert swaps == {**dict.fromkeys(before, 1), new: 0 if booted == "v2" else 1}, swaps
    boot = await client.get(f"/api/v1/namespaces/{ns}/configmaps/{MODEL}-boot")
    assert json.loads(next(iter(boot["data"].values())))["version"] == "v2"

    # helm uninstall: the pre-delete hook deletes the RerankerModel while the operator still runs.
    t1 = time.monotonic()
    out = await helm(b, helm_uninstall_argv(b.helm, b.cfg, "--wait", "--timeout", "5m"))
    print(f"helm uninstall in {time.monotonic() - t1:.1f}s: {out.strip()[-500:]}")
    assert (await client.get(f"{CRD_API}/namespaces/{ns}/rerankermodels"))["items"] == []
    with pytest.raises(ApiError) as gone:
        await client.get(deployment)
    assert gone.value.status == 404
    jobs = await client.get(f"/apis/batch/v1/namespaces/{ns}/jobs")
    assert jobs["items"] == [], [j["metadata"]["name"] for j in jobs["items"]]
    deadline = time.monotonic() + 120
    while await b.pods() and time.monotonic() < deadline:
        await asyncio.sleep(1)
    assert await b.pods() == []
    # Kept on purpose (helm.sh/resource-policy: keep, docs/operations.md#uninstall).
    await client.get(f"/api/v1/namespaces/{ns}/secrets/{b.cfg.fullname}-agent-token")
    await client.get(f"/api/v1/namespaces/{ns}/configmaps/{MODEL}-boot")
