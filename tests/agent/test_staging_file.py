"""Staging from file:// (folders and tarballs): digests, pins, idempotence, failures, leftovers, retention."""

from __future__ import annotations

import os
import tarfile
from collections import namedtuple
from pathlib import Path

import pytest
from hotswap_contract.digest import folder_digest

from tests.agent.agent_fakes import AUTH, ClientFactory, FakeServer, run_op, status_of, write_model


def visible(models_root: Path) -> list[str]:
    return sorted(p.name for p in models_root.iterdir() if not p.name.startswith("."))


def leftovers(models_root: Path) -> list[str]:
    return sorted(p.name for p in models_root.iterdir() if p.name.startswith((".staging-", ".trash-")))


async def test_stage_folder(agent_client: ClientFactory, sources_root: Path, models_root: Path) -> None:
    src = write_model(sources_root / "v1", "one", size=300_000)
    client = await agent_client()
    op = await run_op(client, "stage", {"version": "v1", "uri": src.as_uri()})
    assert op["state"] == "succeeded", op
    digest = folder_digest(src)
    assert op["result"]["digest"] == digest and op["result"]["noop"] is False
    assert op["progress"] == {"bytesDone": op["result"]["bytes"], "bytesTotal": op["result"]["bytes"]}
    assert folder_digest(models_root / "v1") == digest
    assert visible(models_root) == ["v1"] and leftovers(models_root) == []
    status = await status_of(client)
    assert [(d["version"], d["digest"]) for d in status["onDisk"]] == [("v1", digest)]
    assert status["onDisk"][0]["source"] == src.as_uri()


@pytest.mark.parametrize("suffix", [".tar.gz", ".tar", ".tgz"])
async def test_stage_tarball(
    agent_client: ClientFactory, sources_root: Path, models_root: Path, suffix: str
) -> None:
    src = write_model(sources_root / "v2", "two")
    archive = sources_root / f"v2{suffix}"
    with tarfile.open(archive, "w:gz" if "gz" in suffix else "w") as tar:
        tar.add(src, arcname="v2")
    client = await agent_client()
    op = await run_op(
        client, "stage", {"version": "v2", "uri": archive.as_uri(), "sha256": folder_digest(src)}
    )
    assert op["state"] == "succeeded", op
    assert op["progress"]["bytesTotal"] == archive.stat().st_size
    assert folder_digest(models_root / "v2") == folder_digest(src)
    assert visible(models_root) == ["v2"] and leftovers(models_root) == []


async def test_digest_pinned_and_mismatched(
    agent_client: ClientFactory, sources_root: Path, models_root: Path
) -> None:
    src = write_model(sources_root / "v1", "one")
    client = await agent_client()
    op = await run_op(client, "stage", {"version": "v1", "uri": src.as_uri(), "sha256": "0" * 64})
    assert (op["state"], op["errorType"]) == ("failed", "digest_mismatch")
    assert folder_digest(src) in op["error"]
    assert visible(models_root) == [] and leftovers(models_root) == []
    status = await status_of(client)
    assert status["lastError"]["type"] == "digest_mismatch" and status["lastError"]["operationId"] == op["id"]
    # the same request again is a new attempt, not the cached failure; with the right pin it works
    op = await run_op(
        client, "stage", {"version": "v1", "uri": src.as_uri(), "sha256": folder_digest(src).upper()}
    )
    assert op["state"] == "succeeded" and visible(models_root) == ["v1"]


async def test_stage_is_idempotent(
    agent_client: ClientFactory, sources_root: Path, models_root: Path
) -> None:
    src = write_model(sources_root / "v1", "one")
    client = await agent_client()
    body = {"version": "v1", "uri": src.as_uri()}
    first = await run_op(client, "stage", body)
    # repeated after it finished (say the operator timed out): the same operation comes back, 200
    resp = await client.post("/v1/stage", json=body, headers=AUTH)
    assert resp.status == 200 and (await resp.json())["operation"]["id"] == first["id"]
    # staged again later, by another request: nothing is fetched, the folder is untouched
    mtime = (models_root / "v1").stat().st_mtime_ns
    again = await run_op(client, "stage", {**body, "sha256": folder_digest(src)})
    assert again["id"] != first["id"] and again["result"]["noop"] is True
    assert (models_root / "v1").stat().st_mtime_ns == mtime


async def test_version_ids_name_one_content(agent_client: ClientFactory, sources_root: Path) -> None:
    one, other = write_model(sources_root / "a", "one"), write_model(sources_root / "b", "other")
    client = await agent_client()
    assert (await run_op(client, "stage", {"version": "v1", "uri": one.as_uri()}))["state"] == "succeeded"
    op = await run_op(
        client, "stage", {"version": "v1", "uri": other.as_uri(), "sha256": folder_digest(other)}
    )
    assert (op["state"], op["errorType"]) == ("failed", "version_conflict")


@pytest.mark.parametrize("version", ["V1", "../v1", "v1/..", "-v1", "a" * 64, "", 7, None, ".staging-v1"])
async def test_bad_version_ids_are_refused(
    agent_client: ClientFactory, sources_root: Path, models_root: Path, version: object
) -> None:
    client = await agent_client()
    resp = await client.post(
        "/v1/stage", json={"version": version, "uri": sources_root.as_uri()}, headers=AUTH
    )
    assert resp.status == 422 and (await resp.json())["error_type"] == "invalid_version"
    assert list(models_root.iterdir()) == [models_root / ".hotswap"]


async def test_bad_bodies(agent_client: ClientFactory, sources_root: Path) -> None:
    client = await agent_client()
    for body, status in [
        (b"not json", 400),
        (b"[]", 400),
        (b'{"version": "v1"}', 400),
        (b'{"version": "v1", "uri": "x", "extra": 1}', 400),
        (b'{"version": "v1", "uri": "file:///x", "sha256": "abc"}', 400),
        (b'{"version": "v1", "uri": "ftp://host/v1.tar"}', 422),
    ]:
        resp = await client.post("/v1/stage", data=body, headers=AUTH)
        assert resp.status == status, (body, await resp.text())
        assert set(await resp.json()) == {"error", "error_type"}


async def test_allow_list_refusals(
    agent_client: ClientFactory, sources_root: Path, models_root: Path
) -> None:
    client = await agent_client()
    write_model(sources_root / "v1", "one")
    refused = [
        "file:///etc",
        "file:///etc/passwd",
        sources_root.as_uri() + "/../../../etc",
        sources_root.as_uri() + "/v1/%2e%2e/%2e%2e",
        sources_root.as_uri() + "-evil/v1",
        "http://169.254.169.254/latest/meta-data/iam/",
        "http://[fd00:ec2::254]/v1.tar",
    ]
    for uri in refused:
        resp = await client.post("/v1/stage", json={"version": "v1", "uri": uri}, headers=AUTH)
        assert resp.status == 403, (uri, await resp.text())
        assert (await resp.json())["error_type"] == "source_not_allowed"
    assert (await status_of(client))["operation"] is None  # nothing was started
    assert visible(models_root) == []


async def test_links_in_sources(agent_client: ClientFactory, sources_root: Path, tmp_path: Path) -> None:
    client = await agent_client()
    outside = write_model(tmp_path / "outside", "secret")
    (sources_root / "escape").symlink_to(outside)  # a link out of the allow-list
    op = await run_op(client, "stage", {"version": "v1", "uri": (sources_root / "escape").as_uri()})
    assert (op["state"], op["errorType"]) == ("failed", "source_not_allowed")
    inner = write_model(sources_root / "v2", "two")
    (inner / "passwd").symlink_to("/etc/passwd")  # a link inside a source folder
    op = await run_op(client, "stage", {"version": "v2", "uri": inner.as_uri()})
    assert (op["state"], op["errorType"]) == ("failed", "source_invalid")
    assert "symbolic link" in op["error"]


async def test_unreachable_source_and_disk_full(
    agent_client: ClientFactory, sources_root: Path, models_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = await agent_client()
    op = await run_op(client, "stage", {"version": "v1", "uri": (sources_root / "missing").as_uri()})
    assert (op["state"], op["errorType"], op["sourceFault"]) == ("failed", "source_unavailable", "gone")
    src = write_model(sources_root / "v1", "one")
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr("hotswap_agent.transfer.shutil.disk_usage", lambda _p: usage(10**9, 10**9, 1000))
    op = await run_op(client, "stage", {"version": "v1", "uri": src.as_uri()})
    assert (op["state"], op["errorType"]) == ("failed", "disk_full")
    assert visible(models_root) == [] and leftovers(models_root) == []


async def test_leftovers_are_cleaned_at_start(
    agent_client: ClientFactory, sources_root: Path, models_root: Path
) -> None:
    write_model(models_root / ".staging-v3-0badc0de", "half")
    (models_root / ".staging-v3-0badc0de.archive").write_bytes(b"partial")
    write_model(models_root / ".trash-v0-12345678", "old")
    (models_root / ".hotswap").mkdir()
    (models_root / ".hotswap" / "ghost.json").write_text('{"digest": "x"}')
    by_hand = write_model(models_root / "v9", "by-hand")  # a version placed without the agent
    client = await agent_client()
    assert sorted(p.name for p in models_root.iterdir()) == [".hotswap", "v9"]
    assert [p.name for p in (models_root / ".hotswap").iterdir()] == ["v9.json"]
    status = await status_of(client)
    assert [(d["version"], d["digest"]) for d in status["onDisk"]] == [("v9", folder_digest(by_hand))]


async def test_retention_keeps_n_and_never_active_or_previous(
    agent_client: ClientFactory, sources_root: Path, models_root: Path, fake_server: FakeServer
) -> None:
    client = await agent_client("--keep", "2")
    for v in ("v1", "v2"):
        src = write_model(sources_root / v, v)
        for kind, body in [("stage", {"version": v, "uri": src.as_uri()}), ("preload", {"version": v}),
                           ("activate", {"version": v})]:  # fmt: skip
            assert (await run_op(client, kind, body))["state"] == "succeeded"
    assert (fake_server.active["version"], fake_server.previous["version"]) == ("v2", "v1")
    for v in ("v3", "v4", "v5"):
        src = write_model(sources_root / v, v)
        assert (await run_op(client, "stage", {"version": v, "uri": src.as_uri()}))["state"] == "succeeded"
    # the 2 newest, plus the active and previous ones whatever their age
    assert visible(models_root) == ["v1", "v2", "v4", "v5"]
    assert sorted(os.listdir(models_root / ".hotswap")) == ["v1.json", "v2.json", "v4.json", "v5.json"]
    assert leftovers(models_root) == []
