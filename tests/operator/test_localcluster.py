"""The local cluster's API server extensions, kubectl against it, and process cleanup."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio
from hotswap_operator import names
from hotswap_operator.kube import KubeError

from devtools import dev_env
from devtools.localcluster.cluster import LocalCluster
from devtools.localcluster.procs import Proc


@pytest_asyncio.fixture
async def api() -> AsyncIterator[LocalCluster]:
    """The API server alone: no pods, no operator."""
    async with LocalCluster(pods=0, operator=False) as cluster:
        yield cluster


def pod(name: str, labels: dict[str, str]) -> dict:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "labels": labels}, "spec": {}}


async def test_label_and_field_selectors_on_lists(api: LocalCluster) -> None:
    path = names.core_path("pods", "default")
    await api.kube.create(path, pod("a", {"app": "reranker", "tier": "gpu"}))
    await api.kube.create(path, pod("b", {"app": "reranker"}))
    await api.kube.create(path, pod("c", {"app": "other"}))
    got = lambda items: sorted(i["metadata"]["name"] for i in items)  # noqa: E731
    assert got(await api.kube.list(path, label_selector="app=reranker")) == ["a", "b"]
    assert got(await api.kube.list(path, label_selector="app=reranker,!tier")) == ["b"]
    assert got(await api.kube.list(path, label_selector="app in (other,x)")) == ["c"]
    result = await api.kubectl("get", "pods", "--field-selector=metadata.name=b", "-o", "name")
    assert result.stdout.split() == ["pod/b"]


async def test_metadata_generation_and_status_subresource(api: LocalCluster) -> None:
    created = await api.apply_model("v1", {"uri": "file:///models/v1"})
    meta = created["metadata"]
    assert meta["uid"] and meta["creationTimestamp"] and meta["generation"] == 1
    assert created["spec"]["rollout"]["podTimeoutSeconds"] == 300, "CRD defaults applied"
    path = names.model_path("default", api.model)
    # A status write through the object is ignored; through /status it lands, without a new generation.
    await api.kube.patch(path, {"status": {"targetVersion": "ignored"}})
    await api.kube.patch(
        path + "/status", {"status": {"targetVersion": "v1"}, "spec": {"version": "ignored"}}
    )
    obj = await api.get_model()
    assert obj["status"]["targetVersion"] == "v1" and obj["spec"]["version"] == "v1"
    assert obj["metadata"]["generation"] == 1
    await api.apply_model("v2", {"uri": "file:///models/v2"})
    obj = await api.get_model()
    assert obj["metadata"]["generation"] == 2
    assert int(obj["metadata"]["resourceVersion"]) > int(meta["resourceVersion"])


async def test_custom_resources_are_validated(api: LocalCluster) -> None:
    with pytest.raises(KubeError) as info:
        await api.apply_model("Not_A_Label", {"uri": "file:///models/v1"})
    assert info.value.status == 422 and "version" in info.value.message
    await api.apply_model("v1", {"uri": "file:///models/v1"})
    with pytest.raises(KubeError) as info:
        await api.patch_model({"spec": {"source": {"uri": "gopher://x"}}})
    assert info.value.status == 422


async def test_json_patch_test_failure_is_422(api: LocalCluster) -> None:
    await api.apply_model("v1", {"uri": "file:///models/v1"})
    path = names.model_path("default", api.model)
    session = api._session
    assert session is not None
    ops = [{"op": "test", "path": "/metadata/resourceVersion", "value": "0"}]
    headers = {"Content-Type": "application/json-patch+json"}
    async with session.patch(api.api_url + path, json=ops, headers=headers) as resp:
        assert resp.status == 422


async def test_kubectl_get_shows_printer_columns_and_generate_name_works(api: LocalCluster) -> None:
    await api.apply_model("v1", {"uri": "file:///models/v1"})
    table = (await api.kubectl("get", "rrm")).stdout
    assert table.split("\n")[0].split() == ["NAME", "TARGET", "CURRENT", "LAST-GOOD", "READY", "AGE"]
    assert "v1" in table
    events = names.core_path("events", "default")
    body = {"metadata": {"generateName": "x-"}, "involvedObject": {"name": api.model}, "reason": "R"}
    first, second = await api.kube.create(events, body), await api.kube.create(events, body)
    assert first["metadata"]["name"] != second["metadata"]["name"]


async def test_proc_stop_and_kill(tmp_path: Path) -> None:
    proc = Proc(
        "sleeper", [sys.executable, "-c", "import time; time.sleep(60)"], log=tmp_path / "s.log"
    ).start()
    assert proc.alive
    await proc.stop(grace=1)
    assert not proc.alive
    proc = Proc(
        "sleeper", [sys.executable, "-c", "import time; time.sleep(60)"], log=tmp_path / "s.log"
    ).start()
    proc.kill()
    assert not proc.alive


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as f:
        return f.read().split()[2] != "Z"


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL])
def test_nothing_outlives_the_harness(tmp_path: Path, sig: int) -> None:
    """Ctrl-C stops the cluster in order; even SIGKILL of the harness leaves no process behind."""
    script = tmp_path / "harness.py"
    pids = tmp_path / "pids"
    script.write_text(
        textwrap.dedent(
            f"""
            import asyncio
            from devtools.localcluster.cluster import LocalCluster

            async def main():
                async with LocalCluster(pods=2, flavour="fake") as cluster:
                    procs = [p for pod in cluster.pods.values() for p in pod.procs]
                    procs += [cluster._apiserver, cluster._operator]
                    open({str(pids)!r}, "w").write(" ".join(str(p.pid) for p in procs))
                    await asyncio.sleep(600)

            asyncio.run(main())
            """
        )
    )
    harness = subprocess.Popen(
        [sys.executable, str(script)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=dev_env()
    )
    try:
        deadline = time.monotonic() + 60
        while not pids.exists() and time.monotonic() < deadline:
            assert harness.poll() is None, "the harness exited early"
            time.sleep(0.1)
        children = [int(p) for p in pids.read_text().split()]
        assert len(children) == 4 and all(_alive(p) for p in children)
        harness.send_signal(sig)
        harness.wait(timeout=30)
        deadline = time.monotonic() + 10
        while any(_alive(p) for p in children) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not [p for p in children if _alive(p)], "processes left behind"
    finally:
        if harness.poll() is None:
            harness.kill()


async def test_kubectl_describe_shows_the_operator_events() -> None:
    async with LocalCluster(pods=1, flavour="fake") as cluster:
        await cluster.apply_model("v1", cluster.publish_fake("v1"))
        await cluster.wait_ready("v1", timeout=30)
        described = (await cluster.kubectl("describe", "rrm", cluster.model)).stdout
        assert "RolloutSucceeded" in described and "hotswap-operator" in described
        waited = await cluster.kubectl(
            "wait", "--for=condition=Ready", f"rrm/{cluster.model}", "--timeout=20s"
        )
        assert waited.returncode == 0


def test_rollout_bench_runs() -> None:
    """``bench.rollout_bench.run`` stays usable (fake pods, a short simulated prefetch)."""
    from bench.rollout_bench import run

    result = run(2, simulate_prepare_seconds=0.5, timeout=60)
    assert result["failed"] == 0 and result["requests"] > 0
    assert result["prefetch_s"] >= 0.5 and 0 < result["swap_phase_s"] < result["rollout_s"]


async def test_fault_points_hold_and_cut(tmp_path: Path) -> None:
    """The pod proxy is transparent (every header, duplicates kept), holds a matching request until
    released, and cuts the agent's connection without an answer when the server died meanwhile; the
    http registry serves a folder with its manifest."""
    import json

    import aiohttp
    from aiohttp import web
    from hotswap_agent.manifest import build_manifest

    from devtools.localcluster.faults import HttpRegistry, PodProxy

    async def answer(request: web.Request) -> web.Response:
        headers = [("X-Hotswap-Model-Version", "v1"), ("X-Hotswap-Model-Version", "v2")]
        return web.json_response({"got": await request.json()}, status=201, headers=headers)

    app = web.Application()
    app.router.add_post("/admin/v1/activate", answer)
    server = web.AppRunner(app)
    await server.setup()
    await web.TCPSite(server, "127.0.0.1", 0).start()
    upstream = f"http://127.0.0.1:{server.addresses[0][1]}"
    proxy = await PodProxy("127.0.0.1", 0, upstream).start()
    (tmp_path / "v9").mkdir()
    (tmp_path / "v9" / "config.json").write_text("{}")
    registry = await HttpRegistry("127.0.0.1", tmp_path).start()
    try:
        async with aiohttp.ClientSession() as session:
            url = proxy.url + "/admin/v1/activate"
            async with session.post(url, json={"version": "v9"}) as resp:
                assert resp.status == 201 and await resp.json() == {"got": {"version": "v9"}}
                assert resp.headers.getall("X-Hotswap-Model-Version") == ["v1", "v2"]
            hold = proxy.held.add("POST", "/admin/v1/activate")
            held = asyncio.ensure_future(session.post(url, json={"version": "v9"}))
            await hold.reached(5)
            assert not held.done()
            await server.cleanup()  # the server dies while the request waits
            hold.release()
            await hold.settled(5)
            with pytest.raises(aiohttp.ServerDisconnectedError):
                await held
            async with session.get(registry.uri("v9") + "/manifest.json") as resp:
                assert json.loads(await resp.text()) == build_manifest(tmp_path / "v9")
            async with session.get(registry.uri("v9") + "/config.json") as resp:
                assert await resp.text() == "{}"
            async with session.get(registry.uri("v8") + "/config.json") as resp:
                assert resp.status == 404
    finally:
        await proxy.close()
        await registry.close()
        await server.cleanup()
