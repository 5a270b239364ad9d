"""Behaviour that is about the process: the official cohere SDK over HTTP, SIGTERM draining, CLI errors."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
from pathlib import Path

import cohere
import requests

from .serverproc import run_server

DOCS = [
    "Bananas are a yellow fruit rich in potassium.",
    "Machine learning is a branch of artificial intelligence.",
    "Deep neural networks learn from data.",
]


def test_official_cohere_sdk_v2_and_v1_get_correct_results(tmp_path: Path, testmodels_dir: Path) -> None:
    with run_server(
        tmp_path, testmodels_dir, "--model", str(testmodels_dir / "minilm-v1"), "--version", "v1"
    ) as server:
        tei = requests.post(
            server.url + "/rerank", json={"query": "What is AI?", "texts": DOCS}, timeout=30
        ).json()
        want = {item["index"]: item["score"] for item in tei}

        v2 = cohere.ClientV2(api_key="unused", base_url=server.url)
        res = v2.rerank(model="minilm", query="What is AI?", documents=DOCS, top_n=2)
        assert [r.index for r in res.results] == [i["index"] for i in tei[:2]]
        for r in res.results:
            assert abs(r.relevance_score - want[r.index]) < 1e-6
        assert 0 not in [r.index for r in res.results]  # the fruit document is not in the top 2

        v1 = cohere.Client(api_key="unused", base_url=server.url)
        res1 = v1.rerank(model="minilm", query="What is AI?", documents=DOCS, return_documents=True)
        assert [r.index for r in res1.results] == [i["index"] for i in tei]
        assert res1.results[0].document is not None
        assert res1.results[0].document.text == DOCS[res1.results[0].index]


def test_sigterm_drains_queued_work_then_exits_zero(tmp_path: Path, testmodels_dir: Path) -> None:
    with run_server(
        tmp_path, testmodels_dir, "--model", str(testmodels_dir / "minilm-ce-v1"), "--version", "v1",
        "--max-batch-size", "8",
    ) as server:  # fmt: skip
        results: list[int] = []
        body = {
            "query": "what is machine learning",
            "texts": [f"document number {i} about AI" for i in range(64)],
        }

        def client() -> None:
            results.append(requests.post(server.url + "/rerank", json=body, timeout=60).status_code)

        threads = [threading.Thread(target=client) for _ in range(4)]
        for t in threads:
            t.start()
        # Wait until the server has accepted work, then ask it to stop.
        deadline = 200
        while deadline and "hotswap_batch_size_count" not in _metric_lines(server.url):
            deadline -= 1
            threading.Event().wait(0.05)
        server.proc.send_signal(signal.SIGTERM)
        for t in threads:
            t.join(timeout=60)
        assert server.proc.wait(timeout=60) == 0
        assert results == [200, 200, 200, 200]
        assert "draining" in server.log()


def _metric_lines(url: str) -> str:
    try:
        text = requests.get(url + "/metrics", timeout=5).text
    except requests.ConnectionError:
        return ""
    return "\n".join(
        line
        for line in text.splitlines()
        if line.startswith("hotswap_batch_size_count") and not line.endswith(" 0.0")
    )


def test_bad_flags_exit_2_with_the_flag_named(tmp_path: Path) -> None:
    for args, needle in [
        (["--swap-mode", "sideways"], "--swap-mode"),
        (["--port", "eighty"], "--port"),
        (["--admin-host", "0.0.0.0", "--admin-token-file", "/dev/null"], "loopback"),
        (["--admin-port", "0", "--model", str(tmp_path / "missing")], "--model"),
    ]:
        proc = subprocess.run(
            [sys.executable, "-m", "hotswap_server", *args], capture_output=True, text=True, timeout=60
        )
        assert proc.returncode == 2, proc.stderr
        assert needle in proc.stderr
