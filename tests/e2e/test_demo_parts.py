"""The cluster demo's pieces that need no cluster: the HTML report (inline SVG) and the live view."""

from __future__ import annotations

import dataclasses
import datetime
import io
import re
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

from demo import cluster_report
from demo.cluster_view import View, _clip
from e2e.backend import LoadRun, summarize
from e2e.checks import Check, PodSwap
from e2e.result import Event, ScenarioResult

START = 1_800_000_000.0  # the load's start, time.time()


@dataclasses.dataclass
class S:
    at: float
    pod: str
    ok: bool
    status: int
    version: str | None
    latency_ms: float
    error: str = ""


def samples() -> list[S]:
    out = []
    for i in range(300):
        t = i * 0.05
        version = "v1" if t < 5 else "v3" if 10 <= t < 10.2 else "v2"
        out.append(S(t, f"reranker-{i % 3}", True, 200, version, 20 + (i % 7) * 3))
    out.append(S(7.0, "reranker-1", False, 503, None, 5.0, "non-200 answer"))
    return out


def swap(pod: str, version: str, t: float, kind: str = "activate") -> PodSwap:
    at = datetime.datetime.fromtimestamp(START + t, datetime.UTC)
    return PodSwap(pod, version, "v1", kind, at, at - datetime.timedelta(milliseconds=15), "inplace", 2.5,
                   at, at + datetime.timedelta(milliseconds=30))  # fmt: skip


def result(ok: bool = True) -> ScenarioResult:
    s = samples()
    return ScenarioResult(
        backend="local",
        pods=["reranker-0", "reranker-1", "reranker-2"],
        models={"v1": "minilm-v1", "v2": "minilm-v2", "v3": "tiny-xlmr-inverted"},
        install_seconds=20.0,
        rollout_seconds=4.0,
        rollback_seconds=1.2,
        rollout={p: swap(p, "v2", 5 + i) for i, p in enumerate(["reranker-0", "reranker-1", "reranker-2"])},
        broken=[swap("reranker-0", "v3", 10.0)],
        restored=[swap("reranker-0", "v2", 10.2, "rollback")],
        failure={"pod": "reranker-0", "step": "Verify", "reason": "document 0 ranked first, expected 1"},
        degraded={"status": "True", "reason": "RolloutFailed", "message": "v3 failed on pod reranker-0"},
        history=[{"version": "v2", "result": "Succeeded"}, {"version": "v3", "result": "RolledBack"}],
        final=dict.fromkeys(["reranker-0", "reranker-1", "reranker-2"], "v2"),
        load=summarize(s, 4, 15.0),
        kubectl_get="NAME       TARGET   CURRENT\nreranker   v3       v2",
        kubectl_wait="rerankermodel.hotswap.dev/reranker condition met",
        manifests={"v2": Path("/tmp/x/reranker-v2.yaml")},
        checks=[Check("zero failed requests", ok, "" if ok else "1 failed <b>")],
        events=[
            Event(1.0, START - 1, "step", "kubectl apply -f reranker-v1.yaml (v1): created"),
            Event(5.0, START + 4.5, "step", "kubectl apply -f reranker-v2.yaml (v2): configured"),
            Event(9.0, START + 8.0, "step", "v2 Ready on every pod, rollout took 3.5s"),
            Event(10.0, START + 9.8, "step", "kubectl apply -f reranker-v3.yaml (v3): configured"),
            Event(11.0, START + 10.5, "step", "v3 failed ...; rolled back to v2 in 0.7s"),
        ],
        started_wall=START - 2,
    )


def test_report_is_well_formed_html_with_a_plot_per_swap(tmp_path: Path) -> None:
    path = cluster_report.write(
        tmp_path / "demo-report", result(), samples(), START, "kubectl --kubeconfig k"
    )
    text = path.read_text()
    assert path.name == "index.html" and "All went as it should." in text
    svgs = re.findall(r"<svg.*?</svg>", text, re.S)
    assert len(svgs) == 1 + 5, "the whole timeline, and one close-up per swap (3 + broken + back)"
    for svg in svgs:
        ET.fromstring(svg)  # well-formed XML
    main = ET.fromstring(svgs[0])
    circles = [e for e in main.iter() if e.tag.endswith("circle")]
    assert len(circles) == 300, "one dot per answered request"
    labels = "".join(e.text or "" for e in main.iter() if e.tag.endswith("text"))
    assert "reranker-0 → v2" in labels and "reranker-0 → v3" in labels and "✕" in labels
    assert "paused 2.5 ms" in text and "reranker   v3       v2" in text


def test_report_escapes_and_shows_failures(tmp_path: Path) -> None:
    text = cluster_report.render(result(ok=False), samples(), START, "kubectl")
    assert "Something went wrong" in text and "1 failed &lt;b&gt;" in text


class FakeScenario:
    def __init__(self, model: dict[str, Any], load: LoadRun) -> None:
        self.model, self.load, self.phase = model, load, "rolling out v2, one pod at a time"
        self.events = [Event(1.0, START, "step", "kubectl apply -f reranker-v2.yaml (v2): configured")]

    def elapsed(self) -> float:
        return 6.0


def test_view_frame_and_plain_lines() -> None:
    load = LoadRun(4, START)
    load.samples = samples()
    model = {
        "status": {
            "targetVersion": "v2",
            "currentVersion": None,
            "lastGoodVersion": "v1",
            "conditions": [{"type": "Ready", "status": "False", "reason": "Progressing"}],
            "pods": [
                {
                    "name": "reranker-0",
                    "version": "v2",
                    "state": "Ready",
                    "lastSwap": {"mode": "inplace", "pauseMs": 2.5},
                },
                {"name": "reranker-1", "version": "v1", "state": "Activating"},
                {"name": "reranker-2", "version": "v1", "state": "Preloaded"},
            ],
        }
    }
    out = io.StringIO()
    view = View(FakeScenario(model, load), out=out, live=True)  # type: ignore[arg-type]
    view.tick()
    plain = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", out.getvalue())
    assert re.search(r"reranker-0\s+v2\s+Ready\s+100\s+0\s+inplace, requests paused 2.5 ms", plain), plain
    assert re.search(r"reranker-1\s+v1\s+Activating\s+101\s+1", plain), plain
    assert "301 requests" in plain and "1 failed" in plain and "target v2" in plain
    view.tick()
    assert f"\x1b[{len(view.frame())}F" in out.getvalue(), "the second frame redraws over the first"

    lines = io.StringIO()
    plain_view = View(FakeScenario(model, load), out=lines, live=False)  # type: ignore[arg-type]
    plain_view.on_event(Event(2.5, START, "step", "hello"))
    plain_view.tick()
    assert "\x1b" not in lines.getvalue()
    assert "    2.5s  hello" in lines.getvalue() and "load: 4 clients · 301 requests" in lines.getvalue()


def test_clip_keeps_colour_codes_and_cuts_visible_text() -> None:
    assert _clip("\x1b[32mabcdef\x1b[0m", 4) == "\x1b[32mabc\x1b[0m"


def test_quality_step_manifest_and_summary_line() -> None:
    from hotswap_operator.models import RerankerModelSpec

    from demo.cluster_demo import quality_lines
    from devtools.quality_set import QUALITY_SET
    from e2e.scenario import with_quality_gate

    assert 8 <= len(QUALITY_SET) <= 12
    manifest = {
        "spec": {
            "selector": {"matchLabels": {"app": "reranker"}},
            "version": "v4",
            "source": {"uri": "file:///registry/v4"},
            "rollout": {"canary": []},
        }
    }
    spec = RerankerModelSpec.model_validate(with_quality_gate(manifest)["spec"])
    gate = spec.rollout.quality
    assert gate is not None and gate.metric == "ndcg" and gate.k == 5 and gate.max_drop == 0.05
    assert gate.cases is not None and len(gate.cases) == len(QUALITY_SET)
    history = [
        {"version": "v2", "result": "Succeeded"},
        {
            "version": "v4",
            "result": "RolledBack",
            "quality": {
                "metric": "ndcg",
                "k": 5,
                "candidate": 0.8794,
                "baseline": 0.9916,
                "baselineVersion": "v2",
                "maxDrop": 0.05,
                "passed": False,
            },
        },
    ]
    [line] = quality_lines(dataclasses.replace(result(), history=history))
    assert "ndcg@5 0.8794 vs v2 0.9916" in line and "blocked" in line
