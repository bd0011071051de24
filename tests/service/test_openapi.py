"""The OpenAPI document describes the CDS Hooks endpoints well enough to call them (and fuzz them)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from starlette.testclient import TestClient

from tests.fhir_builders import calf_pain, finding, hook_request, quantity

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def document(client: TestClient) -> dict[str, Any]:
    response = client.get("/openapi.json", auth=None)
    assert response.status_code == 200
    body: dict[str, Any] = response.json()
    return body


def validator(document: dict[str, Any], name: str) -> jsonschema.Draft202012Validator:
    return jsonschema.Draft202012Validator(
        {"$ref": f"#/components/schemas/{name}", "components": document["components"]}
    )


def test_the_hook_takes_a_calf_pain_request_and_answers_cards_or_outcomes(document: dict[str, Any]) -> None:
    operation = document["paths"]["/cds-services/{service_id}"]["post"]
    body_schema = operation["requestBody"]["content"]["application/json"]["schema"]
    assert body_schema == {"$ref": "#/components/schemas/CalfPainRequest"}
    assert set(operation["responses"]) == {"200", "400", "401", "404", "412", "413", "415", "503"}
    assert operation["responses"]["200"]["content"]["application/json"]["schema"]["$ref"].endswith(
        "/HookResponse"
    )
    assert operation["responses"]["401"]["content"]["application/json"]["schema"]["$ref"].endswith(
        "/OperationOutcome"
    )


def test_discovery_and_hook_need_the_client_jwt_and_probes_do_not(document: dict[str, Any]) -> None:
    scheme = document["components"]["securitySchemes"]["cdsClientJwt"]
    assert (scheme["type"], scheme["scheme"], scheme["bearerFormat"]) == ("http", "bearer", "JWT")
    assert document["paths"]["/cds-services"]["get"]["security"] == [{"cdsClientJwt": []}]
    assert document["paths"]["/cds-services/{service_id}"]["post"]["security"] == [{"cdsClientJwt": []}]
    assert "/healthz" not in document["paths"]


def test_the_readme_example_fits_the_documented_request(document: dict[str, Any]) -> None:
    example = json.loads((ROOT / "examples" / "patient-view-calf-pain.json").read_text())
    validator(document, "CalfPainRequest").validate(example)


def test_a_real_answer_fits_the_documented_response(document: dict[str, Any], client: TestClient) -> None:
    body = hook_request(
        [
            calf_pain(),
            finding("calf-circumference-difference", quantity(3.4, "cm")),
            finding("entire-leg-swollen"),
        ]
    )
    answer = client.post("/cds-services/calf-pain", json=body).json()
    assert answer["cards"]
    validator(document, "HookResponse").validate(answer)


def test_an_error_fits_the_documented_operation_outcome(document: dict[str, Any], client: TestClient) -> None:
    answer = client.post(
        "/cds-services/calf-pain", content=b"{", headers={"content-type": "application/json"}
    )
    validator(document, "OperationOutcome").validate(answer.json())
    unauthenticated = client.get("/cds-services", auth=None)
    validator(document, "OperationOutcome").validate(unauthenticated.json())


def test_no_unused_422_schemas_are_left(document: dict[str, Any]) -> None:
    assert "HTTPValidationError" not in document["components"]["schemas"]


def test_a_method_not_allowed_names_the_allowed_ones(client: TestClient) -> None:
    """A 405 carries `Allow` (RFC 9110), as schemathesis's unsupported-method check asks."""
    response = client.request("TRACE", "/cds-services")
    assert response.status_code == 405
    assert response.headers["allow"] == "GET"
    assert response.json()["resourceType"] == "OperationOutcome"


@pytest.mark.parametrize("since", ["0.0", "2026-13-01", "20261120", "2026-11-20T00:00"])
def test_the_report_takes_only_a_full_date(client: TestClient, since: str) -> None:
    """`since` is YYYY-MM-DD as documented; pydantic alone would have read `0.0` as 1970-01-01."""
    response = client.get("/governance/report", params={"since": since})
    assert response.status_code == 400
    assert response.json()["issue"][0]["expression"] == ["since"]


@pytest.mark.parametrize(
    ("entry", "valid"),
    [
        ({"card": "c", "outcome": "accepted", "outcomeTimestamp": "2026-11-20T09:05:00Z"}, False),
        ({"card": "c", "outcome": "accepted", "acceptedSuggestions": [{"id": "s"}],
          "outcomeTimestamp": "2026-11-20T09:05:00Z"}, True),
        ({"card": "c", "outcome": "overridden", "acceptedSuggestions": [{"id": "s"}],
          "outcomeTimestamp": "2026-11-20T09:05:00Z"}, False),
        ({"card": "c", "outcome": "overridden", "overrideReason": {},
          "outcomeTimestamp": "2026-11-20T09:05:00Z"}, False),
    ],
)  # fmt: skip
def test_the_feedback_rules_are_in_the_document(
    document: dict[str, Any], entry: dict[str, Any], valid: bool
) -> None:
    """cds-fb-2 and cds-fb-3, which the service checks in code, are in the schema too."""
    schema = {"$ref": "#/components/schemas/FeedbackRequest", "components": document["components"]}
    errors = list(jsonschema.Draft202012Validator(schema).iter_errors({"feedback": [entry]}))
    assert (errors == []) == valid
