"""Fixtures for the agent tests: a fake server, settings on a temporary models volume, a client."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from hotswap_agent.app import create_app
from hotswap_agent.settings import Settings, load_settings

from tests.agent.agent_fakes import ADMIN_TOKEN, AGENT_TOKEN, ClientFactory, FakeServer


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
    def make(
        *extra: str, allow: tuple[str, ...] | None = None, environ: dict[str, str] | None = None
    ) -> Settings:
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
        return load_settings([*argv, *extra], environ=environ or {})

    return make


@pytest.fixture
def agent_client(aiohttp_client: Any, make_settings: SettingsFactory) -> ClientFactory:
    async def make(
        *extra: str, allow: tuple[str, ...] | None = None, environ: dict[str, str] | None = None
    ) -> TestClient:
        client: TestClient = await aiohttp_client(
            create_app(make_settings(*extra, allow=allow, environ=environ))
        )
        return client

    return make
