"""bench.part_size runs every size on every thread and prints one line per size."""

from __future__ import annotations

import pytest

from bench.part_size import main


def test_part_size_measures_each_size(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--models", "tiny", "--sizes", "2,5", "--rounds", "2", "--seconds", "0.2"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("tiny XLM-R")
    assert [line.split()[0] for line in lines[1:]] == ["2", "5"]
    for line in lines[1:]:
        median = float(line.split("pairs/s")[0].split(":")[1])
        rounds = [float(x) for x in line.split("(rounds ")[1].rstrip(")").split(" / ")]
        assert len(rounds) == 2 and median > 0 and min(rounds) <= median <= max(rounds)
