"""The card → form link: a SMART link whose appContext names the questions that record what is missing."""

from __future__ import annotations

import json

from cds_hooks.card_contract import card_problems
from service.hooks.card_text import assessment_link, missing_questions


def test_missing_wells_items_become_a_smart_link() -> None:
    """Per-leg names count as their question; the link opens the launch URL with appContext."""
    link = assessment_link(
        ["entire_leg_swollen_left", "calf_circumference_difference", "previous_dvt"],
        "https://cds.example.org/",
    )
    assert link is not None
    body = link.to_json()
    assert body["type"] == "smart"
    assert body["url"] == "https://cds.example.org/app/launch.html"
    assert json.loads(body["appContext"]) == {
        "missing": ["entire_leg_swollen", "calf_circumference_difference"]
    }


def test_no_link_when_the_form_asks_none_of_the_missing_facts() -> None:
    """Chart-only facts (a previous DVT, a D-dimer) give no link: the form cannot capture them."""
    assert assessment_link(["previous_dvt", "d_dimer_feu"], "https://cds.example.org") is None


def test_questions_keep_the_form_order_without_duplicates() -> None:
    """Both legs of a finding name it once, in the order the form asks."""
    assert missing_questions(["warmth_right", "sudden_onset", "warmth_left"]) == ["sudden_onset", "warmth"]


def test_a_card_carrying_the_link_passes_the_response_check() -> None:
    """The link fits the card contract the response checker enforces (absolute URL, smart, appContext)."""
    link = assessment_link(["pedal_pulses_left"], "http://127.0.0.1:8080")
    assert link is not None
    card = {
        "summary": "Right leg: ABI now",
        "indicator": "info",
        "source": {
            "label": "ACC/AHA 2024",
            "topic": {
                "system": "http://calf-cds.org/fhir/CodeSystem/recommendation",
                "code": "abi",
                "display": "Ankle-brachial index testing",
            },
        },
        "links": [link.to_json()],
    }
    assert not [p for p in card_problems(card) if p.startswith("/links")]
