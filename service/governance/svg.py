"""Small, dependency-free SVG charts for the governance report: readable at a glance, no JavaScript.

Two shapes cover the report: :func:`columns` (stacked columns over time, e.g. cards per day by
topic) and :func:`bars` (horizontal bars, stacked or not, counts or shares, e.g. outcomes per rule
version). Each chart has a title, labelled axes with "nice" ticks, grid lines, a legend, a
``<title>`` tooltip on every mark, and ``data-chart`` / ``data-marks`` attributes for tests.
Colours are the Okabe–Ito palette, which reads for colour-blind readers too.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from html import escape

__all__ = ["FONT", "PALETTE", "Series", "bars", "columns", "nice_ticks", "wrap"]

FONT = "system-ui, -apple-system, 'Segoe UI', Roboto, 'Helvetica Neue', Arial, sans-serif"
PALETTE = ("#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#F0E442", "#999999")
INK, MUTED, GRID = "#1f2933", "#52606d", "#e4e7eb"


@dataclass(frozen=True)
class Series:
    name: str
    values: Sequence[float]
    color: str


def nice_ticks(maximum: float, count: int = 5, *, integer: bool = True) -> list[float]:
    """0 and round steps (1, 2, 5 × 10ⁿ; also 2.5 when not ``integer``) up to at least ``maximum``."""
    if maximum <= 0:
        return [0.0, 1.0]
    raw = maximum / count
    power = 10 ** math.floor(math.log10(raw))
    steps = (1, 2, 5, 10) if integer else (1, 2, 2.5, 5, 10)
    step = next(m * power for m in steps if m * power >= raw and (not integer or m * power >= 1))
    top = math.ceil(maximum / step - 1e-9) * step
    return [round(i * step, 10) for i in range(round(top / step) + 1)]


def _light(colour: str) -> bool:
    """Whether dark text reads better than white on ``colour`` (``#rrggbb``)."""
    red, green, blue = (int(colour[i : i + 2], 16) for i in (1, 3, 5))
    return 0.299 * red + 0.587 * green + 0.114 * blue > 160


def _number(value: float, percent: bool = False) -> str:
    if percent:
        return f"{value:.0f}%"
    return f"{value:.0f}" if float(value).is_integer() else f"{value:.1f}"


def _text(x: float, y: float, text: str, *, size: int = 12, anchor: str = "start", fill: str = INK,
          weight: str = "normal", extra: str = "") -> str:  # fmt: skip
    return (
        f'<text x="{x:.1f}" y="{y:.1f}" font-size="{size}" text-anchor="{anchor}" fill="{fill}" '
        f'font-weight="{weight}"{extra}>{escape(text)}</text>'
    )


def wrap(label: str, width: int, lines: int = 2) -> list[str]:
    """``label`` in at most ``lines`` lines of ``width`` characters, cut with "…" if still too long."""
    words, out, line = label.split(), [], ""
    for word in words:
        if line and len(line) + 1 + len(word) > width:
            out.append(line)
            line = word
        else:
            line = f"{line} {word}" if line else word
    out.append(line)
    if len(out) > lines:
        out = [*out[: lines - 1], " ".join(out[lines - 1 :])]
    return [text if len(text) <= width else text[: width - 1].rstrip() + "…" for text in out]


def _legend(series: Sequence[Series], x: float, y: float, width: float) -> tuple[list[str], float]:
    """Legend swatches in rows from (x, y); returns the parts and the height used."""
    parts, cx, cy = [], x, y
    for item in series:
        span = 22 + 7.2 * len(item.name) + 18
        if cx + span > x + width and cx > x:
            cx, cy = x, cy + 20
        parts.append(
            f'<rect x="{cx:.1f}" y="{cy - 10:.1f}" width="14" height="14" rx="2" fill="{item.color}"/>'
        )
        parts.append(_text(cx + 20, cy + 1, item.name, fill=INK))
        cx += span
    return parts, cy - y + 20


def _frame(kind: str, title: str, width: int, height: int, body: list[str], marks: int) -> str:
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" data-chart="{escape(kind)}" '
        f'data-marks="{marks}" viewBox="0 0 {width} {height}" width="{width}" height="{height}" '
        f'role="img" aria-label="{escape(title)}" font-family="{escape(FONT)}">'
        f"<title>{escape(title)}</title>"
        f'<rect x="0" y="0" width="{width}" height="{height}" fill="#ffffff"/>'
        + _text(16, 26, title, size=15, weight="600")
        + "".join(body)
        + "</svg>"
    )


def _empty(kind: str, title: str, width: int, height: int, message: str) -> str:
    body = [
        f'<rect x="16" y="44" width="{width - 32}" height="{height - 60}" fill="#f5f7fa" stroke="{GRID}"/>',
        _text(width / 2, height / 2 + 10, message, size=14, anchor="middle", fill=MUTED),
    ]
    return _frame(kind, title, width, height, body, 0)


def columns(
    kind: str,
    title: str,
    categories: Sequence[str],
    series: Sequence[Series],
    *,
    y_label: str,
    x_label: str,
    width: int = 920,
    height: int = 340,
    empty: str = "No data in this period",
) -> str:
    """Stacked columns, one per category (e.g. a day), one colour per series (e.g. a topic)."""
    totals = [sum(s.values[i] for s in series) for i in range(len(categories))]
    if not categories or not any(totals):
        return _empty(kind, title, width, height, empty)
    legend, legend_height = _legend(series, 70, 52, width - 90)
    left, right, top, bottom = 70, width - 20, 52 + legend_height + 8, height - 58
    ticks = nice_ticks(max(totals))
    scale = (bottom - top) / ticks[-1]
    body = list(legend)
    for tick in ticks:
        y = bottom - tick * scale
        body.append(f'<line x1="{left}" y1="{y:.1f}" x2="{right}" y2="{y:.1f}" stroke="{GRID}"/>')
        body.append(_text(left - 8, y + 4, _number(tick), anchor="end", fill=MUTED))
    slot = (right - left) / len(categories)
    bar = max(2.0, min(48.0, slot * 0.72))
    every = max(1, math.ceil(len(categories) / max(1, int((right - left) / 70))))
    marks = 0
    for index, category in enumerate(categories):
        x = left + slot * index + (slot - bar) / 2
        y = bottom
        for item in series:
            value = item.values[index]
            if value <= 0:
                continue
            h = value * scale
            y -= h
            marks += 1
            body.append(
                f'<rect class="mark" x="{x:.1f}" y="{y:.1f}" width="{bar:.1f}" height="{h:.1f}" '
                f'fill="{item.color}"><title>{escape(f"{category} · {item.name}: {_number(value)}")}</title></rect>'
            )
        if index % every == 0:
            body.append(_text(x + bar / 2, bottom + 18, category, size=11, anchor="middle", fill=MUTED))
    body.append(f'<line x1="{left}" y1="{bottom}" x2="{right}" y2="{bottom}" stroke="{MUTED}"/>')
    body.append(f'<line x1="{left}" y1="{top}" x2="{left}" y2="{bottom}" stroke="{MUTED}"/>')
    body.append(_text((left + right) / 2, height - 14, x_label, anchor="middle", fill=MUTED))
    middle = (top + bottom) / 2
    body.append(
        _text(
            18,
            middle,
            y_label,
            anchor="middle",
            fill=MUTED,
            extra=f' transform="rotate(-90 18 {middle:.1f})"',
        )
    )
    return _frame(kind, title, width, height, body, marks)


def bars(
    kind: str,
    title: str,
    labels: Sequence[str],
    series: Sequence[Series],
    *,
    x_label: str,
    percent: bool = False,
    notes: Sequence[str] | None = None,
    width: int = 920,
    empty: str = "No data in this period",
) -> str:
    """Horizontal bars, one row per label; several series stack; ``percent`` scales rows to 100 %."""
    totals = [sum(s.values[i] for s in series) for i in range(len(labels))]
    if not labels or not any(totals):
        return _empty(kind, title, width, 160, empty)
    label_width = min(340, max(120, int(6.6 * max(len(label) for label in labels)) + 16))
    wrapped = [wrap(label, int((label_width - 16) / 6.6)) for label in labels]
    row_height = 40 if any(len(lines) > 1 for lines in wrapped) else 30
    legend: list[str] = []
    legend_height = 0.0
    if len(series) > 1:
        legend, legend_height = _legend(series, label_width, 52, width - label_width - 20)
    note_width = 70 if notes else 16
    left, right = label_width, width - note_width
    top = 52 + legend_height + 6
    height = int(top + row_height * len(labels) + 52)
    bottom = top + row_height * len(labels)
    ticks = [0.0, 25.0, 50.0, 75.0, 100.0] if percent else nice_ticks(max(totals))
    scale = (right - left) / ticks[-1]
    body = list(legend)
    for tick in ticks:
        x = left + tick * scale
        body.append(f'<line x1="{x:.1f}" y1="{top}" x2="{x:.1f}" y2="{bottom}" stroke="{GRID}"/>')
        body.append(_text(x, bottom + 16, _number(tick, percent), anchor="middle", fill=MUTED))
    marks = 0
    for index, label in enumerate(labels):
        y = top + row_height * index + 5
        lines = wrapped[index]
        first = y + (row_height - 10) / 2 + 4 - 7 * (len(lines) - 1)
        spans = "".join(
            f'<tspan x="{left - 8}" y="{first + 14 * i:.1f}">{escape(line)}</tspan>'
            for i, line in enumerate(lines)
        )
        body.append(
            f'<text font-size="12" text-anchor="end" fill="{INK}"><title>{escape(label)}</title>{spans}</text>'
        )
        x = float(left)
        total = totals[index]
        for item in series:
            value = item.values[index]
            if value <= 0:
                continue
            shown = value / total * 100 if percent and total else value
            w = shown * scale
            marks += 1
            tip = f"{label} · {item.name}: {_number(value)}" + (f" ({shown:.0f}%)" if percent else "")
            body.append(
                f'<rect class="mark" x="{x:.1f}" y="{y:.1f}" width="{w:.1f}" height="{row_height - 10}" '
                f'fill="{item.color}"><title>{escape(tip)}</title></rect>'
            )
            middle = y + (row_height - 10) / 2 + 4
            if percent and w > 34:
                ink = INK if _light(item.color) else "#ffffff"
                label_text = f"{shown:.0f}%"
                body.append(
                    _text(x + w / 2, middle, label_text, size=11, anchor="middle", fill=ink, weight="600")
                )
            elif not percent and len(series) == 1:
                body.append(_text(x + w + 6, middle, _number(value), size=11, fill=INK))
            x += w
        if notes:
            body.append(_text(right + 8, y + (row_height - 10) / 2 + 4, notes[index], size=11, fill=MUTED))
    body.append(f'<line x1="{left}" y1="{top}" x2="{left}" y2="{bottom}" stroke="{MUTED}"/>')
    body.append(_text((left + right) / 2, height - 12, x_label, anchor="middle", fill=MUTED))
    return _frame(kind, title, width, height, body, marks)
