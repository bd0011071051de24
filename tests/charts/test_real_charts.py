"""Every EHR-shaped chart (tests/charts/cases) end to end: a signed patient-view call to the HTTP app.

The app is built once per module with `create_app(...)` and a clock that reads the running case's
`now`; each case's prefetch answers the templates the app's own discovery document publishes, so
new prefetch keys are filled as soon as the service asks for them. Expectations were written from
the clinical guidance (tests/charts/README.md), never from what the service answers; a failure
message names the case, says whether it is a SAFETY violation, and shows the cards.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from service.app import create_app
from service.auth.dev_issuer import DevIssuer
from service.config import Settings
from tests.charts.charts import hook_request as build_hook_request
from tests.charts.charts import load_cases, parse_instant
from tests.signing import signed_client

if TYPE_CHECKING:
    from starlette.testclient import TestClient

CASES = load_cases()
RECOMMENDATION_SYSTEM = "http://calf-cds.org/fhir/CodeSystem/recommendation"


@dataclass
class Clock:
    """The injected clock: set to each case's `now` before its call."""

    now: datetime = field(default_factory=lambda: parse_instant("2026-11-20T09:00:00Z"))

    def __call__(self) -> datetime:
        return self.now


@dataclass
class App:
    client: TestClient
    clock: Clock
    templates: dict[str, str]


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[App]:
    """The app as deployed by default (dev issuer, embedded packs), its clock under the test's control."""
    data_dir: Path = tmp_path_factory.mktemp("charts") / "data"
    settings = Settings(data_dir=data_dir, dev=True)
    clock = Clock()
    with signed_client(create_app(settings, clock=clock), DevIssuer.load_or_create(data_dir)) as client:
        response = client.get("/cds-services")
        assert response.status_code == 200, response.text
        (service,) = [s for s in response.json()["services"] if s["id"] == "calf-pain"]
        yield App(client, clock, dict(service.get("prefetch", {})))


def card_topic(card: dict[str, Any]) -> str:
    topic = card["source"]["topic"]
    assert topic["system"] == RECOMMENDATION_SYSTEM
    return str(topic["code"])


def describe(cards: list[dict[str, Any]]) -> str:
    return "\n".join(f"  [{card_topic(c)}/{c['indicator']}] {c['summary']}" for c in cards) or "  (no cards)"


def problems(case: dict[str, Any], cards: list[dict[str, Any]]) -> list[str]:
    """What the cards get wrong against the case's expectation (empty = right)."""
    expect = case["expect"]
    by_topic: dict[str, list[dict[str, Any]]] = {}
    for card in cards:
        by_topic.setdefault(card_topic(card), []).append(card)
    found: list[str] = []
    for topic in expect["topics"]:
        if topic not in by_topic:
            found.append(f"missing {topic}")
    for topic in expect["forbidden"]:
        if topic in by_topic:
            found.append(f"forbidden {topic} shown")
    for topic, indicator in expect.get("indicators", {}).items():
        shown = {card["indicator"] for card in by_topic.get(topic, [])}
        if shown and shown != {indicator}:
            found.append(f"{topic} indicator {sorted(shown)}, expected {indicator}")
    for topic, phrases in expect.get("mentions", {}).items():
        text = " ".join(f"{c['summary']}\n{c.get('detail') or ''}" for c in by_topic.get(topic, [])).lower()
        for phrase in phrases:
            if topic in by_topic and phrase.lower() not in text:
                found.append(f"{topic} card does not say {phrase!r}")
    if "pattern" in expect and cards:
        pattern = f"**Pattern:** {expect['pattern']}"
        if not any(pattern in (card.get("detail") or "") for card in cards):
            found.append(f"pattern is not {expect['pattern']}")
    return found


def is_safety_violation(case: dict[str, Any], cards: list[dict[str, Any]]) -> bool:
    """A conservative card where a DVT work-up or a red flag is due (or the case forbids it on the
    fail-safe principle), or a missed red flag."""
    expect = case["expect"]
    topics = {card_topic(card) for card in cards}
    conservative_unsafe = "conservative" in topics and "conservative" in expect["forbidden"]
    missed_red_flag = "urgent-referral" in expect["topics"] and "urgent-referral" not in topics
    return conservative_unsafe or missed_red_flag


def call(app: App, case: dict[str, Any]) -> list[dict[str, Any]]:
    app.clock.now = parse_instant(case["now"])
    body = build_hook_request(case, app.templates, "d1577c69-dfbe-44ad-ba6d-3e05e953b2ea")
    response = app.client.post("/cds-services/calf-pain", json=body)
    assert response.status_code == 200, f"{case['id']}: HTTP {response.status_code}\n{response.text[:2000]}"
    cards: list[dict[str, Any]] = response.json()["cards"]
    return cards


@pytest.mark.parametrize("case", CASES, ids=[case["id"] for case in CASES])
def test_chart_end_to_end(app: App, case: dict[str, Any]) -> None:
    """The chart's cards: expected topics present, forbidden absent, indicators, wording, pattern."""
    cards = call(app, case)
    wrong = problems(case, cards)
    label = "SAFETY VIOLATION" if is_safety_violation(case, cards) else "wrong answer"
    assert not wrong, (
        f"{label} on {case['id']} ({case['file']}): "
        + "; ".join(wrong)
        + f"\nexpected: {case['expect']}\ncards:\n{describe(cards)}\nwhy: {case['rationale']}"
    )
