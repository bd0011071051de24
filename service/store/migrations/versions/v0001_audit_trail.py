"""The audit trail, card index, feedback and JWT replay cache.

Adopts a database that the walking skeleton made with ``metadata.create_all``: tables that exist
are kept (missing ``feedback`` columns are added, cards of existing calls are indexed), tables
that do not are created.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import op

__all__ = ["TABLES", "TZ", "down_revision", "downgrade", "revision", "upgrade"]

revision = "0001"
down_revision: str | None = None

TZ = sa.DateTime(timezone=True)


def _hook_calls() -> list[Any]:
    return [
        sa.Column("call_id", sa.String(36), primary_key=True),
        sa.Column("received_at", TZ, nullable=False),
        sa.Column("hook", sa.String(64), nullable=False),
        sa.Column("hook_instance", sa.String(128), nullable=False),
        sa.Column("service_id", sa.String(64), nullable=False),
        sa.Column("patient_id", sa.String(64)),
        sa.Column("user_id", sa.String(256)),
        sa.Column("fhir_server", sa.String(2048)),
        sa.Column("status_code", sa.Integer, nullable=False),
        sa.Column("error", sa.Text),
        sa.Column("pack_id", sa.String(64)),
        sa.Column("pack_version", sa.String(32)),
        sa.Column("pack_hash", sa.String(80)),
        sa.Column("facts", sa.JSON, nullable=False),
        sa.Column("notes", sa.JSON, nullable=False),
        sa.Column("cards", sa.JSON, nullable=False),
        sa.Column("suppressed", sa.JSON, nullable=False),
        sa.Column("rule_errors", sa.JSON, nullable=False),
        sa.Column("shadow", sa.JSON, nullable=False),
        sa.Column("prefetch_states", sa.JSON, nullable=False),
        sa.Column("client", sa.JSON, nullable=False),
        sa.Column("duration_ms", sa.Float, nullable=False),
    ]


def _hook_cards() -> list[Any]:
    return [
        sa.Column("card_uuid", sa.String(128), primary_key=True),
        sa.Column("call_id", sa.String(36), nullable=False),
        sa.Column("received_at", TZ, nullable=False),
        sa.Column("pack_id", sa.String(64)),
        sa.Column("pack_version", sa.String(32)),
        sa.Column("pack_hash", sa.String(80)),
        sa.Column("rule_id", sa.String(64)),
        sa.Column("topic", sa.String(32)),
        sa.Column("indicator", sa.String(16)),
        sa.Column("fallback", sa.Boolean, nullable=False),
        sa.Column("suggestions", sa.JSON, nullable=False),
    ]


def _feedback() -> list[Any]:
    return [
        sa.Column("feedback_id", sa.String(36), primary_key=True),
        sa.Column("received_at", TZ, nullable=False),
        sa.Column("service_id", sa.String(64)),
        sa.Column("card_uuid", sa.String(128), nullable=False),
        sa.Column("call_id", sa.String(36)),
        sa.Column("pack_id", sa.String(64)),
        sa.Column("rule_id", sa.String(64)),
        sa.Column("pack_version", sa.String(32)),
        sa.Column("topic", sa.String(32)),
        sa.Column("outcome", sa.String(16), nullable=False),
        sa.Column("accepted_suggestions", sa.JSON, nullable=False),
        sa.Column("override_reason_system", sa.String(256)),
        sa.Column("override_reason_code", sa.String(128)),
        sa.Column("override_reason_display", sa.String(512)),
        sa.Column("user_comment", sa.Text),
        sa.Column("outcome_timestamp", TZ, nullable=False),
        sa.Column("client", sa.JSON, nullable=False),
        sa.Column("note", sa.Text),
    ]


def _jwt_replay() -> list[Any]:
    return [
        sa.Column("iss", sa.String(512), nullable=False),
        sa.Column("jti", sa.String(255), nullable=False),
        sa.Column("expires_at", sa.Double, nullable=False),
        sa.PrimaryKeyConstraint("iss", "jti", name="pk_jwt_replay"),
    ]


TABLES = {
    "hook_calls": (_hook_calls, ("received_at", "hook_instance", "patient_id", "pack_version")),
    "hook_cards": (_hook_cards, ("call_id", "received_at", "topic")),
    "feedback": (_feedback, ("received_at", "card_uuid", "call_id")),
    "jwt_replay": (_jwt_replay, ("expires_at",)),
}


def upgrade() -> None:
    offline = op.get_context().as_sql  # `calf-cds db upgrade --sql`: nothing to inspect
    inspector = None if offline else sa.inspect(op.get_bind())
    existing = set(inspector.get_table_names()) if inspector is not None else set()
    for name, (columns, indexed) in TABLES.items():
        present: set[str | None] = set()
        if inspector is None or name not in existing:
            op.create_table(name, *columns())
        else:
            have = {column["name"] for column in inspector.get_columns(name)}
            for column in columns():
                if isinstance(column, sa.Column) and column.name not in have:
                    op.add_column(name, column)
            present = {index["name"] for index in inspector.get_indexes(name)}
        for column_name in indexed:
            index = f"ix_{name}_{column_name}"
            if index not in present:
                op.create_index(index, name, [column_name])
    if "hook_calls" in existing and "hook_cards" not in existing:
        _index_existing_cards()


def _index_existing_cards() -> None:
    """Cards of calls audited before ``hook_cards`` existed, so their feedback links too."""
    bind = op.get_bind()
    calls = sa.table(
        "hook_calls",
        sa.column("call_id"),
        sa.column("received_at", TZ),
        sa.column("pack_id"),
        sa.column("pack_version"),
        sa.column("pack_hash"),
        sa.column("cards", sa.JSON),
    )
    cards = sa.table("hook_cards", *(sa.column(c.name, c.type) for c in _hook_cards()))
    for row in bind.execute(sa.select(calls)).mappings():
        rows = [
            {
                "card_uuid": card["uuid"],
                "call_id": row["call_id"],
                "received_at": row["received_at"],
                "pack_id": row["pack_id"],
                "pack_version": row["pack_version"],
                "pack_hash": row["pack_hash"],
                "rule_id": card.get("rule_id"),
                "topic": card.get("topic"),
                "indicator": card.get("indicator"),
                "fallback": bool(card.get("fallback", False)),
                "suggestions": list(card.get("suggestions", ())),
            }
            for card in row["cards"] or ()
            if card.get("uuid")
        ]
        if rows:
            bind.execute(sa.insert(cards), rows)


def downgrade() -> None:
    for name in reversed(TABLES):
        op.drop_table(name)
