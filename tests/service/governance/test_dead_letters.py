"""A record the database refuses costs nothing else: it is isolated, kept with its reason, re-drivable.

The refusal is a trigger that rejects calls whose ``hookInstance`` starts with ``poison`` (as a
constraint an operator added would), on SQLite and on PostgreSQL; on PostgreSQL the values it
refuses by itself (NUL in text, strings over their column) are tried too.
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, create_engine, select, text

from service.config import Settings
from service.governance import database
from service.governance.dead_letters import list_dead_letters, redrive
from service.governance.feedback import FeedbackWriter
from service.ops import telemetry
from service.store.schema import dead_letters, feedback, hook_calls
from service.store.spool import write_spool_file
from service.store.writers import AuditWriter
from tests.fhir_builders import NOW

REFUSE_POISON = {
    "sqlite": [
        "CREATE TRIGGER refuse_poison BEFORE INSERT ON hook_calls WHEN NEW.hook_instance LIKE 'poison%' "
        "BEGIN SELECT RAISE(ABORT, 'poison record'); END"
    ],
    "postgresql": [
        "CREATE FUNCTION refuse_poison() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
        "IF NEW.hook_instance LIKE 'poison%' THEN "
        "RAISE EXCEPTION 'poison record' USING ERRCODE = 'check_violation'; END IF; RETURN NEW; END $$",
        "CREATE TRIGGER refuse_poison BEFORE INSERT ON hook_calls FOR EACH ROW EXECUTE FUNCTION refuse_poison()",
    ],
}


def refuse_poison(engine: Engine) -> None:
    """Install the trigger that refuses ``poison…`` hook instances (both databases)."""
    with engine.begin() as connection:
        for statement in REFUSE_POISON[engine.dialect.name]:
            connection.execute(text(statement))


def accept_poison(engine: Engine) -> None:
    """The fix: the trigger is dropped."""
    with engine.begin() as connection:
        connection.execute(
            text(
                "DROP TRIGGER refuse_poison"
                + (" ON hook_calls" if engine.dialect.name == "postgresql" else "")
            )
        )


def record(instance: str | None = None, **overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "call_id": str(uuid.uuid4()),
        "received_at": NOW.isoformat(),
        "hook": "patient-view",
        "hook_instance": instance or str(uuid.uuid4()),
        "service_id": "calf-pain",
        "status_code": 200,
        "facts": {},
        "notes": [],
        "cards": [{"uuid": str(uuid.uuid4()), "topic": "abi", "indicator": "info", "rule_id": "abi-resting"}],
        "suppressed": [],
        "rule_errors": [],
        "shadow": [],
        "prefetch_states": {},
        "client": {},
        "duration_ms": 1.0,
    }
    return base | overrides


@pytest.fixture
def migrated(engine: Engine) -> Engine:
    database.upgrade(engine)
    return engine


def stored_instances(engine: Engine) -> set[str]:
    with engine.connect() as connection:
        return set(connection.scalars(select(hook_calls.c.hook_instance)))


def dead(engine: Engine) -> list[dict[str, Any]]:
    with engine.connect() as connection:
        return [dict(row) for row in connection.execute(select(dead_letters)).mappings()]


def test_a_refused_record_is_isolated_and_the_rest_of_its_batch_written(
    migrated: Engine, tmp_path: Path
) -> None:
    """One poison record among ten: nine rows, one dead letter holding the record as it was and why."""
    refuse_poison(migrated)
    batch = [record() for _ in range(5)] + [record("poison-1")] + [record() for _ in range(4)]
    writer = AuditWriter(migrated, tmp_path / "spool")
    assert writer.write(batch) == []
    assert stored_instances(migrated) == {r["hook_instance"] for r in batch} - {"poison-1"}
    (letter,) = dead(migrated)
    assert (letter["source_table"], letter["record_key"]) == ("hook_calls", batch[5]["call_id"])
    assert json.loads(letter["record"]) == batch[5]
    assert "poison record" in letter["reason"]
    assert letter["dead_lettered_at"] is not None


@pytest.mark.postgres
@pytest.mark.parametrize(
    "poison",
    [
        pytest.param({"user_id": "Practitioner/\x00"}, id="nul"),
        pytest.param({"hook": "h" * 65}, id="hook-over-64"),
        pytest.param({"user_id": "u" * 257}, id="user-over-256"),
        pytest.param({"error": "bad \x00 byte"}, id="nul-in-error"),
    ],
)
def test_values_postgresql_refuses_are_dead_letters_not_an_outage(
    postgres_database: str, tmp_path: Path, poison: dict[str, Any]
) -> None:
    """NUL or an over-long string is refused by PostgreSQL itself: isolated, never spooled."""
    from tests.service.governance.conftest import sqlalchemy_url

    engine = create_engine(sqlalchemy_url(postgres_database))
    database.upgrade(engine)
    batch = [record(), record(**poison), record()]
    writer = AuditWriter(engine, tmp_path / "spool")
    assert writer.write(batch) == []
    assert stored_instances(engine) == {batch[0]["hook_instance"], batch[2]["hook_instance"]}
    (letter,) = dead(engine)
    assert json.loads(letter["record"]) == batch[1]
    assert letter["reason"].startswith("DataError")
    engine.dispose()


def test_an_outage_spools_and_keeps_no_dead_letter(tmp_path: Path) -> None:
    """A database that cannot be reached refuses nothing: every record goes back for the spool."""
    down = create_engine(f"sqlite:///{tmp_path / 'no-such-folder' / 'audit.sqlite3'}")
    batch = [record(), record("poison-2")]
    assert AuditWriter(down, tmp_path / "spool").write(batch) == batch


def test_a_poisoned_spool_from_an_earlier_run_drains(migrated: Engine, tmp_path: Path) -> None:
    """The spool of a stopped process with a poison record in it: the others are written, the poison
    kept as a dead letter, the spool empty (before, the whole file failed on every retry)."""
    refuse_poison(migrated)
    spool = tmp_path / "spool"
    spool.mkdir()
    left = [record(), record("poison-3"), record()]
    write_spool_file(spool / "audit-spool-1-dead.jsonl", left)
    writer = AuditWriter(migrated, spool)
    writer.start()
    assert writer.spool_depth() == 3  # adopted at start-up, before the database is asked
    assert writer.flush_spool() == 3
    writer.stop()
    assert stored_instances(migrated) == {left[0]["hook_instance"], left[2]["hook_instance"]}
    assert [json.loads(d["record"])["hook_instance"] for d in dead(migrated)] == ["poison-3"]
    assert list(spool.iterdir()) == []


def test_spool_files_of_an_earlier_run_count_while_the_database_is_down(tmp_path: Path) -> None:
    """Adopted at start-up even with no database: the spool depth (and its metric) counts them."""
    spool = tmp_path / "spool"
    spool.mkdir()
    write_spool_file(spool / "audit-spool-1-dead.jsonl", [record(), record()])
    down = create_engine(f"sqlite:///{tmp_path / 'no-such-folder' / 'audit.sqlite3'}")
    writer = AuditWriter(down, spool, retry_seconds=60)
    writer.start()
    try:
        assert writer.spool_depth() == 2
        assert b'calf_cds_audit_spool_depth{table="hook_calls"} 2.0' in telemetry.render()
    finally:
        writer.stop(timeout=1)
    assert [p.name for p in spool.iterdir()] == [writer.spool_path.name]


def test_a_dead_letter_is_re_driven_once_the_cause_is_fixed(migrated: Engine, tmp_path: Path) -> None:
    """Refused again while the cause stands (kept, reason kept); written and removed once fixed."""
    refuse_poison(migrated)
    poisoned = record("poison-4")
    AuditWriter(migrated, tmp_path / "spool").write([poisoned])
    settings = Settings(data_dir=tmp_path / "data")
    assert redrive(migrated, settings).refused == 1
    assert len(list_dead_letters(migrated)) == 1
    accept_poison(migrated)
    assert redrive(migrated, settings).written == 1
    assert list_dead_letters(migrated) == []
    assert stored_instances(migrated) == {"poison-4"}


def test_a_refused_feedback_record_is_a_dead_letter(migrated: Engine, tmp_path: Path) -> None:
    """Feedback records are isolated the same way (here: no outcome, which the table requires)."""
    good = {"feedback_id": "f1", "received_at": NOW.isoformat(), "card_uuid": "card-1", "outcome": "accepted",
            "accepted_suggestions": ["s1"], "outcome_timestamp": NOW.isoformat(), "client": {}}  # fmt: skip
    bad = good | {"feedback_id": "f2", "outcome": None}
    assert FeedbackWriter(migrated, tmp_path / "spool").write([good, bad]) == []
    with migrated.connect() as connection:
        assert list(connection.scalars(select(feedback.c.feedback_id))) == ["f1"]
    assert [(d["source_table"], d["record_key"]) for d in dead(migrated)] == [("feedback", "f2")]


def test_cli_lists_and_re_drives_dead_letters(
    migrated: Engine, database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    """`calf-cds db dead-letters list` shows each with its reason; `redrive` writes them back."""
    from service.cli import main

    refuse_poison(migrated)
    AuditWriter(migrated, tmp_path / "spool").write([record("poison-5")])
    monkeypatch.setenv("CALF_CDS_DATABASE_URL", database_url)
    monkeypatch.setenv("CALF_CDS_DATA_DIR", str(tmp_path / "data"))
    assert main(["db", "dead-letters", "list"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("1 dead letter\n")
    assert "poison record" in out
    assert main(["db", "dead-letters", "list", "--json"]) == 0
    (listed,) = json.loads(capsys.readouterr().out)
    assert listed["record"]["hook_instance"] == "poison-5"
    assert main(["db", "dead-letters", "redrive"]) == 1  # still refused
    accept_poison(migrated)
    assert main(["db", "dead-letters", "redrive"]) == 0
    assert "1 re-driven" in capsys.readouterr().out.splitlines()[-1]


def test_readyz_reports_dead_letters(migrated: Engine, database_url: str, tmp_path: Path) -> None:
    """/readyz detail counts them (still ready: every other record is written); so does a metric."""
    from pydantic import SecretStr

    from service.app import create_app
    from tests.signing import dev_client

    refuse_poison(migrated)
    AuditWriter(migrated, tmp_path / "spool").write([record("poison-6"), record("poison-7")])
    settings = Settings(data_dir=tmp_path / "data", database_url=SecretStr(database_url), dev=True)
    with dev_client(
        create_app(settings, clock=lambda: datetime(2026, 11, 20, tzinfo=UTC)), settings
    ) as client:
        response = client.get("/readyz")
        assert (response.status_code, response.json()["dead_letters"]) == (200, 2)
        assert "calf_cds_audit_dead_letters 2.0" in client.get("/metrics").text
