"""``python -m bench.run`` (``make bench``): measure the server, print PASS/FAIL, update BENCHMARKS.md.

In one run, on one model and one set of inputs:
1. the raw ceiling: tokenize + forward in a loop, in this process;
2. ``hotswap-server`` (a real process) under 1, 8 and 32 closed-loop clients, 3- and 32-document
   requests: pairs/s, p50/p99 latency;
3. the same for a plain lock-around-a-forward baseline server, and for Infinity (``infinity-emb``,
   in its own environment, :mod:`bench.peers.infinity`), in the same interleaved rounds; when
   Infinity cannot be installed or started, the report says so in its place;
4. a swap under load in both modes: worst latency around it against the steady state, the
   process's anonymous memory (and GPU memory on CUDA), and the reported pause;
5. the operator rollout timing for 1, 3 and 8 pods, when ``bench/rollout_bench.py`` exists.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import importlib
import importlib.util
import json
import shlex
import signal
import sys
import tempfile
import traceback
from collections.abc import Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from .machine import describe, loadavg
from .models import REPO, model_set
from .peers import infinity
from .processes import Server, baseline_server, hotswap_server
from .report import console, markdown, targets, write_section
from .server_bench import FULL, QUICK, QUIET_CORES, Ceiling, swaps_under_load, throughput_rounds
from .workload import make_workload

ROLLOUT_PODS = (1, 3, 8)


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x]


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.split("\n")[0])
    p.add_argument(
        "--device",
        choices=["auto", "cpu", "cuda"],
        default="auto",
        help="cuda serves a bge-reranker-v2-m3-shaped model in fp16; auto: cuda when available",
    )
    p.add_argument(
        "--quick", action="store_true", help="short durations (smoke test; numbers are not conclusive)"
    )
    p.add_argument(
        "--out",
        type=Path,
        default=REPO / "docs" / "BENCHMARKS.md",
        help="markdown file whose section for this device kind is replaced",
    )
    p.add_argument("--no-write", action="store_true", help="print only; leave --out alone")
    p.add_argument("--json", type=Path, help="also write every figure as JSON here")
    p.add_argument("--skip-rollout", action="store_true", help="skip the operator rollout timing")
    p.add_argument(
        "--no-infinity",
        action="store_true",
        help="leave Infinity out (otherwise its environment is built once, in .cache/bench/infinity-venv)",
    )
    p.add_argument(
        "--models",
        default="default",
        choices=["default", "minilm", "bge-m3", "tiny", "tiny-xlmr-random"],
        help="model under test (default: minilm on CPU, bge-m3 on CUDA; tiny* for the smoke test)",
    )
    p.add_argument("--clients", type=_ints, default=[1, 8, 32], help="concurrent clients, comma-separated")
    p.add_argument("--sizes", type=_ints, default=[3, 32], help="documents per request, comma-separated")
    p.add_argument(
        "--models-dir",
        type=Path,
        help="where the embedded test models are generated (default: the tests' cache, .cache/)",
    )
    p.add_argument("--swap-clients", type=int, default=32, help="clients during the swap (3-doc requests)")
    p.add_argument(
        "--max-batch-size", type=int, default=32, help="the server's max batch = the ceiling's batch"
    )
    return p.parse_args(argv)  # fmt: skip


def resolve_device(device: str) -> str:
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def _rollout_module() -> Any:
    if importlib.util.find_spec("bench.rollout_bench") is None:
        return None
    return importlib.import_module("bench.rollout_bench")


def rollout(skip: bool, module: Any = None, pods_list: Sequence[int] = ROLLOUT_PODS) -> dict[str, Any] | None:
    """``bench.rollout_bench.run(pods)`` for each pod count; one failure is reported, not raised."""
    if skip:
        return None
    module = module or _rollout_module()
    if module is None:
        return {"skipped": "bench/rollout_bench.py is not there yet"}
    out: dict[str, Any] = {}
    for pods in pods_list:
        print(f"rollout: {pods} pod(s) ...", flush=True)
        try:
            out[str(pods)] = module.run(pods)
        except Exception as e:  # the server figures stand on their own: report, don't lose them
            traceback.print_exc()
            out[str(pods)] = {"error": f"{type(e).__name__}: {e}"}
    return out


def infinity_env(skip: bool, progress: Any = print) -> infinity.Env | str:
    """Infinity's environment, or why it is not measured (the reason goes into the report)."""
    if skip:
        return "skipped (--no-infinity)"
    try:
        return infinity.ensure_venv(log=progress)
    except infinity.Unavailable as e:
        return str(e)
    except Exception as e:  # the other figures stand on their own: report, don't lose them
        traceback.print_exc()
        return f"environment not built: {type(e).__name__}: {e}"


def _start_infinity(
    stack: ExitStack, env: infinity.Env, models: Any, work: Path, device: str, batch: int
) -> Server | str:
    try:
        return stack.enter_context(infinity.infinity_server(env, models, work, device, batch, wait=False))
    except Exception as e:
        traceback.print_exc()
        return f"did not start: {type(e).__name__}: {e}"


def _infinity_ready(server: Server, ceiling: Ceiling) -> dict[str, Any] | str:
    """Wait for Infinity; then check once that it ranks documents as our scorer does."""
    import torch

    try:
        server.wait_ready(infinity.START_TIMEOUT_S)
    except Exception as e:
        return f"did not start: {e}".splitlines()[0][:300] + f" (log: {server.log_path.name})"
    runner = ceiling.runner
    assert runner is not None

    def ours(query: str, docs: list[str]) -> list[float]:
        raw, _tokens = runner.score([query] * len(docs), docs)
        return [float(x) for x in torch.sigmoid(torch.from_numpy(raw))]

    query, docs = make_workload().request(0, 8)
    try:
        return infinity.same_order(server, ours, query, docs)
    except Exception as e:
        return f"answered /health but not /rerank: {type(e).__name__}: {e}"[:300]


def run(args: argparse.Namespace, command: str) -> dict[str, Any]:
    device = resolve_device(args.device)
    durations = QUICK if args.quick else FULL
    meta = describe(device)
    load_start = loadavg()
    swap: dict[str, Any] = {}

    def progress(line: str) -> None:
        print(line, flush=True)

    peer_env = infinity_env(args.no_infinity, progress)
    peer: dict[str, Any] = {"version": infinity.VERSION}
    if isinstance(peer_env, str):
        peer["not_measured"] = peer_env
    else:
        peer.update(versions=peer_env.versions, built=peer_env.built, install_s=peer_env.install_s)
    with model_set(args.models, device, args.models_dir) as models, ExitStack() as stack:
        work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="hotswap-bench-")))
        meta.update(model=models.description, dtype=models.dtype, quick=args.quick)
        progress(f"model {models.description} on {device}; starting hotswap-server and the lock baseline ...")
        # Every server stays up (idle when not measured) so that rounds can interleave them. The
        # order is the order of measurement (reversed every other round): Hotswap sits between the
        # baseline and Infinity, so that it is measured back to back with each server it is judged
        # against, and a per-round ratio compares two measurements seconds apart.
        servers: dict[str, Server] = {
            "baseline": stack.enter_context(baseline_server(models, work, device, wait=False)),
            "hotswap": stack.enter_context(
                hotswap_server(models, work, device, "inplace", args.max_batch_size, wait=False)
            ),
        }
        started = None
        if isinstance(peer_env, infinity.Env):
            progress(f"starting Infinity {infinity.VERSION} on the same model folder ...")
            started = _start_infinity(stack, peer_env, models, work, device, args.max_batch_size)
            if isinstance(started, str):
                peer["not_measured"] = started
        for server in servers.values():
            server.wait_ready()
        ceiling = Ceiling(models, device, args.max_batch_size)
        try:
            if isinstance(started, Server):
                check = _infinity_ready(started, ceiling)
                if isinstance(check, str):
                    peer["not_measured"] = check
                    started.stop()
                else:
                    peer["sanity"] = check
                    progress(
                        f"infinity: ranks {check['docs']} documents "
                        f"{'as ours does' if check['same_order'] else 'DIFFERENTLY from ours'} "
                        f"(scores differ by at most {check['max_abs_diff']:.2g})"
                    )
                    servers["infinity"] = started
            rows = throughput_rounds(ceiling, servers, models, args.clients, args.sizes, durations, progress)
            ceiling_result = ceiling.result()
        finally:
            ceiling.close()
        servers["baseline"].stop()
        if "infinity" in servers:
            servers["infinity"].stop()
            peer["rows"] = rows["infinity"]
        progress("hotswap-server: the same load without a swap (control) ...")
        swap["control"] = swaps_under_load(
            servers["hotswap"], models, "control", args.swap_clients, 3, durations
        )
        progress("hotswap-server: inplace swaps under load ...")
        swap["inplace"] = swaps_under_load(
            servers["hotswap"], models, "inplace", args.swap_clients, 3, durations
        )
        servers["hotswap"].stop()
        progress("hotswap-server: double swaps under load ...")
        with hotswap_server(models, work, device, "double", args.max_batch_size) as double:
            swap["double"] = swaps_under_load(double, models, "double", args.swap_clients, 3, durations)
    figures = [ceiling_result, *rows["hotswap"], *rows["baseline"], *rows.get("infinity", []), *swap.values()]
    loads = [load_start, *(f["loadavg"] for f in figures)]
    results: dict[str, Any] = {
        "meta": {
            **meta,
            "command": command,
            "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
            "rounds": durations.rounds,
            "retries": durations.retries,
            "quiet_cores": QUIET_CORES,
            "loadavg_start": load_start,
            "loadavg_end": loadavg(),
            "loadavg_max": max(loads),
            "other_cores_max": max(f["other_cores"] for f in figures),
        },
        "ceiling": ceiling_result,
        "server": rows["hotswap"],
        "baseline": rows["baseline"],
        "infinity": peer,
        "swap": swap,
        "rollout": rollout(args.skip_rollout),
    }
    results["targets"] = targets(results)
    return results


def _exit_on_sigterm(signum: int, frame: object) -> None:
    # Unwind like Ctrl-C, so every ``with running(...)`` stops the servers it started: a bench killed
    # with SIGTERM (timeout, kill) used to leave its servers and Infinity running.
    raise SystemExit(128 + signum)


def main(argv: Sequence[str] | None = None) -> int:
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    args = parse_args(argv)
    raw = sys.argv[1:] if argv is None else list(argv)
    command = " ".join(["python -m bench.run", *(shlex.quote(a) for a in raw)])
    results = run(args, command)
    print(console(results))
    if not args.no_write:
        write_section(args.out, markdown(results), results["meta"]["device_kind"])
        print(f"wrote the {results['meta']['device_kind']} section of {args.out}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2, default=_jsonable))
    return 0


def _jsonable(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {**dataclasses.asdict(value), "verdict": value.verdict}  # type: ignore[attr-defined]
    return str(value)


if __name__ == "__main__":
    raise SystemExit(main())
