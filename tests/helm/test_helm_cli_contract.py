"""The chart's command lines and variables are accepted by the real parsers of each process.

A renamed flag in the server, agent or operator fails here, not at pod start in a cluster. Token
files named by the chart are swapped for temporary ones (the agent reads its tokens at start).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from chartkit import Rendered


def container(rendered: Rendered, component: str, name: str) -> dict[str, Any]:
    deployment = rendered.one("Deployment", component)
    (found,) = [c for c in deployment["spec"]["template"]["spec"]["containers"] if c["name"] == name]
    return found


def plain_env(c: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e["value"] for e in c.get("env", []) if "value" in e}


def test_server_accepts_the_charts_arguments(rendered: Rendered) -> None:
    settings_mod = pytest.importorskip("hotswap_server.settings")
    server = container(rendered, "reranker", "server")
    settings = settings_mod.parse_settings(server["args"], env=plain_env(server))
    values = rendered.values["reranker"]
    assert settings.model is None
    assert settings.admin_host == "127.0.0.1" and settings.admin_port == 8081
    assert settings.port == 8080
    assert str(settings.models_root) == values["models"]["mountPath"]
    assert settings.swap_mode == values["server"]["swapMode"]
    assert settings.drain_timeout_s == values["server"]["drainTimeoutSeconds"]
    assert settings.max_body_bytes == values["server"]["limits"]["maxBodyBytes"]


def test_agent_accepts_the_charts_arguments(rendered: Rendered, tmp_path: Path) -> None:
    settings_mod = pytest.importorskip("hotswap_agent.settings")
    agent = container(rendered, "reranker", "agent")
    tokens = {
        "--token-file": "agent-token-value-0123456789",
        "--server-admin-token-file": "admin-token-0123456789",
    }
    args = []
    for arg in agent["args"]:
        flag = arg.partition("=")[0]
        if flag in tokens:
            path = tmp_path / flag.strip("-")
            path.write_text(tokens[flag])
            arg = f"{flag}={path}"
        args.append(arg)
    settings = settings_mod.load_settings(args, {"POD_NAME": "rr-hotswap-reranker-abc"})
    values = rendered.values["reranker"]
    assert settings.token == tokens["--token-file"]
    assert settings.server_admin_token == tokens["--server-admin-token-file"]
    assert settings.port == 9090
    assert settings.server_admin_url == "http://127.0.0.1:8081"
    assert settings.keep == values["agent"]["keep"]
    assert len(settings.allow) == len(values["agent"]["allow"])
    assert settings.boot_file is not None and settings.boot_file.name == "boot.json"
    assert settings.pod_name == "rr-hotswap-reranker-abc"


def test_operator_accepts_the_charts_arguments_and_environment(rendered: Rendered) -> None:
    cli = pytest.importorskip("hotswap_operator.cli")
    config_mod = pytest.importorskip("hotswap_operator.config")
    kopf_cli = pytest.importorskip("kopf.cli")
    op = container(rendered, "operator", "operator")
    assert op["command"] == ["hotswap-operator"]
    run = kopf_cli.main.get_command(None, "run")
    # Parses every option exactly as `kopf run` would (unknown flags raise click.UsageError).
    ctx = run.make_context("run", cli.kopf_args(op["args"])[1:])
    assert ctx.params["standalone"] is True
    assert ctx.params["liveness_endpoint"].endswith(":8080/healthz")
    assert bool(ctx.params["clusterwide"]) != bool(ctx.params["namespaces"])
    config = config_mod.Config.from_env(plain_env(op))
    assert config.agent_port == 9090 and config.server_port == 8080
    assert str(config.agent_token_file).endswith("/" + rendered.values["agentToken"]["key"])
