"""JSON Schemas of the contract's models, for the OpenAPI documents of the server and the agent."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from .admin import AdminState, PreloadRequest, ScoreRequest, ScoreResult, SwapResult, VersionRequest
from .agent import AgentStatus, EvaluateRequest, EvaluateResult, Operation, VerifyRequest
from .wire import ErrorBody

REF = "#/components/schemas/{model}"


def components(*models: type[BaseModel]) -> dict[str, Any]:
    """``components.schemas`` for ``models`` and every model they reference, with camelCase names."""
    out: dict[str, Any] = {}
    for model in models:
        schema = model.model_json_schema(by_alias=True, ref_template=REF, mode="serialization")
        out.update(schema.pop("$defs", {}))
        out[model.__name__] = schema
    return out


def admin_components() -> dict[str, Any]:
    return components(
        AdminState, SwapResult, PreloadRequest, VersionRequest, ScoreRequest, ScoreResult, ErrorBody
    )


def agent_components() -> dict[str, Any]:
    return components(AgentStatus, Operation, VerifyRequest, EvaluateRequest, EvaluateResult, ErrorBody)
