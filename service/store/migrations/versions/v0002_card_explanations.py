"""Card explanations: what a card's signed link shows, kept until the link expires.

See ``service/store/writers.py`` (``ExplanationStore``): rows are written with each hook call's cards and deleted
once expired, so that any worker or replica can serve a card's explanation page.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

__all__ = ["down_revision", "downgrade", "revision", "upgrade"]

revision = "0002"
down_revision: str | None = "0001"


def upgrade() -> None:
    op.create_table(
        "card_explanations",
        sa.Column("card_uuid", sa.String(64), primary_key=True),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("body", sa.Text, nullable=False),
    )
    op.create_index("ix_card_explanations_expires_at", "card_explanations", ["expires_at"])


def downgrade() -> None:
    op.drop_index("ix_card_explanations_expires_at", table_name="card_explanations")
    op.drop_table("card_explanations")
