"""Typed models of the ``RerankerModel`` resource: the single source of truth for the CRD.

``crdgen`` turns the spec and status models below into the structural OpenAPI schema of
``crds/rerankermodels.hotswap.dev.yaml``; the operator parses live objects with the same models,
so what the API server accepts and what the operator understands cannot drift apart.

Field names are snake_case in Python and camelCase on the wire (``alias_generator``).
"""

from __future__ import annotations

import hashlib
import json
from enum import StrEnum
from typing import Annotated, Any, Literal

from hotswap_contract import versions
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic.alias_generators import to_camel

GROUP = "hotswap.dev"
VERSION = "v1alpha1"
KIND = "RerankerModel"
PLURAL = "rerankermodels"
SINGULAR = "rerankermodel"
SHORT_NAMES = ("rrm",)
API_VERSION = f"{GROUP}/{VERSION}"

# Version ids (a DNS-1123 label, hotswap_contract.versions) name folders on the pods, so they are validated before any path.
VERSION_ID = versions.SCHEMA_PATTERN
DNS1123_SUBDOMAIN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
SOURCE_URI = r"^(file|s3|https?|hf)://[^\s]+$"
SHA256_HEX = r"^[a-fA-F0-9]{64}$"  # either case, as the agent takes it; stored lower-case
LABEL_KEY = r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$"
LABEL_VALUE = r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$"

VersionId = Annotated[
    str,
    Field(
        min_length=1,
        max_length=63,
        pattern=VERSION_ID,
        description="A DNS-1123 label (it names a folder).",
    ),
]
Timestamp = Annotated[str, Field(json_schema_extra={"format": "date-time"})]


class _Model(BaseModel):
    """Wire format: camelCase aliases, names accepted too; unknown fields refused in specs."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True)

    def wire(self) -> dict[str, Any]:
        """The JSON-ready dict as stored in the API (camelCase, no nulls)."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


class _StatusModel(_Model):
    # The operator writes status, but must read an older operator's status without failing.
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore", frozen=True)


# ----------------------------------------------------------------------------------------- spec


def _cel(*rules: tuple[str, str]) -> ConfigDict:
    """CEL rules the API server enforces (the same checks as the model validators below)."""
    extra = {"x-kubernetes-validations": [{"rule": rule, "message": message} for rule, message in rules]}
    return ConfigDict(**_Model.model_config, json_schema_extra=extra)  # type: ignore[typeddict-item]


class LabelSelectorRequirement(_Model):
    model_config = _cel(
        (
            "self.operator in ['In', 'NotIn'] ? (has(self.values) && size(self.values) > 0)"
            " : (!has(self.values) || size(self.values) == 0)",
            "In and NotIn need values; Exists and DoesNotExist take none",
        )
    )

    key: str = Field(max_length=317, pattern=LABEL_KEY, description="The label key.")
    operator: Literal["In", "NotIn", "Exists", "DoesNotExist"] = Field(
        description="How values relate to the key."
    )
    values: list[Annotated[str, Field(max_length=63, pattern=LABEL_VALUE)]] = Field(
        default_factory=list,
        max_length=64,
        description="Values for In and NotIn; empty for Exists/DoesNotExist.",
    )

    @model_validator(mode="after")
    def _values_fit_operator(self) -> LabelSelectorRequirement:
        if self.operator in ("In", "NotIn") and not self.values:
            raise ValueError(f"operator {self.operator} needs at least one value")
        if self.operator in ("Exists", "DoesNotExist") and self.values:
            raise ValueError(f"operator {self.operator} takes no values")
        return self


class LabelSelector(_Model):
    """A standard Kubernetes label selector; it must not be empty (that would select every pod)."""

    model_config = _cel(
        (
            "(has(self.matchLabels) && size(self.matchLabels) > 0)"
            " || (has(self.matchExpressions) && size(self.matchExpressions) > 0)",
            "selector must not be empty: it would select every pod in the namespace",
        )
    )

    match_labels: dict[str, Annotated[str, Field(max_length=63)]] = Field(
        default_factory=dict, max_length=64, description="Labels the pods must carry, exactly."
    )
    match_expressions: list[LabelSelectorRequirement] = Field(
        default_factory=list, max_length=32, description="Set-based requirements, all of which must hold."
    )

    @model_validator(mode="after")
    def _not_empty(self) -> LabelSelector:
        if not self.match_labels and not self.match_expressions:
            raise ValueError("selector must not be empty: it would select every pod in the namespace")
        return self


class Source(_Model):
    uri: str = Field(
        max_length=2048,
        pattern=SOURCE_URI,
        description="Where the weights are: file://, s3://, http(s):// or hf:// (the agents' allow-list applies).",
    )
    sha256: str | None = Field(
        default=None,
        pattern=SHA256_HEX,
        description="The manifest digest that pins the content (sha256 hex, either case); staging fails on a mismatch.",
    )

    @field_validator("sha256")
    @classmethod
    def _lower(cls, value: str | None) -> str | None:
        # Digests are compared as strings with what the agents report (lower-case hex).
        return value.lower() if value is not None else None


class CanaryCase(_Model):
    model_config = _cel(
        ("!has(self.expectTop) || self.expectTop < size(self.documents)", "expectTop must index documents")
    )

    query: str = Field(min_length=1, max_length=4096, description="The canary query.")
    documents: list[Annotated[str, Field(min_length=1, max_length=16384)]] = Field(
        min_length=1, max_length=64, description="Documents to score against the query."
    )
    expect_top: int | None = Field(
        default=None, ge=0, le=63, description="Index in documents of the document that must rank first."
    )

    @model_validator(mode="after")
    def _expect_top_in_range(self) -> CanaryCase:
        if self.expect_top is not None and self.expect_top >= len(self.documents):
            raise ValueError(
                f"expectTop {self.expect_top} is not an index of documents ({len(self.documents)})"
            )
        return self


class Analysis(_Model):
    soak_seconds: int = Field(
        default=0,
        ge=0,
        le=3600,
        description="After verifying a pod, watch its error rate this long (0: off).",
    )
    max_error_rate: float = Field(
        default=0.01,
        ge=0.0,
        le=1.0,
        description="Largest error rate (5xx / requests) a soaking pod may show.",
    )


class ConfigMapKeyRef(_Model):
    name: str = Field(max_length=253, pattern=DNS1123_SUBDOMAIN, description="The ConfigMap's name.")
    key: str = Field(
        max_length=253,
        pattern=r"^[-._a-zA-Z0-9]+$",
        description="The key holding the set as JSON: a list of {query, documents, relevance}.",
    )


class QualityCase(_Model):
    model_config = _cel(
        ("size(self.relevance) == size(self.documents)", "one relevance grade per document"),
        ("self.relevance.exists(r, r > 0.0)", "a case needs at least one relevant document"),
    )

    query: str = Field(min_length=1, max_length=4096, description="The query.")
    documents: list[Annotated[str, Field(min_length=1, max_length=16384)]] = Field(
        min_length=1, max_length=100, description="Candidate documents."
    )
    relevance: list[Annotated[float, Field(ge=0.0, le=100.0)]] = Field(
        min_length=1,
        max_length=100,
        description="Graded relevance of each document (same order; 0: not relevant).",
    )

    @model_validator(mode="after")
    def _aligned(self) -> QualityCase:
        if len(self.relevance) != len(self.documents):
            raise ValueError(f"{len(self.relevance)} relevance grades for {len(self.documents)} documents")
        if not any(r > 0 for r in self.relevance):
            raise ValueError("a case needs at least one relevant document (relevance > 0)")
        return self


class QualityGate(_Model):
    """A ranking-quality gate: a labelled set scored with the staged weights and the current ones."""

    model_config = _cel(
        ("has(self.set) != has(self.configMapRef)", "give exactly one of set and configMapRef"),
    )

    cases: list[QualityCase] | None = Field(
        default=None, alias="set", min_length=1, max_length=200, description="The labelled set, inline."
    )
    config_map_ref: ConfigMapKeyRef | None = Field(
        default=None, description="The labelled set in a ConfigMap of the resource's namespace (JSON)."
    )
    metric: Literal["ndcg", "mrr"] = Field(default="ndcg", description="nDCG@k or MRR@k.")
    k: int = Field(default=10, ge=1, le=100, description="The metric's cut-off.")
    floor: float | None = Field(
        default=None, ge=0.0, le=1.0, description="The least score the new version may have."
    )
    max_drop: float | None = Field(
        default=None, ge=0.0, le=1.0, description="The most the score may drop below the current version's."
    )

    @model_validator(mode="after")
    def _one_set(self) -> QualityGate:
        if (self.cases is None) == (self.config_map_ref is None):
            raise ValueError("give exactly one of set and configMapRef")
        return self


class RolloutSpec(_Model):
    prefetch: bool = Field(
        default=True, description="Stage and preload on every pod in parallel before swapping."
    )
    pod_timeout_seconds: int = Field(
        default=300,
        ge=1,
        le=86400,
        description="Bound on each step on a pod and on waiting for a pod to be ready.",
    )
    pause_seconds: int = Field(default=0, ge=0, le=3600, description="Pause between two pods.")
    canary: list[CanaryCase] = Field(
        default_factory=list, max_length=16, description="Pairs every swapped pod must score as expected."
    )
    analysis: Analysis = Field(default_factory=Analysis, description="Soak analysis after each pod.")
    quality: QualityGate | None = Field(
        default=None,
        description="A ranking-quality gate, evaluated once per rollout on staged weights before any activation.",
    )


class RollbackSpec(_Model):
    automatic: bool = Field(
        default=True,
        description="On a failure, move every touched pod back to the last-good version (else hold).",
    )


class RerankerModelSpec(_Model):
    selector: LabelSelector = Field(description="Selects the pods that serve this model.")
    version: VersionId = Field(description="The desired version id (a DNS-1123 label).")
    source: Source = Field(description="Where the desired version's weights are.")
    rollout: RolloutSpec = Field(default_factory=RolloutSpec, description="How to roll a new version out.")
    rollback: RollbackSpec = Field(
        default_factory=RollbackSpec, description="What to do when a rollout fails."
    )
    history_limit: int = Field(default=10, ge=1, le=100, description="How many past rollouts status keeps.")
    boot_config_map: str | None = Field(
        default=None,
        max_length=253,
        pattern=DNS1123_SUBDOMAIN,
        description="The ConfigMap holding the last-good version the pods boot on (default: <name>-boot).",
    )

    def fingerprint(self) -> str:
        """A short stable hash of the whole spec: a rollout belongs to exactly one spec."""
        raw = json.dumps(self.wire(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(raw.encode()).hexdigest()[:16]


# --------------------------------------------------------------------------------------- status


class PodState(StrEnum):
    PENDING = "Pending"  # selected, not yet touched by this rollout
    NOT_READY = "NotReady"  # not Running / no IP / not ready: waited for
    UNREACHABLE = "Unreachable"  # its agent does not answer
    BUSY = "Busy"  # its agent runs an operation (booting, staging...)
    STAGING = "Staging"
    PRELOADING = "Preloading"
    PRELOADED = "Preloaded"
    ACTIVATING = "Activating"
    VERIFYING = "Verifying"
    SOAKING = "Soaking"
    READY = "Ready"  # serves the version it should, verified
    ROLLING_BACK = "RollingBack"
    ROLLED_BACK = "RolledBack"
    HELD = "Held"
    FAILED = "Failed"


class Phase(StrEnum):
    PREFETCHING = "Prefetching"
    ACTIVATING = "Activating"
    COMPLETE = "Complete"
    ROLLING_BACK = "RollingBack"
    ROLLED_BACK = "RolledBack"
    HOLDING = "Holding"


ACTIVE_PHASES = frozenset({Phase.PREFETCHING, Phase.ACTIVATING})
FAILED_PHASES = frozenset({Phase.ROLLING_BACK, Phase.ROLLED_BACK, Phase.HOLDING})


class Step(StrEnum):
    WAIT_READY = "WaitReady"
    STAGE = "Stage"
    PRELOAD = "Preload"
    VERIFY_STAGED = "VerifyStaged"  # the canary on the staged weights, before the pod's activation
    ACTIVATE = "Activate"
    VERIFY = "Verify"
    SOAK = "Soak"
    ROLLBACK = "Rollback"
    QUALITY = "QualityGate"


class HistoryResult(StrEnum):
    SUCCEEDED = "Succeeded"
    ROLLED_BACK = "RolledBack"
    SUPERSEDED = "Superseded"
    FAILED = "Failed"  # failed with automatic rollback off: held


class VersionRef(_StatusModel):
    version: str
    source: Source | None = None
    digest: str | None = None


class PodStatus(_StatusModel):
    name: str
    ip: str | None = None
    version: str | None = Field(default=None, description="The version the pod's server has active.")
    digest: str | None = None
    state: PodState = PodState.PENDING
    message: str = ""
    since: Timestamp = Field(description="When the pod entered this state.")
    retry_at: Timestamp | None = Field(default=None, description="A failed pod is not retried before this.")
    last_swap: dict[str, Any] | None = Field(
        default=None,
        description="The last swap the operator asked of this pod (mode, pauseMs, at).",
        json_schema_extra={"x-kubernetes-preserve-unknown-fields": True},
    )


class Failure(_StatusModel):
    pod: str | None = None
    step: Step
    reason: str
    at: Timestamp


class SourceGone(_StatusModel):
    """A version whose source no longer holds it (staging it failed with a not-found kind of error)."""

    version: str
    reason: str
    pod: str | None = None
    at: Timestamp


class CurrentStep(_StatusModel):
    pod: str
    step: Step
    since: Timestamp
    baseline_requests: float | None = None
    baseline_errors: float | None = None


class QualityScores(_StatusModel):
    """What the quality gate measured: the new version's score and the current one's on the set."""

    version: str
    metric: str
    k: int | None = None
    candidate: float | None = Field(default=None, description="The new (staged) version's score.")
    baseline: float | None = Field(default=None, description="The current (active) version's score.")
    baseline_version: str | None = None
    delta: float | None = None
    floor: float | None = None
    max_drop: float | None = None
    passed: bool
    problems: list[str] = Field(default_factory=list)
    pod: str | None = None
    at: Timestamp | None = None


class PodFault(_StatusModel):
    """A step that failed for a reason of the pod, not of the version: the pod is re-planned."""

    pod: str
    step: Step
    reason: str
    since: Timestamp = Field(description="The pod's first fault in this rollout.")
    count: int = 1
    retry_at: Timestamp | None = Field(
        default=None,
        description="A transient source error (throttling, a timeout): no pod stages before this "
        "(backoff, bounded by podTimeoutSeconds since the first error).",
    )


class RolloutStatus(_StatusModel):
    version: str
    spec_hash: str = Field(description="The spec this rollout belongs to; a new spec supersedes it.")
    source: Source | None = None
    digest: str | None = Field(default=None, description="The manifest digest the pods staged.")
    phase: Phase
    started_at: Timestamp
    finished_at: Timestamp | None = None
    done: list[str] = Field(default_factory=list, description="Pods moved to this version and verified.")
    current: CurrentStep | None = None
    next_at: Timestamp | None = Field(default=None, description="No pod is swapped before this (pause).")
    failure: Failure | None = None
    quality: QualityScores | None = Field(default=None, description="The quality gate's result.")
    pod_fault: PodFault | None = Field(
        default=None, description="The pod being re-planned after a pod fault (bounded by podTimeoutSeconds)."
    )
    attempt: int = Field(default=1, description="A first install (no last-good yet) is retried: its attempt.")
    retry_at: Timestamp | None = Field(
        default=None, description="A failed first install is tried again at this time (backoff)."
    )


class HistoryEntry(_StatusModel):
    version: str
    digest: str | None = None
    source: Source | None = None
    result: HistoryResult
    reason: str = ""
    started_at: Timestamp
    finished_at: Timestamp
    quality: QualityScores | None = None


class Condition(_StatusModel):
    type: str
    status: Literal["True", "False", "Unknown"]
    reason: str
    message: str = ""
    last_transition_time: Timestamp
    observed_generation: int | None = None


class RerankerModelStatus(_StatusModel):
    observed_generation: int | None = None
    target_version: str | None = None
    current_version: str | None = Field(
        default=None, description="Served by every selected pod, when they agree."
    )
    last_good_version: str | None = None
    last_good: VersionRef | None = None
    ready_pods: str | None = Field(default=None, description="Pods on the target version / pods selected.")
    serving: str | None = Field(
        default=None, description="What the selected pods serve, e.g. 'v2 3/3' or 'v2 2/3, v3 1/3'."
    )
    pods: list[PodStatus] = Field(
        default_factory=list,
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]},
    )
    rollout: RolloutStatus | None = None
    last_good_unavailable: SourceGone | None = Field(
        default=None,
        description="The last-good version could not be staged from its source (gone from storage): "
        "pods that need it (a new pod, a rollback) cannot get it.",
    )
    history: list[HistoryEntry] = Field(default_factory=list)
    conditions: list[Condition] = Field(
        default_factory=list,
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]},
    )


def parse_status(raw: dict[str, Any] | None) -> RerankerModelStatus:
    """The operator's part of ``.status`` (kopf's own ``status.kopf`` is left alone).

    A status this operator cannot read (written by another version, edited by hand) is dropped
    field by field rather than failing every reconcile: what is lost is re-derived from the agents.
    """
    raw = dict(raw or {})
    try:
        return RerankerModelStatus.model_validate(raw)
    except ValidationError:
        kept = {}
        for key, value in raw.items():
            try:
                RerankerModelStatus.model_validate({key: value})
            except ValidationError:
                continue
            kept[key] = value
        return RerankerModelStatus.model_validate(kept)
