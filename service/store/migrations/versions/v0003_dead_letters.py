"""Dead letters: audit records the database refused, kept with the reason until re-driven."""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

__all__ = ["down_revision", "downgrade", "revision", "upgrade"]

revision = "0003"
down_revision: str | None = "0002"


def upgrade() -> None:
    op.create_table(
        "audit_dead_letters",
        sa.Column("dead_letter_id", sa.String(36), primary_key=True),
        sa.Column(
            "dead_lettered_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
        sa.Column("source_table", sa.String(32), nullable=False),
        sa.Column("record_key", sa.String(128)),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("record", sa.Text, nullable=False),
    )
    op.create_index("ix_audit_dead_letters_source_table", "audit_dead_letters", ["source_table"])
    op.create_index("ix_audit_dead_letters_record_key", "audit_dead_letters", ["record_key"])


def downgrade() -> None:
    op.drop_table("audit_dead_letters")
