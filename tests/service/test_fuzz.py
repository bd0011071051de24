"""Fuzzing the HTTP app: schemathesis from its OpenAPI document, Hypothesis over FHIR requests.

Whatever comes in, nothing answers 5xx: a request is cards (each passing the response checker)
or a 4xx OperationOutcome. Every request is signed by the development issuer, so the fuzzers get
past authentication and reach the parts that read the body; one fuzzer attacks the
Authorization header itself. Examples are bounded so the suite stays fast.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error
from schemathesis.config import SchemathesisConfig
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    positive_data_acceptance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from starlette.testclient import TestClient

from cds_hooks.card_contract import card_problems
from service.app import create_app
from service.auth.dev_issuer import DevIssuer
from service.config import Settings
from tests.fhir_builders import NOW
from tests.signing import signed_client
from tests.strategies import damaged_requests, hook_requests, json_values

# The project's schemathesis settings (UTF-8 strings; the hook's expected answers to schema-valid
# data that JSON Schema cannot rule out): the same file `st run` reads.
CONFIG = SchemathesisConfig.from_path(str(Path(__file__).resolve().parents[2] / "schemathesis.toml"))
# Only its OpenAPI document is used: this app is never started.
schema = schemathesis.openapi.from_dict(
    create_app(Settings(data_dir=Path("unused"), dev=True)).openapi(), config=CONFIG
)
FUZZ = settings(
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large],
)


@pytest.fixture(scope="module")
def fuzz_client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    """The app, trusting the development issuer; every request signed unless it has a header."""
    data_dir = tmp_path_factory.mktemp("fuzz") / "data"
    app = create_app(Settings(data_dir=data_dir, dev=True), clock=lambda: NOW)
    with signed_client(app, DevIssuer.load_or_create(data_dir)) as test_client:
        yield test_client


def assert_answered(response: Any) -> None:
    """Cards that pass the checker, or a 4xx OperationOutcome; never a 5xx."""
    assert response.status_code < 500, response.text
    if response.status_code == 200 and not response.content.startswith(b"{"):
        return  # the governance report (HTML) or feedback's empty 200: validated by the schema checks
    body = response.json()
    cards = body.get("cards", []) if isinstance(body, dict) else []
    event(f"HTTP {response.status_code}" + (" with cards" if cards else ""))
    if response.status_code == 200:
        assert all(card_problems(card) == [] for card in body.get("cards", []))
    else:
        assert 400 <= response.status_code < 500
        assert body["resourceType"] == "OperationOutcome"


@schema.parametrize()
@FUZZ
def test_openapi_fuzzing_finds_no_server_error(case: schemathesis.Case, fuzz_client: TestClient) -> None:
    """schemathesis, positive and negative, against the documented operations: no 5xx, answers as
    documented (status, content type, headers, body schema), invalid data refused, valid data taken."""
    kwargs = case.as_transport_kwargs(base_url="http://testserver")
    sent = kwargs.get("headers") or {}
    headers = {k: v for k, v in sent.items() if k.lower() != "authorization"}
    # A case with a credential gets a valid one in its place (the client signs); a case that leaves
    # the header out (a negative case) is sent without one, and must be refused.
    signed = any(k.lower() == "authorization" for k in sent)
    response = fuzz_client.request(
        kwargs["method"],
        kwargs["url"],
        headers=headers,
        params=kwargs.get("params"),
        content=_content(kwargs),
        **({} if signed else {"auth": None}),
    )
    case.validate_response(
        response,
        checks=[
            not_a_server_error,
            status_code_conformance,
            content_type_conformance,
            response_headers_conformance,
            response_schema_conformance,
            negative_data_rejection,
            positive_data_acceptance,
        ],
    )
    assert_answered(response)


def _content(kwargs: dict[str, Any]) -> bytes | None:
    import json

    if kwargs.get("json") is not None or "json" in kwargs:
        return json.dumps(kwargs["json"]).encode()
    data = kwargs.get("data")
    if isinstance(data, str):
        return data.encode()
    return data if isinstance(data, bytes) else None


@given(body=hook_requests())
@FUZZ
def test_plausible_fhir_requests_get_no_server_error(fuzz_client: TestClient, body: dict[str, Any]) -> None:
    """patient-view requests with generated Observations, Conditions and Patient: cards or a 4xx."""
    assert_answered(fuzz_client.post("/cds-services/calf-pain", json=body))


@given(body=damaged_requests())
@FUZZ
def test_damaged_fhir_requests_get_no_server_error(fuzz_client: TestClient, body: dict[str, Any]) -> None:
    """The same, with members replaced by JSON of any type anywhere: cards or a 4xx."""
    assert_answered(fuzz_client.post("/cds-services/calf-pain", json=body))


@given(body=json_values)
@FUZZ
def test_any_json_gets_no_server_error(fuzz_client: TestClient, body: Any) -> None:
    assert_answered(fuzz_client.post("/cds-services/calf-pain", json=body))


@given(body=st.binary(max_size=200))
@FUZZ
def test_any_bytes_get_no_server_error(fuzz_client: TestClient, body: bytes) -> None:
    assert_answered(
        fuzz_client.post(
            "/cds-services/calf-pain", content=body, headers={"content-type": "application/json"}
        )
    )


@given(
    authorization=st.one_of(
        st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=80),
        st.builds(
            lambda parts: "Bearer " + ".".join(parts),
            st.lists(
                st.text(
                    alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_", max_size=40
                ),
                max_size=4,
            ),
        ),
        st.sampled_from(
            ["Bearer eyJhbGciOiJub25lIn0.e30.", "Bearer eyJhbGciOiJFUzM4NCIsImtpZCI6MX0.e30.AA", "Bearer "]
        ),
    )
)
@FUZZ
def test_any_authorization_header_is_refused_without_server_error(
    fuzz_client: TestClient, authorization: str
) -> None:
    """Garbage where the token should be: 401 (never 5xx, never accepted)."""
    response = fuzz_client.get("/cds-services", headers={"Authorization": authorization})
    assert response.status_code == 401
    challenge = response.headers["www-authenticate"]
    assert challenge == "Bearer" or challenge.startswith('Bearer error="invalid_token", error_description="')
