"""The Dockerfile has the properties the design asks for. It cannot be built here (no Docker engine,
no base images), so it is parsed: stages, instructions, and what the final stage carries."""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field

import pytest
import yaml
from chartkit import CHART, REPO

DOCKERFILE = REPO / "Dockerfile"
DOCKERIGNORE = REPO / ".dockerignore"
BUILD_TOOLS = re.compile(r"\b(gcc|g\+\+|cc|clang|make|build-essential|cmake|git|cargo|rustc|python3?-dev)\b")


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def all(self, op: str) -> list[str]:
        return [arg for o, arg in self.instructions if o == op]


def parse(text: str) -> tuple[list[str], list[Stage]]:
    """Global ARGs and stages; continuation lines joined, comments and parser directives dropped."""
    logical: list[str] = []
    buf = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not buf and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):
            continue
        if line.endswith("\\"):
            buf += line[:-1] + " "
            continue
        logical.append(buf + line)
        buf = ""
    global_args: list[str] = []
    stages: list[Stage] = []
    for line in logical:
        op, _, arg = line.partition(" ")
        op = op.upper()
        arg = arg.strip()
        if op == "FROM":
            words = arg.split()
            name = words[2] if len(words) >= 3 and words[1].upper() == "AS" else None
            stages.append(Stage(words[0], name))
        elif not stages:
            assert op == "ARG", f"only ARG may precede FROM, got {op}"
            global_args.append(arg)
        else:
            stages[-1].instructions.append((op, arg))
    return global_args, stages


@pytest.fixture(scope="module")
def dockerfile() -> tuple[list[str], list[Stage]]:
    return parse(DOCKERFILE.read_text())


def test_multi_stage_with_a_runtime_only_final_stage(dockerfile: tuple[list[str], list[Stage]]) -> None:
    _, stages = dockerfile
    assert len(stages) >= 2
    final = stages[-1]
    build_names = {s.name for s in stages[:-1]}
    copies = final.all("COPY")
    assert any(re.match(r"--from=(\S+)\s+/opt/venv\s+/opt/venv", c) for c in copies), copies
    assert all(m.group(1) in build_names for c in copies if (m := re.match(r"--from=(\S+)", c)))
    # Nothing is compiled or installed in the final stage: no build tools, no pip, no source tree.
    for run in final.all("RUN"):
        assert not BUILD_TOOLS.search(run), f"build tool in the final stage: {run}"
        assert "pip install" not in run and "apt-get install" not in run, run
    assert not any(c.split()[0] in (".", "./") for c in copies if not c.startswith("--from"))


def test_final_stage_runs_as_a_non_root_user(dockerfile: tuple[list[str], list[Stage]]) -> None:
    _, stages = dockerfile
    users = stages[-1].all("USER")
    assert users, "the final stage sets USER"
    user = users[-1].split(":")[0]
    assert user not in ("0", "root")
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    # The chart's default uid is the image's user: fsGroup and runAsUser line up with the files.
    assert user == str(values["podSecurity"]["runAsUser"])


def test_torch_build_is_selectable(dockerfile: tuple[list[str], list[Stage]]) -> None:
    _, stages = dockerfile
    build = stages[0]
    args = {a.split("=", 1)[0]: (a.split("=", 1)[1] if "=" in a else None) for a in build.all("ARG")}
    assert "TORCH_INDEX" in args and "TORCH_SPEC" in args
    assert args["TORCH_INDEX"] and "download.pytorch.org/whl/cpu" in args["TORCH_INDEX"], "CPU by default"
    runs = " ".join(build.all("RUN"))
    assert re.search(r"pip install --index-url \"?\$\{TORCH_INDEX\}\"? \"?\$\{TORCH_SPEC\}\"?", runs), runs
    # torch is installed before the project, so `pip install .` never pulls another build.
    torch_at = runs.index("${TORCH_SPEC}")
    project = re.search(r"pip install (\.|/src|\"\.\[tracing\]\")(\s|$)", runs)
    assert project and project.start() > torch_at


def test_installs_the_project_not_an_editable_checkout(dockerfile: tuple[list[str], list[Stage]]) -> None:
    _, stages = dockerfile
    runs = " ".join(r for s in stages for r in s.all("RUN"))
    assert ("pip install ." in runs or 'pip install ".[tracing]"' in runs) and " -e " not in runs
    assert "--editable" not in runs


def test_every_process_is_in_the_image(dockerfile: tuple[list[str], list[Stage]]) -> None:
    """The chart runs hotswap-server, hotswap-agent and hotswap-operator from the one image."""
    pyproject = (REPO / "pyproject.toml").read_text()
    for script in ("hotswap-server", "hotswap-agent", "hotswap-operator"):
        assert re.search(rf"^{script}\s*=", pyproject, re.M), script
    _, stages = dockerfile
    cmd = stages[-1].all("CMD")[-1]
    assert shlex.split(cmd.strip("[]").replace(",", " "))[0].strip('"') == "hotswap-server"


def test_base_images_are_pinned(dockerfile: tuple[list[str], list[Stage]]) -> None:
    global_args, stages = dockerfile
    defaults = dict(a.split("=", 1) for a in global_args if "=" in a)
    for stage in stages:
        base = re.sub(r"\$\{(\w+)\}", lambda m: defaults.get(m.group(1), m.group(0)), stage.base)
        assert ":" in base and not base.endswith(":latest"), base


def test_dockerignore_keeps_the_context_small() -> None:
    ignored = {
        line.strip() for line in DOCKERIGNORE.read_text().splitlines() if line and not line.startswith("#")
    }
    for path in (".git", ".venv", ".cache", "demo-report", "tests"):
        assert path in ignored, path
    for needed in ("pyproject.toml", "server", "operator", "README.md"):
        assert needed not in ignored, f"pip install . needs {needed}"
