"""Hand-written SVG charts for the report: no plotting library, so a report needs nothing beyond tta.

Every function returns one ``<svg>`` element as text, sized by its ``viewBox`` so it
scales with the page. Colours come from one qualitative palette, in row order.
"""
from __future__ import annotations

from html import escape
from typing import Sequence

import numpy as np

PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#7f7f7f", "#bcbd22")


def colour(i: int) -> str:
    return PALETTE[i % len(PALETTE)]


def heat(value: float, lo: float, hi: float) -> str:
    """A background colour for an error cell: pale green (low) through yellow to red (high)."""
    t = 0.0 if hi <= lo else min(max((value - lo) / (hi - lo), 0.0), 1.0)
    hue = 120 * (1 - t)  # 120 green -> 0 red
    return f"hsl({hue:.0f}, 70%, {88 - 10 * t:.0f}%)"


def _axis_ticks(top: float) -> list[float]:
    step = 10 if top > 40 else 5 if top > 15 else 2
    return [float(v) for v in np.arange(0, top + 1e-9, step)]


def bar_chart(labels: Sequence[str], means: Sequence[float], seeds: Sequence[Sequence[float]],
              published: Sequence[float | None] | None = None, title: str = "") -> str:
    """Horizontal bars of mean error with each seed as a dot and ± std whiskers; published values as hollow diamonds."""
    n = len(labels)
    row, left, right, top = 26, 190, 40, 34
    width, height = 760, top + n * row + 36
    hi = max([*means, *(v for s in seeds for v in s), *(p for p in (published or []) if p is not None), 1.0])
    hi = float(np.ceil(hi / 10) * 10)
    x = lambda v: left + (width - left - right) * v / hi  # noqa: E731
    out = [f'<svg class="chart bars" viewBox="0 0 {width} {height}" role="img" xmlns="http://www.w3.org/2000/svg">',
           f'<title>{escape(title or "mean error per method")}</title>']
    for t in _axis_ticks(hi):
        out.append(f'<line x1="{x(t):.1f}" y1="{top - 6}" x2="{x(t):.1f}" y2="{top + n * row}" stroke="#ddd"/>'
                   f'<text x="{x(t):.1f}" y="{top + n * row + 16}" font-size="11" text-anchor="middle">{t:g}</text>')
    out.append(f'<text x="{(left + width - right) / 2:.0f}" y="{height - 4}" font-size="12" text-anchor="middle">'
               'error % (lower is better)</text>')
    for i, (label, mean, vals) in enumerate(zip(labels, means, seeds)):
        y = top + i * row
        out.append(f'<text x="{left - 8}" y="{y + 16}" font-size="12" text-anchor="end">{escape(label)}</text>')
        out.append(f'<rect class="bar" x="{left}" y="{y + 4}" width="{max(x(mean) - left, 0.5):.1f}" height="{row - 10}" '
                   f'fill="{colour(i)}" fill-opacity="0.75"><title>{escape(label)}: {mean:.2f}%</title></rect>')
        if len(vals) > 1:
            sd = float(np.std(vals, ddof=1))
            out.append(f'<line x1="{x(mean - sd):.1f}" y1="{y + row / 2:.1f}" x2="{x(mean + sd):.1f}" '
                       f'y2="{y + row / 2:.1f}" stroke="#000" stroke-width="1.5"/>')
        for v in vals:
            out.append(f'<circle cx="{x(v):.1f}" cy="{y + row / 2:.1f}" r="2.6" fill="#000"/>')
        out.append(f'<text x="{x(mean) + 6:.1f}" y="{y + 16}" font-size="11">{mean:.1f}</text>')
        pub = published[i] if published else None
        if pub is not None:
            cx, cy = x(pub), y + row / 2
            out.append(f'<path class="published" d="M{cx:.1f},{cy - 6:.1f} L{cx + 6:.1f},{cy:.1f} L{cx:.1f},{cy + 6:.1f} '
                       f'L{cx - 6:.1f},{cy:.1f} Z" fill="none" stroke="#000" stroke-width="1.5">'
                       f'<title>published: {pub:.1f}%</title></path>')
    out.append("</svg>")
    return "\n".join(out)


def smooth(values: Sequence[float], window: int) -> np.ndarray:
    """Running mean over ``window`` batches (shorter at the start, so the curve covers every batch)."""
    v = np.asarray(values, dtype=float)
    if len(v) == 0:
        return v
    c = np.cumsum(np.r_[0.0, v])
    idx = np.arange(1, len(v) + 1)
    lo = np.maximum(idx - window, 0)
    return (c[idx] - c[lo]) / (idx - lo)


def error_curves(series: Sequence[tuple[str, Sequence[float]]], boundaries: Sequence[int], domain_names: Sequence[str],
                 *, window: int = 5, reference: str | None = "source", title: str = "") -> str:
    """Online error over the stream, one smoothed curve per method, domain boundaries dashed.

    Where a method's curve runs above the ``reference`` curve (no adaptation) by more than
    10 points the segment is drawn thick and red-shaded: that is a collapse, visible at a glance.
    """
    width, height, left, right, top, bottom = 900, 360, 48, 150, 60, 36
    n = max((len(v) for _, v in series), default=1)
    x = lambda b: left + (width - left - right) * b / max(n - 1, 1)  # noqa: E731
    y = lambda e: top + (height - top - bottom) * (1 - e / 100)  # noqa: E731
    out = [f'<svg class="chart curves" viewBox="0 0 {width} {height}" role="img" xmlns="http://www.w3.org/2000/svg">',
           f'<title>{escape(title or "online error over the stream")}</title>']
    for t in range(0, 101, 20):
        out.append(f'<line x1="{left}" y1="{y(t):.1f}" x2="{width - right}" y2="{y(t):.1f}" stroke="#eee"/>'
                   f'<text x="{left - 6}" y="{y(t) + 4:.1f}" font-size="11" text-anchor="end">{t}</text>')
    out.append(f'<text x="12" y="14" font-size="12">error % (running mean of {window} batches)</text>')
    out.append(f'<text x="{(left + width - right) / 2:.0f}" y="{height - 6}" font-size="12" text-anchor="middle">'
               'batch in stream order</text>')
    starts = [0, *boundaries]
    for b in boundaries:
        out.append(f'<line class="boundary" x1="{x(b - 0.5):.1f}" y1="{top}" x2="{x(b - 0.5):.1f}" '
                   f'y2="{height - bottom}" stroke="#888" stroke-dasharray="4 3"/>')
    for s, name in zip(starts, domain_names):
        out.append(f'<text x="{x(s) + 2:.1f}" y="{top - 4}" font-size="9" transform="rotate(-30 {x(s) + 2:.1f} {top - 4})">'
                   f'{escape(name)}</text>')
    ref = next((smooth(v, window) for name, v in series if name == reference), None)
    for i, (name, values) in enumerate(series):
        curve = smooth(values, window)
        pts = " ".join(f"{x(b):.1f},{y(e):.1f}" for b, e in enumerate(curve))
        dash = ' stroke-dasharray="6 3"' if name == reference else ""
        out.append(f'<polyline class="curve" points="{pts}" fill="none" stroke="{colour(i)}" stroke-width="1.6"{dash}>'
                   f'<title>{escape(name)}</title></polyline>')
        if ref is not None and name != reference:
            m = min(len(ref), len(curve))
            bad = np.flatnonzero(curve[:m] > ref[:m] + 10)
            for run in np.split(bad, np.flatnonzero(np.diff(bad) > 1) + 1) if len(bad) else []:
                a, b = int(run[0]), int(run[-1])
                out.append(f'<rect class="collapse" x="{x(a - 0.5):.1f}" y="{top}" width="{max(x(b + 0.5) - x(a - 0.5), 1):.1f}" '
                           f'height="{height - top - bottom}" fill="#d62728" fill-opacity="0.08"/>')
                seg = " ".join(f"{x(k):.1f},{y(curve[k]):.1f}" for k in range(a, b + 1))
                out.append(f'<polyline class="collapse-curve" points="{seg}" fill="none" stroke="{colour(i)}" '
                           f'stroke-width="3.5"><title>{escape(name)} above no adaptation by &gt;10 points</title></polyline>')
        ly = top + 14 * i
        out.append(f'<line x1="{width - right + 10}" y1="{ly + 8}" x2="{width - right + 28}" y2="{ly + 8}" '
                   f'stroke="{colour(i)}" stroke-width="2"{dash}/>'
                   f'<text x="{width - right + 32}" y="{ly + 12}" font-size="11">{escape(name)}</text>')
    out.append("</svg>")
    return "\n".join(out)
