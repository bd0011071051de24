"""The web app in process: discovery, cards, every error as an OperationOutcome, the audit row."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from fhir.resources.R4B.servicerequest import ServiceRequest
from sqlalchemy import create_engine, select
from starlette.testclient import TestClient

from service.auth.dev_issuer import DevIssuer
from service.config import Settings
from service.store.schema import hook_calls
from tests.fhir_builders import SNOMED, calf_pain, condition, finding, hook_request, patient, quantity
from tests.signing import signed_client

DVT = [
    calf_pain(),
    finding("calf-circumference-difference", quantity(3.4, "cm")),
    finding("entire-leg-swollen"),
]


def call(client: TestClient, body: Any) -> Any:
    return client.post("/cds-services/calf-pain", json=body)


def audit_rows(settings: Settings, expected: int) -> list[Any]:
    engine = create_engine(settings.resolved_database_url())
    deadline = time.monotonic() + 10
    while True:
        with engine.connect() as connection:
            rows = connection.execute(select(hook_calls)).mappings().all()
        if len(rows) >= expected or time.monotonic() > deadline:
            return list(rows)
        time.sleep(0.05)


def assert_outcome(response: Any, status: int) -> dict[str, Any]:
    assert response.status_code == status
    body: dict[str, Any] = response.json()
    assert body["resourceType"] == "OperationOutcome"
    assert body["issue"][0]["severity"] == "error"
    assert "Traceback" not in response.text
    return body


def test_discovery_lists_the_calf_pain_service(client: TestClient) -> None:
    """GET /cds-services names the patient-view service `calf-pain` with its prefetch (first, then the
    order services of the default pack, 1.2.0)."""
    service, *orders = client.get("/cds-services").json()["services"]
    assert [s["id"] for s in orders] == ["calf-pain-order-select", "calf-pain-order-sign"]
    assert (service["id"], service["hook"]) == ("calf-pain", "patient-view")
    assert service["prefetch"]["patient"] == "Patient/{{context.patientId}}"


def test_order_services_are_not_listed_when_the_active_pack_answers_only_patient_view(
    settings: Settings, dev_issuer: DevIssuer
) -> None:
    """With 1.1.0 active (patient-view rules only) discovery lists calf-pain alone and an order
    service is an unknown service (404)."""
    older = settings.model_copy(update={"active_pack": "calf-pain@1.1.0"})
    from service.app import create_app

    with signed_client(create_app(older), dev_issuer) as client:
        assert [s["id"] for s in client.get("/cds-services").json()["services"]] == ["calf-pain"]
        body = {"hook": "order-sign", "hookInstance": "x", "context": {}}
        assert client.post("/cds-services/calf-pain-order-sign", json=body).status_code == 404


def test_dvt_signs_give_a_complete_duplex_card(client: TestClient, settings: Settings) -> None:
    """A duplex-dvt card carries every element the contract asks for."""
    response = call(client, hook_request(DVT))
    assert response.status_code == 200
    (card,) = response.json()["cards"]
    assert card["source"]["topic"] == {
        "system": "http://calf-cds.org/fhir/CodeSystem/recommendation",
        "code": "duplex-dvt",
        "display": "DVT work-up (ultrasound and/or D-dimer)",
    }
    assert len(card["summary"]) < 140
    assert card["indicator"] == "warning"
    assert settings.active_pack in card["source"]["label"]
    assert card["source"]["url"].startswith("https://")
    assert "Calf circumference difference: **3.4 cm**" in card["detail"]
    assert "**Not recorded:** Active cancer" in card["detail"]
    assert card["selectionBehavior"] == "at-most-one"
    assert card["uuid"]
    assert all(reason["display"] for reason in card["overrideReasons"])
    resource = card["suggestions"][0]["actions"][0]["resource"]
    ServiceRequest.model_validate(resource)
    assert resource["subject"] == {"reference": "Patient/p1"}


def test_no_calf_pain_gives_no_cards(client: TestClient) -> None:
    """Without a documented calf complaint the answer is an empty card list."""
    response = call(client, hook_request([finding("warmth")]))
    assert response.json() == {"cards": []}


def test_readme_example_returns_a_card(client: TestClient) -> None:
    """The request the README prints returns a duplex-dvt card."""
    with open("examples/patient-view-calf-pain.json") as handle:
        body = json.load(handle)
    topics = [c["source"]["topic"]["code"] for c in call(client, body).json()["cards"]]
    assert topics == ["duplex-dvt"]


@pytest.mark.parametrize(
    ("content", "status"),
    [
        (b"{not json", 400),
        (b"[1, 2, 3]", 400),
        (json.dumps({"hook": "patient-view"}).encode(), 400),
        (json.dumps(hook_request([]) | {"hook": "order-sign"}).encode(), 400),
        (json.dumps(hook_request([], patient_resource=patient("other"))).encode(), 400),
    ],
    ids=["malformed-json", "not-an-object", "missing-fields", "wrong-hook", "other-patient"],
)
def test_bad_requests_get_400_operation_outcomes(client: TestClient, content: bytes, status: int) -> None:
    """Malformed or inconsistent requests get a 400 with an OperationOutcome."""
    response = client.post(
        "/cds-services/calf-pain", content=content, headers={"content-type": "application/json"}
    )
    assert_outcome(response, status)


def test_missing_field_is_located(client: TestClient) -> None:
    """The OperationOutcome points at the missing field."""
    body = hook_request([])
    del body["hookInstance"]
    outcome = assert_outcome(call(client, body), 400)
    assert outcome["issue"][0]["expression"] == ["/hookInstance"]


def test_unknown_service_is_404(client: TestClient) -> None:
    assert_outcome(call_path(client, "/cds-services/nope"), 404)


def call_path(client: TestClient, path: str) -> Any:
    return client.post(path, json=hook_request([]))


def test_body_too_large_is_413(settings: Settings, dev_issuer: DevIssuer) -> None:
    """With no oversize allowance, a body over the configured limit is refused before it is parsed."""
    from service.app import create_app

    small = settings.model_copy(update={"max_body_bytes": 2048, "max_oversized_body_bytes": 0})
    with signed_client(create_app(small), dev_issuer) as client:
        assert_outcome(call(client, hook_request([calf_pain() for _ in range(30)])), 413)


def test_oversized_prefetch_without_fhir_server_is_413(settings: Settings, dev_issuer: DevIssuer) -> None:
    """An oversized whole-chart prefetch with no fhirServer to fetch from instead is a 413 that says what to send."""
    from service.app import create_app

    small = settings.model_copy(update={"max_body_bytes": 2048})
    with signed_client(create_app(small), dev_issuer) as client:
        outcome = assert_outcome(call(client, hook_request([calf_pain() for _ in range(30)])), 413)
    assert "narrowed templates" in outcome["issue"][0]["diagnostics"]


def test_missing_prefetch_without_fhir_server_is_412(client: TestClient) -> None:
    """Prefetch missing and nowhere to fetch it from: 412."""
    body = hook_request([])
    del body["prefetch"]["observations"]
    assert_outcome(call(client, body), 412)


def test_every_call_is_audited_without_the_access_token(client: TestClient, settings: Settings) -> None:
    """The audit row links request, pack version and hash, facts with sources, and cards — never the token."""
    body = hook_request(DVT) | {
        "fhirServer": "https://ehr.example.org/fhir",
        "fhirAuthorization": {
            "access_token": "secret-token-123",
            "token_type": "Bearer",
            "expires_in": 300,
            "scope": "patient/*.read",
            "subject": "cds",
        },
    }
    card = call(client, body).json()["cards"][0]
    call(client, {"not": "valid"})
    rows = audit_rows(settings, 2)
    ok = next(r for r in rows if r["status_code"] == 200)
    assert ok["hook_instance"] == body["hookInstance"]
    assert f"{ok['pack_id']}@{ok['pack_version']}" == settings.active_pack
    assert ok["pack_hash"].startswith("sha256:")
    assert ok["cards"][0]["uuid"] == card["uuid"]
    assert ok["cards"][0]["topic"] == "duplex-dvt"
    assert ok["facts"]["entire_leg_swollen"]["evidence"][0]["reference"].startswith("Observation/")
    assert any(r["status_code"] == 400 for r in rows)
    assert all("secret-token-123" not in json.dumps(dict(r), default=str) for r in rows)


def test_condition_only_record_is_read(client: TestClient) -> None:
    """Conditions coded in SNOMED CT count as evidence too."""
    body = hook_request([calf_pain(), condition(SNOMED, "128053003", clinical="resolved", days_ago=700)])
    (card,) = call(client, body).json()["cards"]
    assert "Previously documented DVT ·" in card["detail"]  # a decisive finding, with its date
