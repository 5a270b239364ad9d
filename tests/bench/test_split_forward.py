"""bench.split_forward runs both ways on the same pairs and prints one line per size."""

from __future__ import annotations

import pytest

from bench.split_forward import main


def test_split_forward_measures_each_size(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--models", "tiny", "--sizes", "2,5", "--repeats", "2"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("tiny XLM-R")
    assert [line.split()[0] for line in lines[1:]] == ["2", "5"]
    assert all("single-thread parts" in line and line.endswith("x)") for line in lines[1:])
