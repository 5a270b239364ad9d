"""Smoke tests for the benchmark: every code path in a tiny configuration, so bench/ cannot rot.

The numbers measured here mean nothing (tiny model, fractions of a second, a busy machine); the
tests check that each measurement runs and returns what the report needs.
"""

from __future__ import annotations

import json
import math
import types
from pathlib import Path
from typing import Any

import pytest
import torch
from hotswap_server.modelload import load_version
from hotswap_server.scoring import runner_for

from bench import run
from bench.load import LoadResult, LoadSpec, Record, percentile, throughput, window_rates
from bench.models import TINY_XLMR_DIMS, write_xlmr_reranker
from bench.report import markdown, targets, write_section
from bench.workload import DOC_WORDS, QUERY_WORDS, make_workload


def test_workload_is_seeded_and_the_ceiling_scores_what_clients_send() -> None:
    w = make_workload()
    assert w == make_workload()
    query, docs = w.request(5, 3)
    assert len(query.split()) == QUERY_WORDS
    assert [len(d.split()) for d in docs] == [DOC_WORDS] * 3
    queries, pair_docs = w.pairs(0, 6)  # the ceiling's batches: the 3-doc requests, pair by pair
    assert (queries[3], pair_docs[3:6]) == (w.request(1, 3)[0], w.request(1, 3)[1])
    assert json.loads(w.bodies(3)[0]) == {"query": w.request(0, 3)[0], "texts": w.request(0, 3)[1]}
    assert json.loads(w.bodies(3, truncate=True)[0])["truncate"] is True


def _result(records: list[Record], warm_at: float = 0.0) -> LoadResult:
    spec = LoadSpec(url="", clients=1, docs=3, min_s=0, min_measured=0, warmup_s=0, max_s=0)
    return LoadResult(spec, 0.0, max(r.end for r in records), records, warm_at=warm_at)


def test_throughput_counts_each_request_pro_rata_in_the_window() -> None:
    # One client, a 3-doc request every 0.1 s: 30 pairs/s whatever the window or chunking.
    records = [Record(i * 0.1, (i + 1) * 0.1, 200, 3, "v1", 0) for i in range(30)]
    result = _result(records)
    assert result.window() == (0.0, pytest.approx(3.0))
    assert [round(r, 6) for r in window_rates(records, 0.0, 3.0)] == [30.0, 30.0, 30.0]
    assert throughput(result) == pytest.approx(30.0)
    assert percentile([r.latency for r in records], 50) == pytest.approx(0.1)
    assert math.isnan(percentile([], 99))


def test_throughput_of_a_server_that_answers_in_waves() -> None:
    # Eight clients whose requests (32 docs) all complete together every 4 s: 64 pairs/s. Timed
    # between completions this read as thousands of pairs/s (two completions a microsecond apart).
    records = [
        Record(w * 4.0, (w + 1) * 4.0 + c * 1e-6, 200, 32, "v1", c) for w in range(4) for c in range(8)
    ]
    result = _result(records, warm_at=4.0)
    lo, hi = result.window()
    assert (lo, hi) == (4.0, pytest.approx(16.0))  # up to the first client's last answer
    assert throughput(result) == pytest.approx(64.0, rel=1e-3)


def test_failed_requests_and_the_taper_do_not_count() -> None:
    ok = [Record(i * 1.0, (i + 1) * 1.0, 200, 10, "v1", 0) for i in range(6)]
    failed = [Record(i * 1.0, (i + 1) * 1.0, 500, 10, "v1", 1) for i in range(3)]  # client 1 stops at 3 s
    result = _result(ok + failed)
    assert result.window() == (0.0, 3.0)
    assert throughput(result) == pytest.approx(10.0)


def test_bge_shaped_builder_writes_a_reranker_the_server_loads(tmp_path: Path, testmodels_dir: Path) -> None:
    folder = tmp_path / "xlmr"
    write_xlmr_reranker(folder, TINY_XLMR_DIMS, seed=1, tokenizer_from=testmodels_dir / "tiny-xlmr-v1")
    loaded = load_version("x1", folder, torch.float32)
    assert loaded.architecture == "XLMRobertaForSequenceClassification"
    assert loaded.max_length == 512  # 514 positions; the tiny tokenizer's 128 was raised
    query, docs = make_workload().request(0, 3)
    raw, tokens = runner_for(loaded).score([query] * 3, docs)
    assert all(math.isfinite(float(x)) for x in raw) and min(tokens) > 128


def test_rollout_numbers_are_collected_per_pod_count_and_failures_reported() -> None:
    def fake_run(pods: int) -> dict[str, Any]:
        if pods == 3:
            raise RuntimeError("cluster did not come up")
        return {"total_s": 1.5 * pods, "per_pod_s": 1.5}

    out = run.rollout(False, types.SimpleNamespace(run=fake_run), (1, 3))
    assert out == {
        "1": {"total_s": 1.5, "per_pod_s": 1.5},
        "3": {"error": "RuntimeError: cluster did not come up"},
    }
    assert run.rollout(True) is None


def _check_load_row(row: dict[str, Any], clients: int, docs: int) -> None:
    assert (row["clients"], row["docs"]) == (clients, docs)
    assert row["failures"] == 0 and row["requests"] >= 1
    assert row["pairs_per_s"] > 0 and row["p50_ms"] > 0 and row["p99_ms"] >= row["p50_ms"]
    # --quick measures one round: its own p99 is the pooled one
    assert row["rounds_p99_ms"] == [row["p99_ms"]]
    assert row["loadavg"] >= 0 and row["other_cores"] >= 0 and row["attempts"] == 1  # --quick: no retries


@pytest.mark.slow
def test_quick_run_end_to_end_writes_its_section_and_keeps_the_others(
    tmp_path: Path, testmodels_dir: Path
) -> None:
    out = tmp_path / "BENCHMARKS.md"
    cuda = "<!-- bench:cuda -->\n## CUDA\nkept\n<!-- /bench:cuda -->\n"
    out.write_text("# Benchmarks\n\n" + cuda)
    as_json = tmp_path / "results.json"
    argv = [
        "--quick", "--device", "cpu", "--models", "tiny", "--models-dir", str(testmodels_dir),
        "--clients", "1,4", "--sizes", "3", "--swap-clients", "4", "--skip-rollout", "--no-infinity",
        "--out", str(out), "--json", str(as_json),
    ]  # fmt: skip
    assert run.main(argv) == 0
    results = json.loads(as_json.read_text())

    meta = results["meta"]
    assert meta["device_kind"] == "cpu" and meta["quick"] and meta["cpu_count"] >= 1
    assert meta["command"].startswith("python -m bench.run --quick")
    assert results["ceiling"]["pairs_per_s"] > 0 and results["ceiling"]["batch"] == 32
    # The engine pads the admission ids of the ceiling's own batches into the same tensors it tokenizes.
    assert 0 <= results["ceiling"]["pad_admitted_ms"] < results["ceiling"]["tokenize_ms"]
    for name in ("server", "baseline"):
        rows = results[name]
        assert len(rows) == 2
        _check_load_row(rows[0], 1, 3)
        _check_load_row(rows[1], 4, 3)
    # At one client both servers were measured in one load, alternately: as many requests each.
    assert abs(results["server"][0]["requests"] - results["baseline"][0]["requests"]) <= 1
    for mode in ("inplace", "double"):
        swap = results["swap"][mode]
        assert swap["reported_mode"] == mode and swap["failures"] == 0
        # Two swaps, v1 -> v2 -> v1: every request begun after the last one got v1 back.
        assert [w["to"] for w in swap["swaps"]] == ["v2", "v1"]
        assert swap["expected_version_after"] == "v1" and swap["versions_after"] == ["v1"]
        assert all(w["reported_mode"] == mode and w["window_requests"] > 0 for w in swap["swaps"])
        assert swap["anon_before"] > 0 and swap["anon_during_max"] >= swap["anon_before"]
        assert swap["memory_samples"] > 0 and swap["gpu"] is None and swap["other_cores"] >= 0
    assert results["swap"]["double"]["pause_ms"] == 0
    control = results["swap"]["control"]  # the same load and statistics, nothing swapped
    assert [w["to"] for w in control["swaps"]] == ["none", "none"] and control["versions_after"] == ["v1"]
    assert results["rollout"] is None  # --skip-rollout
    assert results["infinity"]["not_measured"] == "skipped (--no-infinity)"  # said, not dropped
    assert len(results["targets"]) == 5 and all(t["verdict"] in ("PASS", "FAIL") for t in results["targets"])

    text = out.read_text()
    assert cuda in text  # the other device's section is untouched
    assert text.count("<!-- bench:cpu -->") == 1 and "### Swaps under load" in text
    assert "| Infinity 0.0.78: not measured — skipped (--no-infinity) |" in text
    assert "One-client loads alternate each request between the servers" in text
    run.main([*argv[:-2]])  # a second run replaces the section instead of adding one
    assert out.read_text().count("<!-- bench:cpu -->") == 1


def _cuda_results() -> dict[str, Any]:
    """What a CUDA run returns, in the shape run.run builds (only the figures the report reads)."""
    row = {"docs": 3, "clients": 32, "pairs_per_s": 100.0, "rounds_pairs_per_s": [100.0], "p50_ms": 1.0,
           "p99_ms": 2.0, "requests": 10, "failures": 0, "loadavg": 0.1, "other_cores": 0.0}  # fmt: skip
    one = {"to": "v2", "reported_mode": "inplace", "pause_ms": 3.0, "call_ms": 5.0, "steady_p50_ms": 10.0,
           "steady_worst_ms": 20.0, "steady_worst_before_ms": 20.0, "window_worst_ms": 25.0, "added_worst_ms": 5.0, "anon_growth": 1,
           "memory_samples_during": 3}  # fmt: skip
    gpu = {"allocated_before": 1000, "allocated_during_max": 1010, "allocated_after": 1000,
           "peak_before": 2000, "peak_after": 2010}  # fmt: skip
    swap = {**one, "mode": "inplace", "swaps": [one], "pause_max_ms": 3.0, "added_worst_max_ms": 5.0,
            "window_s": 2.0, "anon_before": 10, "anon_steady_max": 10, "anon_during_max": 11, "anon_after": 10,
            "anon_growth_of_model": 0.01, "failures": 0, "versions_after": ["v2"], "other_cores": 0.0,
            "clients": 32, "docs": 3, "gpu": gpu}  # fmt: skip
    meta = {"device": "cuda", "device_kind": "cuda", "device_name": "cuda: H100", "quick": False,
            "command": "python -m bench.run", "date": "today", "cpu_count": 16, "cpu_model": "x",
            "python": "3", "torch": "2", "transformers": "5", "model": "m", "dtype": "float16", "rounds": 1,
            "loadavg_start": 0.1, "loadavg_end": 0.1, "loadavg_max": 0.2, "other_cores_max": 0.1,
            "retries": 2, "quiet_cores": 0.3}  # fmt: skip
    ceiling = {"batch": 32, "pairs_per_s": 100.0, "rounds_pairs_per_s": [100.0], "batch_ms": 320.0,
               "tokenize_ms": 1.0, "padded_length": 80, "other_cores": 0.1, "torch_threads": 16,
               "parameters": 568e6, "model_bytes": 1 << 30, "tokens_per_pair": 80.0}  # fmt: skip
    return {
        "meta": meta,
        "ceiling": ceiling,
        "server": [row],
        "baseline": [{**row, "pairs_per_s": 50.0}],
        "swap": {"inplace": swap, "double": {**swap, "mode": "double", "pause_ms": 0.0, "pause_max_ms": 0.0}},
        "rollout": {"1": {"total_s": 2.0}},
    }


def test_report_on_cuda_adds_gpu_memory_and_marks_cpu_targets_informational(tmp_path: Path) -> None:
    results = _cuda_results()
    results["targets"] = checks = targets(results)
    gpu_check = next(t for t in checks if "GPU" in t.name)
    assert gpu_check.applies and gpu_check.passed  # +0.5% of the steady-state peak
    assert len(checks) == 6
    assert all(not t.applies and t.verdict.endswith("(info)") for t in checks if t is not gpu_check)
    section = markdown(results)
    assert "GPU memory around the swaps" in section and "| 1 | 2.00 |" in section  # the rollout table
    path = tmp_path / "B.md"
    write_section(path, section, "cuda")
    assert path.read_text().startswith("# Benchmarks") and section in path.read_text()
