"""The OpenAPI 3.1 documents of the two planes: the data plane's at ``GET /openapi.json`` (data port),
the admin plane's at ``GET /admin/v1/openapi.json`` (admin port, loopback; no token needed)."""

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
    "400": _json(_ref("ErrorBody"), "Body is not JSON, or cannot be read"),
    "413": _json(_ref("ErrorBody"), "Body, document count or token length over the limit"),
    "422": _json(_ref("ErrorBody"), "Wrong types or values; `Tokenizer`: this input cannot be scored"),
    "429": _json(_ref("ErrorBody"), "Queue full"),
    "500": _json(_ref("ErrorBody"), "`Backend`: the model failed on this request alone (a device fault)"),
    "503": _json(_ref("ErrorBody"), "No model active, or draining"),
}
_VERSION_HEADER = {
    VERSION_HEADER: {
        "description": "The one model version that scored every pair of this request",
        "schema": {"type": "string"},
    }
}
_UNAUTHORIZED = {
    **_json(_ref("ErrorBody"), "Missing or wrong bearer token"),
    "headers": {"WWW-Authenticate": {"schema": {"type": "string"}}},
}
_ADMIN_ERRORS = {
    "400": _json(_ref("ErrorBody"), "Body is not JSON, or cannot be read"),
    "401": _UNAUTHORIZED,
    "409": _json(_ref("ErrorBody"), "Another operation runs, not staged, or no previous version"),
    "413": _json(_ref("ErrorBody"), "Body over the limit"),
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


def _admin_post(
    summary: str, body: dict[str, Any] | None, result: str, **more: dict[str, Any]
) -> dict[str, Any]:
    op: dict[str, Any] = {
        "summary": summary,
        "security": [{"bearer": []}],
        "responses": {
            "200": _json(_ref(result)),
            **_ADMIN_ERRORS,
            **more,
        },
    }
    if body is not None:
        op["requestBody"] = {"required": True, "content": {"application/json": {"schema": body}}}
    return {"post": op}


def _admin_paths() -> dict[str, Any]:
    version = {"type": "string", "pattern": versions.SCHEMA_PATTERN, "maxLength": versions.MAX_LENGTH}
    version_body = {"type": "object", "required": ["version"], "properties": {"version": version}}
    preload_body = {
        "type": "object",
        "required": ["version", "path"],
        "properties": {
            "version": version,
            "path": {"type": "string", "description": "absolute, or relative to the models root"},
            "digest": {"type": "string", "pattern": SHA256_SCHEMA_PATTERN},
        },
    }
    missing = {"403": _json(_ref("ErrorBody"), "Path outside the models root"),
               "404": _json(_ref("ErrorBody"), "No such folder")}  # fmt: skip
    return {
        "/admin/v1/state": {
            "get": {
                "summary": "Active, staged, previous versions; last swap; memory",
                "security": [{"bearer": []}],
                "responses": {"200": _json(_ref("AdminState")), "401": _UNAUTHORIZED},
            }
        },
        "/admin/v1/preload": _admin_post(
            "Load and validate a version into host memory", preload_body, "Staged", **missing
        ),
        "/admin/v1/activate": _admin_post("Swap the staged version in", version_body, "SwapResult"),
        "/admin/v1/rollback": _admin_post("Reactivate the previous version", None, "SwapResult"),
        "/admin/v1/discard": _admin_post("Drop the staged version", None, "Discarded"),
        "/admin/v1/score": _admin_post(
            "Score cases with a named version: staged or previous on its own copy (never the live model "
            "or the request queue), active through the queue",
            _ref("ScoreRequest"),
            "ScoreResult",
            **{
                "404": _json(_ref("ErrorBody"), "`not_loaded`: the server does not hold that version"),
                "429": _json(_ref("ErrorBody"), "Queue full (active version)"),
                "503": _json(_ref("ErrorBody"), "Draining"),
                "504": _json(_ref("ErrorBody"), "`score_timeout`: over the time bound"),
            },
        ),
        "/admin/v1/openapi.json": {
            "get": {"summary": "This document (no token needed)", "responses": {"200": {"description": "OK"}}}
        },
    }


def _info(title: str, description: str) -> dict[str, Any]:
    return {"title": title, "version": __version__, "description": description}


def openapi_document() -> dict[str, Any]:
    """The data plane's document (``GET /openapi.json`` on the data port)."""
    plain = {"200": {"description": "OK"}}
    return {
        "openapi": "3.1.0",
        "info": _info(
            "hotswap-server",
            "Reranker with in-place model swaps: the public data plane. The admin plane (loopback, "
            "bearer token) serves its own document at GET /admin/v1/openapi.json on the admin port.",
        ),
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
        },
        "components": {"schemas": {**SCHEMAS, "ErrorBody": admin_components()["ErrorBody"]}},
    }


def admin_openapi_document() -> dict[str, Any]:
    """The admin plane's document (``GET /admin/v1/openapi.json`` on the admin port)."""
    schemas = admin_components()
    # Shapes the contract does not model as classes: the preload and discard answers.
    schemas["Staged"] = {
        "type": "object",
        "required": ["compatible"],
        "properties": {
            "staged": {"anyOf": [_ref("VersionRecord"), {"type": "null"}]},
            "compatible": {"type": "string", "enum": ["inplace", "replace", "active"]},
            "active": _ref("VersionRecord"),
        },
    }
    schemas["Discarded"] = {"type": "object", "properties": {"staged": {"type": "null"}}}
    return {
        "openapi": "3.1.0",
        "info": _info(
            "hotswap-server admin plane",
            "Pod-local control of the server (127.0.0.1 only): every route but this document needs "
            "Authorization: Bearer <token>. One control operation at a time (409 operation_in_progress).",
        ),
        "paths": _admin_paths(),
        "components": {
            "schemas": schemas,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }
