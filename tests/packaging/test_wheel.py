"""The wheel (and so the image, which installs it) holds the three processes and their contract only.

Harnesses, fakes and model generators live in ``devtools/``, which is never installed; a product
module that imported one of them, or a test-only dependency, would break in the image.
"""

from __future__ import annotations

import ast
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PRODUCT = ("hotswap_server", "hotswap_agent", "hotswap_operator", "hotswap_contract")
# Imported by devtools and tests only: a product module importing one would fail in the image.
DEV_ONLY = {
    "devtools",
    "kmock",
    "jsonpatch",
    "jsonpointer",
    "pytest",
    "moto",
    "cohere",
    "tests",
    "e2e",
    "bench",
}


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(out),
            str(REPO),
        ],
        check=True,
        capture_output=True,
    )
    (whl,) = out.glob("reranker_hotswap-*.whl")
    return whl


def test_wheel_holds_only_the_product_packages(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    top = {n.split("/", 1)[0] for n in names if not n.split("/", 1)[0].endswith(".dist-info")}
    assert top == set(PRODUCT), f"unexpected top-level entries in the wheel: {sorted(top - set(PRODUCT))}"
    for harness in ("localcluster", "testmodels", "fakepod", "controlplane", "kubelet", "fakes"):
        assert not [n for n in names if harness in n], f"a harness module ({harness}) is in the wheel"


def test_no_console_script_points_outside_the_product(wheel: Path) -> None:
    zf = zipfile.ZipFile(wheel)
    (entry_points,) = [n for n in zf.namelist() if n.endswith(".dist-info/entry_points.txt")]
    scripts = [line.split("=", 1) for line in zf.read(entry_points).decode().splitlines() if "=" in line]
    assert {name.strip() for name, _ in scripts} == {"hotswap-server", "hotswap-agent", "hotswap-operator"}
    assert all(target.strip().startswith(PRODUCT) for _, target in scripts)


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.split(".")[0])
    return found


def test_product_modules_import_no_development_package() -> None:
    offenders = []
    for folder in ("server", "operator", "contract"):
        for path in sorted((REPO / folder).rglob("*.py")):
            bad = _imports(path) & DEV_ONLY
            if bad:
                offenders.append(f"{path.relative_to(REPO)}: {sorted(bad)}")
    assert not offenders, "product modules importing development packages:\n" + "\n".join(offenders)


def test_contract_is_torch_free() -> None:
    # aiohttp is allowed (all three processes serve or call HTTP with it; hotswap_contract.access).
    heavy = {"torch", "transformers", "numpy", "kopf", "safetensors", "tokenizers"}
    for path in sorted((REPO / "contract").rglob("*.py")):
        assert not (_imports(path) & heavy), f"{path.relative_to(REPO)} imports a heavy package"
