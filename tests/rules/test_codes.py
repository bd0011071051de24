"""Topics, indicators and patterns are written once (rules/codes.py); the copies that live where
``rules`` may not be imported are kept equal to them here."""

from __future__ import annotations

from typing import get_args

from cds_hooks import models
from fhir_mappings.conformance import published
from rules.codes import Indicator, Topic
from service.store.schema import feedback, hook_cards


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
