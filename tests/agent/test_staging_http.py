"""Staging from http:// against a real aiohttp server on loopback: tarballs, folders, redirects."""

from __future__ import annotations

import json
import socket
import tarfile
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from aiohttp import web
from hotswap_agent.manifest import build_manifest
from hotswap_contract.digest import folder_digest

from tests.agent.agent_fakes import ClientFactory, run_op, write_model


@dataclass
class HttpSource:
    base: str  # http://127.0.0.1:PORT
    other: str  # http://localhost:PORT: the same server under another host name
    www: Path


@pytest.fixture
async def http_source(tmp_path: Path) -> AsyncIterator[HttpSource]:
    www = tmp_path / "www"
    src = write_model(www / "v1", "one", size=200_000)
    (src / "manifest.json").write_text(json.dumps(build_manifest(src)))
    with tarfile.open(www / "v1.tar.gz", "w:gz") as tar:
        for p in sorted(src.iterdir()):
            if p.name != "manifest.json":
                tar.add(p, arcname=f"v1/{p.name}")
    port_box: list[int] = []

    async def same(request: web.Request) -> web.Response:
        raise web.HTTPFound(f"/models/{request.match_info['tail']}")

    async def other(request: web.Request) -> web.Response:
        raise web.HTTPFound(f"http://localhost:{port_box[0]}/models/{request.match_info['tail']}")

    async def loop(request: web.Request) -> web.Response:
        raise web.HTTPFound(str(request.rel_url))

    app = web.Application()
    app.router.add_get("/same/{tail:.*}", same)
    app.router.add_get("/other/{tail:.*}", other)
    app.router.add_get("/loop/{tail:.*}", loop)
    app.router.add_static("/models/", www)
    runner = web.AppRunner(app, shutdown_timeout=0.2)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port_box.append(runner.addresses[0][1])
    yield HttpSource(f"http://127.0.0.1:{port_box[0]}", f"http://localhost:{port_box[0]}", www)
    await runner.cleanup()


def digest_without_manifest(folder: Path, tmp: Path) -> str:
    import shutil

    copy = tmp / "expected"
    shutil.copytree(folder, copy, ignore=shutil.ignore_patterns("manifest.json"))
    return folder_digest(copy)


async def test_tarball(
    agent_client: ClientFactory, http_source: HttpSource, models_root: Path, tmp_path: Path
) -> None:
    client = await agent_client(allow=(http_source.base + "/models/",))
    expected = digest_without_manifest(http_source.www / "v1", tmp_path)
    op = await run_op(client, "stage", {"version": "v1", "uri": f"{http_source.base}/models/v1.tar.gz",
                                        "sha256": expected})  # fmt: skip
    assert op["state"] == "succeeded", op
    assert op["progress"]["bytesTotal"] == (http_source.www / "v1.tar.gz").stat().st_size
    assert op["progress"]["bytesDone"] == op["progress"]["bytesTotal"]
    assert folder_digest(models_root / "v1") == expected


async def test_folder_with_manifest(
    agent_client: ClientFactory, http_source: HttpSource, models_root: Path, tmp_path: Path
) -> None:
    client = await agent_client(allow=(http_source.base + "/models/",))
    expected = digest_without_manifest(http_source.www / "v1", tmp_path)
    op = await run_op(client, "stage", {"version": "v1", "uri": f"{http_source.base}/models/v1/"})
    assert op["state"] == "succeeded", op
    assert op["result"]["digest"] == expected
    assert sorted(p.name for p in (models_root / "v1").iterdir()) == [
        "config.json",
        "model.safetensors",
        "tokenizer",
    ]
    assert op["progress"]["bytesDone"] == op["progress"]["bytesTotal"] > 200_000


async def test_manifest_checks(
    agent_client: ClientFactory, http_source: HttpSource, models_root: Path
) -> None:
    client = await agent_client(allow=(http_source.base + "/models/",))
    manifest = http_source.www / "v1" / "manifest.json"
    listing = json.loads(manifest.read_text())
    listing["files"][0]["sha256"] = "0" * 64
    manifest.write_text(json.dumps(listing))
    op = await run_op(client, "stage", {"version": "v1", "uri": f"{http_source.base}/models/v1/"})
    assert (op["state"], op["errorType"]) == ("failed", "source_invalid") and "sha256" in op["error"]
    manifest.write_text(json.dumps({"files": [{"path": "../../etc/passwd"}]}))
    op = await run_op(client, "stage", {"version": "v1", "uri": f"{http_source.base}/models/v1/"})
    assert (op["state"], op["errorType"]) == ("failed", "source_invalid") and "'..'" in op["error"]
    assert [p.name for p in models_root.iterdir()] == [".hotswap"]


async def test_redirects(agent_client: ClientFactory, http_source: HttpSource, models_root: Path) -> None:
    # both names are allowed: what is refused is leaving the host, not the allow-list
    client = await agent_client(allow=(http_source.base + "/", http_source.other + "/"))
    op = await run_op(client, "stage", {"version": "v1", "uri": f"{http_source.base}/same/v1.tar.gz"})
    assert op["state"] == "succeeded", op
    op = await run_op(client, "stage", {"version": "v2", "uri": f"{http_source.base}/other/v1.tar.gz"})
    assert (op["state"], op["errorType"]) == ("failed", "source_not_allowed")
    assert "redirect" in op["error"] and "another host" in op["error"]
    op = await run_op(client, "stage", {"version": "v3", "uri": f"{http_source.base}/loop/v1.tar.gz"})
    assert (op["state"], op["errorType"]) == ("failed", "source_unavailable") and "redirects" in op["error"]
    assert op["sourceFault"] == "transient"
    assert sorted(p.name for p in models_root.iterdir()) == [".hotswap", "v1"]


async def test_redirect_out_of_the_allow_list(agent_client: ClientFactory, http_source: HttpSource) -> None:
    client = await agent_client(allow=(http_source.base + "/same/",))  # /models/ is not allowed
    op = await run_op(client, "stage", {"version": "v1", "uri": f"{http_source.base}/same/v1.tar.gz"})
    assert (op["state"], op["errorType"]) == ("failed", "source_not_allowed")


async def test_missing_file(agent_client: ClientFactory, http_source: HttpSource) -> None:
    client = await agent_client(allow=(http_source.base + "/",))
    op = await run_op(client, "stage", {"version": "v1", "uri": f"{http_source.base}/models/none.tar.gz"})
    assert (op["state"], op["errorType"]) == ("failed", "source_unavailable") and "404" in op["error"]
    assert op["sourceFault"] == "gone"  # the operator fails the rollout at once, no retries


async def test_name_resolving_to_link_local_is_refused(
    agent_client: ClientFactory, monkeypatch: pytest.MonkeyPatch, models_root: Path
) -> None:
    class MetadataDns:  # what a hostile or misconfigured DNS answer looks like
        async def resolve(self, host: str, port: int = 0, family: int = socket.AF_INET) -> list[dict]:
            return [{"hostname": host, "host": "169.254.169.254", "port": port, "family": socket.AF_INET,
                     "proto": 0, "flags": 0}]  # fmt: skip

        async def close(self) -> None:
            return None

    monkeypatch.setattr("hotswap_agent.http_source.DefaultResolver", MetadataDns)
    client = await agent_client(allow=("http://weights.internal.test/",))
    op = await run_op(client, "stage", {"version": "v1", "uri": "http://weights.internal.test/v1.tar"})
    assert (op["state"], op["errorType"]) == ("failed", "source_not_allowed")
    assert "link-local" in op["error"]
    assert [p.name for p in models_root.iterdir()] == [".hotswap"]
