"""``python -m e2e local|kind|controlplane``: run the end-to-end scenario and print its result (exit 0 when every
check passed, 1 when one failed, 2 when the cluster never got where the scenario needed it)."""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

from .result import Event, ScenarioResult
from .scenario import MINILM, MINILM_NAN, TINY, Scenario, ScenarioConfig, ScenarioError

MODEL_SETS = {"tiny": TINY, "minilm": MINILM, "minilm-nan": MINILM_NAN}
REPO = Path(__file__).resolve().parent.parent


def print_event(ev: Event) -> None:
    print(f"{ev.at:7.1f}s  {ev.text}", flush=True)


def print_result(result: ScenarioResult) -> None:
    print("\nResult")
    for line in result.summary_lines():
        print(f"  {line}")
    print("\nChecks")
    for line in result.checks_lines():
        print(line)
    print(f"\n{'All checks passed.' if result.ok else 'Some checks FAILED.'}")


async def _local(args: argparse.Namespace, config: ScenarioConfig) -> ScenarioResult:
    from devtools.testmodels import generate

    from .backends.local import local_backend
    from .models import testmodels_dir

    models_dir = args.models or testmodels_dir()
    m = config.models
    generate(models_dir, [m.v1, m.v2, m.v3])
    server_args = ["--swap-mode", args.swap_mode]
    async with local_backend(
        models_dir, pods=args.pods, flavour=args.flavour, server_args=server_args
    ) as backend:
        return await Scenario(backend, config, on_event=print_event).run()


async def _kind(args: argparse.Namespace, config: ScenarioConfig) -> ScenarioResult:
    from .backends.kind import KindBackend, KindConfig

    backend = KindBackend(KindConfig.from_env())
    return await Scenario(backend, config, on_event=print_event).run()


async def _controlplane(args: argparse.Namespace, config: ScenarioConfig) -> ScenarioResult:
    from .backends.controlplane import controlplane_backend
    from .models import testmodels_dir

    models_dir = args.models or testmodels_dir()
    m = config.models
    async with controlplane_backend(models_dir, boot_model=m.v1) as backend:
        return await Scenario(backend, config, on_event=print_event).run()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m e2e", description=__doc__)
    parser.add_argument("backend", choices=["local", "kind", "controlplane"],
                        help="controlplane: the real API server; run it under scripts/netns-run.sh")  # fmt: skip
    parser.add_argument("--models-set", choices=sorted(MODEL_SETS), default="tiny",
                        help="which test models play v1, v2 and the broken v3 (default: tiny)")  # fmt: skip
    parser.add_argument("--pods", type=int, default=3, help="local: number of pods (default 3)")
    parser.add_argument("--flavour", choices=["real", "fake"], default="real",
                        help="local: real server+agent pods, or light fakes (default real)")  # fmt: skip
    parser.add_argument("--models", type=Path, help="local, controlplane: folder of generated test models")
    parser.add_argument("--swap-mode", choices=["inplace", "double", "auto"], default="inplace",
                        help="local: the servers' swap mode (default inplace)")  # fmt: skip
    parser.add_argument("--concurrency", type=int, default=4, help="clients on the Service (default 4)")
    parser.add_argument("--pause-seconds", type=int, default=0, help="spec.rollout.pauseSeconds")
    args = parser.parse_args(argv)
    config = ScenarioConfig(
        models=MODEL_SETS[args.models_set], concurrency=args.concurrency, pause_seconds=args.pause_seconds
    )
    if args.backend == "kind":
        from .backends.kind import scenario_config

        config = scenario_config(config)
    elif args.backend == "controlplane":
        from .backends.controlplane import scenario_config as controlplane_config

        config = controlplane_config(config)
    runners = {"local": _local, "kind": _kind, "controlplane": _controlplane}
    try:
        result = asyncio.run(runners[args.backend](args, config))
    except ScenarioError as exc:  # a ControlPlaneBackendError too
        print(f"\nscenario stopped: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    print_result(result)
    return 0 if result.ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
