"""Small inline SVG bar charts (no script, no external assets) for the run summary.

A chart is built from `(label, count)` bars and returned as markup ready to embed; every text
in it goes through `html.escape`, so labels may come from data.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from html import escape

from markupsafe import Markup

WIDTH, HEIGHT = 420, 200
MARGIN_LEFT, MARGIN_RIGHT, MARGIN_TOP, MARGIN_BOTTOM = 44, 8, 14, 36
BAR_COLOUR = "#4c78a8"
MAX_BARS = 40


def integer_bars(counts: Mapping[int, int], max_bars: int = MAX_BARS) -> list[tuple[str, int]]:
    """Bars for every integer from the smallest to the largest key (gaps shown as zero).

    Keys beyond `max_bars` values from the start are folded into a last `≥N` bar.
    """
    if not counts:
        return []
    low, high = min(counts), max(counts)
    if high - low + 1 <= max_bars:
        return [(str(k), counts.get(k, 0)) for k in range(low, high + 1)]
    cut = low + max_bars - 1
    bars = [(str(k), counts.get(k, 0)) for k in range(low, cut)]
    bars.append((f"≥{cut}", sum(v for k, v in counts.items() if k >= cut)))
    return bars


def binned_bars(values: Sequence[float], bins: int = 20, unit: str = "s") -> list[tuple[str, int]]:
    """A histogram of `values` in `bins` equal-width bins, labelled by their lower edge."""
    if not values:
        return []
    low, high = min(values), max(values)
    if high <= low:
        return [(f"{low:.3g}{unit}", len(values))]
    width = (high - low) / bins
    counts = [0] * bins
    for value in values:
        counts[min(bins - 1, int((value - low) / width))] += 1
    # Enough decimals to tell neighbouring bin edges apart, and no more.
    decimals = min(6, max(0, -math.floor(math.log10(width)) + 1))
    return [(f"{low + i * width:.{decimals}f}{unit}", c) for i, c in enumerate(counts)]


def _nice_max(value: int) -> int:
    if value <= 5:
        return max(value, 1)
    magnitude = 10 ** int(math.log10(value))
    for step in (1, 2, 5, 10):
        if value <= step * magnitude:
            return step * magnitude
    return value


def bar_chart(bars: Sequence[tuple[str, int]], title: str, x_label: str) -> Markup:
    """An SVG bar chart with a y axis, count labels on hover (`<title>`) and an x label."""
    if not bars:
        return Markup('<p class="muted">no data</p>')
    plot_w = WIDTH - MARGIN_LEFT - MARGIN_RIGHT
    plot_h = HEIGHT - MARGIN_TOP - MARGIN_BOTTOM
    top = _nice_max(max(count for _, count in bars))
    slot = plot_w / len(bars)
    gap = min(4.0, slot * 0.2)
    # Keep x labels from overlapping: about 6.5 px per character at font-size 11.
    longest = max(len(label) for label, _ in bars)
    label_every = max(1, math.ceil((longest * 6.5 + 6) / slot))
    parts = [
        f'<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" '
        f'aria-label="{escape(title)}" xmlns="http://www.w3.org/2000/svg">',
        f"<title>{escape(title)}</title>",
    ]
    for fraction in (0.0, 0.5, 1.0):
        y = MARGIN_TOP + plot_h * (1 - fraction)
        value = top * fraction
        label = f"{value:.0f}" if value == int(value) else f"{value:.1f}"
        parts.append(
            f'<line x1="{MARGIN_LEFT}" x2="{WIDTH - MARGIN_RIGHT}" y1="{y:.1f}" y2="{y:.1f}" '
            'stroke="#ddd"/>'
            f'<text x="{MARGIN_LEFT - 4}" y="{y + 4:.1f}" text-anchor="end" '
            f'font-size="11">{escape(label)}</text>'
        )
    for i, (label, count) in enumerate(bars):
        h = plot_h * count / top
        x = MARGIN_LEFT + i * slot + gap / 2
        y = MARGIN_TOP + plot_h - h
        parts.append(
            f'<rect x="{x:.1f}" y="{y:.1f}" width="{slot - gap:.1f}" height="{h:.1f}" '
            f'fill="{BAR_COLOUR}"><title>{escape(label)}: {count}</title></rect>'
        )
        if i % label_every == 0:
            parts.append(
                f'<text x="{x + (slot - gap) / 2:.1f}" y="{MARGIN_TOP + plot_h + 14}" '
                f'text-anchor="middle" font-size="11">{escape(label)}</text>'
            )
    parts.append(
        f'<text x="{MARGIN_LEFT + plot_w / 2:.1f}" y="{HEIGHT - 4}" text-anchor="middle" '
        f'font-size="12">{escape(x_label)}</text></svg>'
    )
    return Markup("".join(parts))
