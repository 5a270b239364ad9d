"""What the operator observes of the world: pods from the API and their agents' ``/v1/status``.

The agents are the truth about what each pod serves. Their status is the contract's
:class:`~hotswap_contract.agent.AgentStatus`, read leniently (extra fields ignored, most optional).
"""

from __future__ import annotations

import dataclasses

from hotswap_contract.agent import AgentStatus, Operation, VersionRef

__all__ = ["AgentStatus", "Operation", "PodView", "VersionRef"]


@dataclasses.dataclass(frozen=True)
class PodView:
    """One selected pod as observed in one reconcile iteration."""

    name: str
    ip: str | None
    phase: str | None
    ready: bool
    deleting: bool = False
    agent: AgentStatus | None = None
    agent_error: str | None = None

    @property
    def running(self) -> bool:
        return self.phase == "Running" and bool(self.ip) and not self.deleting

    @property
    def active(self) -> str | None:
        return self.agent.active_version if self.agent else None

    @property
    def operable(self) -> bool:
        """Safe to act on now: running, its agent answers and is idle, and it is ready or empty.

        A pod that is not ready while serving a model is waited for, never swapped blindly; an
        empty server (first rollout, failed boot) is not ready by definition and has nothing to lose.
        """
        if not self.running or self.agent is None or self.agent.busy or not self.agent.server_reachable:
            return False
        return self.ready or self.agent.active is None
