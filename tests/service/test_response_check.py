"""The response check: the CDS Hooks card contract (the models'), the drop-and-audit path, the red-flag fallback."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

import service.hooks.registry
from cds_hooks.card_contract import action_problems, card_problems
from cds_hooks.models import Link
from service.config import Settings
from service.hooks.guards import FALLBACK_SUMMARY, check_response, fallback_red_flag_card
from tests.fhir_builders import calf_pain, finding, hook_request, quantity
from tests.service.test_app import audit_rows

SPEC = Path(__file__).resolve().parents[1] / "data" / "cds-hooks-spec"
SPEC_CARDS = [
    pytest.param(card, id=f"{path.parent.name}/{path.name}#{index}")
    for path in sorted(SPEC.glob("*/*-response-*.json"))
    if "systemActions" not in path.name and "autolaunchable" not in path.name
    for index, card in enumerate(json.loads(path.read_text())["cards"])
]
SPEC_ACTIONS = sorted(SPEC.glob("*/*-action-*.json"))
DVT = [
    calf_pain(),
    finding("calf-circumference-difference", quantity(3.4, "cm")),
    finding("entire-leg-swollen"),
]


def good_card() -> dict[str, Any]:
    """A card that uses every element correctly."""
    return {
        "uuid": "a6f1f0d6-7a3c-4b0e-9b0a-6c7d0f2d1e11",
        "summary": "Order a resting ankle-brachial index",
        "detail": "**Why:** exertional calf pain.",
        "indicator": "info",
        "source": {
            "label": "calf-cds",
            "url": "https://calf-cds.org",
            "topic": {"system": "http://calf-cds.org/fhir/CodeSystem/recommendation", "code": "abi"},
        },
        "suggestions": [
            {
                "label": "Order ABI",
                "uuid": "b0c3",
                "isRecommended": True,
                "actions": [
                    {
                        "type": "create",
                        "description": "Order ABI",
                        "resource": {"resourceType": "ServiceRequest", "status": "draft"},
                    }
                ],
            }
        ],
        "selectionBehavior": "at-most-one",
        "overrideReasons": [{"system": "http://example.org", "code": "x", "display": "Not applicable"}],
        "links": [
            {"label": "Guideline", "url": "https://example.org/g", "type": "absolute"},
            {"label": "App", "url": "https://app.example.org/launch", "type": "smart", "appContext": "{}"},
        ],
    }


def broken(change: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
    card = good_card()
    change(card)
    return card


# --- the rules -------------------------------------------------------------------------------


def test_a_correct_card_has_no_problems() -> None:
    assert card_problems(good_card()) == []


@pytest.mark.parametrize("card", SPEC_CARDS)
def test_the_specs_own_cards_pass(card: dict[str, Any]) -> None:
    assert card_problems(card) == []


@pytest.mark.parametrize("path", SPEC_ACTIONS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_the_specs_own_actions_pass(path: Path) -> None:
    assert list(action_problems(json.loads(path.read_text()), "/a")) == []


@pytest.mark.parametrize(
    ("change", "pointer"),
    [
        (lambda c: c.update(summary="x" * 140), "/summary"),
        (lambda c: c.pop("summary"), "/summary"),
        (lambda c: c.update(summary=5), "/summary"),
        (lambda c: c.pop("indicator"), "/indicator"),
        (lambda c: c.update(indicator="urgent"), "/indicator"),
        (lambda c: c.pop("source"), "/source"),
        (lambda c: c["source"].pop("label"), "/source/label"),
        (lambda c: c["source"].update(url="calf-cds.org"), "/source/url"),
        (lambda c: c["source"]["topic"].pop("code"), "/source/topic/code"),
        (lambda c: c.pop("selectionBehavior"), "/selectionBehavior"),
        (lambda c: c.update(selectionBehavior="all"), "/selectionBehavior"),
        (lambda c: c.update(suggestions=[], selectionBehavior="any"), "/suggestions"),
        (lambda c: c["suggestions"][0].pop("label"), "/suggestions/0/label"),
        (lambda c: c["suggestions"][0].update(isRecommended="yes"), "/suggestions/0/isRecommended"),
        (
            lambda c: c["suggestions"][0]["actions"][0].pop("description"),
            "/suggestions/0/actions/0/description",
        ),
        (lambda c: c["suggestions"][0]["actions"][0].update(type="upsert"), "/suggestions/0/actions/0/type"),
        (lambda c: c["suggestions"][0]["actions"][0].pop("resource"), "/suggestions/0/actions/0/resource"),
        (lambda c: c["overrideReasons"][0].pop("display"), "/overrideReasons/0/display"),
        (lambda c: c["overrideReasons"][0].pop("code"), "/overrideReasons/0/code"),
        (lambda c: c["links"][0].update(type="relative"), "/links/0/type"),
        (lambda c: c["links"][0].update(url="/relative"), "/links/0/url"),
        (lambda c: c["links"][0].update(appContext="{}"), "/links/0/appContext"),
        (lambda c: c["links"][0].pop("label"), "/links/0/label"),
        (lambda c: c.update(detail=None), "/detail"),
        (lambda c: c.update(detail=""), "/detail"),
        (lambda c: c.update(links=[]), "/links"),
        (lambda c: c["source"].update(topic={}), "/source/topic"),
        (lambda c: c["suggestions"][0]["actions"][0]["resource"].update(note=[]), "/resource/note"),
    ],
    ids=[
        "summary-140",
        "summary-missing",
        "summary-not-string",
        "indicator-missing",
        "indicator-unknown",
        "source-missing",
        "source-label-missing",
        "source-url-relative",
        "topic-code-missing",
        "selection-behavior-missing",
        "selection-behavior-unknown",
        "selection-behavior-without-suggestions",
        "suggestion-label-missing",
        "is-recommended-not-bool",
        "action-description-missing",
        "action-type-unknown",
        "create-without-resource",
        "override-reason-display-missing",
        "override-reason-code-missing",
        "link-type-unknown",
        "link-url-relative",
        "app-context-on-absolute-link",
        "link-label-missing",
        "null-value",
        "empty-string",
        "empty-array",
        "empty-object",
        "empty-array-deep-inside",
    ],
)
def test_each_rule_is_enforced(change: Callable[[dict[str, Any]], None], pointer: str) -> None:
    problems = card_problems(broken(change))
    assert any(pointer in problem for problem in problems), problems


def test_summary_of_139_characters_passes() -> None:
    assert card_problems(broken(lambda c: c.update(summary="x" * 139))) == []


def test_a_card_that_is_not_an_object_is_refused() -> None:
    assert card_problems(["not", "a", "card"]) != []


def test_the_fallback_card_passes_and_is_critical() -> None:
    card = fallback_red_flag_card({"uuid": "keep-me"})
    assert card_problems(card) == []
    assert (card["indicator"], card["uuid"], card["summary"]) == ("critical", "keep-me", FALLBACK_SUMMARY)
    assert card["source"]["topic"]["code"] == "urgent-referral"


# --- check_response --------------------------------------------------------------------------


def test_a_failing_card_is_dropped_and_audited() -> None:
    bad = broken(lambda c: c.pop("selectionBehavior"))
    entries = [{"uuid": bad["uuid"], "topic": "abi", "indicator": "info"}]
    checked = check_response({"cards": [bad, good_card() | {"uuid": "other"}]}, entries)
    assert [c["uuid"] for c in checked.body["cards"]] == ["other"]
    assert "dropped" in checked.checks[bad["uuid"]]
    assert any("selectionBehavior" in note for note in checked.notes)


def test_a_failing_red_flag_card_becomes_the_fallback() -> None:
    """A red flag never disappears: a failing critical card is replaced, not dropped."""
    bad = broken(lambda c: c.update(indicator="critical", summary="x" * 200))
    entries = [{"uuid": bad["uuid"], "topic": "urgent-referral", "indicator": "critical"}]
    checked = check_response({"cards": [bad]}, entries)
    (card,) = checked.body["cards"]
    assert card["summary"] == FALLBACK_SUMMARY
    assert card["uuid"] == bad["uuid"]
    assert "replaced" in checked.checks[bad["uuid"]]


def test_a_red_flag_card_missing_its_indicator_is_known_by_its_audit_entry() -> None:
    bad = broken(lambda c: c.pop("indicator"))
    entries = [{"uuid": bad["uuid"], "topic": "urgent-referral", "indicator": "critical"}]
    (card,) = check_response({"cards": [bad]}, entries).body["cards"]
    assert card["indicator"] == "critical"


def test_good_cards_pass_unchanged() -> None:
    body = {"cards": [good_card()]}
    assert check_response(copy.deepcopy(body)).body == body


def test_bad_system_actions_are_dropped() -> None:
    checked = check_response({"cards": [], "systemActions": [{"type": "update"}]})
    assert "systemActions" not in checked.body
    assert any("systemActions" in note for note in checked.notes)


# --- through the app -------------------------------------------------------------------------


def spoil_cards(monkeypatch: pytest.MonkeyPatch, **changes: Any) -> None:
    """Make every card the pipeline builds break a rule (an absolute link with appContext)."""
    original = service.hooks.registry.build_cards

    def build(*args: Any, **kwargs: Any) -> Any:
        pairs = original(*args, **kwargs)
        for card, _ in pairs:
            # the models refuse this link when it is built: model_construct stands for a card
            # that got around them, which the response check still catches
            card.links.append(
                Link.model_construct(
                    label="Bad", url="https://x.example.org", type="absolute", app_context="{}"
                )
            )
            for name, value in changes.items():
                setattr(card, name, value)
        return pairs

    monkeypatch.setattr(service.hooks.registry, "build_cards", build)


def test_app_drops_a_failing_card_and_audits_it(
    client: TestClient, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    spoil_cards(monkeypatch)
    response = client.post("/cds-services/calf-pain", json=hook_request(DVT))
    assert response.json() == {"cards": []}
    (row,) = audit_rows(settings, 1)
    assert "appContext" in row["cards"][0]["check"]
    assert any(note.startswith("response check:") for note in row["notes"])


def test_app_replaces_a_failing_red_flag_card(client: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    spoil_cards(monkeypatch, indicator="critical")
    (card,) = client.post("/cds-services/calf-pain", json=hook_request(DVT)).json()["cards"]
    assert (card["indicator"], card["summary"]) == ("critical", FALLBACK_SUMMARY)
