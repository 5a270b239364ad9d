"""Pairs per second of every intra-op thread running its own single-thread batches at once, by
batch size: the measurement behind the server's CPU batch of ``max_batch_size / threads`` pairs
(``engine.py``).

    python -m bench.part_size [--sizes 16,32] [--rounds 6] [--seconds 6] [--models minilm|tiny]

Each thread scores the bench's workload in batches of one size, one intra-op thread each, as the
engine's model threads do under load; the sizes alternate round by round, and each line gives every
round's pairs/s (all threads together) and their median.
"""

from __future__ import annotations

import argparse
import statistics
import threading
import time
from collections.abc import Sequence
from typing import Any

from .models import add_models_option, load_v1
from .workload import make_workload


def rate(module: Any, tokenizer: Any, size: int, seconds: float, threads: int) -> float:
    """Pairs per second of ``threads`` threads, each scoring ``size``-pair batches for ``seconds``."""
    import torch

    workload = make_workload()
    done: list[float] = []

    def worker(k: int) -> None:
        torch.set_num_threads(1)  # a setting of the calling thread
        pairs, i, t0 = 0, k * 1000, time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            queries, docs = workload.pairs(i, size)
            batch = tokenizer(queries, docs, padding=True, truncation="only_second", return_tensors="pt")
            with torch.inference_mode():
                module(**batch)
            pairs, i = pairs + size, i + 1
        done.append(pairs / (time.perf_counter() - t0))

    workers = [threading.Thread(target=worker, args=(k,)) for k in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    return sum(done)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.part_size", description=__doc__.splitlines()[0])
    p.add_argument("--sizes", default="16,32", help="pairs per batch, comma-separated")
    p.add_argument("--rounds", type=int, default=6)
    p.add_argument("--seconds", type=float, default=6.0)
    add_models_option(p)
    args = p.parse_args(argv)
    models, loaded, threads = load_v1(args.models)
    sizes = [int(s) for s in args.sizes.split(",")]
    print(
        f"{models.description}, {threads} threads of single-thread batches; {args.rounds} rounds of {args.seconds} s"
    )
    rates: dict[int, list[float]] = {s: [] for s in sizes}
    for r in range(args.rounds):
        for size in sizes if r % 2 == 0 else sizes[::-1]:
            rates[size].append(rate(loaded.module, loaded.tokenizer, size, args.seconds, threads))
    for size in sizes:
        rounds = " / ".join(f"{x:.1f}" for x in rates[size])
        print(f"{size:3d} pairs per batch: {statistics.median(rates[size]):7.1f} pairs/s (rounds {rounds})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
