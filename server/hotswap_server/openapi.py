"""The OpenAPI 3.1 document of both planes, served at ``GET /openapi.json`` on the data plane."""

from __future__ import annotations

from typing import Any

from hotswap_contract import versions
from hotswap_contract.schema import admin_components
from hotswap_contract.wire import SHA256_SCHEMA_PATTERN, VERSION_HEADER

from . import __version__


def _json(schema: dict[str, Any], description: str = "OK") -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


_ERRORS = {
    "400": _json(_ref("ErrorBody"), "Body is not JSON"),
    "413": _json(_ref("ErrorBody"), "Body, document count or token length over the limit"),
    "422": _json(_ref("ErrorBody"), "Wrong types or values"),
    "429": _json(_ref("ErrorBody"), "Queue full"),
    "503": _json(_ref("ErrorBody"), "No model active, or draining"),
}
_VERSION_HEADER = {
    VERSION_HEADER: {
        "description": "The one model version that scored every pair of this request",
        "schema": {"type": "string"},
    }
}
_ADMIN_ERRORS = {
    "401": _json(_ref("ErrorBody"), "Missing or wrong bearer token"),
    "409": _json(_ref("ErrorBody"), "Another operation runs, not staged, or no previous version"),
    "422": _json(_ref("ErrorBody"), "Bad input or an invalid model (the reason is in `error`)"),
}

SCHEMAS: dict[str, Any] = {
    "TeiRerankRequest": {
        "type": "object",
        "required": ["query", "texts"],
        "properties": {
            "query": {"type": "string"},
            "texts": {"type": "array", "items": {"type": "string"}, "minItems": 1},
            "truncate": {"type": "boolean", "default": False},
            "truncation_direction": {"type": "string", "enum": ["Right", "right"], "default": "Right"},
            "raw_scores": {"type": "boolean", "default": False},
            "return_text": {"type": "boolean", "default": False},
        },
    },
    "TeiRank": {
        "type": "object",
        "required": ["index", "score"],
        "properties": {"index": {"type": "integer"}, "score": {"type": "number"}, "text": {"type": "string"}},
    },
    "CohereRerankRequest": {
        "type": "object",
        "required": ["query", "documents"],
        "properties": {
            "model": {"type": "string"},
            "query": {"type": "string"},
            "documents": {
                "type": "array",
                "minItems": 1,
                "items": {
                    "oneOf": [
                        {"type": "string"},
                        {"type": "object", "required": ["text"], "properties": {"text": {"type": "string"}}},
                    ]
                },
            },
            "top_n": {"type": "integer", "minimum": 1},
            "return_documents": {"type": "boolean"},
            "max_tokens_per_doc": {"type": "integer", "minimum": 1},
        },
    },
    "CohereRerankResponse": {
        "type": "object",
        "required": ["id", "results"],
        "properties": {
            "id": {"type": "string"},
            "model": {"type": "string"},
            "results": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["index", "relevance_score"],
                    "properties": {
                        "index": {"type": "integer"},
                        "relevance_score": {"type": "number"},
                        "document": {"type": "object", "properties": {"text": {"type": "string"}}},
                    },
                },
            },
            "meta": {"type": "object"},
            "usage": {"type": "object", "properties": {"total_tokens": {"type": "integer"}}},
        },
    },
}


def _rerank_op(summary: str, request: str, response: dict[str, Any]) -> dict[str, Any]:
    return {
        "post": {
            "summary": summary,
            "requestBody": {"required": True, "content": {"application/json": {"schema": _ref(request)}}},
            "responses": {"200": {**_json(response), "headers": _VERSION_HEADER}, **_ERRORS},
        }
    }


def _admin_post(summary: str, body: dict[str, Any] | None, result: str) -> dict[str, Any]:
    op: dict[str, Any] = {
        "summary": summary,
        "security": [{"bearer": []}],
        "responses": {
            "200": _json(_ref(result) if result in _schemas() else {"type": "object"}),
            **_ADMIN_ERRORS,
        },
    }
    if body is not None:
        op["requestBody"] = {"required": True, "content": {"application/json": {"schema": body}}}
    return {"post": op}


def _schemas() -> dict[str, Any]:
    """The data plane's own shapes, and the admin plane's from the shared contract."""
    return {**SCHEMAS, **admin_components()}


def openapi_document() -> dict[str, Any]:
    version = {"type": "string", "pattern": versions.SCHEMA_PATTERN, "maxLength": versions.MAX_LENGTH}
    version_body = {"type": "object", "required": ["version"], "properties": {"version": version}}
    preload_body = {
        "type": "object",
        "required": ["version"],
        "properties": {
            "version": version,
            "path": {"type": "string", "description": "absolute, or relative to the models root"},
            "digest": {"type": "string", "pattern": SHA256_SCHEMA_PATTERN},
        },
    }
    plain = {"200": {"description": "OK"}}
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "hotswap-server",
            "version": __version__,
            "description": "Reranker with in-place model swaps. The data plane is public; the admin "
            "plane (/admin/v1/*) listens on 127.0.0.1 only and needs the bearer token.",
        },
        "paths": {
            "/rerank": _rerank_op(
                "TEI-compatible rerank", "TeiRerankRequest", {"type": "array", "items": _ref("TeiRank")}
            ),
            "/v1/rerank": _rerank_op(
                "Cohere v1-compatible rerank", "CohereRerankRequest", _ref("CohereRerankResponse")
            ),
            "/v2/rerank": _rerank_op(
                "Cohere v2 / Jina-compatible rerank", "CohereRerankRequest", _ref("CohereRerankResponse")
            ),
            "/info": {"get": {"summary": "Model and limits", "responses": plain}},
            "/healthz": {"get": {"summary": "Process alive", "responses": plain}},
            "/readyz": {
                "get": {
                    "summary": "A model is active and the server is not draining",
                    "responses": {**plain, "503": {"description": "Not ready"}},
                }
            },
            "/metrics": {"get": {"summary": "Prometheus metrics", "responses": plain}},
            "/openapi.json": {"get": {"summary": "This document", "responses": plain}},
            "/admin/v1/state": {
                "get": {
                    "summary": "Active, staged, previous versions; last swap; memory",
                    "security": [{"bearer": []}],
                    "responses": {"200": _json(_ref("AdminState")), "401": _ADMIN_ERRORS["401"]},
                }
            },
            "/admin/v1/preload": _admin_post(
                "Load and validate a version into host memory", preload_body, "Staged"
            ),
            "/admin/v1/activate": _admin_post("Swap the staged version in", version_body, "SwapResult"),
            "/admin/v1/rollback": _admin_post("Reactivate the previous version", None, "SwapResult"),
            "/admin/v1/discard": _admin_post("Drop the staged version", None, "Discarded"),
        },
        "components": {
            "schemas": _schemas(),
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }
