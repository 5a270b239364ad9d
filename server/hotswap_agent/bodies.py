"""Request bodies of the control API, validated into small frozen objects (4xx with a reason)."""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from typing import Any

from hotswap_contract.agent import EvaluateRequest
from pydantic import ValidationError

from hotswap_agent.errors import BadRequest
from hotswap_agent.uris import SourceUri, parse_allowed_source
from hotswap_agent.volume import validate_version

SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
MAX_CANARIES = 16
MAX_DOCUMENTS = 256
MAX_TEXT = 20_000


def _object(body: Any, fields: set[str]) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise BadRequest("body must be a JSON object")
    unknown = sorted(set(body) - fields)
    if unknown:
        raise BadRequest(f"unknown field(s): {', '.join(unknown)}")
    return body


def parse_sha256(value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not SHA256_RE.match(value.lower()):
        raise BadRequest("sha256 must be 64 hex digits (the version's manifest digest)")
    return value.lower()


@dataclass(frozen=True)
class StageRequest:
    version: str
    source: SourceUri
    sha256: str | None

    @property
    def key(self) -> tuple[str, str, str | None]:
        return (self.version, self.source.canonical, self.sha256)


def parse_stage(body: Any, allow: tuple[str, ...]) -> StageRequest:
    data = _object(body, {"version", "uri", "sha256"})
    version = validate_version(data.get("version"))
    sha = parse_sha256(data.get("sha256"))
    if not isinstance(data.get("uri"), str):
        raise BadRequest("uri is required (a string)")
    return StageRequest(version, parse_allowed_source(data["uri"], allow), sha)


def parse_version(body: Any) -> str:
    data = _object(body, {"version"})
    return validate_version(data.get("version"))


@dataclass(frozen=True)
class Canary:
    query: str
    documents: tuple[Any, ...]
    expect_top: int | None

    def to_json(self) -> dict[str, Any]:
        return {"query": self.query, "documents": list(self.documents), "expectTop": self.expect_top}


@dataclass(frozen=True)
class VerifyRequest:
    canary: tuple[Canary, ...]
    expect_version: str | None
    staged: bool = False  # score with the server's staged version (admin score), not the data plane

    @property
    def key(self) -> str:
        blob = json.dumps(
            [c.to_json() for c in self.canary] + [self.expect_version, self.staged], sort_keys=True
        )
        return hashlib.sha256(blob.encode()).hexdigest()


def _document(doc: Any, where: str) -> Any:
    if isinstance(doc, str):
        text = doc
    elif isinstance(doc, dict) and set(doc) == {"text"} and isinstance(doc["text"], str):
        text = doc["text"]
    else:
        raise BadRequest(f"{where} must be a string or {{text}}")
    if len(text) > MAX_TEXT:
        raise BadRequest(f"{where} is longer than {MAX_TEXT} characters")
    return doc


def parse_verify(body: Any) -> VerifyRequest:
    data = _object(body, {"canary", "expectVersion", "staged"})
    raw = data.get("canary", [])
    if not isinstance(raw, list) or len(raw) > MAX_CANARIES:
        raise BadRequest(f"canary must be a list of at most {MAX_CANARIES} {{query, documents, expectTop?}}")
    canaries = []
    for i, item in enumerate(raw):
        item = _object(item, {"query", "documents", "expectTop"}) if isinstance(item, dict) else None
        if item is None:
            raise BadRequest(f"canary[{i}] must be an object")
        query = item.get("query")
        if not isinstance(query, str) or not query or len(query) > MAX_TEXT:
            raise BadRequest(f"canary[{i}].query must be a non-empty string")
        docs = item.get("documents")
        if not isinstance(docs, list) or not 1 <= len(docs) <= MAX_DOCUMENTS:
            raise BadRequest(f"canary[{i}].documents must be a list of 1 to {MAX_DOCUMENTS} documents")
        documents = tuple(_document(d, f"canary[{i}].documents[{j}]") for j, d in enumerate(docs))
        top = item.get("expectTop")
        if top is not None and (
            not isinstance(top, int) or isinstance(top, bool) or not 0 <= top < len(docs)
        ):
            raise BadRequest(f"canary[{i}].expectTop must be an index into its documents")
        canaries.append(Canary(query, documents, top))
    expect = data.get("expectVersion")
    staged = data.get("staged", False)
    if not isinstance(staged, bool):
        raise BadRequest("staged must be true or false")
    return VerifyRequest(
        tuple(canaries), validate_version(expect) if expect is not None else None, staged=staged
    )


def parse_evaluate(body: Any) -> EvaluateRequest:
    """``POST /v1/evaluate``: the contract's model; a bad version id is 422, anything else 400."""
    if not isinstance(body, dict):
        raise BadRequest("body must be a JSON object")
    validate_version(body.get("version"))
    try:
        return EvaluateRequest.model_validate(body)
    except ValidationError as exc:
        parts = []
        for err in exc.errors()[:5]:
            loc = ".".join(str(p) for p in err.get("loc", ()))
            parts.append(f"{loc or 'body'}: {err.get('msg', 'invalid')}")
        raise BadRequest("; ".join(parts)) from None
