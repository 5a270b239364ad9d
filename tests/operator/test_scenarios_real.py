"""The same rollout scenarios with real pods: ``hotswap-server`` + ``hotswap-agent`` per pod on its
own loopback address, tiny real models, the real operator (kopf run) and the local API server.

One cluster serves the whole module (starting torch servers is the slow part on 2 cores); each
scenario first sets its own baseline spec, so they do not depend on each other's end state, but
they run in this order: the first rollout needs pods that never served, and the added pod stays.
The second pod's server runs with ``--max-documents 2`` (a misconfigured pod): a three-document
canary fails there and only there. The cluster has fault points (``LocalCluster(fault_points=True)``):
each agent reaches its server through a transparent proxy where a test can hold a swap's step.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from devtools.localcluster.cluster import LocalCluster

from . import scenarios
from .scenarios import SECOND_POD, Fleet

pytestmark = [pytest.mark.slow, pytest.mark.asyncio(loop_scope="module")]


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def real_fleet(testmodels_dir: Path) -> AsyncIterator[Fleet]:
    async with LocalCluster(
        pods=3,
        flavour="real",
        pod_server_args={SECOND_POD: ["--max-documents", "2"]},
        fault_points=True,
    ) as cluster:
        yield Fleet(cluster, testmodels=testmodels_dir, timeout=120)


@pytest_asyncio.fixture(loop_scope="module")
async def fleet(real_fleet: Fleet) -> AsyncIterator[Fleet]:
    """The shared cluster, with its operator running (a failed scenario may have left it down)."""
    await real_fleet.cluster.start_operator()
    yield real_fleet


async def test_first_rollout(fleet: Fleet) -> None:
    await scenarios.first_rollout(fleet)


async def test_rollout_one_pod_at_a_time(fleet: Fleet) -> None:
    await scenarios.rollout_one_pod_at_a_time(fleet)


async def test_broken_digest(fleet: Fleet) -> None:
    await scenarios.broken_digest(fleet)


async def test_broken_nan(fleet: Fleet) -> None:
    await scenarios.broken_nan(fleet)


async def test_broken_canary_on_second_pod(fleet: Fleet) -> None:
    await scenarios.broken_canary_on_second_pod(fleet)


async def test_broken_canary_never_serves(fleet: Fleet) -> None:
    await scenarios.broken_canary_never_serves(fleet)


async def test_spec_change_mid_rollout(fleet: Fleet) -> None:
    await scenarios.spec_change_mid_rollout(fleet)


async def test_operator_killed_mid_rollout(fleet: Fleet) -> None:
    await scenarios.operator_killed_mid_rollout(fleet)


async def test_pod_restarted_mid_rollout(fleet: Fleet) -> None:
    await scenarios.pod_restarted_mid_rollout(fleet)


@pytest.mark.parametrize("step", list(scenarios.SWAP_STEPS))
async def test_server_killed_mid_swap(fleet: Fleet, step: str) -> None:
    """The second pod's server SIGKILLed at each step of its swap (its agent lives on)."""
    await scenarios.pod_killed_mid_swap(fleet, step, ("server",))


@pytest.mark.parametrize("step", list(scenarios.SWAP_STEPS))
async def test_pod_killed_mid_swap(fleet: Fleet, step: str) -> None:
    """The second pod's server and agent SIGKILLed at each step of its swap (the operation is lost)."""
    await scenarios.pod_killed_mid_swap(fleet, step, ("server", "agent"))


async def test_drift_is_corrected(fleet: Fleet) -> None:
    await scenarios.drift_is_corrected(fleet)


async def test_manual_rollback_by_annotation(fleet: Fleet) -> None:
    await scenarios.manual_rollback_by_annotation(fleet)


async def test_pod_added_after_rollout(fleet: Fleet) -> None:
    await scenarios.pod_added_after_rollout(fleet)


async def test_quality_gate_blocks_noisy_minilm(fleet: Fleet) -> None:
    await scenarios.quality_gate_blocks_noisy_minilm(fleet)
