"""Small dependency-free SVG charts for the static reports: line curves and grouped bars.

Each function returns an ``<svg>`` element as a string (inline in HTML, or saved as a file).
Colours come from one qualitative palette, so a setting keeps its colour across charts.
"""

from __future__ import annotations

import math
from html import escape

PALETTE = ("#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1", "#ff9da7", "#9c755f", "#bab0ac")


def colour(i: int) -> str:
    return PALETTE[i % len(PALETTE)]


def nice_ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    """Round axis ticks (steps of 1, 2, 2.5 or 5 x a power of ten) from at or below ``lo`` to at or above ``hi``."""
    if not math.isfinite(lo) or not math.isfinite(hi):
        return [0.0]
    if hi <= lo:
        hi = lo + 1.0
    raw = (hi - lo) / max(n - 1, 1)
    mag = 10 ** math.floor(math.log10(raw))
    step = min((m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw), default=raw)
    start = math.floor(lo / step) * step
    ticks = [round(start, 10)]
    while ticks[-1] < hi and len(ticks) < 40:  # the axis ends at or above the highest value: nothing leaves the frame
        ticks.append(round(start + len(ticks) * step, 10))
    return ticks


def _fmt(v: float) -> str:
    return f"{v:.0f}" if abs(v) >= 100 or float(v).is_integer() else f"{v:.3g}"


def _open(title: str, width: int, height: int) -> list[str]:
    """The opening of a chart: the svg element and its title."""
    return [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="11">',
        f'<text x="{width / 2}" y="16" text-anchor="middle" font-size="13">{escape(title)}</text>',
    ]


def _no_data(parts: list[str], width: int, height: int) -> str:
    parts.append(f'<text x="{width / 2}" y="{height / 2}" text-anchor="middle" fill="#888">no data</text></svg>')
    return "".join(parts)


def line_chart(
    title: str,
    series: dict[str, list[tuple[float, float]]],
    x_label: str = "step",
    y_label: str = "",
    width: int = 420,
    height: int = 260,
    colours: dict[str, str] | None = None,
) -> str:
    """``series``: name -> [(x, y), ...]. Empty series are skipped; an empty chart says so."""
    series = {k: sorted(v) for k, v in series.items() if v}
    left, right, top, bottom = 52, 12, 28, 40
    w, h = width - left - right, height - top - bottom
    parts = _open(title, width, height)
    if not series:
        return _no_data(parts, width, height)
    xs = [x for s in series.values() for x, _ in s]
    ys = [y for s in series.values() for _, y in s if math.isfinite(y)]
    x0, x1 = min(xs), max(xs) if max(xs) > min(xs) else min(xs) + 1
    yt = nice_ticks(min(ys, default=0.0), max(ys, default=1.0))
    y0, y1 = yt[0], yt[-1] if yt[-1] > yt[0] else yt[0] + 1

    def px(x: float) -> float:
        return left + (x - x0) / (x1 - x0) * w

    def py(y: float) -> float:
        return top + h - (y - y0) / (y1 - y0) * h

    parts.append(f'<rect x="{left}" y="{top}" width="{w}" height="{h}" fill="none" stroke="#ccc"/>')
    for t in yt:
        parts.append(
            f'<line x1="{left}" x2="{left + w}" y1="{py(t):.1f}" y2="{py(t):.1f}" stroke="#eee"/>'
            f'<text x="{left - 4}" y="{py(t) + 4:.1f}" text-anchor="end">{_fmt(t)}</text>'
        )
    for t in nice_ticks(x0, x1):
        if x0 <= t <= x1:
            parts.append(f'<text x="{px(t):.1f}" y="{top + h + 14}" text-anchor="middle">{_fmt(t)}</text>')
    parts.append(f'<text x="{left + w / 2}" y="{height - 6}" text-anchor="middle">{escape(x_label)}</text>')
    if y_label:
        parts.append(
            f'<text x="12" y="{top + h / 2}" text-anchor="middle" '
            f'transform="rotate(-90 12 {top + h / 2})">{escape(y_label)}</text>'
        )
    for i, (name, pts) in enumerate(series.items()):
        c = (colours or {}).get(name, colour(i))
        path = " ".join(
            f"{'M' if j == 0 else 'L'}{px(x):.1f},{py(y):.1f}" for j, (x, y) in enumerate(pts) if math.isfinite(y)
        )
        parts.append(
            f'<path d="{path}" fill="none" stroke="{c}" stroke-width="1.8"><title>{escape(name)}</title></path>'
        )
        if len(pts) <= 30:
            parts += [
                f'<circle cx="{px(x):.1f}" cy="{py(y):.1f}" r="2.5" fill="{c}"/>' for x, y in pts if math.isfinite(y)
            ]
    parts.append(_legend(list(series), left + 6, top + 6, colours))
    parts.append("</svg>")
    return "".join(parts)


def bar_chart(
    title: str,
    values: dict[str, float],
    baseline: str | None = None,
    width: int = 420,
    height: int = 240,
    colours: dict[str, str] | None = None,
) -> str:
    """One bar per setting (``values``: name -> value); the baseline's value is drawn as a dashed line."""
    items = [(k, v) for k, v in values.items() if v is not None and math.isfinite(v)]
    left, right, top, bottom = 52, 12, 28, 70
    w, h = width - left - right, height - top - bottom
    parts = _open(title, width, height)
    if not items:
        return _no_data(parts, width, height)
    yt = nice_ticks(min(0.0, min(v for _, v in items)), max(v for _, v in items))
    y0, y1 = yt[0], yt[-1] if yt[-1] > yt[0] else yt[0] + 1

    def py(y: float) -> float:
        return top + h - (y - y0) / (y1 - y0) * h

    for t in yt:
        parts.append(
            f'<line x1="{left}" x2="{left + w}" y1="{py(t):.1f}" y2="{py(t):.1f}" stroke="#eee"/>'
            f'<text x="{left - 4}" y="{py(t) + 4:.1f}" text-anchor="end">{_fmt(t)}</text>'
        )
    slot = w / len(items)
    bw = min(48.0, slot * 0.7)
    names = list(values)
    for k, v in items:
        i = names.index(k)
        x = left + slot * items.index((k, v)) + (slot - bw) / 2
        c = (colours or {}).get(k, colour(i))
        parts.append(
            f'<rect x="{x:.1f}" y="{min(py(v), py(0)):.1f}" width="{bw:.1f}" height="{abs(py(0) - py(v)):.1f}" '
            f'fill="{c}"><title>{escape(k)}: {v:.2f}</title></rect>'
            f'<text x="{x + bw / 2:.1f}" y="{py(v) - 3:.1f}" text-anchor="middle">{v:.1f}</text>'
            f'<text x="{x + bw / 2:.1f}" y="{top + h + 12}" text-anchor="end" '
            f'transform="rotate(-30 {x + bw / 2:.1f} {top + h + 12})">{escape(k)}</text>'
        )
    if baseline is not None and baseline in values and values[baseline] is not None:
        yb = py(values[baseline])
        parts.append(
            f'<line x1="{left}" x2="{left + w}" y1="{yb:.1f}" y2="{yb:.1f}" stroke="#333" '
            f'stroke-dasharray="4 3"><title>baseline {escape(baseline)}</title></line>'
        )
    parts.append("</svg>")
    return "".join(parts)


def _legend(names: list[str], x: float, y: float, colours: dict[str, str] | None) -> str:
    out = []
    for i, n in enumerate(names):
        c = (colours or {}).get(n, colour(i))
        out.append(
            f'<rect x="{x}" y="{y + i * 13}" width="9" height="9" fill="{c}"/>'
            f'<text x="{x + 13}" y="{y + i * 13 + 8}">{escape(n)}</text>'
        )
    return "".join(out)
