"""Fixtures for the agent tests: a fake server, settings on a temporary models volume, a client."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from agent_fakes import ADMIN_TOKEN, AGENT_TOKEN, AUTH, FakeServer, wait_for
from aiohttp.test_utils import TestClient

from hotswap_agent.app import create_app
from hotswap_agent.settings import Settings, load_settings


@pytest.fixture
def models_root(tmp_path: Path) -> Path:
    root = tmp_path / "models"
    root.mkdir()
    return root


@pytest.fixture
def sources_root(tmp_path: Path) -> Path:
    root = tmp_path / "sources"
    root.mkdir()
    return root


@pytest.fixture
def token_files(tmp_path: Path) -> tuple[Path, Path]:
    agent, admin = tmp_path / "agent-token", tmp_path / "admin-token"
    agent.write_text(AGENT_TOKEN + "\n")
    admin.write_text(ADMIN_TOKEN)
    return agent, admin


@pytest.fixture
async def fake_server(models_root: Path) -> AsyncIterator[FakeServer]:
    server = await FakeServer(models_root).start()
    yield server
    await server.stop()


SettingsFactory = Callable[..., Settings]


@pytest.fixture
def make_settings(
    models_root: Path, sources_root: Path, token_files: tuple[Path, Path], fake_server: FakeServer
) -> SettingsFactory:
    def make(*extra: str, allow: tuple[str, ...] | None = None) -> Settings:
        argv = [
            "--token-file", str(token_files[0]),
            "--server-admin-token-file", str(token_files[1]),
            "--models-root", str(models_root),
            "--server-url", fake_server.data_url,
            "--server-admin-url", fake_server.admin_url,
            "--pod-name", "pod-a",
            "--boot-backoff-initial", "0.05",
            "--boot-backoff-max", "0.2",
        ]  # fmt: skip
        for prefix in allow if allow is not None else (sources_root.as_uri() + "/",):
            argv += ["--allow", prefix]
        return load_settings([*argv, *extra], environ={})

    return make


ClientFactory = Callable[..., Awaitable[TestClient]]


@pytest.fixture
def agent_client(aiohttp_client: Any, make_settings: SettingsFactory) -> ClientFactory:
    async def make(*extra: str, allow: tuple[str, ...] | None = None) -> TestClient:
        client: TestClient = await aiohttp_client(create_app(make_settings(*extra, allow=allow)))
        return client

    return make


async def status_of(client: TestClient) -> dict[str, Any]:
    resp = await client.get("/v1/status", headers=AUTH)
    assert resp.status == 200, await resp.text()
    body: dict[str, Any] = await resp.json()
    return body


async def run_op(client: TestClient, kind: str, body: dict[str, Any], timeout_s: float = 15.0) -> dict[str, Any]:
    """POST an operation, then poll status until it has finished; return the finished operation."""
    resp = await client.post(f"/v1/{kind}", json=body, headers=AUTH)
    assert resp.status in (200, 202), f"{resp.status}: {await resp.text()}"
    op_id = (await resp.json())["operation"]["id"]

    async def finished() -> dict[str, Any] | None:
        op = (await status_of(client))["operation"]
        return op if op["id"] == op_id and op["state"] != "running" else None

    result: dict[str, Any] = await wait_for(finished, timeout_s)
    return result
