"""Property-based tests of the three OpenAPI documents with schemathesis.

The server's data plane, the server's admin plane and the agent each run in-process, on a loop in a
background thread (the tiny test models; the agent in front of the fake server), and schemathesis
sends what their documents allow, and what they do not: no answer may be a 5xx, every status must be
documented, every body must match its schema. Examples are bounded so each document takes seconds.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests
import schemathesis
from aiohttp import web
from hotswap_agent.app import create_app as create_agent_app
from hotswap_agent.openapi import openapi_document as agent_document
from hotswap_agent.settings import load_settings as load_agent_settings
from hotswap_server.app import create_admin_app, create_data_app, create_state
from hotswap_server.openapi import admin_openapi_document, openapi_document
from hotswap_server.settings import Settings
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_schema_conformance,
    status_code_conformance,
)

from tests.agent.agent_fakes import ADMIN_TOKEN, AGENT_TOKEN, FakeServer
from tests.server.serverproc import TOKEN

MAX_EXAMPLES = 25
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
HYPOTHESIS = settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    derandomize=True,  # the same examples every run: a failure reproduces
    suppress_health_check=list(HealthCheck),
)

# Requests sent and seconds spent per document (printed at the end of the module with ``-s``).
SENT: dict[str, list[float]] = {}


def call(name: str, case: Any, base_url: str, session: requests.Session, **kwargs: Any) -> None:
    started = time.perf_counter()
    try:
        case.call_and_validate(base_url=base_url, session=session, timeout=60, **kwargs)
    finally:
        SENT.setdefault(name, []).append(time.perf_counter() - started)


data_schema = schemathesis.openapi.from_dict(openapi_document())
admin_schema = schemathesis.openapi.from_dict(admin_openapi_document())
agent_schema = schemathesis.openapi.from_dict(agent_document())


class Background:
    """An event loop on its own thread, for apps that a synchronous client (requests) calls."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.runners: list[web.AppRunner] = []

    def run(self, coro: Any, timeout: float = 120) -> Any:
        future: Future[Any] = asyncio.run_coroutine_threadsafe(coro, self.loop)
        return future.result(timeout)

    async def serve(self, app: web.Application) -> str:
        runner = web.AppRunner(app, handle_signals=False)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        self.runners.append(runner)
        port = runner.addresses[0][1]
        return f"http://127.0.0.1:{port}"

    def close(self) -> None:
        async def cleanup() -> None:
            for runner in reversed(self.runners):
                await runner.cleanup()

        self.run(cleanup())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


@dataclass
class Urls:
    data: str
    admin: str
    agent: str


@pytest.fixture(scope="module")
def urls(testmodels_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Urls]:
    tmp = tmp_path_factory.mktemp("schemathesis")
    (tmp / "server-token").write_text(TOKEN)
    (tmp / "agent-token").write_text(AGENT_TOKEN)
    (tmp / "admin-token").write_text(ADMIN_TOKEN)
    models = tmp / "models"
    models.mkdir()
    bg = Background()
    state = create_state(
        Settings(
            model=testmodels_dir / "tiny-xlmr-v1",
            version="v1",
            models_root=testmodels_dir,
            admin_token_file=tmp / "server-token",
            torch_threads=1,
            max_documents=64,
            max_body_bytes=256 * 1024,
        )
    )

    async def start() -> Urls:
        data = await bg.serve(create_data_app(state))
        admin = await bg.serve(create_admin_app(state))
        fake = await FakeServer(models).start()
        agent_settings = load_agent_settings(
            ["--token-file", str(tmp / "agent-token"), "--server-admin-token-file", str(tmp / "admin-token"),
             "--models-root", str(models), "--server-url", fake.data_url, "--server-admin-url", fake.admin_url,
             "--allow", (tmp / "sources").as_uri() + "/", "--pod-name", "pod-a"],
            environ={},
        )  # fmt: skip
        agent = await bg.serve(create_agent_app(agent_settings))
        return Urls(data, admin, agent)

    found = bg.run(start())
    SENT.clear()
    deadline = time.monotonic() + 60
    while requests.get(found.data + "/readyz", timeout=5).status_code != 200:
        assert time.monotonic() < deadline, "the server did not load its model"
        time.sleep(0.1)
    yield found
    bg.close()
    for name, times in SENT.items():
        print(f"\nschemathesis {name}: {len(times)} requests, {sum(times):.1f}s in calls")


@pytest.fixture(scope="module")
def session() -> Iterator[requests.Session]:
    with requests.Session() as s:
        yield s


@data_schema.parametrize()
@HYPOTHESIS
def test_data_plane(case: Any, urls: Urls, session: requests.Session) -> None:
    call("data plane", case, urls.data, session, checks=CHECKS)


@admin_schema.parametrize()
@HYPOTHESIS
def test_admin_plane(case: Any, urls: Urls, session: requests.Session) -> None:
    headers = {"Authorization": f"Bearer {TOKEN}"}
    call("admin plane", case, urls.admin, session, headers=headers, checks=[*CHECKS, negative_data_rejection])


@agent_schema.parametrize()
@HYPOTHESIS
def test_agent(case: Any, urls: Urls, session: requests.Session) -> None:
    headers = {"Authorization": f"Bearer {AGENT_TOKEN}"}
    call("agent", case, urls.agent, session, headers=headers, checks=[*CHECKS, negative_data_rejection])
