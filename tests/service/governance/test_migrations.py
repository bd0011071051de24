"""The schema is Alembic's: migrations create it, match the table declarations, adopt old databases."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Engine, MetaData, create_engine, inspect, select
from sqlalchemy.exc import OperationalError

from service.config import Settings
from service.governance import database
from service.governance.errors import SchemaError
from service.store.schema import auth_metadata, hook_calls, hook_cards, metadata
from tests.service.governance.conftest import sqlalchemy_url
from tests.signing import dev_client

TABLES = {
    "hook_calls",
    "hook_cards",
    "feedback",
    "jwt_replay",
    "card_explanations",
    "audit_dead_letters",
    "alembic_version",
}


def test_upgrade_creates_every_table(engine: Engine) -> None:
    """`db upgrade` on an empty database creates the audit, feedback and JWT replay tables."""
    assert database.upgrade(engine) == database.head_revisions()
    assert set(inspect(engine).get_table_names()) >= TABLES


def test_migrations_match_the_table_declarations(engine: Engine) -> None:
    """Alembic's autogenerate finds nothing to do: declarations and migrations agree."""
    database.upgrade(engine)
    combined = MetaData()
    for source in (metadata, auth_metadata):
        for table in source.tables.values():
            table.to_metadata(combined)
    with engine.connect() as connection:
        differences = compare_metadata(MigrationContext.configure(connection), combined)
    assert differences == []


def test_upgrade_twice_is_a_no_op(engine: Engine) -> None:
    """A second upgrade (a second pod, a rerun job) changes nothing."""
    database.upgrade(engine)
    assert database.upgrade(engine) == database.head_revisions()


def test_upgrade_adopts_a_walking_skeleton_database(engine: Engine) -> None:
    """A database made by `create_all` before migrations existed is kept, and its cards indexed."""
    old = MetaData()
    skeleton = hook_calls.to_metadata(old)
    for later in ("draft_orders", "facts_reused_from"):  # added by migration 0004
        skeleton._columns.remove(skeleton.c[later])
    with engine.begin() as connection:
        old.create_all(connection)
        connection.execute(
            hook_calls.insert(),
            [
                _call(
                    "c1", [{"uuid": "card-1", "topic": "abi", "indicator": "info", "rule_id": "abi-resting"}]
                )
            ],
        )
    database.upgrade(engine)
    with engine.connect() as connection:
        card = connection.execute(select(hook_cards)).mappings().one()
    assert (card["card_uuid"], card["call_id"], card["topic"]) == ("card-1", "c1", "abi")


def test_upgrade_sql_is_printed_for_a_dba() -> None:
    """`db upgrade --sql` writes the DDL instead of running it."""
    sql = database.upgrade_sql("postgresql+psycopg://nobody@127.0.0.1:1/none")
    assert "CREATE TABLE hook_calls" in sql
    assert "CREATE TABLE jwt_replay" in sql
    assert "alembic_version" in sql


def test_verify_refuses_an_old_schema(engine: Engine) -> None:
    """Start-up in `verify` mode stops when the schema is behind the code."""
    with pytest.raises(SchemaError, match="calf-cds db upgrade"):
        database.verify(engine)
    database.upgrade(engine)
    database.verify(engine)


def test_verify_lets_the_service_start_when_the_database_is_down(tmp_path: Any) -> None:
    """An unreachable database is an outage (records spool), not a reason to refuse to start."""
    engine = create_engine(
        "postgresql+psycopg://nobody@127.0.0.1:1/none", connect_args={"connect_timeout": 1}
    )
    settings = Settings(data_dir=tmp_path)
    database.prepare(settings, engine)  # auto → verify on PostgreSQL; must not raise
    with pytest.raises(OperationalError), engine.connect():
        pass


@pytest.mark.postgres
def test_concurrent_upgrades_take_turns(postgres_database: str) -> None:
    """Several pods migrating one empty PostgreSQL database at once: the advisory lock serialises them."""
    errors: list[BaseException] = []
    engines = [create_engine(sqlalchemy_url(postgres_database)) for _ in range(4)]
    barrier = threading.Barrier(len(engines))

    def run(engine: Engine) -> None:
        barrier.wait()
        try:
            database.upgrade(engine)
        except BaseException as error:  # noqa: BLE001 - collected and asserted below
            errors.append(error)

    threads = [threading.Thread(target=run, args=(e,)) for e in engines]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    for engine in engines:
        engine.dispose()
    assert errors == []
    engine = create_engine(sqlalchemy_url(postgres_database))
    with engine.connect() as connection:
        assert database.current_revisions(connection) == database.head_revisions()
    engine.dispose()


def _call(call_id: str, cards: list[dict[str, Any]]) -> dict[str, Any]:
    from tests.fhir_builders import NOW

    return {
        "call_id": call_id,
        "received_at": NOW,
        "hook": "patient-view",
        "hook_instance": "h",
        "service_id": "calf-pain",
        "status_code": 200,
        "pack_id": "calf-pain",
        "pack_version": "0.1.0",
        "pack_hash": "sha256:x",
        "facts": {},
        "notes": [],
        "cards": cards,
        "suppressed": [],
        "rule_errors": [],
        "shadow": [],
        "prefetch_states": {},
        "client": {},
        "duration_ms": 1.0,
    }


@pytest.mark.postgres
def test_service_on_postgres_refuses_an_unmigrated_database(postgres_database: str, tmp_path: Any) -> None:
    """`db_migrate=auto` verifies on PostgreSQL: an operator runs `calf-cds db upgrade` first."""
    from pydantic import SecretStr

    from service.app import create_app

    settings = Settings(
        data_dir=tmp_path, dev=True, database_url=SecretStr(sqlalchemy_url(postgres_database))
    )
    with pytest.raises(SchemaError, match="calf-cds db upgrade"), dev_client(create_app(settings), settings):
        pass


def test_sqlite_service_migrates_itself(tmp_path: Any) -> None:
    """The embedded default needs no operator: the app upgrades its SQLite file at start-up."""

    from service.app import create_app

    settings = Settings(data_dir=tmp_path, dev=True)
    with dev_client(create_app(settings), settings):
        pass
    engine = create_engine(settings.resolved_database_url())
    with engine.connect() as connection:
        assert database.current_revisions(connection) == database.head_revisions()
    engine.dispose()


def test_cli_db_upgrade_and_current(tmp_path: Any, monkeypatch: pytest.MonkeyPatch, capsys: Any) -> None:
    from service.cli import main

    monkeypatch.setenv("CALF_CDS_DATABASE_URL", f"sqlite:///{tmp_path / 'db.sqlite3'}")
    assert main(["db", "current"]) == 1
    assert "behind" in capsys.readouterr().out
    assert main(["db", "upgrade"]) == 0
    assert "database at revision 0004" in capsys.readouterr().out
    assert main(["db", "current"]) == 0
    assert "up to date" in capsys.readouterr().out
