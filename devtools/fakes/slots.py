"""What a pod holds, and the contract's rules for changing it, without I/O.

``ServerSlots`` is the server's side (admin plane: preload, activate, rollback, discard); ``PodSlots``
adds the agent's side (versions on disk, stage, and the agent's rollback that reloads from disk).
Every refusal is a :class:`ContractError` carrying the ``error_type`` the real process would send.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from hotswap_contract.admin import AdminState, SwapResult, VersionRecord
from hotswap_contract.agent import AgentStatus, OnDisk, VersionRef


class ContractError(Exception):
    def __init__(self, message: str, error_type: str, status: int = 409) -> None:
        super().__init__(message)
        self.message = message
        self.error_type = error_type
        self.status = status


@dataclasses.dataclass
class ServerSlots:
    """The server's three slots. ``record`` is what it reports for a version it loaded."""

    active: VersionRecord | None = None
    staged: VersionRecord | None = None
    previous: VersionRecord | None = None
    swap_mode: str = "inplace"
    pause_ms: float = 1.0

    def preload(self, record: VersionRecord) -> VersionRecord:
        if self.active is not None and self.active.version == record.version:
            if record.digest and self.active.digest and record.digest != self.active.digest:
                raise ContractError(f"{record.version} is active with other contents", "version_conflict")
            return self.active
        self.staged = record
        return record

    def activate(self, version: str) -> SwapResult:
        if self.active is not None and self.active.version == version:
            return self._result("noop", 0.0)
        if self.staged is None or self.staged.version != version:
            raise ContractError(f"{version} is not staged", "not_staged")
        self.previous, self.active, self.staged = self.active, self.staged, None
        return self._result("initial" if self.previous is None else self._mode, self.pause_ms)

    def rollback(self) -> SwapResult:
        if self.previous is None:
            raise ContractError("no previous version", "no_previous")
        self.active, self.previous = self.previous, self.active
        return self._result(self._mode, self.pause_ms)

    @property
    def _mode(self) -> str:
        # "auto" is a setting; a swap reports what it did (a fake's device has no room for two).
        return "inplace" if self.swap_mode == "auto" else self.swap_mode

    def discard(self) -> None:
        self.staged = None

    def _result(self, mode: str, pause_ms: float) -> SwapResult:
        return SwapResult.model_validate(
            {"active": self.active, "previous": self.previous, "mode": mode, "pause_ms": pause_ms}
        )

    def admin_state(self) -> AdminState:
        return AdminState(
            active=self.active,
            staged=self.staged,
            previous=self.previous,
            swap_mode=self.swap_mode,  # type: ignore[arg-type]
        )


def _ref(record: VersionRecord | None) -> VersionRef | None:
    return VersionRef(version=record.version, digest=record.digest) if record else None


@dataclasses.dataclass
class PodSlots:
    """The server's slots plus the agent's versions on disk (version -> record with its digest)."""

    server: ServerSlots = dataclasses.field(default_factory=ServerSlots)
    on_disk: dict[str, VersionRecord] = dataclasses.field(default_factory=dict)

    @property
    def active(self) -> str | None:
        return self.server.active.version if self.server.active else None

    @property
    def previous(self) -> str | None:
        return self.server.previous.version if self.server.previous else None

    @property
    def staged(self) -> str | None:
        return self.server.staged.version if self.server.staged else None

    def stage(self, version: str, digest: str, sha256: str | None = None, **fields: Any) -> bool:
        """Put ``version`` on disk; False when it was there already with the pinned contents."""
        if version in self.on_disk and sha256 in (None, self.on_disk[version].digest):
            return False
        if sha256 is not None and sha256 != digest:
            raise ContractError(
                f"digest mismatch: expected {sha256[:12]}, got {digest[:12]}", "digest_mismatch", 422
            )
        self.on_disk[version] = VersionRecord(version=version, digest=digest, **fields)
        return True

    def preload(self, version: str) -> VersionRecord:
        record = self.on_disk.get(version)
        if record is None:
            raise ContractError(f"{version} is not on disk: stage it first", "not_on_disk", 404)
        return self.server.preload(record)

    def activate(self, version: str) -> SwapResult:
        return self.server.activate(version)

    def rollback(self, version: str) -> tuple[SwapResult, str]:
        """The agent's rollback: to ``version`` by the cheapest way; (result, via)."""
        if self.active == version:
            return self.server._result("noop", 0.0), "noop"
        if self.previous == version:
            return self.server.rollback(), "rollback"
        self.preload(version)
        return self.server.activate(version), "preload+activate"

    def agent_status(self, pod: str, **extra: Any) -> AgentStatus:
        """The contract's status of this pod; ``extra`` fills the rest (operation, history, ...)."""
        return AgentStatus.model_validate(
            {
                "pod": pod,
                "active": _ref(self.server.active),
                "previous": _ref(self.server.previous),
                "staged": _ref(self.server.staged),
                "on_disk": [OnDisk(version=r.version, digest=r.digest) for r in self.on_disk.values()],
                "server": {"reachable": True, "state": self.server.admin_state()},
                **extra,
            }
        )
