"""The Infinity peer without installing it: the environment's build steps and key, the server's
command and environment, the clients' bodies, and what the report says when it is not measured."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest

from bench.peers import infinity
from bench.report import markdown, rate_ratio, tail_ratio, targets
from bench.workload import make_workload
from tests.bench.test_bench import _cuda_results


def test_torch_goes_in_first_and_pinned_then_infinity_with_torch_named_again(tmp_path: Path) -> None:
    cmds = infinity.install_commands(tmp_path / "v", python="python3")
    assert cmds[0] == ["python3", "-m", "venv", str(tmp_path / "v")]
    assert cmds[1][-1] == "torch==2.13.0" and not any("infinity" in a for a in cmds[1])
    assert "torch==2.13.0" in cmds[2] and "infinity-emb[server,torch]==0.0.78" in cmds[2]
    assert "numpy==1.26.4" in cmds[2]  # Infinity requires numpy<2
    assert all(a.startswith(("torch", "infinity", "transformers", "sentence", "numpy")) for a in cmds[2][6:])
    # Every requirement is pinned: no unpinned torch anywhere.
    assert all("==" in p for p in (infinity.TORCH_PIN, *infinity.PINS))


def test_the_key_follows_pins_and_interpreter(monkeypatch: pytest.MonkeyPatch) -> None:
    key = infinity.venv_key("3.11")
    assert key == infinity.venv_key("3.11") and key != infinity.venv_key("3.12")
    monkeypatch.setattr(infinity, "PINS", (*infinity.PINS, "extra==1"))
    assert infinity.venv_key("3.11") != key


def test_an_environment_with_this_key_is_reused_and_a_failed_build_is_a_reason(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    venv = tmp_path / "infinity-venv"
    (venv / "bin").mkdir(parents=True)
    (venv / "bin" / "infinity_emb").touch()
    (venv / infinity.KEY_FILE).write_text(
        json.dumps({"key": infinity.venv_key(), "versions": {"torch": "x"}})
    )
    env = infinity.ensure_venv(venv, log=lambda _: None)
    assert (env.built, env.install_s, env.versions) == (False, 0.0, {"torch": "x"})

    (venv / infinity.KEY_FILE).write_text(json.dumps({"key": "stale"}))  # other pins: rebuilt
    monkeypatch.setattr(
        infinity, "install_commands", lambda v: [["sh", "-c", "echo 'ERROR: no wheel'; exit 3"]]
    )
    with pytest.raises(infinity.Unavailable, match=r"exit 3\): ERROR: no wheel"):
        infinity.ensure_venv(venv, log=lambda _: None)
    assert not venv.exists()  # the stale one is gone, nothing half-built is taken for ready


def test_server_command_serves_the_local_folder_on_cpu_with_the_torch_engine(tmp_path: Path) -> None:
    cmd = infinity.server_command(tmp_path / "v", tmp_path / "minilm-ce-v1", 8123, "cpu", "float32", 32)
    assert cmd[:2] == [str(tmp_path / "v" / "bin" / "infinity_emb"), "v2"]
    opts = {a: b for a, b in zip(cmd, [*cmd[1:], ""], strict=True) if a.startswith("--")}
    assert opts["--model-id"] == str(tmp_path / "minilm-ce-v1")
    assert (opts["--engine"], opts["--device"], opts["--dtype"]) == ("torch", "cpu", "float32")
    assert (opts["--port"], opts["--host"], opts["--batch-size"]) == ("8123", "127.0.0.1", "32")
    assert opts["--served-model-name"] == infinity.SERVED_NAME
    assert "float16" in infinity.server_command(tmp_path, tmp_path, 1, "cuda", "float16", 8)


def test_server_env_switches_telemetry_and_hub_off() -> None:
    env = infinity.server_env({"PATH": "/bin", "PYTHONPATH": "/work/main", "DO_NOT_TRACK": "0"})
    assert env["DO_NOT_TRACK"] == "1" and env["INFINITY_ANONYMOUS_USAGE_STATS"] == "0"
    assert env["HF_HUB_OFFLINE"] == "1" and env["TRANSFORMERS_OFFLINE"] == "1"
    assert "PYTHONPATH" not in env and env["PATH"] == "/bin"


def test_infinity_bodies_carry_the_same_texts_as_tei_bodies() -> None:
    w = make_workload()
    tei = json.loads(w.bodies(3)[5])
    inf = json.loads(w.bodies(3, api="infinity", model="m")[5])
    assert inf == {"query": tei["query"], "documents": tei["texts"], "model": "m", "return_documents": False}
    with pytest.raises(ValueError):
        w.bodies(3, api="nope")
    assert infinity.ranking([0.1, 0.9, 0.5]) == [1, 2, 0]


def _with_peer(peer: dict[str, Any]) -> dict[str, Any]:
    results = _cuda_results()
    results["meta"].update(device="cpu", device_kind="cpu")
    results["infinity"] = peer
    results["targets"] = targets(results)
    return results


def test_report_says_when_infinity_was_not_measured_and_fails_its_target() -> None:
    results = _with_peer(
        {"version": "0.0.78", "not_measured": "install failed (`pip install` exit 1): ERROR: x"}
    )
    section = markdown(results)
    assert "| Infinity 0.0.78: not measured — install failed (`pip install` exit 1): ERROR: x |" in section
    failed = [t for t in results["targets"] if "Infinity" in t.name]
    assert len(failed) == 1 and failed[0].verdict == "FAIL" and "not measured" in failed[0].measured

    skipped = _with_peer({"version": "0.0.78", "not_measured": "skipped (--no-infinity)"})
    assert not [t for t in skipped["targets"] if "Infinity" in t.name]  # asked for: no target, but a row
    assert "| Infinity 0.0.78: not measured — skipped (--no-infinity) |" in markdown(skipped)


def _measured_peer(**row: Any) -> dict[str, Any]:
    """Infinity measured at 32 clients x 3 docs: 90 pairs/s, p99 1.5 ms, unless ``row`` says otherwise."""
    base = {"docs": 3, "clients": 32, "pairs_per_s": 90.0, "rounds_pairs_per_s": [90.0], "p50_ms": 1.0,
            "p99_ms": 1.5, "requests": 10, "failures": 0, "loadavg": 0.1, "other_cores": 0.0}  # fmt: skip
    sanity = {"docs": 8, "same_order": True, "max_abs_diff": 1e-6}
    return {"version": "0.0.78", "rows": [{**base, **row}], "built": False, "install_s": 0.0, "sanity": sanity,
            "versions": {"torch": "2.13.0", "transformers": "4.57.6"}}  # fmt: skip


def test_report_puts_infinity_rows_next_to_ours_with_a_target_per_load() -> None:
    results = _with_peer(_measured_peer())
    (target,) = [t for t in results["targets"] if "Infinity" in t.name]
    # ours: 100 pairs/s, p99 2.0 ms against 90 and 1.5: ahead on throughput, behind on the tail.
    assert not target.passed and "pairs/s 1.11x" in target.measured and "p99 1.33x" in target.measured
    section = markdown(results)
    assert "| Infinity 0.0.78 | 3 | 32 | 90.0 |" in section
    assert "in the same order as Hotswap's scorer" in section and "transformers 4.57.6" in section


def test_rate_ratio_is_the_median_of_per_round_ratios_so_a_drifting_machine_cancels() -> None:
    # Round 3 ran on a slow minute for us and a fast one for them; the medians (36 against 37)
    # would call us behind, while two rounds of three measured back to back put us 5-6% ahead.
    ours = {"pairs_per_s": 36.0, "rounds_pairs_per_s": [40.0, 36.0, 32.0]}
    theirs = {"pairs_per_s": 37.0, "rounds_pairs_per_s": [38.0, 34.0, 37.0]}
    ratio, spread = rate_ratio(ours, theirs)
    assert ratio == pytest.approx(40.0 / 38.0)
    assert spread == "; rounds 0.86-1.06x"
    # Without rounds that pair up (other counts, or one round): the ratio of the medians.
    assert rate_ratio({**ours, "rounds_pairs_per_s": [36.0]}, theirs) == (pytest.approx(36.0 / 37.0), "")
    assert rate_ratio(ours, {**theirs, "rounds_pairs_per_s": [37.0, 0.0, 37.0]})[1] == ""
    assert rate_ratio({"pairs_per_s": 1.0}, {"pairs_per_s": 0.0})[0] == math.inf


def test_tail_ratio_pairs_each_rounds_p99_and_still_shows_the_pooled_one() -> None:
    # Our round 2 fell on a slow minute: pooled, our p99 is that minute's (2,600 against 2,400 ms,
    # 1.08x), while in every round, against the peer measured seconds later, ours was lower.
    ours = {"p99_ms": 2600.0, "rounds_p99_ms": [2000.0, 2600.0, 1900.0]}
    theirs = {"p99_ms": 2400.0, "rounds_p99_ms": [2200.0, 2800.0, 2400.0]}
    tail, text = tail_ratio(ours, theirs)
    assert tail == pytest.approx(2000.0 / 2200.0)
    assert text == "rounds 0.79-0.93x; pooled 2600 / 2400 ms, 1.08x"
    # A round where we were behind counts as one vote of three, not as the verdict.
    worse = {**ours, "rounds_p99_ms": [2000.0, 3100.0, 2500.0]}
    assert tail_ratio(worse, theirs)[0] == pytest.approx(2500.0 / 2400.0)
    # Rounds that do not pair up (one round, other counts, a peer's round without answers): pooled.
    pooled = (pytest.approx(2600.0 / 2400.0), "pooled 2600 / 2400 ms")
    assert tail_ratio({**ours, "rounds_p99_ms": [2600.0]}, {**theirs, "rounds_p99_ms": [2400.0]}) == pooled
    assert tail_ratio(ours, {**theirs, "rounds_p99_ms": [2200.0, 2800.0]}) == pooled
    assert tail_ratio(ours, {**theirs, "rounds_p99_ms": [2200.0, math.nan, 2400.0]}) == pooled
    # A round in which we answered nothing is a round we lost, not one left out.
    silent = {**ours, "rounds_p99_ms": [2000.0, math.nan, 1900.0]}
    assert tail_ratio(silent, theirs)[0] == pytest.approx(2000.0 / 2200.0)
    assert tail_ratio({**silent, "rounds_p99_ms": [math.nan, math.nan, 1900.0]}, theirs)[0] == math.inf
    assert tail_ratio({"p99_ms": 1.0}, {"p99_ms": 0.0})[0] == math.inf


def test_a_peer_target_is_judged_on_the_per_round_p99_ratios() -> None:
    peer = _measured_peer(rounds_pairs_per_s=[90.0, 90.0], p99_ms=2000.0, rounds_p99_ms=[2000.0, 1600.0])
    results = _with_peer(peer)
    ours = results["server"][0]
    ours.update(rounds_pairs_per_s=[100.0, 100.0], p99_ms=2000.0, rounds_p99_ms=[1800.0, 1500.0])
    results["targets"] = targets(results)
    (target,) = [t for t in results["targets"] if "Infinity" in t.name]
    # pooled 2,000 / 2,000 ms; per round 0.90x and 0.94x: median 0.92x, a pass
    assert target.passed, target.measured
    assert "p99 0.92x (rounds 0.90-0.94x; pooled 2000 / 2000 ms, 1.00x)" in target.measured
    section = markdown(results)
    assert "| p99 ms by round |" in section
    assert "| 2000.0 | 1800 / 1500 |" in section and "| 2000.0 | 2000 / 1600 |" in section
    ours["rounds_p99_ms"] = [2200.0, 1800.0]  # 1.10x and 1.12x: behind in every round
    assert not next(t for t in targets(results) if "Infinity" in t.name).passed
