"""The chart harness answers prefetch templates the way an EHR would (tests/charts/charts.py)."""

from __future__ import annotations

from typing import Any

from tests.charts.charts import hook_request, token_matches

SNOMED = "http://snomed.info/sct"
LOINC = "http://loinc.org"


def concept(system: str, code: str) -> dict[str, Any]:
    return {"coding": [{"system": system, "code": code}]}


def case() -> dict[str, Any]:
    subject = {"reference": "Patient/p9"}
    return {
        "now": "2026-11-20T09:00:00Z",
        "patient": {"resourceType": "Patient", "id": "p9"},
        "resources": [
            {
                "resourceType": "Observation",
                "id": "o1",
                "code": concept(LOINC, "48065-7"),
                "subject": subject,
                "category": [
                    concept("http://terminology.hl7.org/CodeSystem/observation-category", "laboratory")
                ],
            },
            {"resourceType": "Observation", "id": "o2", "code": concept(LOINC, "8302-2"), "subject": subject},
            {
                "resourceType": "Procedure",
                "id": "p1",
                "code": concept(SNOMED, "609588000"),
                "subject": subject,
            },
            {"resourceType": "Encounter", "id": "e1", "subject": subject},
        ],
    }


def test_token_search_follows_fhir_token_rules() -> None:
    """`system|code` needs both, `code` any system, `|code` no system; a comma means OR."""
    coded = [concept(LOINC, "48065-7")]
    assert token_matches(coded, "http://loinc.org|48065-7")
    assert token_matches(coded, "48065-7")
    assert token_matches(coded, "1234-5,48065-7")
    assert not token_matches(coded, f"{SNOMED}|48065-7")
    assert not token_matches(coded, "|48065-7")
    assert token_matches([{"coding": [{"code": "x"}]}], "|x")


def test_prefetch_answers_each_template_with_the_chart() -> None:
    """A read gets the Patient; each search a searchset of its type, narrowed by `code`/`category` only."""
    templates = {
        "patient": "Patient/{{context.patientId}}",
        "labs": "Observation?patient={{context.patientId}}&code=http://loinc.org|48065-7&category=laboratory",
        "procedures": "Procedure?patient={{context.patientId}}&date=ge{{today() - 84 days}}",
    }
    body = hook_request(case(), templates, "hook-1")
    prefetch = body["prefetch"]
    assert prefetch["patient"]["id"] == "p9"
    assert [e["resource"]["id"] for e in prefetch["labs"]["entry"]] == ["o1"]
    assert [e["resource"]["id"] for e in prefetch["procedures"]["entry"]] == ["p1"]
    assert prefetch["labs"]["type"] == "searchset"
    assert set(prefetch) == set(templates)
    assert body["context"]["patientId"] == "p9"


def test_resource_types_nobody_asked_for_are_not_sent() -> None:
    """With today's three templates, Procedures and Encounters stay in the chart, as an EHR would keep them."""
    templates = {
        "patient": "Patient/{{context.patientId}}",
        "observations": "Observation?patient={{context.patientId}}",
        "conditions": "Condition?patient={{context.patientId}}",
    }
    prefetch = hook_request(case(), templates, "hook-2")["prefetch"]
    sent = {
        e["resource"]["resourceType"]
        for key in ("observations", "conditions")
        for e in prefetch[key]["entry"]
    }
    assert sent == {"Observation"}
    assert prefetch["conditions"]["total"] == 0
