"""Self-contained SVG charts: no JavaScript, no fonts or files to fetch, readable when printed.

Each chart is an ``<svg data-chart="...">`` element with axes, ticks, labels and a legend; its
marks carry ``<title>`` tooltips with the exact values.
"""

from __future__ import annotations

import html
import math
from collections.abc import Sequence
from dataclasses import dataclass

from greendiff.display import plain_number

PALETTE = ("#2e7d32", "#1565c0", "#ef6c00", "#6a1b9a", "#c62828", "#00838f", "#5d4037", "#9e9d24")


@dataclass(frozen=True)
class Series:
    """One line or set of points: ``label``, x values, y values."""

    label: str
    xs: Sequence[float]
    ys: Sequence[float]


def nice_ticks(lo: float, hi: float, count: int = 5) -> list[float]:
    """Round tick values covering ``[lo, hi]`` (1, 2, 2.5 or 5 times a power of ten apart)."""
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return [0.0, 1.0]
    if hi <= lo:
        hi = lo + (abs(lo) or 1.0)
    raw = (hi - lo) / max(count, 1)
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 2.5, 5, 10) if m * power >= raw)
    first = math.floor(lo / step) * step
    ticks, t = [], first
    while t <= hi + step * 1e-9:
        ticks.append(round(t, 12))
        t += step
    if ticks[-1] < hi:
        ticks.append(round(t, 12))
    return ticks


def _fmt(value: float) -> str:
    return plain_number(value)  # fixed-point: a tick never reads 2e-07


class _Frame:
    """Plot area, scales and axes of one chart."""

    def __init__(self, xs: Sequence[float], ys: Sequence[float], width: int, height: int, y_from_zero: bool) -> None:
        self.width, self.height = width, height
        self.left, self.right, self.top, self.bottom = 70, 20, 30, 48
        xs = [x for x in xs if math.isfinite(x)] or [0.0, 1.0]
        ys = [y for y in ys if math.isfinite(y)] or [0.0, 1.0]
        self.xt = nice_ticks(min(xs), max(xs))
        self.yt = nice_ticks(min(0.0, min(ys)) if y_from_zero else min(ys), max(ys))

    def x(self, value: float) -> float:
        lo, hi = self.xt[0], self.xt[-1]
        return self.left + (value - lo) / (hi - lo) * (self.width - self.left - self.right)

    def y(self, value: float) -> float:
        lo, hi = self.yt[0], self.yt[-1]
        return self.height - self.bottom - (value - lo) / (hi - lo) * (self.height - self.top - self.bottom)

    def axes(self, kind: str, title: str, x_label: str, y_label: str) -> list[str]:
        w, h, b, left = self.width, self.height, self.bottom, self.left
        out = [f'<svg xmlns="http://www.w3.org/2000/svg" data-chart="{kind}" viewBox="0 0 {w} {h}" width="{w}" '
               f'height="{h}" font-family="sans-serif" font-size="11" role="img" aria-label="{html.escape(title)}">',
               f'<rect width="{w}" height="{h}" fill="white"/>',
               f'<text x="{left}" y="16" font-size="13" font-weight="bold">{html.escape(title)}</text>']
        for t in self.yt:
            y = self.y(t)
            out.append(f'<line x1="{left}" y1="{y:.1f}" x2="{w - self.right}" y2="{y:.1f}" stroke="#e0e0e0"/>')
            out.append(f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end">{_fmt(t)}</text>')
        for t in self.xt:
            x = self.x(t)
            out.append(f'<line x1="{x:.1f}" y1="{h - b}" x2="{x:.1f}" y2="{h - b + 4}" stroke="black"/>')
            out.append(f'<text x="{x:.1f}" y="{h - b + 16}" text-anchor="middle">{_fmt(t)}</text>')
        out += [f'<line x1="{left}" y1="{h - b}" x2="{w - self.right}" y2="{h - b}" stroke="black"/>',
                f'<line x1="{left}" y1="{self.top}" x2="{left}" y2="{h - b}" stroke="black"/>',
                f'<text x="{(left + w - self.right) / 2}" y="{h - 10}" text-anchor="middle">{html.escape(x_label)}</text>',
                f'<text x="14" y="{(self.top + h - b) / 2}" text-anchor="middle" '
                f'transform="rotate(-90 14 {(self.top + h - b) / 2})">{html.escape(y_label)}</text>']
        return out

    def legend(self, labels: Sequence[str]) -> list[str]:
        out, x = [], self.left + 8
        for i, label in enumerate(labels):
            if len(labels) < 2:
                break
            out.append(f'<rect x="{x}" y="{self.top - 4}" width="10" height="10" fill="{PALETTE[i % len(PALETTE)]}"/>')
            out.append(f'<text x="{x + 14}" y="{self.top + 5}">{html.escape(label)}</text>')
            x += 24 + 6.5 * len(label)
        return out


def line_chart(series: Sequence[Series], title: str, x_label: str, y_label: str, *, step: bool = False,
               y_from_zero: bool = True, markers: bool = False, width: int = 530, height: int = 290) -> str:
    """Lines (``step``: piecewise constant, each value held until the next x) with a legend."""
    frame = _Frame([x for s in series for x in s.xs], [y for s in series for y in s.ys], width, height, y_from_zero)
    parts = frame.axes("line", title, x_label, y_label)
    for i, s in enumerate(series):
        color = PALETTE[i % len(PALETTE)]
        points = []
        for k, (x, y) in enumerate(zip(s.xs, s.ys)):
            if step and k:
                points.append((frame.x(x), frame.y(s.ys[k - 1])))
            points.append((frame.x(x), frame.y(y)))
        if len(points) > 1:
            parts.append(f'<polyline fill="none" stroke="{color}" stroke-width="2" points="'
                         + " ".join(f"{x:.1f},{y:.1f}" for x, y in points) + '"/>')
        if markers or len(points) == 1:
            for x, y in zip(s.xs, s.ys):
                parts.append(f'<circle cx="{frame.x(x):.1f}" cy="{frame.y(y):.1f}" r="3.5" fill="{color}">'
                             f'<title>{html.escape(s.label)}: {_fmt(x)}, {_fmt(y)}</title></circle>')
    parts += frame.legend([s.label for s in series])
    return "\n".join([*parts, "</svg>"])


def bar_chart(labels: Sequence[str], values: Sequence[float], title: str, unit: str,
              width: int = 530, bar_h: int = 22) -> str:
    """Horizontal bars, one per label, value and unit written at the end of each."""
    height = 40 + bar_h * max(len(labels), 1) + 10
    top = max(values, default=0.0) or 1.0
    label_w = 10 + 7 * max((len(label) for label in labels), default=4)
    span = width - label_w - 110
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" data-chart="bar" viewBox="0 0 {width} {height}" width="{width}" '
             f'height="{height}" font-family="sans-serif" font-size="11" role="img" aria-label="{html.escape(title)}">',
             f'<rect width="{width}" height="{height}" fill="white"/>',
             f'<text x="8" y="16" font-size="13" font-weight="bold">{html.escape(title)}</text>']
    for i, (label, value) in enumerate(zip(labels, values)):
        y = 30 + i * bar_h
        w = max(value, 0.0) / top * span
        parts.append(f'<text x="{label_w - 6}" y="{y + bar_h * 0.65:.1f}" text-anchor="end">{html.escape(label)}</text>')
        parts.append(f'<rect x="{label_w}" y="{y + 3}" width="{max(w, 1):.1f}" height="{bar_h - 6}" '
                     f'fill="{PALETTE[i % len(PALETTE)]}"><title>{html.escape(label)}: {_fmt(value)} {html.escape(unit)}</title></rect>')
        parts.append(f'<text x="{label_w + max(w, 1) + 6:.1f}" y="{y + bar_h * 0.65:.1f}">{_fmt(value)} {html.escape(unit)}</text>')
    return "\n".join([*parts, "</svg>"])


def scatter_chart(points: Sequence[tuple[str, float, float]], title: str, x_label: str, y_label: str,
                  highlight: Sequence[str] = (), width: int = 530, height: int = 300) -> str:
    """Labelled points ``(label, x, y)``; the ``highlight`` ones (a Pareto front) in green and joined."""
    frame = _Frame([p[1] for p in points], [p[2] for p in points], width, height, y_from_zero=False)
    parts = frame.axes("scatter", title, x_label, y_label)
    front = sorted((p for p in points if p[0] in highlight), key=lambda p: p[1])
    if len(front) > 1:
        parts.append('<polyline fill="none" stroke="#2e7d32" stroke-width="2" points="'
                     + " ".join(f"{frame.x(x):.1f},{frame.y(y):.1f}" for _, x, y in front) + '"/>')
    for label, x, y in points:
        color = "#2e7d32" if label in highlight else "#757575"
        parts.append(f'<circle cx="{frame.x(x):.1f}" cy="{frame.y(y):.1f}" r="5" fill="{color}">'
                     f'<title>{html.escape(label)}: {_fmt(x)}, {_fmt(y)}</title></circle>')
        parts.append(f'<text x="{frame.x(x) + 7:.1f}" y="{frame.y(y) - 7:.1f}">{html.escape(label)}</text>')
    return "\n".join([*parts, "</svg>"])
