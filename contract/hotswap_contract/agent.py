"""The agent's API (``:9090``): its status and the records in it. camelCase, like the CRD.

``GET /v1/status`` answers :class:`AgentStatus`. The operator decides from it alone: the agents are
the truth about what each pod serves.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator

from ._base import WireModel
from .admin import AdminState

OperationKind = Literal["stage", "preload", "activate", "verify", "rollback", "boot"]
OperationState = Literal["running", "succeeded", "failed"]
RUNNING, SUCCEEDED, FAILED = "running", "succeeded", "failed"


class VersionRef(WireModel):
    version: str
    digest: str | None = None


class OnDisk(VersionRef):
    bytes: int | None = None
    staged_at: str | None = None
    source: str | None = None


class Progress(WireModel):
    bytes_done: int = 0
    bytes_total: int | None = None


class Operation(WireModel):
    id: str | None = None
    kind: OperationKind | str | None = None
    version: str | None = None
    state: OperationState | str | None = None
    step: str | None = None
    progress: Progress = Field(default_factory=Progress)
    error: str | None = None
    error_type: str | None = None
    result: dict[str, Any] | None = None
    started_at: str | None = None
    finished_at: str | None = None

    @property
    def running(self) -> bool:
        return self.state == RUNNING


class ServerView(WireModel):
    """The agent's view of its server: reachable or not, and the last admin state it read."""

    reachable: bool = True
    error: str | None = None
    state_at: str | None = None
    state: AdminState | None = None


class AgentStatus(WireModel):
    pod: str | None = None
    agent: dict[str, Any] = Field(default_factory=dict)  # {version, startedAt, keep}
    active: VersionRef | None = None
    previous: VersionRef | None = None
    staged: VersionRef | None = None
    on_disk: list[OnDisk] = Field(default_factory=list)
    operation: Operation | None = None
    last_error: dict[str, Any] | None = None  # {message, type, at, operationId, kind, version}
    last_activation: dict[str, Any] | None = None  # {version, fromVersion, at, kind, mode, pauseMs, ...}
    last_verify: dict[str, Any] | None = None  # {version, ok, at, operationId}
    history: list[dict[str, Any]] = Field(default_factory=list)  # summaries of recent operations
    boot: dict[str, Any] = Field(default_factory=dict)  # {state, file, version, attempts, lastError, ...}
    server: ServerView | None = None

    @field_validator("active", "previous", "staged", mode="before")
    @classmethod
    def _version_or_record(cls, value: Any) -> Any:
        # A record without a version means "none" (an empty slot), not a malformed status.
        if isinstance(value, dict) and not value.get("version"):
            return None
        return value

    @field_validator("on_disk", "history", mode="before")
    @classmethod
    def _list(cls, value: Any) -> Any:
        return [] if value is None else value

    @property
    def active_version(self) -> str | None:
        return self.active.version if self.active else None

    @property
    def server_reachable(self) -> bool:
        """Whether the agent can reach its server's admin plane (unknown counts as yes)."""
        return self.server is None or self.server.reachable

    @property
    def busy(self) -> bool:
        return self.operation is not None and self.operation.running

    def disk_digest(self, version: str) -> str | None:
        return next((e.digest for e in self.on_disk if e.version == version), None)

    def has_on_disk(self, version: str) -> bool:
        return any(e.version == version for e in self.on_disk)
