"""Charts as server-rendered SVG: no script, no external asset, works offline.

Each chart is an <svg role="img"> with a title and a description that says in words what it
shows; the dashboard puts the same numbers in a table beside it, so nothing is only a picture.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString

WIDTH, HEIGHT = 720, 220
LEFT, RIGHT, TOP, BOTTOM = 56, 12, 18, 40
REQUESTS_COLOUR = "#1d4ed8"
ERRORS_COLOUR = "#b91c1c"  # server errors (5xx), and errors before they were split
CLIENT_COLOUR = "#b45309"  # client errors (4xx): amber, 3:1 and more against white
BAR_COLOUR = "#166534"
LINE_COLOUR = "#6d28d9"
MARKER_COLOUR = "#374151"
AXIS_COLOUR = "#595959"


@dataclass(frozen=True)
class Bar:
    label: str  # under the bar (may be empty to thin out the axis)
    value: float
    overlay: float = 0.0  # drawn over the bar from the bottom (errors within requests)
    title: str = ""  # the tooltip: what the bar is, in words
    # Parts of the value stacked from the bottom, each (value, colour), drawn over the bar.
    segments: tuple[tuple[float, str], ...] = ()


@dataclass(frozen=True)
class Marker:
    """An event drawn as a vertical line on the time charts (an alias move, a rollout step)."""

    at: datetime
    text: str  # in words: "iris@production moved 1.0.0 → 1.1.0 by ops"
    number: int = 0  # the event's number in the table beside the charts (0: none shown)


@dataclass(frozen=True)
class TimeAxis:
    """Periods of equal width from ``start``: where a moment falls on a time chart."""

    start: datetime
    bucket: timedelta
    periods: int

    def fraction(self, moment: datetime) -> float | None:
        """0..1 across the chart, None outside it."""
        span = self.bucket * max(self.periods, 1)
        offset = (moment - self.start) / span
        return offset if 0 <= offset <= 1 else None


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


PLOT_WIDTH, PLOT_HEIGHT = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM


def _frame(top: float, legend: Sequence[tuple[str, str]]) -> SafeString:
    """The axes, the top and zero of the value axis, and the legend under the chart."""
    axis = format_html(
        '<line x1="{l}" y1="{b}" x2="{r}" y2="{b}" stroke="{c}"/>'
        '<line x1="{l}" y1="{t}" x2="{l}" y2="{b}" stroke="{c}"/>'
        '<text x="{lt}" y="{ty}" font-size="11" text-anchor="end" fill="{c}">{top}</text>'
        '<text x="{lt}" y="{b}" font-size="11" text-anchor="end" fill="{c}">0</text>',
        l=LEFT,
        r=WIDTH - RIGHT,
        t=TOP,
        b=TOP + PLOT_HEIGHT,
        c=AXIS_COLOUR,
        lt=LEFT - 6,
        ty=TOP + 10,
        top=_number(top),
    )
    keys = format_html_join(
        "",
        '<rect x="{}" y="{}" width="10" height="10" fill="{}"/><text x="{}" y="{}" font-size="11" fill="{}">{}</text>',
        (
            (LEFT + index * 130, HEIGHT - 14, colour, LEFT + index * 130 + 14, HEIGHT - 5, AXIS_COLOUR, name)
            for index, (name, colour) in enumerate(legend)
        ),
    )
    return axis + keys


def _markers(markers: Sequence[Marker], axis: TimeAxis | None) -> SafeString:
    """Each marker in the axis's span: a dashed vertical line with its text as the tooltip and
    its number over the plot."""
    if axis is None:
        return SafeString("")
    shapes = []
    previous_x, row = None, 0
    for marker in markers:
        fraction = axis.fraction(marker.at)
        if fraction is None:
            continue
        x = LEFT + PLOT_WIDTH * fraction
        # Numbers of markers too close to read apart go one line lower, in turn.
        row = (row + 1) % 3 if previous_x is not None and x - previous_x < 14 else 0
        previous_x = x
        shapes.append(
            format_html(
                '<g class="mf-marker"><title>{}</title>'
                '<line x1="{x}" y1="{t}" x2="{x}" y2="{b}" stroke="{c}" stroke-width="1.5" stroke-dasharray="4 3"/>'
                '<text x="{x}" y="{ty}" font-size="10" text-anchor="middle" fill="{c}">{n}</text></g>',
                marker.text,
                x=_px(x),
                t=TOP,
                b=TOP + PLOT_HEIGHT,
                c=MARKER_COLOUR,
                ty=TOP - 5 + row * 11,
                n=marker.number or "▾",
            )
        )
    return format_html_join("", "{}", ((shape,) for shape in shapes))


def _svg(title: str, description: str, *parts: SafeString) -> SafeString:
    return format_html(
        '<svg class="mf-chart" role="img" viewBox="0 0 {} {}" width="{}" height="{}" '
        'xmlns="http://www.w3.org/2000/svg"><title>{}</title><desc>{}</desc>{}</svg>',
        WIDTH,
        HEIGHT,
        WIDTH,
        HEIGHT,
        title,
        description,
        format_html_join("", "{}", ((part,) for part in parts)),
    )


def _marker_words(markers: Sequence[Marker], axis: TimeAxis | None) -> str:
    shown = [marker for marker in markers if axis is not None and axis.fraction(marker.at) is not None]
    if not shown:
        return ""
    return f" Dashed lines mark {len(shown)} alias change{'s' if len(shown) != 1 else ''}."


def bar_chart(
    bars: Sequence[Bar],
    *,
    title: str,
    description: str,
    legend: Sequence[tuple[str, str]] = (),
    colour: str | None = None,
    axis: TimeAxis | None = None,
    markers: Sequence[Marker] = (),
) -> SafeString:
    """Vertical bars (with optional overlays per bar) on a linear axis from zero; on a time
    axis, markers are drawn over them."""
    top = _nice_max(max((bar.value for bar in bars), default=0))
    slot = PLOT_WIDTH / max(len(bars), 1)
    gap = min(2.0, slot * 0.2)

    def y(value: float) -> float:
        return TOP + PLOT_HEIGHT - PLOT_HEIGHT * value / top

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
                _px(TOP + PLOT_HEIGHT - y(bar.value)),
                colour or (BAR_COLOUR if not legend else REQUESTS_COLOUR),
                bar.title or f"{bar.label}: {_number(bar.value)}",
            )
        )
        segments = bar.segments or (((bar.overlay, ERRORS_COLOUR),) if bar.overlay else ())
        base = 0.0
        for value, segment_colour in segments:
            if value:
                shapes.append(
                    format_html(
                        '<rect x="{}" y="{}" width="{}" height="{}" fill="{}"><title>{}</title></rect>',
                        _px(x),
                        _px(y(base + value)),
                        _px(width),
                        _px(y(base) - y(base + value)),
                        segment_colour,
                        bar.title or f"{bar.label}: {_number(bar.value)}",
                    )
                )
            base += value
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
    return _svg(
        title,
        description + _marker_words(markers, axis),
        _frame(top, legend),
        format_html_join("", "{}", ((shape,) for shape in shapes)),
        _markers(markers, axis),
    )


def line_chart(
    values: Sequence[float | None],
    *,
    labels: Sequence[str],
    titles: Sequence[str],
    title: str,
    description: str,
    colour: str = LINE_COLOUR,
    axis: TimeAxis | None = None,
    markers: Sequence[Marker] = (),
    guides: Sequence[tuple[float, str, str]] = (),
) -> SafeString:
    """A line through the values at the middle of each period; None (no data) breaks it.
    ``guides`` are horizontal lines (value, colour, words), e.g. the amber and red thresholds."""
    known = [value for value in values if value is not None]
    top = _nice_max(max([*known, *(guide[0] for guide in guides)], default=0))
    slot = PLOT_WIDTH / max(len(values), 1)

    def y(value: float) -> float:
        return TOP + PLOT_HEIGHT - PLOT_HEIGHT * min(value, top) / top

    runs: list[list[str]] = [[]]
    dots = []
    for index, value in enumerate(values):
        if value is None:
            if runs[-1]:
                runs.append([])
            continue
        x = LEFT + (index + 0.5) * slot
        runs[-1].append(f"{x:.1f},{y(value):.1f}")
        dots.append(
            format_html(
                '<circle cx="{}" cy="{}" r="2.5" fill="{}"><title>{}</title></circle>',
                _px(x),
                _px(y(value)),
                colour,
                titles[index],
            )
        )
    lines = format_html_join(
        "",
        '<polyline points="{}" fill="none" stroke="{}" stroke-width="2"/>',
        ((" ".join(run), colour) for run in runs if len(run) > 1),
    )
    guide_lines = format_html_join(
        "",
        '<line x1="{}" y1="{}" x2="{}" y2="{}" stroke="{}" stroke-dasharray="6 4"><title>{}</title></line>',
        (
            (LEFT, _px(y(value)), WIDTH - RIGHT, _px(y(value)), guide_colour, words)
            for value, guide_colour, words in guides
        ),
    )
    ticks = format_html_join(
        "",
        '<text x="{}" y="{}" font-size="11" text-anchor="middle" fill="{}">{}</text>',
        (
            (_px(LEFT + (index + 0.5) * slot), HEIGHT - BOTTOM + 14, AXIS_COLOUR, label)
            for index, label in enumerate(labels)
            if label
        ),
    )
    legend = [(words, guide_colour) for _value, guide_colour, words in guides]
    return _svg(
        title,
        description + _marker_words(markers, axis),
        _frame(top, legend),
        guide_lines,
        lines,
        format_html_join("", "{}", ((dot,) for dot in dots)),
        ticks,
        _markers(markers, axis),
    )


def _period_labels(series: Sequence[dict], label_every: int, label_format: str) -> list[str]:
    """A time under the periods that start on a multiple of ``label_every`` minutes (UTC), so
    ticks fall on round times (every 10 minutes, every hour, at midnight); none so close to the
    right edge that it would be cut."""
    slot = PLOT_WIDTH / max(len(series), 1)
    return [
        f"{row['start']:{label_format}}"
        if int(row["start"].timestamp()) // 60 % label_every == 0 and (index + 0.5) * slot <= PLOT_WIDTH - 20
        else ""
        for index, row in enumerate(series)
    ]


def requests_chart(
    series: Sequence[dict],
    *,
    label_every: int = 180,
    label_format: str = "%H:%M",
    period: str = "hour",
    axis: TimeAxis | None = None,
    markers: Sequence[Marker] = (),
) -> SafeString:
    """Requests per period, the server and client errors among them stacked from the bottom,
    from serving_timeseries rows."""
    labels = _period_labels(series, label_every, label_format)
    bars = [
        Bar(
            label=labels[index],
            value=row["requests"],
            segments=(
                (row["server_errors"], ERRORS_COLOUR),
                (row["client_errors"], CLIENT_COLOUR),
            ),
            title=(
                f"{row['start']:%Y-%m-%d %H:%M} UTC: {row['requests']:,} requests, "
                f"{row['client_errors']:,} client errors, {row['server_errors']:,} server errors"
            ),
        )
        for index, row in enumerate(series)
    ]
    total, errors = sum(row["requests"] for row in series), sum(row["errors"] for row in series)
    return bar_chart(
        bars,
        title=f"Requests per {period}",
        description=f"{total:,} requests and {errors:,} errors in {len(series)} periods.",
        legend=(
            ("requests", REQUESTS_COLOUR),
            ("server errors (5xx)", ERRORS_COLOUR),
            ("client errors (4xx)", CLIENT_COLOUR),
        ),
        axis=axis,
        markers=markers,
    )


def errors_chart(
    series: Sequence[dict],
    *,
    label_every: int,
    label_format: str,
    period: str,
    axis: TimeAxis | None = None,
    markers: Sequence[Marker] = (),
) -> SafeString:
    """Server errors (5xx) and client errors (4xx) per period, stacked, on their own scale."""
    labels = _period_labels(series, label_every, label_format)
    bars = [
        Bar(
            label=labels[index],
            value=row["server_errors"] + row["client_errors"],
            segments=((row["server_errors"], ERRORS_COLOUR), (row["client_errors"], CLIENT_COLOUR)),
            title=(
                f"{row['start']:%Y-%m-%d %H:%M} UTC: {row['server_errors']:,} server errors, "
                f"{row['client_errors']:,} client errors"
            ),
        )
        for index, row in enumerate(series)
    ]
    server, client = sum(row["server_errors"] for row in series), sum(row["client_errors"] for row in series)
    return bar_chart(
        bars,
        title=f"Errors per {period}: server and client",
        description=f"{server:,} server errors (5xx) and {client:,} client errors (4xx) in {len(series)} periods.",
        legend=(("server errors (5xx)", ERRORS_COLOUR), ("client errors (4xx)", CLIENT_COLOUR)),
        colour=ERRORS_COLOUR,
        axis=axis,
        markers=markers,
    )


def p95_chart(
    series: Sequence[dict],
    *,
    label_every: int,
    label_format: str,
    period: str,
    axis: TimeAxis | None = None,
    markers: Sequence[Marker] = (),
    thresholds: dict[str, float] | None = None,
) -> SafeString:
    """p95 time in the server per period (ms); the amber and red thresholds as dashed lines
    when one model's thresholds are given."""
    values = [row["p95_ms"] for row in series]
    known = [value for value in values if value is not None]
    guides = ()
    if thresholds is not None:
        guides = (
            (thresholds["p95_amber_ms"], CLIENT_COLOUR, f"amber at {thresholds['p95_amber_ms']:,.0f} ms"),
            (thresholds["p95_red_ms"], ERRORS_COLOUR, f"red at {thresholds['p95_red_ms']:,.0f} ms"),
        )
    return line_chart(
        values,
        labels=_period_labels(series, label_every, label_format),
        titles=[f"{row['start']:%Y-%m-%d %H:%M} UTC: p95 {_ms(row['p95_ms'])}" for row in series],
        title=f"p95 latency per {period} (ms)",
        description=(
            f"The 95th percentile of the time in the server in {len(known)} of {len(series)} periods"
            + (f", highest {max(known):,.1f} ms." if known else "; no requests.")
        ),
        axis=axis,
        markers=markers,
        guides=guides,
    )


def batch_chart(
    series: Sequence[dict],
    *,
    label_every: int,
    label_format: str,
    period: str,
    axis: TimeAxis | None = None,
    markers: Sequence[Marker] = (),
) -> SafeString:
    """The mean batch size per period: requests answered by running the model per session run."""
    values = [row["mean_batch_size"] for row in series]
    known = [value for value in values if value is not None]
    return line_chart(
        values,
        labels=_period_labels(series, label_every, label_format),
        titles=[
            f"{row['start']:%Y-%m-%d %H:%M} UTC: mean batch size "
            + ("—" if row["mean_batch_size"] is None else f"{row['mean_batch_size']:g}")
            for row in series
        ],
        title=f"Mean batch size per {period}",
        description=(
            f"Requests per session run in {len(known)} of {len(series)} periods"
            + (f", highest {max(known):g}." if known else "; the model did not run.")
        ),
        colour=BAR_COLOUR,
        axis=axis,
        markers=markers,
    )


def _ms(value: float | None) -> str:
    return "—" if value is None else f"{value:,.1f} ms"


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


# --- drift: a feature's distribution in a window against its reference ------------------------

DIST_WIDTH, DIST_HEIGHT = 360, 170
DIST_LEFT, DIST_RIGHT, DIST_TOP, DIST_BOTTOM = 40, 8, 12, 44
REFERENCE_COLOUR = "#6b7280"
DRIFT_COLOURS = {"red": ERRORS_COLOUR, "amber": CLIENT_COLOUR, "green": BAR_COLOUR, "idle": "#4b5563"}


def _edge(value: float) -> str:
    return f"{value:.3g}"


def distribution_rows(feature: dict) -> list[dict]:
    """A drift feature's bins (or classes) as rows: ``{"label", "reference", "window"}``, the two
    shares as proportions of their own totals (0 where a total is 0).

    Numeric features: bin ``i`` holds ``(edges[i], edges[i+1]]``, the first reaching to -inf and
    the last to +inf (monitoring.distributions), so they read "≤ e1", "e1–e2", ..., "> e(n-1)"."""
    reference, window = list(feature.get("reference_counts") or []), list(feature.get("window_counts") or [])
    if "categories" in feature:
        labels = [str(category) for category in feature["categories"]]
    else:
        edges = list(feature.get("bin_edges") or [])
        count = len(reference)
        if count <= 1 or len(edges) != count + 1:
            labels = ["all values"] * count if count <= 1 else [f"bin {index + 1}" for index in range(count)]
        else:
            labels = [f"≤ {_edge(edges[1])}"]
            labels += [f"{_edge(edges[index])}–{_edge(edges[index + 1])}" for index in range(1, count - 1)]
            labels.append(f"> {_edge(edges[count - 1])}")
    size = max(len(reference), len(window), len(labels))
    reference += [0] * (size - len(reference))
    window += [0] * (size - len(window))
    labels += [f"bin {index + 1}" for index in range(len(labels), size)]
    reference_total, window_total = sum(reference), sum(window)
    return [
        {
            "label": labels[index],
            "reference": reference[index] / reference_total if reference_total else 0.0,
            "window": window[index] / window_total if window_total else 0.0,
        }
        for index in range(size)
    ]


def _share(value: float) -> str:
    return f"{value:.0%}" if value >= 0.01 or value == 0 else "<1%"


def distribution_chart(feature: dict, *, window: str = "") -> SafeString:
    """One drift feature (a monitoring.drift.latest_for feature): per bin or class, the
    reference's share (grey) beside the window's (in the feature's level colour), as
    proportions. The description gives the level, PSI, the test's p-value and every share, so
    the picture says nothing the words do not."""
    rows = distribution_rows(feature)
    level = str(feature.get("level") or "idle")
    colour = DRIFT_COLOURS.get(level, DRIFT_COLOURS["idle"])
    plot_width, plot_height = DIST_WIDTH - DIST_LEFT - DIST_RIGHT, DIST_HEIGHT - DIST_TOP - DIST_BOTTOM
    top = max([row["reference"] for row in rows] + [row["window"] for row in rows] + [0.01])
    top = min(1.0, _nice_max(top * 100) / 100)
    slot = plot_width / max(len(rows), 1)
    bar = max((slot - 2) / 2, 1)

    def y(value: float) -> float:
        return DIST_TOP + plot_height - plot_height * min(value, top) / top

    shapes = []
    # A label under every bin while they fit, else under every other one.
    label_step = 1 if slot >= 30 else 2
    for index, row in enumerate(rows):
        x = DIST_LEFT + index * slot + 1
        words = f"{row['label']}: reference {_share(row['reference'])}, window {_share(row['window'])}"
        for offset, value, fill in ((0, row["reference"], REFERENCE_COLOUR), (bar, row["window"], colour)):
            shapes.append(
                format_html(
                    '<rect x="{}" y="{}" width="{}" height="{}" fill="{}"><title>{}</title></rect>',
                    _px(x + offset),
                    _px(y(value)),
                    _px(bar),
                    _px(DIST_TOP + plot_height - y(value)),
                    fill,
                    words,
                )
            )
        if index % label_step == 0:
            shapes.append(
                format_html(
                    '<text x="{}" y="{}" font-size="9" text-anchor="middle" fill="{}">{}</text>',
                    _px(x + bar),
                    DIST_TOP + plot_height + 12,
                    AXIS_COLOUR,
                    row["label"] if len(row["label"]) <= 10 else row["label"][:9] + "…",
                )
            )
    frame = format_html(
        '<line x1="{l}" y1="{b}" x2="{r}" y2="{b}" stroke="{c}"/>'
        '<line x1="{l}" y1="{t}" x2="{l}" y2="{b}" stroke="{c}"/>'
        '<text x="{lt}" y="{ty}" font-size="10" text-anchor="end" fill="{c}">{top}</text>'
        '<text x="{lt}" y="{b}" font-size="10" text-anchor="end" fill="{c}">0%</text>'
        '<rect x="{l}" y="{ky}" width="9" height="9" fill="{rc}"/>'
        '<text x="{kx1}" y="{kt}" font-size="10" fill="{c}">reference</text>'
        '<rect x="{kx2}" y="{ky}" width="9" height="9" fill="{wc}"/>'
        '<text x="{kx3}" y="{kt}" font-size="10" fill="{c}">window{w}</text>',
        l=DIST_LEFT,
        r=DIST_WIDTH - DIST_RIGHT,
        t=DIST_TOP,
        b=DIST_TOP + plot_height,
        c=AXIS_COLOUR,
        lt=DIST_LEFT - 4,
        ty=DIST_TOP + 8,
        top=f"{top:.0%}",
        ky=DIST_HEIGHT - 15,
        kt=DIST_HEIGHT - 7,
        rc=REFERENCE_COLOUR,
        wc=colour,
        kx1=DIST_LEFT + 13,
        kx2=DIST_LEFT + 90,
        kx3=DIST_LEFT + 103,
        w=f" ({window})" if window else "",
    )
    psi, p_value = feature.get("psi"), feature.get("p_value")
    test = {"ks": "KS", "chi2": "chi-square"}.get(str(feature.get("test") or ""), str(feature.get("test") or "test"))
    numbers = ", ".join(
        part
        for part in (
            f"PSI {psi:.3g}" if psi is not None else "PSI not computed",
            f"{test} p-value {p_value:.2g}" if p_value is not None else "",
            f"{feature.get('rows', 0):,} samples in the window",
        )
        if part
    )
    shares = "; ".join(
        f"{row['label']}: reference {_share(row['reference'])}, window {_share(row['window'])}" for row in rows
    )
    name = str(feature.get("name") or "feature")
    return format_html(
        '<svg class="mf-chart mf-drift-chart" role="img" viewBox="0 0 {w} {h}" width="{w}" height="{h}" '
        'xmlns="http://www.w3.org/2000/svg"><title>{}</title><desc>{}</desc>{}{}</svg>',
        f"{name}: {level}, the window{f' ({window})' if window else ''} against the reference",
        f"{name} is {level} ({numbers}). Share of samples per {'class' if 'categories' in feature else 'bin'}: "
        f"{shares or 'none'}.",
        frame,
        format_html_join("", "{}", ((shape,) for shape in shapes)),
        w=DIST_WIDTH,
        h=DIST_HEIGHT,
    )
