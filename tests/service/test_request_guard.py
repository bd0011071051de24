"""Hostile input: JSON limits, media types and prefetch about another patient, each a 4xx outcome."""

from __future__ import annotations

import json
from typing import Any

import orjson
import pytest
from starlette.testclient import TestClient

from service.hooks.guards import (
    JsonLimits,
    LimitExceededError,
    RequestRefusedError,
    check_json_limits,
    decode_json_object,
    is_json_media_type,
)
from tests.fhir_builders import SNOMED, calf_pain, hook_request, observation

LIMITS = JsonLimits(max_depth=8, max_items=100, max_string=1024)


def check(document: Any, limits: JsonLimits = LIMITS) -> None:
    check_json_limits(document, limits, body_size=len(orjson.dumps(document)))


def nested(depth: int) -> Any:
    """`depth` levels of arrays around a string."""
    value: Any = "leaf"
    for _ in range(depth):
        value = [value]
    return value


def post(client: TestClient, body: bytes, content_type: str = "application/json") -> Any:
    return client.post("/cds-services/calf-pain", content=body, headers={"content-type": content_type})


def assert_outcome(response: Any, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status
    outcome: dict[str, Any] = response.json()
    assert outcome["resourceType"] == "OperationOutcome"
    assert outcome["issue"][0]["code"] == code
    return outcome


# --- the limits, unit by unit ----------------------------------------------------------------


def test_document_within_every_limit_passes() -> None:
    check({"a": [1, 2.5, True, None, "x" * 1024, {"b": nested(5)}]})


def test_nesting_over_the_limit_is_refused_with_its_location() -> None:
    document = {"context": {"a": {"b": {"c": {"d": {"e": {"f": {"g": {"h": 1}}}}}}}}}
    with pytest.raises(LimitExceededError) as raised:
        check(document)
    assert raised.value.limit == "depth"
    assert raised.value.pointer == "/context/a/b/c/d/e/f/g"


def test_exactly_the_depth_limit_passes() -> None:
    check({"a": {"b": {"c": {"d": {"e": {"f": {"g": {"h": 1}}}}}}}})


def test_array_over_the_limit_is_refused_with_its_location() -> None:
    with pytest.raises(LimitExceededError) as raised:
        check({"prefetch": {"entry": list(range(101))}})
    assert (raised.value.limit, raised.value.pointer) == ("items", "/prefetch/entry")


def test_object_with_too_many_members_is_refused() -> None:
    with pytest.raises(LimitExceededError) as raised:
        check({"context": {f"k{i}": i for i in range(101)}})
    assert raised.value.limit == "items"


def test_string_over_the_limit_is_refused_with_its_location() -> None:
    with pytest.raises(LimitExceededError) as raised:
        check({"a": [{"b": "x" * 1025}]})
    assert (raised.value.limit, raised.value.pointer) == ("string", "/a/0/b")


def test_escaped_string_is_measured_in_characters() -> None:
    """A string of escapes counts its decoded characters, however many bytes they took."""
    with pytest.raises(LimitExceededError):
        check({"a": '"' * 1025})


def test_pointer_escapes_slash_and_tilde() -> None:
    with pytest.raises(LimitExceededError) as raised:
        check({"a/b~c": "x" * 2000})
    assert raised.value.pointer == "/a~1b~0c"


@pytest.mark.parametrize(
    ("content_type", "accepted"),
    [
        (None, True),
        ("application/json", True),
        ("application/json; charset=utf-8", True),
        ("Application/JSON", True),
        ("application/fhir+json", True),
        ("text/plain", False),
        ("application/x-www-form-urlencoded", False),
        ("application/xml", False),
        ("multipart/form-data; boundary=x", False),
    ],
)
def test_json_media_types(content_type: str | None, accepted: bool) -> None:
    assert is_json_media_type(content_type) is accepted


@pytest.mark.parametrize(
    ("body", "limits", "status", "code", "reason"),
    [
        (b"{", None, 400, "structure", "malformed JSON"),
        (b"[1, 2]", None, 400, "structure", "not an object"),
        (orjson.dumps({"a": nested(9)}), LIMITS, 400, "too-long", "JSON limit: depth"),
    ],
    ids=["malformed", "not-an-object", "over-a-limit"],
)
def test_one_decoder_refuses_with_status_outcome_and_audit_reason(
    body: bytes, limits: JsonLimits | None, status: int, code: str, reason: str
) -> None:
    """The hook, feedback and $extract routes decode a body with the same function and refusals."""
    with pytest.raises(RequestRefusedError) as refused:
        decode_json_object(body, limits)
    assert (refused.value.status, refused.value.reason) == (status, reason)
    assert refused.value.outcome()["issue"][0]["code"] == code


def test_one_decoder_gives_the_object() -> None:
    assert decode_json_object(b'{"hook": "patient-view"}', LIMITS) == {"hook": "patient-view"}


# --- through the app -------------------------------------------------------------------------


def test_deep_nesting_gets_400(client: TestClient) -> None:
    body = hook_request([calf_pain()])
    body["context"]["extra"] = nested(100)
    outcome = assert_outcome(post(client, json.dumps(body).encode()), 400, "too-long")
    assert outcome["issue"][0]["expression"][0].startswith("/context/extra")


def test_nesting_past_what_orjson_parses_gets_400(client: TestClient) -> None:
    assert_outcome(post(client, b"[" * 5000 + b"]" * 5000), 400, "structure")


def test_long_array_gets_400(client: TestClient) -> None:
    body = hook_request([calf_pain()])
    body["prefetch"]["observations"]["entry"] = [{}] * 10_001
    outcome = assert_outcome(post(client, json.dumps(body).encode()), 400, "too-long")
    assert outcome["issue"][0]["expression"] == ["/prefetch/observations/entry"]


def test_long_string_gets_400(client: TestClient) -> None:
    body = hook_request([calf_pain(note=[{"text": "x" * 100_001}])])
    outcome = assert_outcome(post(client, json.dumps(body).encode()), 400, "too-long")
    assert outcome["issue"][0]["expression"] == ["/prefetch/observations/entry/0/resource/note/0/text"]


def test_non_json_content_type_gets_415(client: TestClient) -> None:
    body = json.dumps(hook_request([calf_pain()])).encode()
    assert_outcome(post(client, body, "application/x-www-form-urlencoded"), 415, "not-supported")


def test_invalid_utf8_gets_400(client: TestClient) -> None:
    assert_outcome(post(client, b'{"hook": "\xff\xfe"}'), 400, "structure")


def test_lone_surrogate_gets_400(client: TestClient) -> None:
    assert_outcome(post(client, b'{"hook": "\\ud800"}'), 400, "structure")


def test_observation_about_another_patient_gets_400(client: TestClient) -> None:
    """Prefetch that holds another patient's Observation is refused, and the outcome points at it."""
    body = hook_request([calf_pain(), observation(SNOMED, "300954003", patient_id="someone-else")])
    outcome = assert_outcome(post(client, json.dumps(body).encode()), 400, "invalid")
    assert outcome["issue"][0]["expression"] == ["/prefetch/observations/entry/1/resource/subject/reference"]


def test_absolute_reference_to_the_context_patient_is_accepted(client: TestClient) -> None:
    body = hook_request([calf_pain(subject={"reference": "https://ehr.example.org/fhir/Patient/p1"})])
    assert post(client, json.dumps(body).encode()).status_code == 200


@pytest.mark.parametrize(
    ("mutate", "status"),
    [
        (lambda b: b.update(context="not an object"), 400),
        (lambda b: b.update(prefetch=[]), 400),
        (lambda b: b["prefetch"].update(observations="text"), 400),
        (lambda b: b["prefetch"]["observations"].update(entry={"resource": {}}), 400),
        (lambda b: b["prefetch"].update(conditions={"resourceType": "Observation"}), 400),
        (lambda b: b["prefetch"].update(patient={"resourceType": "Practitioner", "id": "p1"}), 400),
        (lambda b: b["context"].update(patientId=42), 400),
        (lambda b: b.update(hookInstance=["x"]), 400),
        (lambda b: b.update(fhirServer="ftp://ehr.example.org"), 400),
        (lambda b: b.update(fhirAuthorization={"access_token": "t"}), 400),
    ],
    ids=[
        "context-not-object",
        "prefetch-array",
        "prefetch-key-string",
        "bundle-entry-not-list",
        "wrong-resource-type",
        "patient-wrong-type",
        "patient-id-number",
        "hook-instance-array",
        "fhir-server-not-http",
        "fhir-authorization-incomplete",
    ],
)
def test_wrong_types_get_4xx_outcomes(client: TestClient, mutate: Any, status: int) -> None:
    """Wrong types anywhere in the request: a 4xx OperationOutcome, never a 500."""
    body = hook_request([calf_pain()])
    mutate(body)
    response = post(client, json.dumps(body).encode())
    assert response.status_code == status
    assert response.json()["resourceType"] == "OperationOutcome"
