"""Reference scores: what each version gives for an input, computed in this process."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from hotswap_server.modelload import load_version
from hotswap_server.scoring import runner_for


def reference_scores(folder: Path, requests: list[tuple[str, list[str]]]) -> list[np.ndarray]:
    """Raw scores of every request, one pair at a time (no batching, no padding)."""
    loaded = load_version(folder.name, folder, torch.float32)
    runner = runner_for(loaded)
    out = []
    for query, docs in requests:
        out.append(np.array([runner.score([query], [d])[0][0] for d in docs], dtype=np.float32))
    return out
