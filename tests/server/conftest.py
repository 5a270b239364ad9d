"""Server fixtures: an in-process app (fast API tests) and expected scores per version."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient, TestServer
from hotswap_server.app import create_admin_app, create_data_app, create_state
from hotswap_server.settings import Settings
from hotswap_server.state import ServerState

from .serverproc import TOKEN


@pytest.fixture
def token_file(tmp_path: Path) -> Path:
    path = tmp_path / "admin-token"
    path.write_text(TOKEN)
    return path


async def wait_ready(state: ServerState, timeout: float = 60) -> None:
    async with asyncio.timeout(timeout):
        while not state.engine.ready or state.swaps.operation is not None:
            await asyncio.sleep(0.02)


@pytest.fixture
async def make_clients(testmodels_dir: Path, token_file: Path) -> AsyncIterator:
    """Factory: (data client, admin client, state) for an in-process server with the given settings."""
    opened: list[TestClient] = []

    async def make(  # type: ignore[no-untyped-def]
        model: str | None = "tiny-xlmr-v1", models_root: Path | None = None, **overrides: object
    ):
        """``models_root``: where ``model`` and preloads are found (default: the test models)."""
        root = testmodels_dir if models_root is None else models_root
        settings = Settings(
            model=root / model if model else None,
            version="v1" if model else None,
            models_root=root,
            admin_token_file=token_file,
            torch_threads=1,
            **overrides,  # type: ignore[arg-type]
        )
        state = create_state(settings)
        data = TestClient(TestServer(create_data_app(state)))
        admin = TestClient(TestServer(create_admin_app(state)))
        await data.start_server()
        await admin.start_server()
        opened.extend([admin, data])
        if model:
            await wait_ready(state)
        return data, admin, state

    yield make
    for client in opened:
        await client.close()


AUTH = {"Authorization": f"Bearer {TOKEN}"}
