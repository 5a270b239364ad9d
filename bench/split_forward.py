"""One batch as one forward on every intra-op thread against the same batch as one single-thread
part per thread, in parallel: the measurement behind the server's CPU groups (``engine.py``).

    python -m bench.split_forward [--sizes 3,4,6,16,24,32] [--repeats 10] [--models minilm|tiny]

Both ways score the same tokenized pairs from the bench's workload with the server's own loader;
the rounds alternate, and each line gives the median milliseconds of each way.
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import threading
import time
from collections.abc import Sequence
from typing import Any

from .models import add_models_option, load_v1
from .workload import make_workload


def measure(module: Any, tokenizer: Any, size: int, repeats: int, threads: int) -> dict[str, float]:
    """Median ms of ``size`` pairs as one forward on ``threads`` threads, and split in ``threads``
    parts, one thread each, run at once (torch's thread count is a setting of each calling thread)."""
    import torch

    queries, docs = make_workload().pairs(0, size)
    batch = tokenizer(queries, docs, padding=True, truncation="only_second", return_tensors="pt")
    bounds = [round(k * size / threads) for k in range(threads + 1)]
    parts = [{k: v[a:b] for k, v in batch.items()} for a, b in itertools.pairwise(bounds) if b > a]

    def joint() -> None:
        torch.set_num_threads(threads)
        with torch.inference_mode():
            module(**batch)

    def one(part: dict[str, Any]) -> None:
        torch.set_num_threads(1)
        with torch.inference_mode():
            module(**part)

    def split() -> None:
        workers = [threading.Thread(target=one, args=(p,)) for p in parts]
        for w in workers:
            w.start()
        for w in workers:
            w.join()

    times: dict[str, list[float]] = {"joint_ms": [], "split_ms": []}
    for way in (joint, split):  # warm-up
        way()
    for _ in range(repeats):
        for name, way in (("joint_ms", joint), ("split_ms", split)):
            t0 = time.perf_counter()
            way()
            times[name].append((time.perf_counter() - t0) * 1000)
    return {name: statistics.median(v) for name, v in times.items()}


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.split_forward", description=__doc__.splitlines()[0])
    p.add_argument("--sizes", default="3,4,6,16,24,32", help="pairs per batch, comma-separated")
    p.add_argument("--repeats", type=int, default=10)
    add_models_option(p)
    args = p.parse_args(argv)
    models, loaded, threads = load_v1(args.models)
    print(f"{models.description}, {threads} intra-op threads; median of {args.repeats}")
    for size in (int(s) for s in args.sizes.split(",")):
        r = measure(loaded.module, loaded.tokenizer, size, args.repeats, threads)
        print(
            f"{size:3d} pairs: one forward on {threads} threads {r['joint_ms']:7.1f} ms, "
            f"{threads} single-thread parts {r['split_ms']:7.1f} ms ({r['joint_ms'] / r['split_ms']:.2f}x)"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
