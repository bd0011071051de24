"""A new card topic is one ``Topic`` member plus the pack content that uses it.

The test declares a throwaway topic in ``rules.codes.Topic`` for its own duration (no other edit
anywhere), serves a pack with one rule that recommends it, and follows the card through every
place that reads a topic: the pack schema, the engine, the card (its display, its override
reasons), the response check, the audit trail, the explanation page, the governance report and
``rules diff``. The published CodeSystem is checked against the real ``Topic`` in
``tests/rules/test_codes.py``: a real new topic adds its concept there too.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from sqlalchemy import create_engine, select
from starlette.testclient import TestClient

from fhir_mappings.facts import vocabulary
from rules.codes import Topic
from rules.errors import PackError
from rules.pack import bundled_pack_files, load_pack
from service.app import create_app
from service.config import Settings
from service.governance.catalogue import Catalogue
from service.governance.diff import diff_packs
from service.governance.report import render
from service.governance.reportdata import collect
from service.governance.wording import Wording
from service.hooks.packs import fact_types
from service.store.schema import hook_cards
from tests.fhir_builders import NOW, calf_pain, finding, hook_request, quantity
from tests.service.governance.conftest import wait_for
from tests.signing import dev_client

CODE, DISPLAY = "compression-stockings", "Graduated compression stockings"
PACK = "calf-pain@1.99.0"
SWOLLEN_LEG = [
    calf_pain(),
    finding("calf-circumference-difference", quantity(3.4, "cm")),
    finding("entire-leg-swollen"),
]


def declare(name: str, code: str, display: str) -> Topic:
    """What ``NAME = "code", "display"`` in the body of ``Topic`` makes, done after the fact."""
    member = str.__new__(Topic, code)
    member._name_, member._value_, member.display = name, code, display
    Topic._member_names_.append(name)
    Topic._member_map_[name] = member
    Topic._value2member_map_[code] = member
    return member


def withdraw(member: Topic) -> None:
    Topic._member_names_.remove(member.name)
    del Topic._member_map_[member.name]
    del Topic._value2member_map_[member.value]


@pytest.fixture
def new_topic() -> Iterator[Topic]:
    """A throwaway topic, declared in ``Topic`` for the duration of one test."""
    member = declare("COMPRESSION_STOCKINGS", CODE, DISPLAY)
    try:
        yield member
    finally:
        withdraw(member)


def released() -> dict[str, Any]:
    document: dict[str, Any] = json.loads(bundled_pack_files()["calf-pain@1.1.0"].read_text("utf-8"))
    return document


def pack_with_the_topic() -> dict[str, Any]:
    """calf-pain 1.1.0 and one more rule, recommending the new topic for a swollen leg."""
    document = released()
    rule = {
        "id": "compression-stockings",
        "title": DISPLAY,
        "topic": CODE,
        "indicator": "info",
        "pattern": "venous",
        "when": {"fact": "entire_leg_swollen"},
        "citation": {"ref": "nice-ng158", "section": "Throwaway topic (tests/service/test_new_topic.py)"},
        "summary": "Consider graduated compression stockings once DVT is dealt with.",
        "detail": ["A throwaway card: it proves a new topic needs one enum entry."],
    }
    change = {"version": "1.99.0", "date": "2026-11-20", "changes": ["A throwaway topic for a test."]}
    return document | {
        "version": "1.99.0",
        "status": "draft",
        "rules": [*document["rules"], rule],
        "changelog": [change, *document["changelog"]],
    }


@pytest.fixture
def rules_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "rules"
    folder.mkdir()
    (folder / "calf-pain-1.99.0.json").write_text(json.dumps(pack_with_the_topic()), "utf-8")
    return folder


@pytest.fixture
def topic_settings(tmp_path: Path, rules_dir: Path) -> Settings:
    return Settings(data_dir=tmp_path / "data", rules_dir=rules_dir, active_pack=PACK, dev=True)


def test_the_new_topic_goes_from_pack_to_card_to_trail_to_report(
    new_topic: Topic, topic_settings: Settings, rules_dir: Path
) -> None:
    """Served, carded, checked, audited, explained and reported with nothing but the enum entry."""
    with dev_client(create_app(topic_settings, clock=lambda: NOW), topic_settings) as client:
        response = client.post("/cds-services/calf-pain", json=hook_request(SWOLLEN_LEG))
        assert response.status_code == 200, response.text
        cards = response.json()["cards"]
        (card,) = [c for c in cards if c["source"]["topic"]["code"] == CODE]
        assert card["source"]["topic"]["display"] == DISPLAY
        assert card["indicator"] == "info"
        assert [r["code"] for r in card["overrideReasons"]] == ["patient-declined", "not-relevant-today"]
        assert "duplex-dvt" in {c["source"]["topic"]["code"] for c in cards}  # the pack's own cards too
        page = explanation_page(client, card)
        assert DISPLAY in page
    engine = create_engine(topic_settings.resolved_database_url())
    try:
        query = select(hook_cards.c.topic).where(hook_cards.c.card_uuid == card["uuid"])
        wait_for(lambda: _scalar(engine, query) == CODE)
        data = collect(engine, Catalogue.discover(rules_dir), active=PACK, shadows=(), since=None, now=NOW)
    finally:
        engine.dispose()
    report = render(data, active=PACK, shadows=())
    assert f'<td>{DISPLAY}</td><td class="n">1</td>' in report  # cards per topic, named by its display


def test_rules_diff_reads_a_card_of_the_new_topic(new_topic: Topic) -> None:
    """`rules diff` names the new card with its topic."""
    old, new = released(), pack_with_the_topic()
    text = diff_packs(old, new, Wording(vocabulary(), old), Wording(vocabulary(), new)).render()
    assert f"New card “{DISPLAY}” ({CODE}, info)" in " ".join(text.split())


def test_without_the_enum_entry_the_pack_does_not_load() -> None:
    """The enum entry is what admits the topic: without it the schema refuses the rule at load."""
    document = pack_with_the_topic()
    with pytest.raises(PackError, match="is not one of") as raised:
        load_pack(document, fact_types(vocabulary()))
    assert raised.value.pointer == f"/rules/{len(document['rules']) - 1}/topic"


def explanation_page(client: TestClient, card: dict[str, Any]) -> str:
    (url,) = [link["url"] for link in card["links"] if "/explanations/" in link["url"]]
    parts = urlsplit(url)
    response = client.get(f"{parts.path}?{parts.query}", auth=None)
    assert response.status_code == 200
    return response.text


def _scalar(engine: Any, query: Any) -> Any:
    with engine.connect() as connection:
        return connection.scalar(query)
