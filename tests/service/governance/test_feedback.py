"""CDS Hooks feedback: spec-exact, validated, linked to the audited card, written off the response path."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, create_engine, select
from starlette.testclient import TestClient

from service.config import Settings
from service.governance.feedback import UNLINKED_NOTE
from service.hooks.cards import OVERRIDE_SYSTEM
from service.store.schema import feedback, hook_calls
from tests.service.governance.conftest import CLAUDICATION, DVT, call, count, wait_for
from tests.signing import dev_client

SPEC = Path(__file__).parents[2] / "data" / "cds-hooks-spec" / "examples-v2.0.1"
FEEDBACK_URL = "/cds-services/calf-pain/feedback"


def spec_example(name: str) -> dict[str, Any]:
    document: dict[str, Any] = json.loads((SPEC / name).read_text())
    return document


def rows(settings: Settings, expected: int) -> list[Any]:
    engine = create_engine(settings.resolved_database_url())
    try:
        wait_for(lambda: count(engine, select(feedback)) >= expected)
        with engine.connect() as connection:
            return list(
                connection.execute(select(feedback).order_by(feedback.c.outcome_timestamp)).mappings()
            )
    finally:
        engine.dispose()


def assert_outcome(response: Any, status: int, pointer: str | None = None) -> None:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["resourceType"] == "OperationOutcome"
    assert "Traceback" not in response.text
    if pointer is not None:
        assert body["issue"][0]["expression"] == [pointer]


@pytest.mark.parametrize(
    "example",
    [
        "19-feedback-accepted.json",
        "20-feedback-overridden-no-reason.json",
        "21-feedback-overridden-with-reason.json",
    ],
)
def test_spec_examples_are_accepted(gov_client: TestClient, gov_settings: Settings, example: str) -> None:
    """Each of the specification's feedback examples gets 200 with an empty body, and is stored."""
    response = gov_client.post(FEEDBACK_URL, json=spec_example(example))
    assert response.status_code == 200
    assert response.content == b""
    (row,) = rows(gov_settings, 1)
    assert row["card_uuid"] == spec_example(example)["feedback"][0]["card"]


def test_feedback_links_to_the_audited_card(gov_client: TestClient, gov_settings: Settings) -> None:
    """An accepted card and an overridden one are linked to their call, rule, pack version and topic."""
    (dvt_card,) = call(gov_client, DVT)
    (abi_card,) = call(gov_client, CLAUDICATION)
    engine = create_engine(gov_settings.resolved_database_url())
    wait_for(lambda: count(engine, select(hook_calls)) >= 2)
    engine.dispose()
    body = {
        "feedback": [
            {
                "card": dvt_card["uuid"],
                "outcome": "accepted",
                "acceptedSuggestions": [{"id": dvt_card["suggestions"][0]["uuid"]}],
                "outcomeTimestamp": "2026-11-20T09:05:00Z",
            },
            {
                "card": abi_card["uuid"],
                "outcome": "overridden",
                "overrideReason": {
                    "reason": {
                        "system": "http://terminology.hl7.org/CodeSystem/cdshooks-override-reason",
                        "code": "already-done",
                        "display": "Already done",
                    },
                    "userComment": "ABI done at the vascular clinic last week",
                },
                "outcomeTimestamp": "2026-11-20T09:06:00+00:00",
            },
        ]
    }
    assert gov_client.post(FEEDBACK_URL, json=body).status_code == 200
    accepted, overridden = rows(gov_settings, 2)
    assert accepted["outcome"] == "accepted"
    assert accepted["topic"] == "duplex-dvt"
    assert accepted["rule_id"] == "dvt-workup"
    assert accepted["pack_version"] == "0.1.0"
    assert accepted["call_id"] is not None
    assert accepted["accepted_suggestions"] == [dvt_card["suggestions"][0]["uuid"]]
    assert accepted["note"] is None
    assert overridden["topic"] == "abi"
    assert overridden["override_reason_code"] == "already-done"
    assert overridden["override_reason_display"] == "Already done"
    assert overridden["user_comment"] == "ABI done at the vascular clinic last week"


@pytest.mark.parametrize(
    ("reason", "display"),
    [
        ({"system": OVERRIDE_SYSTEM, "code": "not-relevant-today"}, "Not relevant to today's visit"),
        ({"code": "not-relevant-today"}, "Not relevant to today's visit"),
        ({"system": OVERRIDE_SYSTEM, "code": "not-one-of-ours"}, None),
        ({"system": "http://example.org/other", "code": "not-relevant-today"}, None),
    ],
    ids=["sandbox-code-and-system", "code-only", "unknown-code", "other-system"],
)
def test_override_reason_without_display_takes_ours(
    gov_client: TestClient, gov_settings: Settings, reason: dict[str, str], display: str | None
) -> None:
    """The CDS Hooks Sandbox sends code (and system) only: the audit gets the display our card offered."""
    (card,) = call(gov_client, CLAUDICATION)
    offered = {r["code"]: r["display"] for r in card["overrideReasons"]}
    body = {
        "feedback": [
            {
                "card": card["uuid"],
                "outcome": "overridden",
                "overrideReason": {"reason": reason},
                "outcomeTimestamp": "2026-11-20T09:06:00Z",
            }
        ]
    }
    assert gov_client.post(FEEDBACK_URL, json=body).status_code == 200
    (row,) = rows(gov_settings, 1)
    assert row["override_reason_code"] == reason["code"]
    assert row["override_reason_display"] == display
    assert display is None or offered[reason["code"]] == display


def test_unknown_card_is_stored_with_a_note(gov_client: TestClient, gov_settings: Settings) -> None:
    """The spec asks services to accept feedback; a card we never audited is kept, unlinked, with a note."""
    assert gov_client.post(FEEDBACK_URL, json=spec_example("19-feedback-accepted.json")).status_code == 200
    (row,) = rows(gov_settings, 1)
    assert row["call_id"] is None
    assert row["note"] == UNLINKED_NOTE


def test_accepted_suggestion_from_another_card_is_noted(
    gov_client: TestClient, gov_settings: Settings
) -> None:
    """A suggestion id that the card never offered is stored, and the mismatch noted."""
    (card,) = call(gov_client, DVT)
    engine = create_engine(gov_settings.resolved_database_url())
    wait_for(lambda: count(engine, select(hook_calls)) >= 1)
    engine.dispose()
    entry = {"card": card["uuid"], "outcome": "accepted", "acceptedSuggestions": [{"id": "not-offered"}],
             "outcomeTimestamp": "2026-11-20T09:05:00Z"}  # fmt: skip
    assert gov_client.post(FEEDBACK_URL, json={"feedback": [entry]}).status_code == 200
    (row,) = rows(gov_settings, 1)
    assert row["call_id"] is not None
    assert "not-offered" in row["note"]


def test_feedback_before_its_call_record_is_linked_later(engine: Engine, tmp_path: Path) -> None:
    """After an outage the feedback may be written first; the maintenance pass links it."""
    from service.governance import database
    from service.governance.feedback import FeedbackWriter, relink
    from service.store.writers import AuditWriter
    from tests.service.governance.test_migrations import _call

    database.upgrade(engine)
    writer = FeedbackWriter(engine, tmp_path)
    record = {"feedback_id": "f1", "received_at": "2026-11-20T09:00:00+00:00", "card_uuid": "card-9",
              "outcome": "overridden", "accepted_suggestions": [], "outcome_timestamp": "2026-11-20T09:00:00+00:00",
              "client": {}}  # fmt: skip
    assert writer.write([record]) == []
    AuditWriter(engine, tmp_path).write(
        [_call("c9", [{"uuid": "card-9", "topic": "abi", "indicator": "info", "rule_id": "abi-resting"}])]
    )
    with engine.begin() as connection:
        assert relink(connection) == 1
    with engine.connect() as connection:
        row = connection.execute(select(feedback)).mappings().one()
    assert (row["call_id"], row["rule_id"], row["note"]) == ("c9", "abi-resting", None)


BAD = [
    pytest.param(b"not json", None, id="not-json"),
    pytest.param(b"[]", None, id="not-an-object"),
    pytest.param(b"{}", "/feedback", id="no-feedback-array"),
    pytest.param(b'{"feedback": []}', "/feedback", id="empty-array"),
    pytest.param(
        b'{"feedback": [{"card": "c", "outcome": "accepted", "outcomeTimestamp": "2026-11-20T09:00:00Z"}]}',
        "/feedback/0",
        id="accepted-without-suggestions",
    ),
    pytest.param(
        b'{"feedback": [{"card": "c", "outcome": "dismissed", "outcomeTimestamp": "2026-11-20T09:00:00Z"}]}',
        "/feedback/0/outcome",
        id="unknown-outcome",
    ),
    pytest.param(
        b'{"feedback": [{"card": "c", "outcome": "overridden", "overrideReason": {},'
        b' "outcomeTimestamp": "2026-11-20T09:00:00Z"}]}',
        "/feedback/0/overrideReason",
        id="override-reason-empty",
    ),
    pytest.param(
        b'{"feedback": [{"card": "c", "outcome": "overridden", "acceptedSuggestions": [{"id": "s"}],'
        b' "outcomeTimestamp": "2026-11-20T09:00:00Z"}]}',
        "/feedback/0/acceptedSuggestions",
        id="overridden-with-suggestions",
    ),
    pytest.param(
        b'{"feedback": [{"card": "c", "outcome": "accepted", "acceptedSuggestions": [{"id": "s"}],'
        b' "overrideReason": {"userComment": "x"}, "outcomeTimestamp": "2026-11-20T09:00:00Z"}]}',
        "/feedback/0/overrideReason",
        id="accepted-with-override-reason",
    ),
    pytest.param(
        b'{"feedback": [{"card": "c", "outcome": "overridden", "outcomeTimestamp": "yesterday"}]}',
        "/feedback/0/outcomeTimestamp",
        id="timestamp-not-a-date",
    ),
    pytest.param(
        b'{"feedback": [{"card": "c", "outcome": "overridden", "outcomeTimestamp": "2026-11-20T09:00:00"}]}',
        "/feedback/0/outcomeTimestamp",
        id="timestamp-without-zone",
    ),
    pytest.param(
        b'{"feedback": [{"outcome": "overridden", "outcomeTimestamp": "2026-11-20T09:00:00Z"}]}',
        "/feedback/0/card",
        id="no-card",
    ),
]


@pytest.mark.parametrize(("body", "pointer"), BAD)
def test_invalid_feedback_is_a_400_operation_outcome(
    client: TestClient, body: bytes, pointer: str | None
) -> None:
    """Anything the spec does not allow is refused with a located OperationOutcome, never a 500."""
    response = client.post(FEEDBACK_URL, content=body, headers={"Content-Type": "application/json"})
    assert_outcome(response, 400, pointer)


def test_feedback_for_an_unknown_service_is_404(client: TestClient) -> None:
    response = client.post("/cds-services/other/feedback", json=spec_example("19-feedback-accepted.json"))
    assert_outcome(response, 404)


def test_feedback_body_over_the_limit_is_413(tmp_path: Path) -> None:
    from service.app import create_app

    settings = Settings(data_dir=tmp_path, max_body_bytes=1024, dev=True)
    with dev_client(create_app(settings), settings) as client:
        response = client.post(FEEDBACK_URL, content=b"{" + b" " * 2000 + b"}")
    assert_outcome(response, 413)


def test_trail_shows_a_card_from_request_to_feedback(
    gov_client: TestClient,
    gov_settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`calf-cds trail CARD` answers "why did this fire, under which version, and what was done with it"."""
    from service.cli import main

    (card,) = call(gov_client, DVT)
    engine = create_engine(gov_settings.resolved_database_url())
    wait_for(lambda: count(engine, select(hook_calls)) >= 1)
    engine.dispose()
    entry = {"card": card["uuid"], "outcome": "overridden", "outcomeTimestamp": "2026-11-20T09:05:00Z",
             "overrideReason": {"userComment": "scanned this morning"}}  # fmt: skip
    assert gov_client.post(FEEDBACK_URL, json={"feedback": [entry]}).status_code == 200
    rows(gov_settings, 1)
    monkeypatch.setenv("CALF_CDS_DATABASE_URL", gov_settings.resolved_database_url())
    assert main(["trail", card["uuid"]]) == 0
    out = capsys.readouterr().out
    assert "rule pack calf-pain@0.1.0 (sha256:" in out
    assert "entire_leg_swollen = True  ← Observation/" in out
    assert f"{card['uuid']} duplex-dvt (warning) rule dvt-workup" in out
    assert "shadow calf-pain@0.1.1 would show: duplex-dvt (warning)" in out
    assert "overridden “scanned this morning”" in out
    assert main(["trail", "no-such-card"]) == 1
