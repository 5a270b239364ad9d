"""The agent's API (``:9090``): its status and the records in it. camelCase, like the CRD.

``GET /v1/status`` answers :class:`AgentStatus`. The operator decides from it alone: the agents are
the truth about what each pod serves.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, field_validator, model_validator

from ._base import RequestModel, WireModel
from .admin import AdminState
from .ranking import Metric
from .versions import VersionId

OperationKind = Literal["stage", "preload", "activate", "verify", "evaluate", "rollback", "boot"]
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
    # With error_type source_unavailable: "transient" (worth a retry), "gone" (the source does not
    # hold the version) or "refused" (access). A str, not a Literal: a newer agent's value must not
    # make the whole status unreadable; absent from agents before 2026-11-30.
    source_fault: str | None = None
    result: dict[str, Any] | None = None
    started_at: str | None = None
    finished_at: str | None = None
    # Seconds spent in each step so far (e.g. {"downloading": 1.2, "digest": 0.3}).
    step_seconds: dict[str, float] = Field(default_factory=dict)

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
    last_error: dict[str, Any] | None = None  # {message, type, at, operationId, kind, version, sourceFault}
    last_activation: dict[str, Any] | None = None  # {version, fromVersion, at, kind, mode, pauseMs, ...}
    last_verify: dict[str, Any] | None = None  # {version, ok, at, operationId, target, errorType?}
    history: list[dict[str, Any]] = Field(default_factory=list)  # summaries of recent operations
    # {state, file, version, attempts, lastError, lastSourceFault, ...}
    boot: dict[str, Any] = Field(default_factory=dict)
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


# --- requests of the control API (unknown fields are refused) ---------------------------------------
MAX_CANARIES = 16
MAX_CANARY_DOCUMENTS = 256
MAX_TEXT = 20_000
MAX_SET_CASES = 200
MAX_SET_DOCUMENTS = 100  # per case


class TextDocument(RequestModel):
    text: str = Field(max_length=MAX_TEXT)


class CanaryCase(RequestModel):
    query: str = Field(min_length=1, max_length=MAX_TEXT)
    documents: list[Annotated[str, Field(max_length=MAX_TEXT)] | TextDocument] = Field(
        min_length=1, max_length=MAX_CANARY_DOCUMENTS
    )
    expect_top: int | None = Field(default=None, ge=0)  # the document index that must rank first


class VerifyRequest(RequestModel):
    """``POST /v1/verify``. ``staged: false`` (default): the canaries go through the data plane and
    the reply must name ``expectVersion`` (default: the active version). ``staged: true``: the server
    scores them with its staged version (``expectVersion``, default whatever is staged) through the
    same tokenizer and scoring code, before that version serves anything."""

    canary: list[CanaryCase] = Field(default_factory=list, max_length=MAX_CANARIES)
    expect_version: VersionId | None = None
    staged: bool = False


class LabelledCase(RequestModel):
    """One query of a labelled set: its documents and their graded relevance (same order)."""

    query: str = Field(min_length=1, max_length=MAX_TEXT)
    documents: list[Annotated[str, Field(max_length=MAX_TEXT)]] = Field(
        min_length=1, max_length=MAX_SET_DOCUMENTS
    )
    relevance: list[Annotated[float, Field(ge=0, allow_inf_nan=False)]]

    @model_validator(mode="after")
    def _aligned(self) -> LabelledCase:
        if len(self.relevance) != len(self.documents):
            raise ValueError(f"{len(self.relevance)} relevance grades for {len(self.documents)} documents")
        if not any(r > 0 for r in self.relevance):
            raise ValueError("a case needs at least one relevant document (relevance > 0)")
        return self


class EvaluateRequest(RequestModel):
    """``POST /v1/evaluate``: score ``set`` with the staged ``version`` and with the active version,
    compute ``metric`` at ``k`` for both (:mod:`hotswap_contract.ranking`). With ``floor`` and/or
    ``maxDrop`` the agent also applies the gate: the operation fails with ``quality_failed``."""

    version: VersionId
    set: list[LabelledCase] = Field(min_length=1, max_length=MAX_SET_CASES)
    metric: Metric = "ndcg"
    k: int | None = Field(default=10, ge=1)
    floor: float | None = Field(default=None, ge=0, le=1)
    max_drop: float | None = Field(default=None, ge=0, le=1)


class MetricScore(WireModel):
    version: str
    score: float  # the mean over the set's cases
    per_case: list[float]


class EvaluateResult(WireModel):
    version: str
    metric: Metric
    k: int | None
    candidate: MetricScore
    baseline: MetricScore | None  # the active version; None when nothing is active
    delta: float | None  # candidate - baseline
    floor: float | None = None
    max_drop: float | None = None
    passed: bool  # True when no gate was given
    problems: list[str] = Field(default_factory=list)
