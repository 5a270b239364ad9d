"""The agent's OpenAPI 3.1 document, served at ``GET /openapi.json`` (no token: it holds no secrets)."""

from __future__ import annotations

from typing import Any

from hotswap_contract import versions
from hotswap_contract.schema import agent_components
from hotswap_contract.wire import SHA256_SCHEMA_PATTERN

from . import __version__

_VERSION = {"type": "string", "pattern": versions.SCHEMA_PATTERN, "maxLength": versions.MAX_LENGTH}
_SHA = {"type": "string", "pattern": SHA256_SCHEMA_PATTERN}
_ERROR = {"$ref": "#/components/schemas/ErrorBody"}
_OPERATION = {"$ref": "#/components/schemas/Operation"}
_STATUS = {"$ref": "#/components/schemas/AgentStatus"}
_UNAUTHORIZED = {
    "description": "Missing or wrong token",
    "content": {"application/json": {"schema": _ERROR}},
    "headers": {"WWW-Authenticate": {"schema": {"type": "string"}}},
}


def _op(summary: str, body: dict[str, Any], result: str | None = None) -> dict[str, Any]:
    answer = {"application/json": {"schema": {"type": "object", "properties": {"operation": _OPERATION}}}}
    err = {"application/json": {"schema": _ERROR}}
    return {
        "post": {
            "summary": summary,
            "security": [{"bearer": []}],
            "requestBody": {"required": True, "content": {"application/json": {"schema": body}}},
            "responses": {
                "200": {"description": "This operation already succeeded and still holds", "content": answer},
                "202": {"description": "Started, or this same operation is running", "content": answer},
                "400": {"description": "Malformed body", "content": err},
                "401": _UNAUTHORIZED,
                "413": {"description": "Body over the limit", "content": err},
                "403": {"description": "Source outside the allow-list", "content": err},
                "404": {"description": "Version not on disk", "content": err},
                "409": {"description": "Another operation is running", "content": err},
                "422": {"description": "Invalid version or source", "content": err},
            },
            **({"description": f"The finished operation's `result` is a {result}."} if result else {}),
        }
    }


def _version_body(**extra: Any) -> dict[str, Any]:
    return {
        "type": "object",
        "required": ["version", *[k for k in extra if k == "uri"]],
        "additionalProperties": False,
        "properties": {"version": _VERSION, **extra},
    }


def openapi_document() -> dict[str, Any]:
    plain = {"200": {"description": "OK"}}
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "hotswap-agent",
            "version": __version__,
            "description": "Sidecar control API for the operator. Everything but /healthz, /metrics and "
            "/openapi.json needs the bearer token. Long operations answer 202 and are polled through /v1/status.",
        },
        "paths": {
            "/v1/status": {
                "get": {
                    "summary": "Versions, the operation in progress, the server's state",
                    "security": [{"bearer": []}],
                    "responses": {
                        "200": {"description": "OK", "content": {"application/json": {"schema": _STATUS}}},
                        "401": _UNAUTHORIZED,
                    },
                }
            },
            "/v1/stage": _op(
                "Fetch a version from an allowed source, verify its digest, rename it into place",
                _version_body(uri={"type": "string"}, sha256=_SHA),
            ),
            "/v1/preload": _op("Have the server load and validate a staged version", _version_body()),
            "/v1/activate": _op("Have the server swap a preloaded version in", _version_body()),
            "/v1/verify": _op(
                "Score canaries and check them: through the data plane (active), or with the server's "
                "staged version through its admin score (`staged: true`, before activation)",
                {"$ref": "#/components/schemas/VerifyRequest"},
            ),
            "/v1/evaluate": _op(
                "Score a labelled set with a staged version and with the active one: nDCG@k or MRR of "
                "both, and the quality gate when a floor or a maximum drop is given",
                {"$ref": "#/components/schemas/EvaluateRequest"},
                "EvaluateResult",
            ),
            "/v1/rollback": _op("Go back to a version on disk", _version_body()),
            "/healthz": {"get": {"summary": "Process alive", "responses": plain}},
            "/metrics": {"get": {"summary": "Prometheus metrics", "responses": plain}},
            "/openapi.json": {"get": {"summary": "This document", "responses": plain}},
        },
        "components": {
            "schemas": agent_components(),
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }
