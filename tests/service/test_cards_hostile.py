"""Chart text is data, never markup: hostile displays, texts, names, units, values and ids.

Each hostile string goes into every place a request can put text (a coding's display, a concept's
text, the Patient's name, a quantity's unit, a resource id, a Condition's note) on a patient who
gets each card topic. Then no card field and no explanation page may carry a raw ``<``, a
``javascript:``, a link or image, or Markdown that renders as anything but the text itself.
"""

from __future__ import annotations

import copy
import re
from typing import Any
from urllib.parse import urlsplit

import pytest
from starlette.testclient import TestClient

from service.hooks.card_text import escape_html, escape_markdown
from tests.fhir_builders import hook_request
from tests.service.card_cases import TOPIC_CASES, render, topic_case

HOSTILE = (
    "<iframe src=//evil>",
    "<script>alert(1)</script>",
    "<img src=x onerror=alert(1)>",
    "[click me](javascript:alert(1))",
    "![x](http://evil.example/x.png)",
    "javascript:alert(document.cookie)",
    "**unclosed `tick _under ~~strike",
    "| a | b |\n|---|---|\n| c | d |",
    "\n# Heading\n- item\n1. item",
    "www.evil.example and https://evil.example/phish",
)
RAW_TAG = re.compile(r"<\s*(iframe|script|img)", re.IGNORECASE)
MARKUP = ("<a ", "<img", "<h1", "<table", "<del", "<code", "<ol", "<em")


def poison(resource: Any, text: str) -> Any:
    """A copy of ``resource`` with ``text`` in every display, text, unit, name and note."""
    if isinstance(resource, dict):
        out = {key: poison(value, text) for key, value in resource.items()}
        for key in ("display", "text", "unit"):
            if key in out and isinstance(out[key], str):
                out[key] = text
        if out.get("resourceType") in ("Observation", "Condition") and "code" in out:
            out["code"] = {**out["code"], "text": text}
            out["note"] = [{"text": text}]
        if out.get("resourceType") == "Patient":
            out["name"] = [{"family": text, "given": [text], "text": text}]
        return out
    if isinstance(resource, list):
        return [poison(item, text) for item in resource]
    return resource


def hostile_request(topic: str, text: str) -> dict[str, Any]:
    case = copy.deepcopy(topic_case(topic))
    resources = poison(case["resources"], text)
    for number, resource in enumerate(resources):
        resource["id"] = f"x{number}-{re.sub(r'[^A-Za-z0-9]', '-', text)[:40]}"
    patient = poison(case["patient"], text)
    return hook_request(resources, patient_resource=patient, patient_id=case["patient"]["id"])


def strings(value: Any) -> list[str]:
    if isinstance(value, dict):
        return [s for item in value.values() for s in strings(item)]
    if isinstance(value, list):
        return [s for item in value for s in strings(item)]
    return [value] if isinstance(value, str) else []


def assert_inert_card(card: dict[str, Any]) -> None:
    for text in strings({k: v for k, v in card.items() if k != "suggestions"}):
        assert not RAW_TAG.search(text), text
        assert "javascript:" not in text.lower(), text
    html = render(card.get("detail", ""))
    assert not RAW_TAG.search(html), html
    assert [tag for tag in MARKUP if tag in html] == [], html


@pytest.mark.parametrize("text", HOSTILE)
@pytest.mark.parametrize("topic", sorted(TOPIC_CASES))
def test_hostile_chart_text_never_becomes_markup(client: TestClient, topic: str, text: str) -> None:
    """Cards and their explanation pages show hostile text inertly, for every topic."""
    response = client.post("/cds-services/calf-pain", json=hostile_request(topic, text))
    assert response.status_code == 200
    cards = response.json()["cards"]
    assert topic in {card["source"]["topic"]["code"] for card in cards}
    for card in cards:
        assert_inert_card(card)
        (link,) = [link["url"] for link in card["links"] if "/explanations/" in link["url"]]
        parts = urlsplit(link)
        page = client.get(f"{parts.path}?{parts.query}", auth=None)
        assert page.status_code == 200
        assert str(escape_html(text)) in page.text  # the chart's wording is there, escaped
        assert not RAW_TAG.search(page.text), page.text
        assert "javascript:" not in page.text.lower()
        assert 'href="http' not in page.text.replace('href="https&#58;//', "")  # only the guideline links


def test_hostile_text_reaches_the_page_escaped() -> None:
    """The page shows the chart's own wording, escaped (so the test above is not vacuous)."""
    assert str(escape_html("<iframe src=//evil>")) == "&lt;iframe src=//evil&gt;"
    assert "javascript&#58;" in str(escape_html("javascript:alert(1)"))


@pytest.mark.parametrize("text", HOSTILE)
def test_escaped_markdown_renders_as_the_text_itself(text: str) -> None:
    """What escape_markdown returns renders back to the (one-line) text, with no markup at all."""
    html = render(f"- Finding: **{escape_markdown(text)}**")
    assert not RAW_TAG.search(html)
    assert [tag for tag in MARKUP if tag in html] == []
    inner = re.sub(r"<[^>]+>", "", html).strip()
    shown = " ".join(text.split())
    assert inner.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&").replace("&quot;", '"') == (
        f"Finding: {shown}"
    )


def test_escape_markdown_removes_line_breaks_and_cuts_long_text() -> None:
    """One line, at most 200 characters, whatever the chart holds."""
    escaped = escape_markdown("a\nb\r\nc" + "x" * 500)
    assert "\n" not in escaped
    assert "\r" not in escaped
    assert len(escaped) <= 200
