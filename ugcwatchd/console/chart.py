"""Spend per day as inline SVG: one chart per provider (its own unit), each day's bar stacked by client.

Drawn in the page with presentation attributes only (no style attributes, no script, no fonts from
elsewhere), so it works offline and under a strict Content-Security-Policy.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import date, timedelta
from html import escape

from ..names import shown

# Distinguishable on light and dark backgrounds, and for the common colour-vision deficiencies.
PALETTE = ("#4477aa", "#ee6677", "#228833", "#ccbb44", "#66ccee", "#aa3377", "#bbbbbb", "#994455")
MAX_SERIES = len(PALETTE)  # more clients than colours: the smallest are drawn together as "others"
WIDTH, HEIGHT = 640, 190
LEFT, RIGHT, TOP, BOTTOM = 44, 8, 10, 24


@dataclass(frozen=True)
class Series:
    label: str  # a client folder as it is (shown with its bad bytes as \xNN when drawn)
    values: tuple[float, ...]  # one per day
    colour: str = PALETTE[0]

    @property
    def total(self) -> float:
        return sum(self.values)


def days_until(today: date, count: int = 30) -> list[date]:
    """The ``count`` days ending with ``today``, oldest first."""
    return [today - timedelta(days=n) for n in range(count - 1, -1, -1)]


def top_series(charts: Mapping[str, Sequence[Series]]) -> dict[str, list[Series]]:
    """Each chart's series, a client in the same colour in every chart: the clients with the largest share
    of the charts keep a colour of their own, in that order; the rest are drawn together as ``others``."""
    share: dict[str, float] = {}
    for series in charts.values():
        whole = sum(s.total for s in series) or 1.0
        for s in series:
            share[s.label] = share.get(s.label, 0.0) + s.total / whole
    ranked = sorted(share, key=lambda label: (-share[label], label))
    kept = ranked if len(ranked) <= MAX_SERIES else ranked[: MAX_SERIES - 1]
    colours = {label: PALETTE[n] for n, label in enumerate(kept)}
    out = {}
    for chart, series in charts.items():
        own = sorted((replace(s, colour=colours[s.label]) for s in series if s.label in colours), key=_rank(kept))
        rest = [s for s in series if s.label not in colours]
        if rest:
            summed = tuple(sum(values) for values in zip(*(s.values for s in rest), strict=True))
            own.append(Series(f"others ({len(rest)})", summed, PALETTE[-1]))
        out[chart] = own
    return out


def _rank(kept: list[str]) -> Callable[[Series], int]:
    return lambda s: kept.index(s.label)


def nice_ceiling(value: float) -> float:
    """The least of 1, 2, 2.5, 5 times a power of ten that is at least ``value`` (1 for nothing)."""
    if value <= 0:
        return 1.0
    power = 10 ** math.floor(math.log10(value))
    for step in (1, 2, 2.5, 5, 10):
        if step * power >= value:
            return float(step * power)
    return float(10 * power)  # pragma: no cover - the loop always returns


def number(value: float) -> str:
    """``12``, ``12.5``: no trailing zeros."""
    return f"{value:.1f}".rstrip("0").rstrip(".") if value != int(value) else str(int(value))


def bar_chart(days: Sequence[date], series: Sequence[Series], unit: str, title: str) -> str:
    """A stacked bar per day; each bar's tooltip gives the day's total and its parts."""
    totals = [sum(s.values[n] for s in series) for n in range(len(days))]
    top = nice_ceiling(max(totals, default=0.0))
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    step = plot_w / max(1, len(days))
    bar = max(1.0, step - 2)
    out = [
        f'<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" aria-label="{escape(title)}"'
        ' xmlns="http://www.w3.org/2000/svg">',
    ]
    for fraction in (0.0, 0.5, 1.0):
        y = TOP + plot_h * (1 - fraction)
        out.append(
            f'<line x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{y:.1f}" y2="{y:.1f}" stroke="currentColor"'
            ' stroke-opacity="0.2"/>'
            f'<text x="{LEFT - 4}" y="{y + 4:.1f}" text-anchor="end" font-size="11" fill="currentColor">'
            f"{number(top * fraction)}</text>"
        )
    for n, day in enumerate(days):
        if not totals[n]:
            continue
        x = LEFT + n * step + (step - bar) / 2
        parts = ", ".join(f"{shown(s.label)} {number(s.values[n])}" for s in series if s.values[n])
        out.append(f"<g><title>{day.isoformat()}: {number(totals[n])} {escape(unit)} ({escape(parts)})</title>")
        y = TOP + plot_h
        for s in series:
            if not s.values[n]:
                continue
            h = plot_h * s.values[n] / top
            y -= h
            out.append(f'<rect x="{x:.1f}" y="{y:.1f}" width="{bar:.1f}" height="{h:.1f}" fill="{s.colour}"/>')
        out.append("</g>")
    for n in sorted({0, len(days) // 2, len(days) - 1}):
        if 0 <= n < len(days):
            x = LEFT + n * step + step / 2
            anchor = "start" if n == 0 else "end" if n == len(days) - 1 else "middle"
            out.append(
                f'<text x="{x:.1f}" y="{HEIGHT - 6}" text-anchor="{anchor}" font-size="11" fill="currentColor">'
                f"{days[n].strftime('%b %d')}</text>"
            )
    out.append("</svg>")
    return "".join(out)


def legend(series: Sequence[Series], unit: str) -> str:
    """The series' colours, labels and 30-day totals, as an HTML list."""
    items = [
        f'<li><svg width="10" height="10" aria-hidden="true"><rect width="10" height="10" fill="{s.colour}"/></svg> '
        f"{escape(shown(s.label))} <span class=muted>{number(s.total)} {escape(unit)}</span></li>"
        for s in series
    ]
    return f'<ul class="legend">{"".join(items)}</ul>'
