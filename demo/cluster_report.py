"""The cluster demo's HTML report: the latency of every request over time, around each swap, as
inline SVG (no plotting library), with the result's summary and checks."""

from __future__ import annotations

import html
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from e2e.checks import PodSwap
from e2e.result import ScenarioResult

PALETTE = ["#4e79a7", "#59a14f", "#e15759", "#f28e2b", "#76b7b2", "#b07aa1"]
WINDOW = 1.5  # seconds either side of a swap in the close-ups
SMALL = 'font-size="11" fill="#555"'


@dataclass
class Mark:
    t: float  # seconds since the load started
    label: str
    color: str


@dataclass
class Band:
    t0: float
    t1: float
    label: str
    color: str


def _nice_step(span: float, ticks: int = 6) -> float:
    raw = max(span, 1e-9) / ticks
    power = 10 ** math.floor(math.log10(raw))
    return next(m * power for m in (1, 2, 5, 10) if m * power >= raw)


def _fmt(x: float) -> str:
    return f"{x:g}"


def plot(
    samples: Sequence[Any],
    *,
    t_from: float,
    t_to: float,
    colors: dict[str, str],
    y_max: float,
    marks: Sequence[Mark] = (),
    bands: Sequence[Band] = (),
    focus_pod: str | None = None,
    width: int = 980,
    height: int = 300,
    title: str = "",
) -> str:
    """A scatter plot of request latency (ms) against time (s), as an SVG element."""
    left, right, top, bottom = 56, 12, 24 if title else 10, 34
    pw, ph = width - left - right, height - top - bottom
    span = max(t_to - t_from, 1e-6)

    def x(t: float) -> float:
        return left + (t - t_from) / span * pw

    def y(ms: float) -> float:
        return top + ph - min(ms, y_max) / y_max * ph

    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" class="plot">']
    if title:
        out.append(
            f'<text x="{left}" y="15" font-size="12.5" font-weight="600" fill="#222">{html.escape(title)}</text>'
        )
    for band in bands:
        x0, x1 = max(x(band.t0), left), min(x(band.t1), left + pw)
        if x1 > x0:
            out.append(
                f'<rect x="{x0:.1f}" y="{top}" width="{x1 - x0:.1f}" height="{ph}" fill="{band.color}" '
                f'opacity="0.12"><title>{html.escape(band.label)}</title></rect>'
            )
            out.append(
                f'<text x="{x0 + 3:.1f}" y="{top + 12}" font-size="10.5" fill="#444">{html.escape(band.label)}</text>'
            )
    step = _nice_step(y_max, 5)
    v = 0.0
    while v <= y_max + 1e-9:
        out.append(f'<line x1="{left}" x2="{left + pw}" y1="{y(v):.1f}" y2="{y(v):.1f}" stroke="#eee"/>')
        out.append(f'<text x="{left - 6}" y="{y(v) + 4:.1f}" {SMALL} text-anchor="end">{_fmt(v)}</text>')
        v += step
    step = _nice_step(span, 8)
    t = math.ceil(t_from / step) * step
    while t <= t_to + 1e-9:
        out.append(
            f'<line x1="{x(t):.1f}" x2="{x(t):.1f}" y1="{top + ph}" y2="{top + ph + 4}" stroke="#888"/>'
        )
        out.append(
            f'<text x="{x(t):.1f}" y="{top + ph + 16}" {SMALL} text-anchor="middle">{_fmt(round(t, 6))}</text>'
        )
        t += step
    out.append(f'<line x1="{left}" x2="{left + pw}" y1="{top + ph}" y2="{top + ph}" stroke="#888"/>')
    out.append(
        f'<text x="{left + pw}" y="{height - 4}" {SMALL} text-anchor="end">seconds since the load started</text>'
    )
    out.append(
        f'<text x="12" y="{top + ph / 2:.0f}" {SMALL} text-anchor="middle" transform="rotate(-90 12 {top + ph / 2:.0f})">latency, ms</text>'
    )
    dots, fails = [], []
    for s in samples:
        if not t_from <= s.at <= t_to:
            continue
        if not s.ok:
            fails.append(f'<text x="{x(s.at):.1f}" y="{top + 10}" font-size="13" fill="#c62828">✕</text>')
            continue
        faded = focus_pod is not None and s.pod != focus_pod
        color = colors.get(s.version or "", "#999")
        shape = 'r="1.6"' if s.latency_ms <= y_max else 'r="2.4"'
        dots.append(
            f'<circle cx="{x(s.at):.1f}" cy="{y(s.latency_ms):.1f}" {shape} fill="{color}"'
            + (' opacity="0.18"' if faded else "")
            + "/>"
        )
    out += dots + fails
    out.append(_median_line(samples, t_from, t_to, x, y))
    for i, mark in enumerate(marks):
        if t_from <= mark.t <= t_to:
            out.append(
                f'<line x1="{x(mark.t):.1f}" x2="{x(mark.t):.1f}" y1="{top}" y2="{top + ph}" '
                f'stroke="{mark.color}" stroke-width="1.2" stroke-dasharray="4 3"/>'
            )
            out.append(
                f'<text x="{x(mark.t) + 3:.1f}" y="{top + 26 + 12 * (i % 3)}" font-size="10.5" '
                f'fill="{mark.color}" stroke="#fff" stroke-width="3" paint-order="stroke">'
                f"{html.escape(mark.label)}</text>"
            )
    out.append("</svg>")
    return "\n".join(out)


def _median_line(
    samples: Sequence[Any], t_from: float, t_to: float, x: Any, y: Any, buckets: int = 60
) -> str:
    """The median latency of the answered requests in each of ``buckets`` time slices, as a polyline."""
    width = (t_to - t_from) / buckets
    slices: list[list[float]] = [[] for _ in range(buckets)]
    for s in samples:
        if s.ok and t_from <= s.at < t_to:
            slices[min(buckets - 1, int((s.at - t_from) / width))].append(s.latency_ms)
    points = [
        f"{x(t_from + (i + 0.5) * width):.1f},{y(_percentile(v, 0.5)):.1f}" for i, v in enumerate(slices) if v
    ]
    if len(points) < 2:
        return ""
    return (
        f'<polyline points="{" ".join(points)}" fill="none" stroke="#333" stroke-width="1.3" opacity="0.7"/>'
    )


def _percentile(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))]


def _swap_caption(s: PodSwap, samples: Sequence[Any], t: float) -> str:
    around = [x.latency_ms for x in samples if x.ok and x.pod == s.pod and abs(x.at - t) <= WINDOW]
    before = [x.latency_ms for x in samples if x.ok and x.pod == s.pod and t - 10 <= x.at < t - WINDOW]
    pause = f", new requests paused {s.pause_ms:.1f} ms" if s.pause_ms is not None else ""
    return (
        f"{s.pod}: {s.from_version or '?'} → {s.version} by {s.kind} ({s.mode or '?'}{pause}). "
        f"Its requests within ±{WINDOW:g} s: {len(around)}, p50 {_percentile(around, 0.5):.0f} ms, "
        f"max {max(around, default=0):.0f} ms (the 10 s before: p50 {_percentile(before, 0.5):.0f} ms)."
    )


def render(
    result: ScenarioResult, samples: Sequence[Any], load_started_wall: float, kubectl_hint: str
) -> str:
    v1, v2, v3 = result.versions
    colors = {v1: PALETTE[0], v2: PALETTE[1], v3: PALETTE[2]}
    ok = [s.latency_ms for s in samples if s.ok]
    y_max = max(10.0, _percentile(ok, 0.995) * 1.15)
    t_end = max((s.at for s in samples), default=1.0)

    def rel(moment: Any) -> float:
        return float(moment.timestamp() - load_started_wall)

    swaps = sorted([*result.rollout.values(), *result.broken, *result.restored], key=lambda s: s.at)
    marks = [Mark(rel(s.at), f"{s.pod} → {s.version}", colors.get(s.version, "#333")) for s in swaps]
    applies = [e for e in result.events if e.text.startswith("kubectl apply")]
    bands = []
    ends = [
        e for e in result.events if "Ready on every pod, rollout took" in e.text or "rolled back to" in e.text
    ]
    for start, end, label, color in zip(
        applies[1:],
        ends,
        (f"rollout {v2}", f"broken {v3} → rollback"),
        (PALETTE[1], PALETTE[2]),
        strict=False,
    ):
        bands.append(Band(start.wall - load_started_wall, end.wall - load_started_wall, label, color))
    main = plot(samples, t_from=0.0, t_to=t_end, colors=colors, y_max=y_max, marks=marks, bands=bands,
                title="Every request: latency over time (colour = the version that scored it)")  # fmt: skip
    closeups = []
    for s in swaps:
        t = rel(s.at)
        svg = plot(samples, t_from=t - WINDOW, t_to=t + WINDOW, colors=colors, y_max=y_max,
                   marks=[Mark(t, f"{s.pod} → {s.version}", colors.get(s.version, "#333"))], focus_pod=s.pod,
                   width=480, height=220, title=f"{s.pod} → {s.version}")  # fmt: skip
        closeups.append(
            f"<figure>{svg}<figcaption>{html.escape(_swap_caption(s, samples, t))}</figcaption></figure>"
        )
    legend = " ".join(
        f'<span class="key" style="background:{c}"></span>{html.escape(v)} ({result.models.get(v, "")})'
        for v, c in colors.items()
    )
    checks = "\n".join(
        f'<li class="{"ok" if c.ok else "bad"}">{"✓" if c.ok else "✗"} {html.escape(c.name)}'
        + (f' <span class="detail">{html.escape(c.detail)}</span>' if c.detail else "")
        + "</li>"
        for c in result.checks
    )
    events = "\n".join(f"<tr><td>{e.at:.1f}s</td><td>{html.escape(e.text)}</td></tr>" for e in result.events)
    verdict = "All went as it should." if result.ok else "Something went wrong: see the failed checks."
    return TEMPLATE.format(
        verdict_class="ok" if result.ok else "bad",
        verdict=html.escape(verdict),
        summary=html.escape("\n".join(result.summary_lines())),
        legend=legend,
        main=main,
        closeups="\n".join(closeups),
        checks=checks,
        kubectl=html.escape(result.kubectl_get.strip()),
        hint=html.escape(kubectl_hint),
        model=html.escape(result.manifests.get(v2, Path("")).name),
        events=events,
    )


def write(
    path: Path, result: ScenarioResult, samples: Sequence[Any], load_started_wall: float, kubectl_hint: str
) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    target = path / "index.html"
    target.write_text(render(result, samples, load_started_wall, kubectl_hint), encoding="utf-8")
    return target


TEMPLATE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Hotswap cluster demo</title>
<style>
body {{ font: 14px/1.45 system-ui, sans-serif; margin: 24px auto; max-width: 1000px; color: #222; }}
h1 {{ font-size: 22px; }} h2 {{ font-size: 17px; margin-top: 28px; }}
pre {{ background: #f6f6f6; padding: 10px; overflow-x: auto; font-size: 12.5px; }}
.verdict.ok {{ color: #2e7d32; }} .verdict.bad {{ color: #c62828; }}
.plot {{ background: #fff; border: 1px solid #ddd; }}
.plot .grid {{ stroke: #eee; }} .plot .axis {{ stroke: #888; }}
.plot text {{ font-size: 11px; fill: #555; }} .plot .title {{ font-size: 12.5px; fill: #222; font-weight: 600; }}
.plot .ytick {{ text-anchor: end; }} .plot .xtick {{ text-anchor: middle; }} .plot .xlabel {{ text-anchor: end; }}
.plot .mark {{ stroke-dasharray: 4 3; stroke-width: 1.2; }} .plot .marklabel {{ font-size: 10.5px; }}
.plot .fail {{ fill: #c62828; font-size: 13px; }} .plot .band {{ font-size: 10.5px; fill: #444; }}
.closeups {{ display: flex; flex-wrap: wrap; gap: 12px; }} figure {{ margin: 0; width: 480px; }}
figcaption {{ font-size: 12px; color: #444; }}
.key {{ display: inline-block; width: 10px; height: 10px; margin: 0 4px 0 12px; border-radius: 50%; }}
li.ok {{ color: #2e7d32; }} li.bad {{ color: #c62828; }} .detail {{ color: #666; font-size: 12px; }}
table {{ border-collapse: collapse; font-size: 12.5px; }} td {{ padding: 1px 10px 1px 0; vertical-align: top; }}
</style></head><body>
<h1>Hotswap: a fleet of three reranker pods swapping model versions under load</h1>
<p class="verdict {verdict_class}"><b>{verdict}</b></p>
<pre>{summary}</pre>
<h2>Latency timeline</h2>
<p>{legend} · dark line: median latency · dashed lines: a pod swapped (as its agent recorded it) · shaded: a rollout in progress · ✕: a failed request</p>
{main}
<h2>Around each swap</h2>
<p>±{window:g} s around each pod's swap; that pod's requests in full colour, the other pods' faded.</p>
<div class="closeups">{closeups}</div>
<h2>Checks</h2>
<ul>{checks}</ul>
<h2>The resource at the end</h2>
<pre>$ kubectl get rrm -o wide
{kubectl}</pre>
<p>To look yourself, run the demo with <code>--keep</code>, then: <code>{hint} describe rrm reranker</code>
(the manifests it applied, such as <code>{model}</code>, are in the cluster's work folder).</p>
<h2>What happened</h2>
<table>{events}</table>
</body></html>
""".replace("{window:g}", f"{WINDOW:g}")
