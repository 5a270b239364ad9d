"""Fixtures for the operator tests: local clusters of fake pods (fast) and of real pods (shared)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest_asyncio

from devtools.localcluster.cluster import LocalCluster

from .scenarios import Fleet


@pytest_asyncio.fixture
async def fake_fleet() -> AsyncIterator[Fleet]:
    """Three fake pods (agent API + lexical scorer, no torch), the API server and the real operator."""
    async with LocalCluster(pods=3, flavour="fake") as cluster:
        yield Fleet(cluster, timeout=30)
