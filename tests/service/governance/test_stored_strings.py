"""Strings the request model accepts but the audit schema cannot hold are refused at the edge.

Every decision of the README's table "What the audit trail stores" is one case here, on SQLite and
on PostgreSQL (which refuses NUL and over-long strings itself): the call is a 400 (or 404) before
any card is computed, and its own audit record is written like any other, never a dead letter.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy import Engine, select
from starlette.testclient import TestClient

from service.store.schema import dead_letters, feedback, hook_calls
from tests.fhir_builders import hook_request
from tests.service.governance.conftest import CLAUDICATION, count, wait_for

Edit = Callable[[dict[str, Any]], None]


def _context(**values: str) -> Edit:
    return lambda body: body["context"].update(values)


REFUSED_CALLS = [
    pytest.param(lambda b: b.update(hook="h" * 65), "/hook", id="hook-over-64"),
    pytest.param(lambda b: b.update(hook="patient-view\x00"), "/hook", id="hook-nul"),
    pytest.param(_context(userId="Practitioner/" + "u" * 244), "/context", id="userId-over-256"),
    pytest.param(_context(userId="Practitioner/\x00"), "/context", id="userId-nul"),
    pytest.param(
        lambda b: b.update(fhirServer="https://ehr.example.org/" + "f" * 2030),
        "/fhirServer",
        id="fhirServer-over-2048",
    ),
    pytest.param(lambda b: b.update(hookInstance="i" * 129), "/hookInstance", id="hookInstance-over-128"),
    pytest.param(lambda b: b.update(hookInstance="a\x00b"), "/hookInstance", id="hookInstance-nul"),
    pytest.param(
        lambda b: b.update(fhirServer="https://ehr.example.org/\x00"), "/fhirServer", id="fhirServer-nul"
    ),
]


@pytest.mark.parametrize(("edit", "pointer"), REFUSED_CALLS)
def test_an_unstorable_string_is_a_400_and_the_call_is_audited(
    gov_client: TestClient, engine: Engine, edit: Edit, pointer: str
) -> None:
    """400 OperationOutcome at the offending member, no card; its audit record is in the table."""
    body = hook_request(CLAUDICATION)
    edit(body)
    response = gov_client.post("/cds-services/calf-pain", json=body)
    assert response.status_code == 400, response.text
    outcome = response.json()
    assert outcome["resourceType"] == "OperationOutcome"
    assert outcome["issue"][0]["expression"] == [pointer]
    wait_for(lambda: count(engine, select(hook_calls)) == 1)
    with engine.connect() as connection:
        row = connection.execute(select(hook_calls)).mappings().one()
    assert (row["status_code"], row["cards"]) == (400, [])
    assert count(engine, select(dead_letters)) == 0


@pytest.mark.parametrize("service_id", ["x" * 100, "calf\x00pain"], ids=["long", "nul"])
def test_an_unknown_service_id_is_audited_with_the_id_in_full(
    gov_client: TestClient, engine: Engine, service_id: str
) -> None:
    """404; the record keeps a storable id in its 64-character column and the id as sent in `error`."""
    from urllib.parse import quote

    response = gov_client.post(f"/cds-services/{quote(service_id)}", json=hook_request(CLAUDICATION))
    assert response.status_code == 404
    wait_for(lambda: count(engine, select(hook_calls)) == 1)
    with engine.connect() as connection:
        row = connection.execute(select(hook_calls)).mappings().one()
    assert len(row["service_id"]) <= 64
    assert "\x00" not in row["service_id"]
    assert json.loads(row["error"].removeprefix("unknown service ")) == service_id


def _entry(**overrides: Any) -> dict[str, Any]:
    entry = {"card": str(uuid.uuid4()), "outcome": "overridden", "outcomeTimestamp": "2026-11-20T09:05:00Z",
             "overrideReason": {"reason": {"system": "http://example.org/reasons", "code": "not-relevant",
                                           "display": "Not relevant"}, "userComment": "seen"}}  # fmt: skip
    return entry | overrides


def _reason(**values: str) -> dict[str, Any]:
    reason = _entry()["overrideReason"]
    reason["reason"] |= values
    return reason


REFUSED_FEEDBACK = [
    pytest.param(_entry(overrideReason=_reason(system="http://x.org/" + "s" * 250)), id="system-over-256"),
    pytest.param(_entry(overrideReason=_reason(code="c" * 129)), id="code-over-128"),
    pytest.param(_entry(overrideReason=_reason(display="d" * 513)), id="display-over-512"),
    pytest.param(_entry(overrideReason={"userComment": "u" * 4001}), id="comment-over-4000"),
    pytest.param(_entry(card="c" * 129), id="card-over-128"),
    pytest.param(_entry(overrideReason={"userComment": "no\x00pe"}), id="comment-nul"),
    pytest.param(_entry(card="card\x00"), id="card-nul"),
]


@pytest.mark.parametrize("entry", REFUSED_FEEDBACK)
def test_unstorable_feedback_is_a_400_and_stores_nothing(
    gov_client: TestClient, engine: Engine, entry: dict[str, Any]
) -> None:
    """Feedback the table could not hold is refused whole, before anything is queued."""
    response = gov_client.post("/cds-services/calf-pain/feedback", json={"feedback": [entry]})
    assert response.status_code == 400, response.text
    assert response.json()["resourceType"] == "OperationOutcome"
    good = gov_client.post("/cds-services/calf-pain/feedback", json={"feedback": [_entry()]})
    assert good.status_code == 200
    wait_for(lambda: count(engine, select(feedback)) == 1)
    assert count(engine, select(dead_letters)) == 0


def test_nul_inside_prefetched_resources_is_stored_as_it_came(gov_client: TestClient, engine: Engine) -> None:
    """A NUL where only JSON columns keep it (a prefetched resource, an unknown member): cards, and a
    record whose JSON holds the character escaped, not lost and not refused."""
    body = hook_request(CLAUDICATION)
    body["prefetch"]["observations"]["entry"][0]["resource"]["note"] = [{"text": "seen\x00twice"}]
    body["context"]["x\x00"] = "unknown member"
    response = gov_client.post("/cds-services/calf-pain", json=body)
    assert response.status_code == 200, response.text
    assert response.json()["cards"]
    wait_for(lambda: count(engine, select(hook_calls)) == 1)
    assert count(engine, select(dead_letters)) == 0


def test_the_longest_storable_strings_are_stored_in_full(gov_client: TestClient, engine: Engine) -> None:
    """At the limits (userId 256, fhirServer 2048) a call is answered and audited, nothing cut."""
    user = "Practitioner/" + "u" * 243
    server = "https://ehr.example.org/" + "f" * 2024
    body = hook_request(CLAUDICATION)
    body["context"]["userId"] = user
    body["fhirServer"] = server
    response = gov_client.post("/cds-services/calf-pain", json=body)
    assert response.status_code == 200, response.text
    wait_for(lambda: count(engine, select(hook_calls)) == 1)
    with engine.connect() as connection:
        row = connection.execute(select(hook_calls)).mappings().one()
    assert (row["user_id"], row["fhir_server"]) == (user, server)
