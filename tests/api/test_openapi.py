"""Both OpenAPI documents are valid and list exactly the routes the apps serve."""

from __future__ import annotations

from pathlib import Path

from hotswap_agent.app import create_app as create_agent_app
from hotswap_agent.openapi import openapi_document as agent_document
from hotswap_agent.settings import load_settings as load_agent_settings
from hotswap_server.app import create_admin_app, create_data_app, create_state
from hotswap_server.openapi import admin_openapi_document
from hotswap_server.openapi import openapi_document as server_document
from hotswap_server.settings import Settings
from openapi_spec_validator import validate


def _routes(app) -> set[tuple[str, str]]:  # type: ignore[no-untyped-def]
    return {
        (r.method.lower(), r.resource.canonical)
        for r in app.router.routes()
        if r.resource is not None and r.method != "HEAD"
    }


def _documented(doc: dict) -> set[tuple[str, str]]:
    return {(method, path) for path, ops in doc["paths"].items() for method in ops}


def test_server_document_is_valid_and_complete(tmp_path: Path) -> None:
    token = tmp_path / "t"
    token.write_text("0123456789abcdef0123")
    state = create_state(Settings(admin_token_file=token, models_root=tmp_path))
    doc = server_document()
    validate(doc)
    assert _documented(doc) == _routes(create_data_app(state))
    admin = admin_openapi_document()
    validate(admin)
    assert _documented(admin) == _routes(create_admin_app(state))


def test_agent_document_is_valid_and_complete(tmp_path: Path) -> None:
    token = tmp_path / "t"
    token.write_text("0123456789abcdef0123")
    settings = load_agent_settings(
        ["--token-file", str(token), "--server-admin-token-file", str(token), "--models-root", str(tmp_path),
         "--allow", "file:///tmp/"],
        {},
    )  # fmt: skip
    doc = agent_document()
    validate(doc)
    assert _documented(doc) == _routes(create_agent_app(settings))
