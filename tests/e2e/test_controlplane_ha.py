"""Two operator replicas with kopf peering on the real control plane (issue 8).

``helm install`` with ``operator.replicas=2`` (peering lifetime 10 s): both operator pods run
under the chart's ServiceAccount, create/join the KopfPeering object, and exactly one (the higher
priority, derived from its pod name) drives; the other stays paused (no line about the RerankerModel in its log). A rollout to v2 starts;
after its first pod swapped, the driving operator is SIGKILLed (no goodbye in the peering object)
and its pod force-deleted, with the node cordoned so its replacement stays Pending: the other
replica takes over once the dead one's keep-alive expires and finishes the rollout, each reranker
pod swapped exactly once (counted in the agents' own history).

Runs in ``make test-controlplane`` inside the run's network namespace (scripts/netns-run.sh).
Skipped when the binaries are not built or outside the namespace, unless
HOTSWAP_REQUIRE_CONTROLPLANE is set: then either is an error.
"""

from __future__ import annotations

import asyncio
import datetime
import json
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from devtools.testmodels import CANARY
from e2e.backends.controlplane import ControlPlaneBackend, controlplane_backend
from e2e.checks import swaps_to
from e2e.scenario import TINY
from tests.e2e.controlplane_marks import CONTROLPLANE

pytestmark = [*CONTROLPLANE, pytest.mark.asyncio(loop_scope="module")]

MODEL = "reranker"
LIFETIME = 10  # kopf peering lifetime: a SIGKILLed driver is taken over within this
PAUSED = "Pausing operations in favour of"
RESUMED = "Resuming operations after the pause"
EXTRA_VALUES: dict[str, Any] = {
    "model": {
        "create": True,
        "rollout": {
            "prefetch": True,
            "podTimeoutSeconds": 300,
            "pauseSeconds": 0,
            "canary": [dict(CANARY)],
            "analysis": {"soakSeconds": 0, "maxErrorRate": 0.01},
        },
    },
    "operator": {"replicas": 2, "peering": {"lifetimeSeconds": LIFETIME}},
    "uninstallHook": {"timeoutSeconds": 60},
}


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def b(testmodels_dir: Path) -> AsyncIterator[ControlPlaneBackend]:
    async with controlplane_backend(
        testmodels_dir, boot_model=TINY.v1, replicas=2, extra_values=EXTRA_VALUES
    ) as backend:
        print(f"timings: {backend.timings}")
        yield backend


async def operator_pods(b: ControlPlaneBackend) -> list[str]:
    pods = await b.cp.client().get(
        f"/api/v1/namespaces/{b.namespace}/pods",
        labelSelector=f"app.kubernetes.io/component=operator,app.kubernetes.io/instance={b.cfg.release}",
    )
    return sorted(
        p["metadata"]["name"]
        for p in pods["items"]
        if p["status"].get("phase") == "Running" and not p["metadata"].get("deletionTimestamp")
    )


def log_of(b: ControlPlaneBackend, pod: str) -> str:
    kubelet = b.cp.kubelet
    assert kubelet is not None
    path = kubelet.log_path(b.namespace, pod, "operator")
    return path.read_text(errors="replace") if path is not None and path.exists() else ""


async def peers(b: ControlPlaneBackend) -> dict[str, dict[str, Any]]:
    path = f"/apis/kopf.dev/v1/namespaces/{b.namespace}/kopfpeerings/{b.cfg.fullname}-operator"
    return dict((await b.cp.client().get(path)).get("status") or {})


async def served(b: ControlPlaneBackend) -> dict[str, str | None]:
    return {pod: ((await b.agent_status(pod)).get("active") or {}).get("version") for pod in await b.pods()}


async def wait_for(what: str, timeout: float, check: Any) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = await check()
        if got:
            return got
        await asyncio.sleep(0.3)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


async def kubectl_ok(b: ControlPlaneBackend, *args: str, timeout: float = 60) -> str:
    res = await b.kubectl(*args, timeout=timeout)
    assert res.returncode == 0, f"kubectl {' '.join(args)}: {res.stderr.strip()}"
    return res.stdout


async def test_one_replica_drives_and_the_other_finishes_after_a_sigkill(b: ControlPlaneBackend) -> None:
    await kubectl_ok(b, "wait", "--for=condition=Ready", f"rrm/{MODEL}", "--timeout=300s", timeout=320)
    ops = await operator_pods(b)
    assert len(ops) == 2, ops

    # Both replicas joined the peering object, with distinct priorities (derived from pod names).
    async def joined() -> dict[str, dict[str, Any]] | None:
        p = await peers(b)
        return p if set(ops) <= set(p) else None

    record = await wait_for("both replicas in the KopfPeering", 60, joined)
    print(f"KopfPeering status: {json.dumps(record)}")
    assert record[ops[0]]["priority"] != record[ops[1]]["priority"]
    assert all(record[op]["lifetime"] == LIFETIME for op in ops)
    driver = max(ops, key=lambda op: record[op]["priority"])
    (standby,) = set(ops) - {driver}

    # The standby is paused: either it logged the pause in favour of the driver (it started first,
    # ran alone for a moment), or it was paused from its start (kopf's mandatory peering starts
    # paused, and logs nothing when the first peering event keeps it so). Never the driver.
    assert PAUSED not in log_of(b, driver), log_of(b, driver)[-3000:]
    assert all(driver in line for line in log_of(b, standby).splitlines() if PAUSED in line)
    assert set((await served(b)).values()) == {"v1"}
    standby_mark = len(log_of(b, standby))
    driver_mark = len(log_of(b, driver))
    obj = f"[{b.namespace}/{MODEL}]"  # kopf prefixes every line about the RerankerModel with it

    # A rollout to v2, one pod at a time with a pause between them.
    since = datetime.datetime.now(datetime.UTC)
    v2 = b.publish("v2", TINY.v2)
    spec = {"version": "v2", "source": v2, "rollout": {"pauseSeconds": 6}}
    res = await b.kubectl("patch", "rrm", MODEL, "--type", "merge", "-p", json.dumps({"spec": spec}))
    assert res.returncode == 0, res.stderr

    async def half_done() -> bool:
        return list((await served(b)).values()).count("v2") == 1

    await wait_for("the first reranker pod on v2", 180, half_done)
    # Exactly one drives: the driver logged the rollout, the standby said nothing about it.
    assert obj in log_of(b, driver)[driver_mark:], log_of(b, driver)[driver_mark:][-2000:]
    assert obj not in log_of(b, standby)[standby_mark:], log_of(b, standby)[standby_mark:][-2000:]

    # The driver dies without a goodbye: cordon the node (its replacement stays Pending), SIGKILL
    # the operator process, force-delete its pod (so the kubelet does not restart it).
    nodes = (await kubectl_ok(b, "get", "nodes", "-o", "name")).split()
    for node in nodes:
        await kubectl_ok(b, "cordon", node)
    try:
        kubelet = b.cp.kubelet
        assert kubelet is not None
        runtime = kubelet.pod(b.namespace, driver)
        assert runtime is not None
        (container,) = [c for c in runtime.containers if c.name == "operator"]
        assert container.proc is not None and container.proc.alive
        before = (await peers(b))[driver]
        # The standby may have resumed once already at its start (before it saw the driver).
        resumes = log_of(b, standby).count(RESUMED)
        container.proc.signal(signal.SIGKILL)
        killed = time.monotonic()
        age = datetime.datetime.now(datetime.UTC) - datetime.datetime.fromisoformat(before["lastseen"])
        print(f"SIGKILLed {driver}; its keep-alive was {age.total_seconds():.1f}s old: {before}")
        await kubectl_ok(b, "delete", "pod", driver, "--grace-period=0", "--force", "--wait=false")
        assert "v1" in (await served(b)).values(), "the rollout ended before the kill"

        async def resumed() -> bool:
            return log_of(b, standby).count(RESUMED) > resumes

        await wait_for(f"{standby} to take over", 3 * LIFETIME + 30, resumed)
        takeover = time.monotonic() - killed
        print(f"takeover: {standby} resumed {takeover:.1f}s after {driver} was SIGKILLed")
        print([line for line in log_of(b, standby).splitlines() if RESUMED in line][-1])
        assert takeover <= LIFETIME + 5, takeover

        async def settled() -> dict[str, Any] | None:
            model = await b.get_model()
            st = (model or {}).get("status") or {}
            ready = [c for c in st.get("conditions") or [] if c.get("type") == "Ready"]
            ok = st.get("currentVersion") == "v2" and ready and ready[0].get("status") == "True"
            return model if ok else None

        await wait_for("the rollout to v2 to finish", 240, settled)
        print(f"rollout finished {time.monotonic() - killed:.1f}s after the kill")
        agent_map = {pod: await b.agent_status(pod) for pod in await b.pods()}
        assert {pod: (a.get("active") or {}).get("version") for pod, a in agent_map.items()} == dict.fromkeys(
            agent_map, "v2"
        )
        swaps = swaps_to(agent_map, "v2", since)
        assert {pod: len(s) for pod, s in swaps.items()} == dict.fromkeys(agent_map, 1), swaps
        # Only the standby is left running; the replacement pod waits on the cordoned node.
        assert await operator_pods(b) == [standby]
        assert b.forbidden() == []
    finally:
        for node in nodes:
            await b.kubectl("uncordon", node)
