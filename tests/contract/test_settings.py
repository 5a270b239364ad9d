"""The shared settings pattern: flags over variables over the dataclass's defaults; errors name them."""

from __future__ import annotations

import argparse
import dataclasses

import pytest
from hotswap_contract.settings import Option, SettingsError, add_options, at_least, resolve


@dataclasses.dataclass(frozen=True)
class Demo:
    size: int = 4
    tags: tuple[str, ...] = ()
    name: str | None = None


OPTIONS = (
    Option("size", "--size", "DEMO_SIZE", "how many", at_least(1)),
    Option("tags", "--tag", "DEMO_TAGS", "tags", many=True),
    Option("name", None, "DEMO_NAME", "a variable only", required=True),
)


def parse(argv: list[str], env: dict[str, str]) -> Demo:
    parser = argparse.ArgumentParser()
    add_options(parser, OPTIONS, Demo)
    return Demo(**resolve(OPTIONS, parser.parse_args(argv), env))


def test_flags_win_over_variables_which_win_over_defaults() -> None:
    assert parse([], {"DEMO_NAME": "n"}) == Demo(name="n")
    env = {"DEMO_NAME": "n", "DEMO_SIZE": " 7 ", "DEMO_TAGS": "a, b c"}
    assert parse([], env) == Demo(size=7, tags=("a", "b", "c"), name="n")
    assert parse(["--size", "9", "--tag", "x", "--tag", "y"], env) == Demo(size=9, tags=("x", "y"), name="n")


def test_errors_name_the_flag_or_the_variable() -> None:
    with pytest.raises(SettingsError, match=r"^DEMO_NAME is required$"):
        parse([], {})
    with pytest.raises(SettingsError, match=r"^--size: must be at least 1, got 0$"):
        parse(["--size", "0"], {"DEMO_NAME": "n"})
    with pytest.raises(SettingsError, match=r"^DEMO_SIZE: not an integer: 'many'$"):
        parse([], {"DEMO_NAME": "n", "DEMO_SIZE": "many"})


def test_help_shows_each_default_and_variable() -> None:
    parser = argparse.ArgumentParser()
    add_options(parser, OPTIONS, Demo)
    text = " ".join(parser.format_help().split())
    assert "how many (default: 4; env DEMO_SIZE)" in text and "tags (default: none; env DEMO_TAGS)" in text
    assert "DEMO_NAME" not in text  # a variable-only option has no flag
