"""The server's admin plane (``127.0.0.1:8081``, pod-local): its state and the results of a swap.

The agent reads these through its server client and embeds the state in its own status
(``server.state``); the operator and the demo read them there.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from ._base import WireModel

SwapMode = Literal["inplace", "double", "auto"]
# What an activation did: the configured mode for a compatible version, a full replace for another
# architecture or shapes, "initial" for the first model, "noop" when it was active already.
SwapKind = Literal["inplace", "double", "replace", "initial", "noop"]


class VersionRecord(WireModel):
    """A model version the server holds (active, staged or previous). The server fills every field;
    readers need only ``version`` (and ``digest`` to compare contents)."""

    version: str
    path: str | None = None
    digest: str | None = None
    kind: str | None = None  # cross-encoder | bi-encoder
    architecture: str | None = None
    dtype: str | None = None
    device: str | None = None
    loaded_at: str | None = None  # ISO 8601, UTC


class LastSwap(WireModel):
    from_version: str | None
    to_version: str
    mode: SwapKind
    pause_ms: float
    at: str


class AdminState(WireModel):
    active: VersionRecord | None = None
    staged: VersionRecord | None = None
    previous: VersionRecord | None = None
    swap_mode: SwapMode = "auto"
    last_swap: LastSwap | None = None
    operation: str | None = None  # the control operation running now (preload, activate, ...)
    memory: dict[str, int] = Field(default_factory=dict)  # rssBytes, anonBytes, modelBytes, device*Bytes


class SwapResult(WireModel):
    """The answer of ``activate`` and ``rollback``."""

    active: VersionRecord | None
    previous: VersionRecord | None
    mode: SwapKind
    pause_ms: float


class PreloadRequest(WireModel):
    version: str
    path: str | None = None  # absolute, or relative to the models root; default: the version's folder
    digest: str | None = None  # when given, the folder's digest must equal it


class VersionRequest(WireModel):
    version: str
