"""Charts as server-rendered SVG: no script, no external asset, works offline.

Each chart is an <svg role="img"> with a title and a description that says in words what it
shows; the dashboard puts the same numbers in a table beside it, so nothing is only a picture.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString

WIDTH, HEIGHT = 720, 220
LEFT, RIGHT, TOP, BOTTOM = 56, 12, 12, 40
REQUESTS_COLOUR = "#1d4ed8"
ERRORS_COLOUR = "#b91c1c"
BAR_COLOUR = "#166534"
AXIS_COLOUR = "#595959"


@dataclass(frozen=True)
class Bar:
    label: str  # under the bar (may be empty to thin out the axis)
    value: float
    overlay: float = 0.0  # drawn over the bar from the bottom (errors within requests)
    title: str = ""  # the tooltip: what the bar is, in words


def _nice_max(value: float) -> float:
    """The smallest 1, 2 or 5 x 10^n at or above value (1 for an empty chart)."""
    if value <= 0:
        return 1
    magnitude = 1
    while magnitude * 10 <= value:
        magnitude *= 10
    while magnitude > value:
        magnitude /= 10
    for step in (1, 2, 5, 10):
        if step * magnitude >= value:
            return step * magnitude
    return 10 * magnitude


def _px(value: float) -> str:
    # format_html escapes its arguments into strings first: numbers are formatted here.
    return f"{value:.1f}"


def _number(value: float) -> str:
    return f"{value:,.0f}" if value >= 10 or value == int(value) else f"{value:.2g}"


def bar_chart(
    bars: Sequence[Bar], *, title: str, description: str, legend: Sequence[tuple[str, str]] = ()
) -> SafeString:
    """Vertical bars (with an optional overlay per bar) on a linear axis from zero."""
    plot_width, plot_height = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    top = _nice_max(max((bar.value for bar in bars), default=0))
    slot = plot_width / max(len(bars), 1)
    gap = min(2.0, slot * 0.2)

    def y(value: float) -> float:
        return TOP + plot_height - plot_height * value / top

    shapes = []
    for index, bar in enumerate(bars):
        x = LEFT + index * slot + gap / 2
        width = max(slot - gap, 1)
        shapes.append(
            format_html(
                '<rect x="{}" y="{}" width="{}" height="{}" fill="{}"><title>{}</title></rect>',
                _px(x),
                _px(y(bar.value)),
                _px(width),
                _px(TOP + plot_height - y(bar.value)),
                BAR_COLOUR if not legend else REQUESTS_COLOUR,
                bar.title or f"{bar.label}: {_number(bar.value)}",
            )
        )
        if bar.overlay:
            shapes.append(
                format_html(
                    '<rect x="{}" y="{}" width="{}" height="{}" fill="{}"></rect>',
                    _px(x),
                    _px(y(bar.overlay)),
                    _px(width),
                    _px(TOP + plot_height - y(bar.overlay)),
                    ERRORS_COLOUR,
                )
            )
        if bar.label:
            shapes.append(
                format_html(
                    '<text x="{}" y="{}" font-size="11" text-anchor="middle" fill="{}">{}</text>',
                    _px(x + width / 2),
                    HEIGHT - BOTTOM + 14,
                    AXIS_COLOUR,
                    bar.label,
                )
            )
    axis = format_html(
        '<line x1="{l}" y1="{b}" x2="{r}" y2="{b}" stroke="{c}"/>'
        '<line x1="{l}" y1="{t}" x2="{l}" y2="{b}" stroke="{c}"/>'
        '<text x="{lt}" y="{ty}" font-size="11" text-anchor="end" fill="{c}">{top}</text>'
        '<text x="{lt}" y="{b}" font-size="11" text-anchor="end" fill="{c}">0</text>',
        l=LEFT,
        r=WIDTH - RIGHT,
        t=TOP,
        b=TOP + plot_height,
        c=AXIS_COLOUR,
        lt=LEFT - 6,
        ty=TOP + 10,
        top=_number(top),
    )
    keys = format_html_join(
        "",
        '<rect x="{}" y="{}" width="10" height="10" fill="{}"/><text x="{}" y="{}" font-size="11" fill="{}">{}</text>',
        (
            (LEFT + index * 110, HEIGHT - 14, colour, LEFT + index * 110 + 14, HEIGHT - 5, AXIS_COLOUR, name)
            for index, (name, colour) in enumerate(legend)
        ),
    )
    return format_html(
        '<svg class="mf-chart" role="img" viewBox="0 0 {} {}" width="{}" height="{}" '
        'xmlns="http://www.w3.org/2000/svg"><title>{}</title><desc>{}</desc>{}{}{}</svg>',
        WIDTH,
        HEIGHT,
        WIDTH,
        HEIGHT,
        title,
        description,
        axis,
        format_html_join("", "{}", ((shape,) for shape in shapes)),
        keys,
    )


def requests_chart(series: Sequence[dict], *, label_every: int = 3) -> SafeString:
    """Requests per period with the errors among them, from serving_timeseries rows."""
    bars = [
        Bar(
            label=f"{row['start']:%H:%M}" if index % label_every == 0 else "",
            value=row["requests"],
            overlay=row["errors"],
            title=f"{row['start']:%Y-%m-%d %H:%M} UTC: {row['requests']:,} requests, {row['errors']:,} errors",
        )
        for index, row in enumerate(series)
    ]
    total, errors = sum(row["requests"] for row in series), sum(row["errors"] for row in series)
    return bar_chart(
        bars,
        title="Requests per hour",
        description=f"{total:,} requests and {errors:,} errors in {len(series)} periods.",
        legend=(("requests", REQUESTS_COLOUR), ("errors", ERRORS_COLOUR)),
    )


def _short(value: float) -> str:
    """1000 -> 1k, 2500 -> 2.5k: axis labels that fit under narrow bars."""
    if value >= 1000:
        return f"{value / 1000:g}k"
    return f"{value:g}"


def bucket_label(le_ms: float | None, previous: float | None) -> str:
    if le_ms is None:
        return f">{_short(previous or 0)}"
    return f"≤{_short(le_ms)}"


def latency_chart(histogram: Sequence[dict]) -> SafeString:
    """Requests per latency bucket, from latency_histogram rows."""
    bars = []
    previous = None
    for row in histogram:
        label = bucket_label(row["le_ms"], previous)
        bars.append(Bar(label=label, value=row["count"], title=f"{label} ms: {row['count']:,} requests"))
        previous = row["le_ms"]
    total = sum(row["count"] for row in histogram)
    return bar_chart(
        bars, title="Latency histogram (ms)", description=f"{total:,} requests by time in the server, in milliseconds."
    )
