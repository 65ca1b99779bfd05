"""Server-rendered SVG: split bars and the analysis charts of a rollout.

No chart library and no script: the server draws a few rectangles and lines, so the pages
work under a strict Content-Security-Policy (presentation attributes, no ``style``) and
nothing is shipped to the browser but the picture. Every text is escaped with markupsafe.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from markupsafe import Markup, escape

#: Colour of the n-th revision of a split (colour-blind friendly, Okabe-Ito).
PALETTE = ("#0072b2", "#e69f00", "#009e73", "#cc79a7", "#56b4e9", "#d55e00", "#f0e442", "#999999")


def pct(bps: Any) -> str:
    """``9000`` -> ``90%``, ``1250`` -> ``12.5%``, ``1`` -> ``0.01%``."""
    if bps is None:
        return "-"
    return f"{int(bps) / 100:.2f}".rstrip("0").rstrip(".") + "%"


def colour(index: int) -> str:
    return PALETTE[index % len(PALETTE)]


def split_bar(entries: Sequence[tuple[str, int]], colours: Mapping[str, str], *, label: str) -> Markup:
    """One horizontal bar of basis points (10000 = the whole width), one segment per revision."""
    parts = [f'<svg class="bar" viewBox="0 0 1000 22" preserveAspectRatio="none" role="img" '
             f'aria-label="{escape(label)}">']
    x = 0.0
    total = sum(max(0, int(w)) for _, w in entries) or 1
    if not entries:
        parts.append('<rect x="0" y="0" width="1000" height="22" fill="#eeeeee"/>')
    for name, weight in entries:
        width = 1000.0 * max(0, int(weight)) / max(total, 10000)
        if width <= 0:
            continue
        fill = colours.get(name, "#999999")
        parts.append(f'<rect x="{x:.2f}" y="0" width="{width:.2f}" height="22" fill="{fill}">'
                     f"<title>{escape(name)}: {int(weight)} bps ({pct(weight)})</title></rect>")
        x += width
    parts.append("</svg>")
    return Markup("".join(parts))


def _fmt(value: float, unit: str) -> str:
    if unit == "%":
        return f"{value * 100:.1f}%"
    if unit == "ms":
        return f"{value:g} ms"
    return f"{value:g}"


def metric_chart(title: str, values: Sequence[float | None], *, threshold: float | None = None,
                 threshold_label: str = "", unit: str = "", above_is_bad: bool = True,
                 labels: Sequence[str] | None = None) -> Markup:
    """A bar per analysis window, the threshold as a dashed line; a bar past it is red."""
    width, height, top, bottom, left = 320, 140, 22, 24, 8
    plot_h = height - top - bottom
    n = max(1, len(values))
    known = [v for v in values if v is not None]
    peak = max([*known, threshold or 0.0, 1e-9])
    scale = plot_h / (peak * 1.15)
    slot = (width - 2 * left) / n
    bar_w = min(48.0, slot * 0.6)
    parts = [f'<svg class="chart" viewBox="0 0 {width} {height}" role="img" aria-label="{escape(title)}">',
             f'<text x="{left}" y="14" class="chart-title">{escape(title)}</text>',
             f'<line x1="{left}" y1="{top + plot_h}" x2="{width - left}" y2="{top + plot_h}" stroke="#888888"/>']
    for i, value in enumerate(values):
        cx = left + slot * i + slot / 2
        name = labels[i] if labels and i < len(labels) else f"step {i + 1}"
        parts.append(f'<text x="{cx:.1f}" y="{height - 8}" text-anchor="middle" class="chart-label">'
                     f"{escape(name)}</text>")
        if value is None:
            parts.append(f'<text x="{cx:.1f}" y="{top + plot_h - 4}" text-anchor="middle" class="chart-value">'
                         "n/a</text>")
            continue
        h = max(1.0, value * scale)
        bad = threshold is not None and ((value > threshold) if above_is_bad else (value < threshold))
        fill = "#d55e00" if bad else "#009e73"
        parts.append(f'<rect x="{cx - bar_w / 2:.1f}" y="{top + plot_h - h:.1f}" width="{bar_w:.1f}" '
                     f'height="{h:.1f}" fill="{fill}"><title>{escape(name)}: {escape(_fmt(value, unit))}</title></rect>')
        parts.append(f'<text x="{cx:.1f}" y="{top + plot_h - h - 3:.1f}" text-anchor="middle" class="chart-value">'
                     f"{escape(_fmt(value, unit))}</text>")
    if threshold is not None:
        y = top + plot_h - threshold * scale
        parts.append(f'<line class="threshold" x1="{left}" y1="{y:.1f}" x2="{width - left}" y2="{y:.1f}" '
                     f'stroke="#cc0000" stroke-dasharray="5 3"/>')
        parts.append(f'<text x="{width - left}" y="{y - 3:.1f}" text-anchor="end" class="chart-threshold">'
                     f"{escape(threshold_label or _fmt(threshold, unit))}</text>")
    parts.append("</svg>")
    return Markup("".join(parts))


def analysis_charts(timeline: Sequence[Mapping[str, Any]]) -> list[Markup]:
    """Requests, error rate and p99 of each analysed step, with the step's thresholds."""
    analysed = [s for s in timeline if s.get("analysis")]
    if not analysed:
        return []
    labels = [f"step {s['number']}" for s in analysed]
    results = [s.get("result") or {} for s in analysed]
    # The thresholds of the first analysed step (a step may override them; each bar's colour
    # is judged against its own step's threshold in the table below the charts).
    first = analysed[0]["analysis"] or {}
    charts = [
        metric_chart("requests in the window", [r.get("requests") for r in results],
                     threshold=first.get("min_requests") or None,
                     threshold_label=f"min {first.get('min_requests')}" if first.get("min_requests") else "",
                     above_is_bad=False, labels=labels),
        metric_chart("error rate", [r.get("error_rate") for r in results], threshold=first.get("max_error_rate"),
                     threshold_label=(f"max {first['max_error_rate'] * 100:g}%"
                                      if first.get("max_error_rate") is not None else ""), unit="%", labels=labels),
        metric_chart("p99 latency", [r.get("p99_ms") for r in results], threshold=first.get("max_p99_ms"),
                     threshold_label=(f"max {first['max_p99_ms']:g} ms" if first.get("max_p99_ms") is not None else ""),
                     unit="ms", labels=labels),
    ]
    return charts
