"""The CDS Hooks models against the spec's own examples and invariants."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from cds_hooks.models import (
    Action,
    Card,
    Coding,
    FeedbackRequest,
    HookRequest,
    HookResponse,
    Link,
    Source,
    Suggestion,
)

SPEC = Path(__file__).resolve().parents[1] / "data" / "cds-hooks-spec"
REQUESTS = [
    SPEC / "examples-v2.0.1" / "02-service-request-patient-view.json",
    SPEC / "examples-v3.0.0-ballot" / "02-service-request-patient-view.json",
    SPEC / "examples-v2.0.1" / "26-extension-on-request.json",
]
FEEDBACK = sorted(SPEC.glob("*/*-feedback-*.json"))
# The autolaunchable-link examples omit the card's required `indicator` (a slip in the spec text).
_SPEC_SLIP = pytest.mark.xfail(reason="spec example omits the required card indicator", strict=True)
RESPONSES = [
    pytest.param(p, marks=_SPEC_SLIP) if "autolaunchable" in p.name else p
    for p in sorted(SPEC.glob("*/*-response-*.json"))
    if '"..."' not in p.read_text() and "systemActions" not in p.name
]


def load(path: Path) -> Any:
    return json.loads(path.read_text())


@pytest.mark.parametrize("path", REQUESTS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_spec_request_examples_parse(path: Path) -> None:
    """Every patient-view request example of the spec is accepted."""
    request = HookRequest.model_validate(load(path))
    assert request.hook == "patient-view"


@pytest.mark.parametrize("path", FEEDBACK, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_spec_feedback_examples_parse(path: Path) -> None:
    """Every feedback example of the spec is accepted."""
    feedback = FeedbackRequest.model_validate(load(path))
    assert feedback.feedback


@pytest.mark.parametrize("path", RESPONSES, ids=lambda p: f"{p.parent.name}/{p.name}")  # type: ignore[misc]
def test_spec_response_examples_fit_our_card_model(path: Path) -> None:
    """The spec's response examples round-trip through our strict outgoing models."""
    body = load(path)
    response = HookResponse.model_validate(body)
    assert response.to_json()["cards"] == [Card.model_validate(c).to_json() for c in body["cards"]]


def test_unknown_fields_are_ignored() -> None:
    """A client may send fields we do not know; the spec says services ignore them."""
    body = load(REQUESTS[0]) | {"somethingNew": {"x": 1}}
    assert HookRequest.model_validate(body).hook_instance


def test_authorization_without_server_is_refused() -> None:
    """cds-r-1: fhirAuthorization without fhirServer is invalid."""
    body = load(REQUESTS[0])
    del body["fhirServer"]
    with pytest.raises(ValidationError):
        HookRequest.model_validate(body)


def test_access_token_never_appears_in_repr() -> None:
    """The FHIR access token cannot leak through a log line that prints the request."""
    request = HookRequest.model_validate(load(REQUESTS[0]))
    assert "some-opaque-fhir-access-token" not in repr(request)
    assert "some-opaque-fhir-access-token" not in str(request.fhir_authorization)


def test_response_drops_null_and_empty_values() -> None:
    """We never send null or empty values; `cards` stays even when empty."""
    card = Card.model_validate(
        {"summary": "s", "indicator": "info", "source": {"label": "x"}, "detail": None, "links": []}
    )
    assert card.to_json() == {"summary": "s", "indicator": "info", "source": {"label": "x"}}
    assert HookResponse().to_json() == {"cards": []}


def test_summary_must_be_under_140_characters() -> None:
    """The spec's summary is a one-sentence, <140-character message."""
    with pytest.raises(ValidationError):
        Card.model_validate({"summary": "x" * 140, "indicator": "info", "source": {"label": "x"}})


def test_accepted_feedback_needs_suggestions() -> None:
    """cds-fb-2: an accepted outcome must list acceptedSuggestions."""
    entry = {"card": "c", "outcome": "accepted", "outcomeTimestamp": "2026-11-20T09:00:00Z"}
    with pytest.raises(ValidationError):
        FeedbackRequest.model_validate({"feedback": [entry]})


@pytest.mark.parametrize(
    "build",
    [
        lambda: Link(label="App", url="https://app.example.org", type="absolute", app_context="{}"),
        lambda: Link(label="Guideline", url="/guideline", type="absolute"),
        lambda: Source(label="x", url="calf-cds.org"),
        lambda: Action(type="create", description="Order ABI"),
        lambda: Card(
            summary="s",
            indicator="info",
            source=Source(label="x"),
            suggestions=[Suggestion(label="Order ABI")],
        ),
        lambda: Card(summary="s", indicator="info", source=Source(label="x"), selection_behavior="any"),
        lambda: Card(
            summary="s", indicator="info", source=Source(label="x"), override_reasons=[Coding(code="c")]
        ),
    ],
    ids=[
        "app-context-on-absolute-link",
        "relative-link",
        "relative-source-url",
        "create-without-resource",
        "suggestions-without-selection-behavior",
        "selection-behavior-without-suggestions",
        "override-reason-without-display",
    ],
)
def test_the_card_contract_holds_when_a_card_is_built(build: Callable[[], object]) -> None:
    """The rules between elements are the models' own: a card that breaks one cannot be built."""
    with pytest.raises(ValidationError):
        build()
