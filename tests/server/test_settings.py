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
        ({"HOTSWAP_MAX_DOCUMENTS": "0", "HOTSWAP_ADMIN_PORT": "0"}, "max_documents"),
        ({"HOTSWAP_ADMIN_HOST": "10.0.0.1", "HOTSWAP_ADMIN_TOKEN_FILE": "/t"}, "loopback"),
        ({}, "HOTSWAP_ADMIN_TOKEN_FILE"),
        ({"HOTSWAP_DRAIN_TIMEOUT": "soon", "HOTSWAP_ADMIN_PORT": "0"}, "HOTSWAP_DRAIN_TIMEOUT"),
    ],
)
def test_bad_values_name_the_variable(env: dict, needle: str) -> None:
    with pytest.raises(SettingsError, match=needle):
        parse_settings([], env)


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
