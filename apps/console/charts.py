"""Bar charts drawn on the server: this module lays the bars out, and the ``bar-chart`` partial of
``templates/console/overview.html`` writes them as SVG with autoescaping on, so a label is text
whatever it contains. No JavaScript, no chart library, nothing fetched from elsewhere.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from decimal import Decimal

WIDTH, HEIGHT = 640, 220
LEFT, RIGHT, TOP, BOTTOM = 64, 8, 12, 30  # room for the value axis and the bar labels
MAX_LABELS = 12  # bar labels shown at most; the others are in each bar's title
GRID_LINES = 4


@dataclass(frozen=True)
class ChartPoint:
    label: str  # under the bar: "14:00", "05-02"
    title: str  # the bar's tooltip and accessible name: "2 May: 12,345 tokens"
    value: float | Decimal


@dataclass(frozen=True)
class Bar:
    x: str
    y: str
    width: str
    height: str
    label: str  # "" when the label would crowd its neighbours
    label_x: str
    title: str


@dataclass(frozen=True)
class GridLine:
    y: str
    label: str


@dataclass(frozen=True)
class BarChart:
    title: str
    width: int
    height: int
    bars: list[Bar]
    grid: list[GridLine]
    axis_x: str  # where the value axis stands
    axis_right: str
    baseline_y: str
    label_y: str
    has_data: bool


def _fmt(value: float) -> str:
    return f"{value:.1f}"


def nice_ceiling(value: float) -> float:
    """The smallest of 1, 2, 2.5 and 5 times a power of ten that is at least ``value`` (axis tops)."""
    if value <= 0:
        return 1.0
    power = 10 ** math.floor(math.log10(value))
    for step in (1, 2, 2.5, 5, 10):
        if value <= step * power * (1 + 1e-9):
            return step * power
    return 10 * power


def bar_chart(points: Sequence[ChartPoint], *, title: str, value_label: Callable[[float], str], width: int = WIDTH, height: int = HEIGHT) -> BarChart:
    """One bar per point, left to right, scaled to a rounded maximum, with grid lines labelled by
    ``value_label`` and at most ``MAX_LABELS`` bar labels (every n-th)."""
    values = [float(p.value) for p in points]
    top = nice_ceiling(max(values, default=0.0))
    plot_w, plot_h = width - LEFT - RIGHT, height - TOP - BOTTOM
    slot = plot_w / max(len(points), 1)
    gap = min(slot * 0.2, 6.0)
    every = max(math.ceil(len(points) / MAX_LABELS), 1)
    bars = []
    for i, (point, value) in enumerate(zip(points, values, strict=True)):
        h = plot_h * value / top
        x = LEFT + i * slot + gap / 2
        bars.append(
            Bar(
                x=_fmt(x),
                y=_fmt(TOP + plot_h - h),
                width=_fmt(max(slot - gap, 1.0)),
                height=_fmt(h),
                label=point.label if (len(points) - 1 - i) % every == 0 else "",  # the newest bar is always labelled
                label_x=_fmt(x + (slot - gap) / 2),
                title=point.title,
            )
        )
    grid = [GridLine(y=_fmt(TOP + plot_h - plot_h * k / GRID_LINES), label=value_label(top * k / GRID_LINES)) for k in range(GRID_LINES + 1)]
    return BarChart(
        title=title,
        width=width,
        height=height,
        bars=bars,
        grid=grid,
        axis_x=_fmt(LEFT),
        axis_right=_fmt(width - RIGHT),
        baseline_y=_fmt(TOP + plot_h),
        label_y=_fmt(height - 10),
        has_data=any(values),
    )


def compact_number(value: float) -> str:
    """``1234567`` → ``1.2M``, ``12500`` → ``12.5k``, ``800`` → ``800``: axis labels."""
    for size, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= size:
            return f"{value / size:.3g}{suffix}"
    return f"{value:.3g}"


def compact_money(value: float) -> str:
    """Dollars with as few digits as an axis needs: ``$12``, ``$0.25``, ``$0.0012``."""
    text = f"{value:,.2f}" if abs(value) >= 1 else f"{value:.6f}"
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return f"${text}"
