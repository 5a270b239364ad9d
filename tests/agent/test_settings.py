"""Settings: flags over HOTSWAP_AGENT_* variables over defaults; errors name the culprit."""

from __future__ import annotations

from pathlib import Path

import pytest
from hotswap_agent.settings import SettingsError, load_settings


@pytest.fixture
def tokens(tmp_path: Path) -> dict[str, str]:
    (tmp_path / "t").write_text("secret-1-0123456789\n")
    (tmp_path / "a").write_text("secret-2-0123456789")
    return {
        "HOTSWAP_AGENT_TOKEN_FILE": str(tmp_path / "t"),
        "HOTSWAP_AGENT_SERVER_ADMIN_TOKEN_FILE": str(tmp_path / "a"),
    }


def test_defaults(tokens: dict[str, str]) -> None:
    s = load_settings([], environ={**tokens, "POD_NAME": "rr-0"})
    assert (s.host, s.port, s.keep, s.models_root) == ("0.0.0.0", 9090, 3, Path("/models"))
    assert (s.server_url, s.server_admin_url) == ("http://127.0.0.1:8080", "http://127.0.0.1:8081")
    assert s.token == "secret-1-0123456789" and s.server_admin_token == "secret-2-0123456789"
    assert s.pod_name == "rr-0" and s.allow == () and s.boot_file is None
    assert "secret" not in repr(s)


def test_env_and_flag_precedence(tokens: dict[str, str], tmp_path: Path) -> None:
    env = {
        **tokens,
        "HOTSWAP_AGENT_PORT": "9191",
        "HOTSWAP_AGENT_KEEP": "5",
        "HOTSWAP_AGENT_ALLOW": "file:///srv/models/, s3://bucket/models/",
        "AWS_ENDPOINT_URL": "http://127.0.0.1:9000",
        "HF_ENDPOINT": "http://mirror.local/",
    }
    s = load_settings(["--port", "9292", "--allow", "hf://org/"], environ=env)
    assert s.port == 9292  # the flag wins
    assert s.keep == 5
    assert s.allow == ("hf://org/",)  # --allow replaces the variable's list
    assert s.s3_endpoint_url == "http://127.0.0.1:9000"
    assert s.hf_endpoint == "http://mirror.local"
    s = load_settings([], environ=env)
    assert s.allow == ("file:///srv/models/", "s3://bucket/models/")


@pytest.mark.parametrize(
    ("env", "argv", "named"),
    [
        ({"HOTSWAP_AGENT_PORT": "http"}, [], "HOTSWAP_AGENT_PORT"),
        ({}, ["--port", "70000"], "--port"),
        ({"HOTSWAP_AGENT_KEEP": "0"}, [], "HOTSWAP_AGENT_KEEP"),
        ({"HOTSWAP_AGENT_SERVER_URL": "ftp://x"}, [], "HOTSWAP_AGENT_SERVER_URL"),
        ({"HOTSWAP_AGENT_ALLOW": "gopher://x/"}, [], "HOTSWAP_AGENT_ALLOW"),
        ({}, ["--allow", "http://169.254.169.254/"], "--allow"),
        ({"HOTSWAP_AGENT_BOOT_BACKOFF_INITIAL": "-1"}, [], "HOTSWAP_AGENT_BOOT_BACKOFF_INITIAL"),
        ({"HOTSWAP_AGENT_TOKEN_FILE": "/nonexistent/token"}, [], "HOTSWAP_AGENT_TOKEN_FILE"),
        # The model cache's flags, as a careless values file would set them.
        ({}, ["--cache-max-bytes", "-1"], "--cache-max-bytes"),
        ({}, ["--cache-max-bytes", "50Xi"], "--cache-max-bytes"),
        ({}, ["--cache-max-bytes", "1e999"], "--cache-max-bytes"),
        ({}, ["--cache-max-bytes", "9" * 5000], "--cache-max-bytes"),
        ({"HOTSWAP_AGENT_CACHE_MAX_BYTES": "ten gigs"}, [], "HOTSWAP_AGENT_CACHE_MAX_BYTES"),
        ({}, ["--cache-lock-timeout", "0"], "--cache-lock-timeout"),
        ({}, ["--cache-lock-timeout", "nan"], "--cache-lock-timeout"),
        ({}, ["--cache-lock-timeout", "inf"], "--cache-lock-timeout"),
        ({"HOTSWAP_AGENT_CACHE_LOCK_TIMEOUT": "-5"}, [], "HOTSWAP_AGENT_CACHE_LOCK_TIMEOUT"),
        # The boot watch: a zero, negative or tiny interval would poll the server in a busy loop.
        ({}, ["--server-watch-interval", "0"], "--server-watch-interval"),
        ({}, ["--server-watch-interval", "-5"], "--server-watch-interval"),
        ({}, ["--server-watch-interval", "1e-9"], "--server-watch-interval"),
        ({}, ["--server-watch-interval", "nan"], "--server-watch-interval"),
        ({}, ["--server-watch-interval", "inf"], "--server-watch-interval"),
        ({"HOTSWAP_AGENT_SERVER_WATCH_INTERVAL": "soon"}, [], "HOTSWAP_AGENT_SERVER_WATCH_INTERVAL"),
    ],
)
def test_errors_name_the_setting(
    tokens: dict[str, str], env: dict[str, str], argv: list[str], named: str
) -> None:
    with pytest.raises(SettingsError, match=named):
        load_settings(argv, environ={**tokens, **env})


def test_token_files_are_required(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="--token-file / HOTSWAP_AGENT_TOKEN_FILE is required"):
        load_settings([], environ={})
    (tmp_path / "empty").write_text("  \n")
    with pytest.raises(SettingsError, match=r"--token-file: .* at least 16 characters"):
        load_settings(["--token-file", str(tmp_path / "empty")], environ={})


def test_cli_exits_2_on_bad_settings(
    tokens: dict[str, str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from hotswap_agent.cli import main

    for name, value in tokens.items():
        monkeypatch.setenv(name, value)
    assert main(["--port", "nope"]) == 2
    assert "hotswap-agent: --port: not an integer" in capsys.readouterr().err


def test_help_shows_every_flag_with_its_default_and_variable() -> None:
    from hotswap_agent.settings import OPTIONS, build_parser

    text = " ".join(build_parser().format_help().split())
    for option in OPTIONS:
        assert option.flag in text and option.env in text
    for shown in (
        "default: 9090; env HOTSWAP_AGENT_PORT",
        "default: required; env HOTSWAP_AGENT_TOKEN_FILE",
        "default: /models; env HOTSWAP_AGENT_MODELS_ROOT",
        "default: 900.0; env HOTSWAP_AGENT_SERVER_TIMEOUT",
        "default: $POD_NAME, else $HOSTNAME, else the host name",
    ):
        assert shown in text
