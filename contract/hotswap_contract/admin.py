"""The server's admin plane (``127.0.0.1:8081``, pod-local): its state and the results of a swap.

The agent reads these through its server client and embeds the state in its own status
(``server.state``); the operator and the demo read them there.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from ._base import WireModel
from .versions import VersionId

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
    # Milliseconds per loading phase on the server (digest, read, build, check); {} if unknown.
    load_phases_ms: dict[str, float] = Field(default_factory=dict)


class LastSwap(WireModel):
    from_version: str | None
    to_version: str
    mode: SwapKind
    pause_ms: float
    at: str
    # CUDA only (absent on CPU): the device's peak counter is reset just before each swap, so these
    # are the bytes allocated when the swap began and the most allocated until it ended (the swap
    # and the forwards beside it), not a peak since the server started.
    device_before_bytes: int | None = None
    device_peak_bytes: int | None = None


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
    path: str | None = None  # absolute, or relative to the models root; the server requires it
    digest: str | None = None  # when given, the folder's digest must equal it


class VersionRequest(WireModel):
    version: str


# --- scoring with a named version (verify before exposure, the quality gate) ------------------------
# Bounds of one call, so it always ends in bounded time (the server also stops at a deadline).
MAX_SCORE_CASES = 256
MAX_SCORE_DOCUMENTS = 1000  # per case
MAX_SCORE_PAIRS = 4096  # over all cases
ScoredSlot = Literal["staged", "active", "previous"]


class ScoreCase(WireModel):
    query: str = Field(min_length=1)
    documents: list[str] = Field(min_length=1, max_length=MAX_SCORE_DOCUMENTS)


class ScoreRequest(WireModel):
    """``POST /admin/v1/score``: score ``cases`` with ``version``, which the server holds staged,
    active or previous. A staged or previous version is scored on its own copy, off the request queue;
    the active one through the queue like any request."""

    version: VersionId
    cases: list[ScoreCase] = Field(min_length=1, max_length=MAX_SCORE_CASES)

    @model_validator(mode="after")
    def _bounded(self) -> ScoreRequest:
        pairs = sum(len(c.documents) for c in self.cases)
        if pairs > MAX_SCORE_PAIRS:
            raise ValueError(f"{pairs} (query, document) pairs; one call scores at most {MAX_SCORE_PAIRS}")
        return self


class CaseScores(WireModel):
    # By document index: the data plane's default score (sigmoid of the logit for cross-encoders,
    # cosine for bi-encoders), float32 precision.
    scores: list[float]
    tokens: int


class ScoreResult(WireModel):
    version: str
    digest: str
    slot: ScoredSlot
    device: str  # where the forwards ran: "cpu", or "cuda:0" for a temporary device copy
    duration_ms: float
    cases: list[CaseScores]
