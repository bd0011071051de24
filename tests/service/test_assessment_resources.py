"""The published FHIR resources: the Questionnaire, its CodeSystems and ValueSets, read without a token."""

from __future__ import annotations

import pytest
from fhir.resources.R4B.codesystem import CodeSystem
from fhir.resources.R4B.questionnaire import Questionnaire
from fhir.resources.R4B.valueset import ValueSet
from starlette.testclient import TestClient

from fhir_mappings.conformance import published


def test_the_questionnaire_is_published_without_a_token(client: TestClient) -> None:
    """GET /fhir/Questionnaire/calf-pain-assessment answers FHIR JSON that validates, with no JWT."""
    response = client.get("/fhir/Questionnaire/calf-pain-assessment", auth=None)
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/fhir+json"
    questionnaire = Questionnaire.model_validate(response.json())
    assert questionnaire.url == "http://calf-cds.org/fhir/Questionnaire/calf-pain-assessment"


@pytest.mark.parametrize("codesystem", ["finding", "recommendation", "override-reason", "orderable"])
def test_the_codesystems_are_published(client: TestClient, codesystem: str) -> None:
    """Every project CodeSystem is readable and valid."""
    response = client.get(f"/fhir/CodeSystem/{codesystem}", auth=None)
    assert response.status_code == 200
    assert (
        CodeSystem.model_validate(response.json()).url == f"http://calf-cds.org/fhir/CodeSystem/{codesystem}"
    )


def test_every_published_valueset_is_valid_fhir() -> None:
    """Every ValueSet built from valuesets.json validates, and names each of its codes."""
    valuesets = [r for (kind, _), r in published().items() if kind == "ValueSet"]
    assert len(valuesets) > 50
    for resource in valuesets:
        ValueSet.model_validate(resource)
        assert all(include["concept"] for include in resource["compose"]["include"])


def test_a_valueset_is_read_by_its_name(client: TestClient) -> None:
    """GET /fhir/ValueSet/tenderness holds SNOMED CT 247348008."""
    body = client.get("/fhir/ValueSet/tenderness", auth=None).json()
    assert body["compose"]["include"][0]["concept"][0]["code"] == "247348008"


@pytest.mark.parametrize(
    "path", ["/fhir/Questionnaire/other", "/fhir/Patient/calf-pain-assessment", "/fhir/ValueSet/%3Cscript%3E"]
)
def test_anything_else_is_a_404_outcome(client: TestClient, path: str) -> None:
    """Unknown ids and resource types are 404 OperationOutcomes that do not echo the request."""
    response = client.get(path, auth=None)
    assert response.status_code == 404
    assert response.json()["resourceType"] == "OperationOutcome"
    assert "<script>" not in response.text
