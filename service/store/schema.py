"""The audit store's tables and engine: what a call, a card, a feedback entry and a dead letter are.

Declared here, created and changed only by the Alembic migrations in ``service/store/migrations`` (a
test keeps the two in step). ``service.store.writers`` re-exports the audit tables and the engine, so
that the audit API is one import. What each request-supplied string may hold, and why, is in the
README ("What the audit trail stores").
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson
from sqlalchemy import (
    JSON,
    Boolean,
    Column,
    DateTime,
    Double,
    Engine,
    Float,
    Integer,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
    create_engine,
    func,
    inspect,
    make_url,
)
from sqlalchemy.schema import CreateIndex, CreateTable

__all__ = [
    "MAX_JTI_LENGTH",
    "auth_metadata",
    "card_explanations",
    "card_rows",
    "dead_letters",
    "feedback",
    "hook_calls",
    "hook_cards",
    "jwt_replay_table",
    "make_engine",
    "metadata",
    "open_replay_store",
    "replay_store_url",
    "row_of_call",
]

metadata = MetaData()

hook_calls = Table(
    "hook_calls",
    metadata,
    Column("call_id", String(36), primary_key=True),
    Column("received_at", DateTime(timezone=True), nullable=False, index=True),
    Column("hook", String(64), nullable=False),
    Column("hook_instance", String(128), nullable=False, index=True),
    Column("service_id", String(64), nullable=False),
    Column("patient_id", String(64), index=True),
    Column("user_id", String(256)),
    Column("fhir_server", String(2048)),
    Column("status_code", Integer, nullable=False),
    Column("error", Text),
    Column("pack_id", String(64)),
    Column("pack_version", String(32), index=True),
    Column("pack_hash", String(80)),
    Column("facts", JSON, nullable=False),
    Column("notes", JSON, nullable=False),
    Column("cards", JSON, nullable=False),
    Column("suppressed", JSON, nullable=False),
    Column("rule_errors", JSON, nullable=False),
    Column("shadow", JSON, nullable=False),
    Column("prefetch_states", JSON, nullable=False),
    Column("client", JSON, nullable=False),
    Column("duration_ms", Float, nullable=False),
    # order hooks (migration 0004): what the draft orders were read as (references, kinds,
    # selected, status; never the resources), and the order-select call whose patient facts an
    # order-sign reused
    Column("draft_orders", JSON),
    Column("facts_reused_from", String(36)),
)


hook_cards = Table(
    "hook_cards",
    metadata,
    Column("card_uuid", String(128), primary_key=True),
    Column("call_id", String(36), nullable=False, index=True),
    Column("received_at", DateTime(timezone=True), nullable=False, index=True),
    Column("pack_id", String(64)),
    Column("pack_version", String(32)),
    Column("pack_hash", String(80)),
    Column("rule_id", String(64)),
    Column("topic", String(32), index=True),
    Column("indicator", String(16)),
    Column("fallback", Boolean, nullable=False),
    Column("suggestions", JSON, nullable=False),  # the uuids of the card's suggestions
)


feedback = Table(
    "feedback",
    metadata,
    Column("feedback_id", String(36), primary_key=True),
    Column("received_at", DateTime(timezone=True), nullable=False, index=True),
    Column("service_id", String(64)),
    Column("card_uuid", String(128), nullable=False, index=True),
    Column("call_id", String(36), index=True),  # the hook call whose card this is, when known
    Column("pack_id", String(64)),
    Column("rule_id", String(64)),
    Column("pack_version", String(32)),
    Column("topic", String(32)),
    Column("outcome", String(16), nullable=False),  # accepted | overridden
    Column("accepted_suggestions", JSON, nullable=False),
    Column("override_reason_system", String(256)),
    Column("override_reason_code", String(128)),
    Column("override_reason_display", String(512)),
    Column("user_comment", Text),
    Column("outcome_timestamp", DateTime(timezone=True), nullable=False),
    Column("client", JSON, nullable=False),
    Column("note", Text),  # e.g. the card was not in the audit trail when the feedback was written
)


dead_letters = Table(
    "audit_dead_letters",
    metadata,
    Column("dead_letter_id", String(36), primary_key=True),
    Column("dead_lettered_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("source_table", String(32), nullable=False, index=True),  # hook_calls | feedback
    Column("record_key", String(128), index=True),  # its call_id or feedback_id, when it has one
    Column("reason", Text, nullable=False),
    Column("record", Text, nullable=False),  # the record as JSON (ASCII, every character escaped)
)


def make_engine(url: str, *, pool_size: int = 10) -> Engine:
    """An engine for the audit store; SQLite gets WAL so readers never block the writer.

    A server database gets a fixed pool of ``pool_size`` connections and no overflow: under load a
    caller waits a moment for a pooled connection rather than opening one of its own and closing
    it again (measured with bench/load.py: SQLAlchemy's default 5 + 10 overflow opened a PostgreSQL
    session for one call in seven, and those backends took a third of a core). It waits at most
    ``pool_timeout`` seconds, then fails like an unreachable database (the audit spools, the JWT
    replay check falls back to this process's memory).
    """
    if url.startswith("sqlite:///"):
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"timeout": 15}, json_serializer=_json)

        from sqlalchemy import event

        @event.listens_for(engine, "connect")
        def _pragmas(connection: Any, _: Any) -> None:
            cursor = connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.close()

        return engine
    # A database that does not answer must not hold the writer (or a readiness ping) for minutes.
    connect_args = {"connect_timeout": 5} if url.startswith("postgresql") else {}
    return create_engine(
        url,
        pool_pre_ping=True,
        pool_size=pool_size,
        max_overflow=0,
        pool_timeout=5,
        connect_args=connect_args,
        json_serializer=_json,
    )


def _json(value: Any) -> str:
    """JSON columns, encoded by orjson: a third of the writer's time per row with the standard library.

    orjson refuses a lone surrogate (a JWT claim may hold one); the standard library escapes it.
    """
    try:
        return orjson.dumps(value, default=str, option=orjson.OPT_NON_STR_KEYS).decode()
    except TypeError:
        return json.dumps(value, default=str)


def _instant(value: Any) -> Any:
    return datetime.fromisoformat(value) if isinstance(value, str) else value


def row_of_call(record: Mapping[str, Any]) -> dict[str, Any]:
    row = dict(record)
    row["received_at"] = _instant(row["received_at"])
    return {c.name: row.get(c.name) for c in hook_calls.columns}


def card_rows(record: Mapping[str, Any]) -> list[dict[str, Any]]:
    """One ``hook_cards`` row per card the call showed."""
    return [
        {
            "card_uuid": card["uuid"],
            "call_id": record["call_id"],
            "received_at": _instant(record["received_at"]),
            "pack_id": record.get("pack_id"),
            "pack_version": record.get("pack_version"),
            "pack_hash": record.get("pack_hash"),
            "rule_id": card.get("rule_id"),
            "topic": card.get("topic"),
            "indicator": card.get("indicator"),
            "fallback": bool(card.get("fallback", False)),
            "suggestions": list(card.get("suggestions", ())),
        }
        for card in record.get("cards", ())
        if card.get("uuid")
    ]


# What a card's signed explanation link shows (``service.store.writers``), until it expires.
card_explanations = Table(
    "card_explanations",
    metadata,
    Column("card_uuid", String(64), primary_key=True),
    Column("expires_at", DateTime(timezone=True), nullable=False, index=True),
    Column("body", Text, nullable=False),
)


# The replay check of client JWTs (``service.auth.caches.SqlReplayCache``): one row per (iss, jti)
# until the token expires. Its own metadata: the auth room owns the rows, the store the table.
MAX_JTI_LENGTH = 255
auth_metadata = MetaData()

jwt_replay_table = Table(
    "jwt_replay",
    auth_metadata,
    Column("iss", String(512), nullable=False),
    Column("jti", String(MAX_JTI_LENGTH), nullable=False),
    Column("expires_at", Double, nullable=False, index=True),
    PrimaryKeyConstraint("iss", "jti", name="pk_jwt_replay"),  # the unique (iss, jti)
)


def replay_store_url(url: str) -> str:
    """Where the `jwt_replay` table lives for the audit store at ``url``.

    In the audit database itself, but for a SQLite file: a file of its own beside it
    (``audit.sqlite3`` → ``audit.replay.sqlite3``). SQLite locks the whole file for each write, so in
    the audit file every call's replay check (a write, on the call's path) waited whenever the audit
    or explanation writer was committing a batch behind earlier calls: measured on 10-Observation
    calls (issue 15), the check's p90 was 1.1 ms and its p99 5.3 ms there, 0.26 ms and 1.8 ms beside
    it. PostgreSQL locks rows, not the database: its table stays where the migrations put it.
    """
    parsed = make_url(url)
    database = parsed.database
    if parsed.get_backend_name() != "sqlite" or not database or database == ":memory:":
        return url
    if database.startswith("file:"):  # a SQLite URI filename: its own options; keep it whole
        return url
    path = Path(database)
    sibling = path.with_name(f"{path.stem}.replay{path.suffix or '.sqlite3'}")
    return parsed.set(database=str(sibling)).render_as_string(hide_password=False)


def open_replay_store(engine: Engine) -> Engine:
    """The engine of the replay table for the audit store ``engine``: ``engine`` itself, or a SQLite
    file's own replay file (`replay_store_url`), its table created if missing (every worker may;
    ``IF NOT EXISTS`` makes that safe). The first time, the rows of the audit file's own
    `jwt_replay` (the table the migrations create, where earlier versions kept them) move to it, so
    that a token used just before an upgrade is still refused after it. Dispose of a returned
    engine that is not ``engine``."""
    url = engine.url.render_as_string(hide_password=False)
    target = replay_store_url(url)
    if target == url:
        return engine
    replay = make_engine(target)
    try:
        with replay.begin() as connection:
            created = not inspect(connection).has_table(jwt_replay_table.name)
            connection.execute(CreateTable(jwt_replay_table, if_not_exists=True))
            for index in jwt_replay_table.indexes:
                connection.execute(CreateIndex(index, if_not_exists=True))
        if created:
            _move_replay_rows(replay, str(engine.url.database))
    except Exception:
        replay.dispose()
        raise
    return replay


def _move_replay_rows(replay: Engine, audit_file: str) -> None:
    """Move the audit file's `jwt_replay` rows, if it has the table, into the replay file."""
    with replay.connect() as connection:
        connection.exec_driver_sql("ATTACH DATABASE ? AS audit", (audit_file,))
        try:
            listed = connection.exec_driver_sql(
                "SELECT 1 FROM audit.sqlite_master WHERE type = 'table' AND name = 'jwt_replay'"
            ).first()
            if listed is not None:
                connection.exec_driver_sql(
                    "INSERT OR IGNORE INTO main.jwt_replay (iss, jti, expires_at) "
                    "SELECT iss, jti, expires_at FROM audit.jwt_replay"
                )
                connection.exec_driver_sql("DELETE FROM audit.jwt_replay")
                connection.commit()
        finally:
            connection.rollback()  # nothing left to undo after the commit; DETACH needs no transaction
            connection.exec_driver_sql("DETACH DATABASE audit")
