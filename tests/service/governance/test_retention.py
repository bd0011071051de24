"""Retention: audit rows older than `retention_days` are purged, by command or by the running service."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from pydantic import SecretStr
from sqlalchemy import Engine, insert, select

from service.cli import main
from service.config import Settings
from service.governance import database
from service.governance.runtime import Governance
from service.store.schema import feedback, hook_calls, hook_cards, jwt_replay_table
from service.store.writers import AuditWriter
from tests.service.governance.conftest import count, wait_for
from tests.service.governance.test_migrations import _call

NOW = datetime(2026, 11, 20, 9, tzinfo=UTC)


def fill(engine: Engine, tmp_path: Path) -> None:
    """Two calls with a card and a feedback each: one 100 days old, one 10 days old; two replay rows."""
    database.upgrade(engine)
    writer = AuditWriter(engine, tmp_path)
    for name, age in (("old", 100), ("new", 10)):
        record = _call(
            name, [{"uuid": f"card-{name}", "topic": "abi", "indicator": "info", "rule_id": "abi-resting"}]
        )
        record["received_at"] = NOW - timedelta(days=age)
        assert writer.write([record]) == []
        with engine.begin() as connection:
            connection.execute(insert(feedback).values(
                feedback_id=f"f-{name}", received_at=NOW - timedelta(days=age), card_uuid=f"card-{name}",
                outcome="overridden", accepted_suggestions=[], outcome_timestamp=NOW, client={}))  # fmt: skip
    with engine.begin() as connection:
        connection.execute(insert(jwt_replay_table), [
            {"iss": "i", "jti": "expired", "expires_at": (NOW - timedelta(hours=1)).timestamp()},
            {"iss": "i", "jti": "live", "expires_at": (NOW + timedelta(hours=1)).timestamp()}])  # fmt: skip


def left(engine: Engine) -> tuple[int, int, int, int]:
    return (
        count(engine, select(hook_calls)),
        count(engine, select(hook_cards)),
        count(engine, select(feedback)),
        count(engine, select(jwt_replay_table)),
    )


def test_purge_deletes_only_what_is_older(engine: Engine, tmp_path: Path) -> None:
    fill(engine, tmp_path)
    dry = database.purge(engine, retention_days=30, now=NOW, dry_run=True)
    assert (dry.calls, dry.cards, dry.feedback, dry.replay_entries) == (1, 1, 1, 1)
    assert left(engine) == (2, 2, 2, 2)
    done = database.purge(engine, retention_days=30, now=NOW)
    assert (done.calls, done.cards, done.feedback, done.replay_entries) == (1, 1, 1, 1)
    assert left(engine) == (1, 1, 1, 1)


def test_no_retention_keeps_the_audit_trail(engine: Engine, tmp_path: Path) -> None:
    fill(engine, tmp_path)
    result = database.purge(engine, retention_days=None, now=NOW)
    assert (result.calls, result.replay_entries) == (0, 1)
    assert left(engine)[:3] == (2, 2, 2)


def test_cli_purge(engine: Engine, database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                   capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    fill(engine, tmp_path)
    monkeypatch.setenv("CALF_CDS_DATABASE_URL", database_url)
    assert main(["db", "purge", "--days", "30", "--dry-run"], clock=lambda: NOW) == 0
    assert "would delete 1 call, 1 card, 1 feedback entry older than" in capsys.readouterr().out
    assert main(["db", "purge", "--days", "1"], clock=lambda: NOW) == 0
    assert "deleted 2 calls, 2 cards, 2 feedback entries" in capsys.readouterr().out
    assert left(engine)[:3] == (0, 0, 0)


def test_running_service_applies_retention(engine: Engine, database_url: str, tmp_path: Path) -> None:
    """With CALF_CDS_RETENTION_DAYS set, the service's maintenance thread purges on its own."""
    fill(engine, tmp_path)
    settings = Settings(data_dir=tmp_path, database_url=SecretStr(database_url), retention_days=30)
    governance = Governance.start(settings, engine, clock=lambda: NOW, maintenance_seconds=0.05)
    try:
        wait_for(lambda: left(engine)[0] == 1)
    finally:
        governance.stop()
    assert left(engine) == (1, 1, 1, 1)
