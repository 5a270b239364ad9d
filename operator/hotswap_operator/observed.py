"""What the operator observes of the world: pods from the API and their agents' ``/v1/status``.

The agents are the truth about what each pod serves. These types are read leniently (extra fields
ignored, most fields optional) so an agent that reports more than the contract breaks nothing.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic.alias_generators import to_camel


class _Lenient(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore", frozen=True)


class VersionInfo(_Lenient):
    version: str
    digest: str | None = None


class Operation(_Lenient):
    id: str | None = None
    kind: str | None = None
    version: str | None = None
    state: str | None = None  # running | succeeded | failed
    error: str | None = None
    error_type: str | None = None
    started_at: str | None = None
    finished_at: str | None = None
    result: dict[str, Any] | None = None

    @property
    def running(self) -> bool:
        return self.state == "running"


class AgentStatus(_Lenient):
    pod: str | None = None
    active: VersionInfo | None = None
    previous: VersionInfo | None = None
    staged: VersionInfo | None = None
    on_disk: list[VersionInfo] = Field(default_factory=list)
    operation: Operation | None = None
    last_error: Any = None
    activated_at: str | None = None
    history: list[dict[str, Any]] = Field(default_factory=list)
    server: dict[str, Any] | None = None

    @field_validator("active", "previous", "staged", mode="before")
    @classmethod
    def _version_or_record(cls, value: Any) -> Any:
        # Accept a bare version string as well as a {version, digest} record.
        if isinstance(value, str):
            return {"version": value}
        if isinstance(value, dict) and not value.get("version"):
            return None
        return value

    @field_validator("on_disk", mode="before")
    @classmethod
    def _records(cls, value: Any) -> Any:
        if value is None:
            return []
        return [{"version": v} if isinstance(v, str) else v for v in value]

    @property
    def active_version(self) -> str | None:
        return self.active.version if self.active else None

    @property
    def server_reachable(self) -> bool:
        """Whether the agent can reach its server's admin plane (unknown counts as yes)."""
        return self.server is None or self.server.get("reachable", True) is not False

    @property
    def busy(self) -> bool:
        return self.operation is not None and self.operation.running

    def disk_digest(self, version: str) -> str | None:
        for entry in self.on_disk:
            if entry.version == version:
                return entry.digest
        return None

    def has_on_disk(self, version: str) -> bool:
        return any(entry.version == version for entry in self.on_disk)


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
