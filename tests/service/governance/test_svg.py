"""The report's own SVG charts: well-formed, escaped, with sensible axes."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest

from service.governance import svg

SVG = "{http://www.w3.org/2000/svg}"


def parse(chart: str) -> ET.Element:
    """Our own chart as XML (it must be well-formed); never used on input from elsewhere."""
    return ET.fromstring(chart)  # noqa: S314 - the report's own output, in a test


@pytest.mark.parametrize(
    ("maximum", "ticks"),
    [(13, [0, 5, 10, 15]), (4, [0, 1, 2, 3, 4]), (0.5, [0, 1]), (100, [0, 20, 40, 60, 80, 100]), (0, [0, 1])],
)
def test_nice_ticks_are_round_integers_for_counts(maximum: float, ticks: list[float]) -> None:
    assert svg.nice_ticks(maximum) == ticks


def test_columns_stack_series_with_a_legend_and_axes() -> None:
    chart = svg.columns("c", "Cards per day", ["d1", "d2"], [svg.Series("abi", [1, 2], "#E69F00"),
                        svg.Series("dvt", [3, 0], "#0072B2")], y_label="cards", x_label="day")  # fmt: skip
    root = parse(chart)
    assert root.attrib["data-marks"] == "3"  # zero values draw nothing
    texts = [t.text for t in root.iter(f"{SVG}text")]
    assert {"Cards per day", "abi", "dvt", "cards", "day", "d1", "d2", "0", "4"} <= set(texts)


def test_bars_in_percent_label_each_share() -> None:
    chart = svg.bars("b", "Outcomes", ["rule @ 1.0.0"], [svg.Series("accepted", [3], "#009E73"),
                     svg.Series("overridden", [1], "#D55E00")], x_label="share", percent=True, notes=["n = 4"])  # fmt: skip
    texts = [t.text for t in parse(chart).iter(f"{SVG}text")]
    assert {"75%", "25%", "n = 4", "100%"} <= set(texts)


def test_long_labels_wrap_and_keep_the_full_text_as_a_tooltip() -> None:
    label = "Recipient disagrees with recommendation because of issues with the evidence, the outcomes, the context and much more besides"
    chart = svg.bars("b", "Reasons", [label], [svg.Series("n", [2], "#D55E00")], x_label="n")
    root = parse(chart)
    spans = [s.text or "" for s in root.iter(f"{SVG}tspan")]
    assert len(spans) == 2
    assert spans[1].endswith("…")
    assert label in [t.text for t in root.iter(f"{SVG}title")]


def test_text_is_escaped() -> None:
    chart = svg.bars(
        "b", "<b>", ['<script>alert("x")</script>'], [svg.Series("n & m", [1], "#000")], x_label="x"
    )
    assert "<script>" not in chart
    root = parse(chart)  # still well-formed
    assert root.attrib["aria-label"] == "<b>"


def test_empty_chart_says_so() -> None:
    chart = svg.columns("c", "Cards", [], [], y_label="y", x_label="x", empty="Nothing yet")
    root = parse(chart)
    assert root.attrib["data-marks"] == "0"
    assert "Nothing yet" in [t.text for t in root.iter(f"{SVG}text")]
