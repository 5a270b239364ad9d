"""The agent is light: neither the app nor any fetcher imports torch or transformers."""

from __future__ import annotations

import json
import subprocess
import sys

PROBE = """
import json, sys, time
t = time.perf_counter()
import hotswap_agent.cli, hotswap_agent.app
from hotswap_agent.app import create_app
from hotswap_agent.settings import Settings
from pathlib import Path
create_app(Settings(token="t", server_admin_token="a", models_root=Path("/tmp")))
app_s = time.perf_counter() - t
import s3fs, huggingface_hub  # what the s3 and hf fetchers import lazily
from huggingface_hub import HfApi, snapshot_download
heavy = sorted(m for m in ("torch", "transformers", "tensorflow", "jax", "numpy") if m in sys.modules)
print(json.dumps({"heavy": heavy, "app_s": app_s}))
"""


def test_no_torch_or_transformers() -> None:
    out = subprocess.run(
        [sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=60, check=True
    )
    report = json.loads(out.stdout.strip().splitlines()[-1])
    assert "torch" not in report["heavy"] and "transformers" not in report["heavy"], report
    assert report["app_s"] < 5, report
