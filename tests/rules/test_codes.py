"""Topics, indicators and patterns are written once (rules/codes.py); the copies that live where
``rules`` may not be imported are kept equal to them here."""

from __future__ import annotations

from importlib import resources
from typing import Any, get_args

import pytest

from cds_hooks import models
from fhir_mappings.conformance import published
from rules.codes import Indicator, Pattern, Topic
from rules.errors import PackError
from rules.pack import load_pack, pack_schema
from service.store.schema import feedback, hook_cards
from tests.rules.test_engine import pack


def test_the_recommendation_codesystem_publishes_exactly_the_topics() -> None:
    """The published CodeSystem (card ``source.topic``) has one concept per Topic, no more."""
    codesystem = published()["CodeSystem", "recommendation"]
    codes = [concept["code"] for concept in codesystem["concept"]]
    assert sorted(codes) == sorted(Topic)
    assert codesystem["count"] == len(Topic)


def test_the_protocol_indicator_type_has_exactly_the_indicators() -> None:
    """cds_hooks keeps the protocol's own indicator type (it imports no rules); they agree, in order."""
    assert get_args(models.Indicator) == tuple(Indicator)


def test_every_topic_has_a_display_and_fits_the_audit_trail() -> None:
    """A topic without a display would show its bare code; a long code would not fit the trail."""
    width = min(hook_cards.c.topic.type.length or 0, feedback.c.topic.type.length or 0)
    for topic in Topic:
        assert topic.display.strip(), topic
        assert len(topic) <= width, topic


def test_indicators_rank_by_urgency() -> None:
    """Critical before warning before info."""
    ranked = sorted(Indicator, key=lambda indicator: -indicator.urgency)
    assert ranked == [Indicator.CRITICAL, Indicator.WARNING, Indicator.INFO]


def test_the_pack_schema_takes_its_enums_from_the_codes() -> None:
    """The schema file names no topic, indicator or pattern: a new one needs no schema edit."""
    text = resources.files("rules").joinpath("schema/pack.schema.json").read_text("utf-8")
    for code in [*Topic, *Indicator, *Pattern]:
        assert f'"{code}"' not in text, code
    definitions = pack_schema()["$defs"]
    assert definitions["topic"]["enum"] == list(Topic)
    assert definitions["indicator"]["enum"] == list(Indicator)
    assert definitions["pattern"]["enum"] == list(Pattern)


@pytest.mark.parametrize(
    ("field", "value", "pointer"),
    [
        ("topic", "no-such-topic", "/rules/0/topic"),
        ("indicator", "urgent", "/rules/0/indicator"),
        ("pattern", "vascular", "/rules/0/pattern"),
        ("suppresses", ["abi", "no-such-topic"], "/rules/0/suppresses/1"),
    ],
)
def test_a_code_outside_the_enums_fails_at_load(field: str, value: Any, pointer: str) -> None:
    """A rule naming an unknown topic, indicator or pattern is refused with its JSON pointer."""
    document = dict(pack().document)
    document["rules"] = [{**document["rules"][0], field: value}]
    with pytest.raises(PackError, match="is not one of") as raised:
        load_pack(document, {"swollen": "boolean", "tender": "boolean"})
    assert raised.value.pointer == pointer


def test_a_loaded_rule_carries_the_enums() -> None:
    """Rules hold Topic, Indicator and Pattern members, not bare strings."""
    (rule,) = pack().rules
    assert (rule.topic, rule.indicator, rule.pattern) == (Topic.DUPLEX_DVT, Indicator.WARNING, Pattern.VENOUS)
    assert type(rule.topic) is Topic
