"""Fixtures for tests against the real control plane (devtools/controlplane).

The binaries come from scripts/get-controlplane.sh (a Go build of about 20 minutes the first time).
Without them these tests are skipped, unless HOTSWAP_REQUIRE_CONTROLPLANE is set (CI builds them
first and sets it): then a missing build is an error, never a silent skip.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from devtools.controlplane import ControlPlane, KubeletConfig, NotBuilt, bin_dir

REQUIRED = bool(os.environ.get("HOTSWAP_REQUIRE_CONTROLPLANE"))


def controlplane_bin_dir() -> Path | None:
    try:
        return bin_dir()
    except NotBuilt as exc:
        if REQUIRED:
            raise RuntimeError(
                f"HOTSWAP_REQUIRE_CONTROLPLANE is set but the binaries are missing: {exc}"
            ) from None
        return None


BIN_DIR = controlplane_bin_dir()
requires_controlplane = pytest.mark.skipif(
    BIN_DIR is None, reason="control-plane binaries not built (scripts/get-controlplane.sh)"
)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def cp(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[ControlPlane]:
    """One control plane with a process kubelet, shared by the tests of a module."""
    assert BIN_DIR is not None
    workdir = tmp_path_factory.mktemp("controlplane")
    config = KubeletConfig(backoff_initial=0.5, backoff_max=4.0, volume_sync=1.0)
    async with ControlPlane.start(workdir, bin_dir=BIN_DIR, kubelet=config) as plane:
        yield plane
