"""A card's side: from the laterality of the complaint and of the card's positive leg findings."""

from __future__ import annotations

from dataclasses import replace

import pytest

from fhir_mappings.conformance import published
from fhir_mappings.facts import Evidence, Fact, Facts, vocabulary
from rules.codes import Topic
from rules.engine import Recommendation, evaluate
from service.hooks.card_text import card_side
from service.hooks.cards import override_reasons
from tests.service.card_cases import calf_service, case_now, topic_case

DECLARED = frozenset(vocabulary().types())


def facts(*found: tuple[str, str | None]) -> Facts:
    """Facts with each (name, laterality) present, one Observation each."""
    by_name = {
        name: Fact(name, True, (Evidence(f"Observation/{n}", name, "present", None, side),))
        for n, (name, side) in enumerate(found)
    }
    return Facts(by_name=by_name, declared=DECLARED)


def dvt_recommendation() -> Recommendation:
    case = topic_case("duplex-dvt")
    calf = calf_service()
    mapped = calf.mapper.map(
        patient_id="p1", patient=case["patient"], resources=case["resources"], now=case_now(case)
    )
    return evaluate(calf.active, mapped).recommendations[0]


@pytest.mark.parametrize(
    ("found", "side"),
    [
        ((("calf_pain_left", "left"),), "left"),
        ((("calf_pain_right", "right"), ("calf_tenderness_left", "left")), "both"),
        ((("calf_pain_left", "bilateral"), ("calf_pain_right", "bilateral")), "both"),
        ((("calf_pain", None),), "unknown"),
        ((("calf_pain", None), ("calf_tenderness_right", "right")), "right"),
        ((("fever", None),), None),
        ((("calf_tenderness_left", "left"), ("d_dimer_lab_positive", None)), "left"),
    ],
)
def test_card_side(found: tuple[tuple[str, str | None], ...], side: str | None) -> None:
    """One leg, both legs, side not recorded, or no side when no leg finding is documented."""
    rule = replace(dvt_recommendation(), evidence=("calf_tenderness_left", "calf_tenderness_right", "fever"))
    assert card_side(rule, facts(*found)) == side


@pytest.mark.parametrize("hook", ["patient-view", "order-select", "order-sign"])
@pytest.mark.parametrize("topic", list(Topic))
def test_every_override_reason_a_card_offers_is_in_the_published_codesystem(topic: Topic, hook: str) -> None:
    """A card's overrideReasons are codes of the published override-reason CodeSystem, with its
    displays: feedback that returns one can be read against the CodeSystem."""
    codesystem = published()["CodeSystem", "override-reason"]
    concepts = {concept["code"]: concept["display"] for concept in codesystem["concept"]}
    offered = override_reasons(topic, hook)
    assert offered
    for reason in offered:
        assert reason.system == codesystem["url"]
        assert concepts[reason.code] == reason.display
