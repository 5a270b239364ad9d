"""Boot: an empty server is brought up on the boot file's version; failures retry with backoff."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from aiohttp.test_utils import TestClient
from hotswap_contract.digest import folder_digest

from devtools.fakes.slots import ServerSlots
from tests.agent.agent_fakes import ClientFactory, FakeServer, run_op, status_of, wait_for, write_model


async def boot_state(client: TestClient, state: str) -> dict:
    async def reached() -> dict | None:
        boot = (await status_of(client))["boot"]
        return boot if boot["state"] == state else None

    return await wait_for(reached, timeout_s=10)


async def test_boot_retries_until_the_source_appears(
    agent_client: ClientFactory, sources_root: Path, tmp_path: Path, fake_server: FakeServer
) -> None:
    boot_file = tmp_path / "boot.json"
    src = sources_root / "v1"
    boot_file.write_text(json.dumps({"version": "v1", "source": {"uri": src.as_uri()}}))
    client = await agent_client("--boot-file", str(boot_file))
    retrying = await boot_state(client, "retrying")
    assert "does not exist" in retrying["lastError"] and retrying["nextAttemptAt"]
    assert retrying["lastSourceFault"] == "gone"  # what the operator reads as "last-good unavailable"
    status = await status_of(client)
    assert status["lastError"]["type"] == "source_unavailable" and status["active"] is None
    assert status["lastError"]["sourceFault"] == "gone"

    async def attempts_grow() -> bool:
        return (await status_of(client))["boot"]["attempts"] >= retrying["attempts"] + 2

    await wait_for(attempts_grow)  # it keeps trying, with backoff
    write_model(src, "one")
    done = await boot_state(client, "done")
    assert done["version"] == "v1" and done["finishedAt"]
    assert fake_server.active is not None and fake_server.active["version"] == "v1"
    assert [c[0] for c in fake_server.calls] == ["preload", "activate"]
    status = await status_of(client)
    assert status["active"] == {"version": "v1", "digest": folder_digest(src)}
    assert status["lastActivation"]["kind"] == "boot"


async def test_boot_file_appears_later_as_yaml(
    agent_client: ClientFactory, sources_root: Path, tmp_path: Path, fake_server: FakeServer
) -> None:
    src = write_model(sources_root / "v3", "three")
    boot_file = tmp_path / "config" / "boot.yaml"
    client = await agent_client("--boot-file", str(boot_file))
    assert "does not exist" in (await boot_state(client, "retrying"))["lastError"]
    boot_file.parent.mkdir()
    boot_file.write_text(f"version: v3\nsource:\n  uri: {src.as_uri()}\n  sha256: {folder_digest(src)}\n")
    await boot_state(client, "done")
    assert fake_server.active is not None and fake_server.active["version"] == "v3"


async def test_bad_boot_file_is_reported(agent_client: ClientFactory, tmp_path: Path) -> None:
    boot_file = tmp_path / "boot.json"
    boot_file.write_text(json.dumps({"version": "V1!", "source": {"uri": "file:///etc/passwd"}}))
    client = await agent_client("--boot-file", str(boot_file))
    boot = await boot_state(client, "retrying")
    assert "version must be a DNS-1123 label" in boot["lastError"]
    assert (await status_of(client))["lastError"]["type"] == "boot_file_invalid"


async def test_a_serving_server_is_left_alone(
    agent_client: ClientFactory, sources_root: Path, tmp_path: Path, fake_server: FakeServer
) -> None:
    live = write_model(fake_server.models_root / "v5", "five")
    fake_server.active = {"version": "v5", "digest": folder_digest(live), "path": str(live)}
    boot_file = tmp_path / "boot.json"
    boot_file.write_text(json.dumps({"version": "v1", "source": {"uri": (sources_root / "v1").as_uri()}}))
    client = await agent_client("--boot-file", str(boot_file))
    boot = await boot_state(client, "skipped")
    assert "already serves v5" in boot["message"]
    assert fake_server.calls == [] and fake_server.active["version"] == "v5"
    boot_file.write_text(json.dumps({"version": "v5", "source": {"uri": (sources_root / "v5").as_uri()}}))
    client = await agent_client("--boot-file", str(boot_file))  # a restarted agent, server still up
    boot = await boot_state(client, "done")
    assert boot["version"] == "v5" and fake_server.calls == []


async def test_the_operator_can_act_while_boot_retries(
    agent_client: ClientFactory, sources_root: Path, tmp_path: Path, fake_server: FakeServer
) -> None:
    client = await agent_client("--boot-file", str(tmp_path / "missing.json"))
    await boot_state(client, "retrying")
    src = write_model(sources_root / "v2", "two")
    for kind, body in [("stage", {"version": "v2", "uri": src.as_uri()}), ("preload", {"version": "v2"}),
                       ("activate", {"version": "v2"})]:  # fmt: skip
        op = await run_op(client, kind, body)
        assert op["state"] == "succeeded", op
    await boot_state(client, "skipped")
    assert fake_server.active["version"] == "v2"


async def test_a_server_that_restarts_empty_is_booted_again(
    agent_client: ClientFactory, sources_root: Path, tmp_path: Path, fake_server: FakeServer
) -> None:
    """The server container restarts alone (OOM-killed): the agent boots it again from the boot
    file, without the operator; a server that is unreachable for a while is simply waited for."""
    src = write_model(sources_root / "v1", "one")
    boot_file = tmp_path / "boot.json"
    boot_file.write_text(json.dumps({"version": "v1", "source": {"uri": src.as_uri()}}))
    client = await agent_client("--boot-file", str(boot_file), "--server-watch-interval", "0.05")
    await boot_state(client, "done")
    assert [c[0] for c in fake_server.calls] == ["preload", "activate"]

    fake_server.slots = ServerSlots(swap_mode="auto", pause_ms=3.0)  # a new, empty server process

    async def rebooted() -> dict | None:
        boot = (await status_of(client))["boot"]
        return boot if boot.get("reboots") == 1 and boot["state"] == "done" else None

    boot = await wait_for(rebooted, timeout_s=10)
    assert boot["version"] == "v1"
    assert fake_server.active is not None and fake_server.active["version"] == "v1"
    # Staged on disk already: only the server's half of the boot ran again.
    assert [c[0] for c in fake_server.calls] == ["preload", "activate", "preload", "activate"]


async def test_a_serving_server_is_not_booted_again(
    agent_client: ClientFactory, sources_root: Path, tmp_path: Path, fake_server: FakeServer
) -> None:
    src = write_model(sources_root / "v1", "one")
    boot_file = tmp_path / "boot.json"
    boot_file.write_text(json.dumps({"version": "v1", "source": {"uri": src.as_uri()}}))
    client = await agent_client("--boot-file", str(boot_file), "--server-watch-interval", "0.05")
    await boot_state(client, "done")
    calls = len(fake_server.calls)
    for _ in range(10):  # many watch intervals: a server that serves is left alone
        await asyncio.sleep(0.05)
        assert "reboots" not in (await status_of(client))["boot"]
    assert len(fake_server.calls) == calls
