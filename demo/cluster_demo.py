"""The cluster demo (``make demo``): three reranker pods swap model versions under load.

On this machine, with nothing else: it generates the models it needs (offline), starts a local
cluster (a Kubernetes API emulator, three pods on loopback addresses each running a real
``hotswap-server`` + ``hotswap-agent`` on the embedded MiniLM model, and the real operator), puts
client load on the Service, rolls v2 (MiniLM with other weights) one pod at a time, then a broken
v3 (a model that loads fine but ranks backwards: its canary fails on the first pod) and watches the
automatic rollback; then v4, the real MiniLM weights with noise (it loads and passes the canary but
ranks a labelled set worse), with ``spec.rollout.quality``: blocked by the gate before any pod
activates it, both nDCG scores in status, v2 still serving (``--no-quality`` skips this step). It
shows a live table per pod, ends with a summary and the ``kubectl``
commands to look at the resource yourself, and writes ``demo-report/index.html`` (the latency of
every request around each swap). Exit status 0 only when every check passed.

``--backend controlplane`` runs the same demo on the real Kubernetes control plane
(devtools/controlplane: kube-apiserver and the controllers built from Go modules, ``helm install``
of the chart, the operator as its Deployment); it must run inside a network namespace of its own:
``make demo DEMO_ARGS="--backend controlplane"`` builds what it needs and does that.

``--keep`` keeps the cluster up afterwards for exploring with kubectl (Ctrl-C stops it).
Ctrl-C at any point stops everything it started. The scenario is ``e2e.scenario``, the same one
``make test`` runs and the kind path runs (``e2e/``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from devtools import dev_env
from e2e.backend import Backend
from e2e.backends.local import LocalBackend, local_backend
from e2e.models import testmodels_dir
from e2e.result import ScenarioResult
from e2e.scenario import MINILM, MINILM_NAN, Scenario, ScenarioConfig, ScenarioError

from . import cluster_report
from .cluster_view import BOLD, GREEN, RED, View, paint

BROKEN = {"canary": MINILM, "nan": MINILM_NAN}
# The fourth step: real MiniLM weights with noise (passes the canary, ranks the labelled set worse),
# applied as v4 with spec.rollout.quality and blocked by the gate (devtools/quality_set.py).
QUALITY_MODEL = "minilm-noisy"


def ensure_models(folder: Path, names: list[str], out: View) -> None:
    """Generate the missing test models in a child process (it imports torch; this process need not)."""
    missing = [n for n in names if not (folder / n).is_dir()]
    if not missing:
        return
    out.out.write(f"Generating the offline models {', '.join(missing)} into {folder} (first run only) ...\n")
    out.out.flush()
    started = time.monotonic()
    cmd = [sys.executable, "-m", "devtools.testmodels", str(folder), "--only", *missing]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False, env=dev_env())
    if proc.returncode != 0:
        raise SystemExit(f"model generation failed:\n{proc.stderr[-2000:]}")
    out.out.write(f"  done in {time.monotonic() - started:.0f}s\n")


def kubectl_commands(backend: Backend, result: ScenarioResult | None) -> list[str]:
    k = backend.kubectl_hint()
    name = backend.model_name
    lines = [
        f"{k} get rrm {name} -o wide",
        f"{k} describe rrm {name}   # with its Events: Activated, RolloutFailed, PodRolledBack ...",
        f"{k} get rrm {name} -o yaml   # the whole status: pods, rollout, history, conditions",
        f"{k} wait --for=condition=Ready rrm/{name} --timeout=60s",
        f"{k} get pods -o wide",
        f"{k} get configmap {name}-boot -o yaml   # the boot file: the last-good version",
    ]
    if result is not None:
        v1 = result.versions[0]
        lines.append(f"{k} apply --validate=false -f {result.manifests[v1]}   # roll back to {v1} yourself")
    return lines


def open_backend(args: argparse.Namespace, models: Path, boot_model: str) -> Any:
    """The chosen backend's async context manager."""
    if args.backend == "controlplane":
        from e2e.backends.controlplane import controlplane_backend

        return controlplane_backend(
            models, boot_model=boot_model, replicas=args.pods, swap_mode=args.swap_mode
        )
    return local_backend(models, pods=args.pods, server_args=["--swap-mode", args.swap_mode])


def keep_logs(backend: Backend) -> Path:
    """Keep the cluster's folder when the demo ends; where its logs are."""
    if isinstance(backend, LocalBackend):
        backend.cluster.keep_workdir = True
        return backend.cluster.workdir / "logs"
    backend.keep_workdir = True  # type: ignore[attr-defined]
    return backend.logs_dir  # type: ignore[attr-defined,no-any-return]


async def run(args: argparse.Namespace, view: View) -> int:
    models = args.models or testmodels_dir()
    chosen = BROKEN[args.broken]
    config = ScenarioConfig(
        models=chosen,
        concurrency=args.concurrency,
        pause_seconds=args.pause_seconds,
        baseline_seconds=3.0,
        settle_seconds=2.0,
        quality_model=None if args.no_quality else QUALITY_MODEL,
    )
    if args.backend == "controlplane":
        from e2e.backends.controlplane import scenario_config

        config = scenario_config(config)
    where = "kube-apiserver (helm install)" if args.backend == "controlplane" else "kmock"
    view.title = (
        f"Hotswap cluster demo: {args.pods} pods (hotswap-server + hotswap-agent), the operator, {where}"
    )
    ticker: asyncio.Task[None] | None = None

    async def tick() -> None:
        while True:
            view.tick()
            await asyncio.sleep(0.25 if view.live else 0.5)

    if not view.live:
        print("Starting the local cluster: API server, pods, operator ...", flush=True)
    ticker = asyncio.create_task(tick())
    result: ScenarioResult | None = None
    try:
        async with open_backend(args, models, chosen.v1) as backend:
            scenario = Scenario(backend, config, on_event=view.on_event)
            view.scenario = scenario
            try:
                result = await scenario.run()
            except ScenarioError as exc:
                view.close()
                ticker.cancel()
                print("\n" + paint(f"The scenario stopped: {exc}", RED, view.live))
                print(f"The cluster's logs are kept in {keep_logs(backend)}")
                return 1
            ticker.cancel()
            view.close()
            assert scenario.load is not None
            report = cluster_report.write(
                args.report_dir,
                result,
                scenario.load.samples,
                scenario.load.started_wall,
                backend.kubectl_hint(),
            )
            print_summary(result, backend, report, keep=args.keep, color=view.live)
            if not result.ok:
                print(f"The cluster's logs are kept in {keep_logs(backend)}")
            if args.keep:
                print("\n" + paint("The cluster stays up for exploring.", BOLD, view.live)
                      + " Press Ctrl-C here to stop it (everything it started stops with it).", flush=True)  # fmt: skip
                await asyncio.Event().wait()
    finally:
        ticker.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await ticker
        view.close()
    return 0 if result is not None and result.ok else 1


def quality_lines(result: ScenarioResult) -> list[str]:
    """The quality gate's verdict on the worse-ranking version, from status.history (both scores)."""
    out = []
    for h in result.history:
        q = h.get("quality") or {}
        if not q or q.get("passed") is not False:
            continue
        cand, base = q.get("candidate"), q.get("baseline")
        if not isinstance(cand, float) or not isinstance(base, float):
            continue
        out.append(
            f"quality gate {h.get('version'):<7}: {q.get('metric')}@{q.get('k')} {cand:.4f} vs "
            f"{q.get('baselineVersion')} {base:.4f} (drop {base - cand:.4f} > maxDrop {q.get('maxDrop')}): "
            "blocked before any pod activated it"
        )
    return out


def print_summary(result: ScenarioResult, backend: Backend, report: Path, *, keep: bool, color: bool) -> None:
    print("\n" + paint("Summary", BOLD, color))
    for line in result.summary_lines():
        print(f"  {line}")
    for line in quality_lines(result):
        print(f"  {line}")
    print("\n" + paint("Checks", BOLD, color))
    for line in result.checks_lines():
        print(
            line.replace("[ok]", f"[{paint('ok', GREEN, color)}]").replace(
                "[FAILED]", f"[{paint('FAILED', RED, color)}]"
            )
        )
    print("\n" + paint("The resource at the end", BOLD, color) + " (kubectl get rrm -o wide)")
    for line in result.kubectl_get.strip().splitlines():
        print(f"  {line}")
    where = (
        "while it runs" if keep else "(the cluster stops when the demo ends: run it with --keep to try these)"
    )
    print("\n" + paint("Look at it yourself", BOLD, color) + f" {where}:")
    for line in kubectl_commands(backend, result):
        print(f"  {line}")
    print(f"\nReport with the latency timeline around each swap: {report}")
    if result.ok:
        print("\n" + paint("All went as it should.", GREEN, color), flush=True)
    else:
        print("\n" + paint("Something went wrong: see the checks.", RED, color), flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m demo.cluster_demo", description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n\n", 1)[1],
    )  # fmt: skip
    parser.add_argument(
        "--keep", action="store_true", help="keep the cluster up at the end (Ctrl-C stops it)"
    )
    parser.add_argument("--backend", choices=["local", "controlplane"], default="local",
                        help="local: the kmock local cluster (default); controlplane: the real API server, "
                        "helm install of the chart (run it as make demo DEMO_ARGS=\"--backend controlplane\")")  # fmt: skip
    parser.add_argument("--pods", type=int, default=3, help="reranker pods (default 3)")
    parser.add_argument("--broken", choices=sorted(BROKEN), default="canary",
                        help="how v3 is broken: canary (valid weights, ranks backwards: fails its canary on the "
                        "first pod, which rolls back) or nan (NaN weights: refused at preload) (default canary)")  # fmt: skip
    parser.add_argument(
        "--no-quality",
        action="store_true",
        help="skip the fourth step (a worse-ranking v4 blocked by spec.rollout.quality)",
    )
    parser.add_argument("--concurrency", type=int, default=4, help="clients on the Service (default 4)")
    parser.add_argument("--pause-seconds", type=int, default=2, help="pause between two pods (default 2)")
    parser.add_argument("--swap-mode", choices=["inplace", "double", "auto"], default="inplace",
                        help="the servers' swap mode (default inplace: one copy of the weights)")  # fmt: skip
    parser.add_argument("--report-dir", type=Path, default=Path("demo-report"), help="default ./demo-report")
    parser.add_argument("--models", type=Path, help="folder of generated test models (default: the .cache)")
    parser.add_argument("--plain", action="store_true", help="progress lines instead of a live table")
    args = parser.parse_args(argv)

    view = View(None, live=False if args.plain else None)
    chosen = BROKEN[args.broken]

    async def guarded() -> int:
        # SIGTERM (a CI runner, `timeout`) stops the demo like Ctrl-C: the cluster closes in order.
        task = asyncio.current_task()
        assert task is not None
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
        return await run(args, view)

    try:
        needed = [chosen.v1, chosen.v2, chosen.v3] + ([] if args.no_quality else [QUALITY_MODEL])
        ensure_models(args.models or testmodels_dir(), needed, view)
        return asyncio.run(guarded())
    except (KeyboardInterrupt, asyncio.CancelledError):
        sys.stdout.write("\x1b[?25h" if view.live else "")
        print("\nStopped: the cluster and every process it started are down.", flush=True)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
