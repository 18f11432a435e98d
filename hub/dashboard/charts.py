"""Charts as inline SVG, drawn on the server: no script, no front-end build.

Pure functions from numbers to markup; the page embeds what they return.
"""

from __future__ import annotations

from collections.abc import Sequence
from html import escape

WIDTH, HEIGHT, PAD = 600, 140, 24


def _scale(values: Sequence[int]) -> int:
    top = max([1, *values])
    # A round top (1, 2, 5 × 10ⁿ) so the axis label reads well.
    step = 1
    while step * 10 <= top:
        step *= 10
    for m in (1, 2, 5, 10):
        if top <= m * step:
            return m * step
    return top


def lines(series: Sequence[tuple[str, str, Sequence[int]]], labels: Sequence[str], title: str) -> str:
    """One polyline per (name, colour, values), all on the same axis; ``labels``
    are the x-axis ends (first and last minute)."""
    n = max((len(v) for _, _, v in series), default=0)
    top = _scale([x for _, _, v in series for x in v])
    inner_w, inner_h = WIDTH - 2 * PAD, HEIGHT - 2 * PAD
    parts = [f'<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" aria-label="{escape(title)}" '
             f'xmlns="http://www.w3.org/2000/svg">',
             f'<line x1="{PAD}" y1="{HEIGHT - PAD}" x2="{WIDTH - PAD}" y2="{HEIGHT - PAD}" class="axis"/>',
             f'<text x="{PAD}" y="{PAD - 8}" class="tick">{top}</text>']
    for name, colour, values in series:
        if not values:
            continue
        dx = inner_w / max(1, n - 1)
        points = " ".join(f"{PAD + i * dx:.1f},{HEIGHT - PAD - inner_h * v / top:.1f}" for i, v in enumerate(values))
        parts.append(f'<polyline fill="none" stroke="{colour}" stroke-width="2" points="{points}">'
                     f'<title>{escape(name)}</title></polyline>')
        if len(values) == 1:  # one minute so far: a dot, since a line needs two
            x, y = points.split(",")
            parts.append(f'<circle cx="{x}" cy="{y}" r="3" fill="{colour}"/>')
    if labels:
        parts.append(f'<text x="{PAD}" y="{HEIGHT - 6}" class="tick">{escape(labels[0])}</text>')
        parts.append(f'<text x="{WIDTH - PAD}" y="{HEIGHT - 6}" class="tick" text-anchor="end">'
                     f'{escape(labels[-1])}</text>')
    legend_x = WIDTH - PAD
    for name, colour, _ in reversed(series):
        parts.append(f'<text x="{legend_x}" y="{PAD - 8}" class="tick" text-anchor="end" style="fill: {colour}">'
                     f'■ {escape(name)}</text>')
        legend_x -= 18 + sum(13 if ord(c) > 127 else 7 for c in name)
    parts.append("</svg>")
    return "".join(parts)
