from __future__ import annotations

from pathlib import Path

import pytest
from hotswap_server.settings import SettingsError, parse_settings, read_token


def test_flags_win_over_environment_which_wins_over_defaults(tmp_path: Path) -> None:
    env = {"HOTSWAP_PORT": "9000", "HOTSWAP_MAX_BATCH_SIZE": "7", "HOTSWAP_ADMIN_TOKEN_FILE": "/t"}
    s = parse_settings(["--port", "9100"], env)
    assert s.port == 9100 and s.max_batch_size == 7 and s.admin_token_file == Path("/t")
    assert parse_settings([], {"HOTSWAP_ADMIN_PORT": "0"}).swap_mode == "auto"


@pytest.mark.parametrize(
    ("env", "needle"),
    [
        ({"HOTSWAP_PORT": "x"}, "HOTSWAP_PORT"),
        ({"HOTSWAP_SWAP_MODE": "fast", "HOTSWAP_ADMIN_PORT": "0"}, "HOTSWAP_SWAP_MODE"),
        (
            {"HOTSWAP_MAX_DOCUMENTS": "0", "HOTSWAP_ADMIN_PORT": "0"},
            "HOTSWAP_MAX_DOCUMENTS: must be at least 1",
        ),
        ({"HOTSWAP_LOG_LEVEL": "loud", "HOTSWAP_ADMIN_PORT": "0"}, "HOTSWAP_LOG_LEVEL"),
        ({"HOTSWAP_ADMIN_HOST": "10.0.0.1", "HOTSWAP_ADMIN_TOKEN_FILE": "/t"}, "loopback"),
        ({}, "HOTSWAP_ADMIN_TOKEN_FILE"),
        ({"HOTSWAP_DRAIN_TIMEOUT": "soon", "HOTSWAP_ADMIN_PORT": "0"}, "HOTSWAP_DRAIN_TIMEOUT"),
    ],
)
def test_bad_values_name_the_variable(env: dict, needle: str) -> None:
    with pytest.raises(SettingsError, match=needle):
        parse_settings([], env)


def test_a_bad_flag_is_named_and_the_cli_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    from hotswap_server.cli import main

    with pytest.raises(SettingsError, match="--max-batch-size: must be at least 1"):
        parse_settings(["--max-batch-size", "0"], {"HOTSWAP_ADMIN_PORT": "0"})
    assert main(["--port", "http", "--admin-port", "0"]) == 2
    assert "hotswap-server: --port: not an integer: 'http'" in capsys.readouterr().err


def test_help_shows_every_flag_with_its_default_and_variable(capsys: pytest.CaptureFixture[str]) -> None:
    from hotswap_server.settings import OPTIONS, Settings, build_parser

    text = " ".join(build_parser().format_help().split())
    for option in OPTIONS:
        assert option.flag in text and option.env in text
    for shown in ("default: 8080; env HOTSWAP_PORT", "default: auto; env HOTSWAP_SWAP_MODE", "default: 30.0"):
        assert shown in text
    assert Settings().max_batch_size == 32 and "default: 32; env HOTSWAP_MAX_BATCH_SIZE" in text


def test_token_file_must_hold_a_real_token(tmp_path: Path) -> None:
    short = tmp_path / "short"
    short.write_text("abc\n")
    with pytest.raises(SettingsError, match="at least 16"):
        read_token(short)
    with pytest.raises(SettingsError, match="admin token file"):
        read_token(tmp_path / "missing")
    good = tmp_path / "good"
    good.write_text("0123456789abcdef\n")
    assert read_token(good) == "0123456789abcdef"
