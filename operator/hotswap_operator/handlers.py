"""kopf handlers: registration only, each with a one-line docstring saying what triggers it.

Run with ``kopf run -m hotswap_operator.handlers`` (what ``hotswap-operator`` does). The work lives
in ``rollout.py``: one reconcile loop per RerankerModel, run as a kopf daemon.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import kopf

from . import names, peering
from .config import Config
from .models import GROUP, PLURAL, VERSION
from .rollout import Reconciler, Runtime

Logger = logging.Logger | logging.LoggerAdapter[Any]


@kopf.on.startup()
async def startup(*, settings: kopf.OperatorSettings, memo: Any, logger: Logger, **_: Any) -> None:
    """Operator start: read the config, open the API and agent clients, tune kopf."""
    config = Config.from_env()
    # kopf's own events for each handler log line would drown ours: only its warnings become events.
    settings.posting.level = logging.WARNING
    # The operator's RBAC has no CRD watch: discover resources once at start.
    settings.scanning.disabled = True
    settings.persistence.finalizer = f"{GROUP}/operator"
    # Replicas with kopf peering: a silent peer counts as alive this long (peering.py).
    settings.peering.lifetime = config.peering_lifetime
    memo.runtime = await Runtime.start(config)
    await peering.ensure_objects(memo.runtime.kube, peering.WATCH, logger)
    logger.info(
        f"hotswap-operator ready: agents on port {config.agent_port}, token {config.agent_token_file}"
    )


@kopf.on.cleanup()
async def cleanup(*, memo: Any, **_: Any) -> None:
    """Operator stop: close the clients."""
    runtime: Runtime | None = getattr(memo, "runtime", None)
    if runtime is not None:
        await runtime.close()


@kopf.daemon(GROUP, VERSION, PLURAL, id="reconcile", cancellation_timeout=5.0)
async def reconcile(
    *, stopped: kopf.DaemonStopped, namespace: str | None, name: str, memo: Any, logger: Logger, **_: Any
) -> None:
    """A RerankerModel exists (or the operator restarted): run its reconcile loop until it is deleted."""
    await Reconciler(memo.runtime, namespace or "", name, logger).run(stopped)


@kopf.on.event(GROUP, VERSION, PLURAL)
def wake_on_change(*, namespace: str | None, name: str, memo: Any, **_: Any) -> None:
    """A RerankerModel changed: wake its loop now rather than at its next poll."""
    runtime: Runtime | None = getattr(memo, "runtime", None)
    if runtime is not None:
        runtime.wake(names.resource_key(namespace or "", name))


@kopf.on.event("", "v1", "pods")
def wake_on_pod(*, namespace: str | None, labels: Mapping[str, str], memo: Any, **_: Any) -> None:
    """A pod appeared, changed or went away: wake the loops whose selector matches it."""
    runtime: Runtime | None = getattr(memo, "runtime", None)
    if runtime is not None:
        runtime.wake_for_pod(namespace or "", dict(labels))
