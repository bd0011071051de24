"""One bad record never costs the audit trail: the poison-record scenario of issue 18, end to end.

Real server (``calf-cds serve``, two workers), real PostgreSQL, poison calls every few calls, a
database outage in the middle, SIGTERM during a second outage and a restart (see ``poison.py``).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.service.governance.conftest import sqlalchemy_url
from tests.service.governance.poison import run

ROOT = Path(__file__).resolve().parents[3]


@pytest.mark.e2e
@pytest.mark.postgres
def test_every_answered_call_is_stored_or_a_dead_letter_with_its_reason(
    postgres_database: str, tmp_path: Path
) -> None:
    """Exact counts: rows = answered calls - poisoned ones; dead letters = poisoned ones, each with the
    database's reason; nothing lost, nothing twice, no spool file left after the restart."""
    outcome = run(ROOT, postgres_database, sqlalchemy_url(postgres_database), tmp_path)
    answered = set(outcome.answered)
    assert len(answered) >= 200
    assert outcome.poisoned  # the scenario did poison some calls
    assert set(outcome.answered.values()) == {200, 400}  # 400: an unstorable userId, refused at the edge
    assert outcome.lost == set()
    assert outcome.stored & answered == answered - outcome.poisoned
    assert set(outcome.dead) == outcome.poisoned
    assert all("poison record" in reason for reason in outcome.dead.values())
    assert outcome.spool_files_left == []
