"""Order hooks: the draft orders a call read, and the call whose patient facts it reused."""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

__all__ = ["down_revision", "downgrade", "revision", "upgrade"]

revision = "0004"
down_revision: str | None = "0003"


def upgrade() -> None:
    # both NULL on a patient-view call (and on every call recorded before)
    op.add_column("hook_calls", sa.Column("draft_orders", sa.JSON, nullable=True))
    op.add_column("hook_calls", sa.Column("facts_reused_from", sa.String(36), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("hook_calls") as batch:
        batch.drop_column("facts_reused_from")
        batch.drop_column("draft_orders")
