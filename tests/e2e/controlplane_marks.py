"""The guard every test on the real control plane carries: built binaries, and the run's own network
namespace (make test-controlplane). Without HOTSWAP_REQUIRE_CONTROLPLANE a missing one skips; with it
(make test, CI) a missing one fails, never a silent skip."""

from __future__ import annotations

import os

import pytest

from devtools.controlplane import NotBuilt, bin_dir
from devtools.controlplane.network import in_run_netns

REQUIRED = bool(os.environ.get("HOTSWAP_REQUIRE_CONTROLPLANE"))


def _built() -> bool:
    try:
        bin_dir()
    except NotBuilt:
        if REQUIRED:
            raise
        return False
    return True


CONTROLPLANE = [
    pytest.mark.slow,
    pytest.mark.skipif(not _built(), reason="control-plane binaries not built (scripts/get-controlplane.sh)"),
    # Outside the run's network namespace the backend refuses to start (no routed pod IPs, so no
    # EndpointSlices): a skip, unless HOTSWAP_REQUIRE_CONTROLPLANE says it must run (then it fails).
    pytest.mark.skipif(
        in_run_netns() is not None and not REQUIRED,
        reason="needs a network namespace of its own: make test-controlplane (scripts/netns-run.sh)",
    ),
]
