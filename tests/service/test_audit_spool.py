"""The audit writer's spool: one locked file per writer, orphans adopted, a bounded flush at shutdown."""

from __future__ import annotations

import contextlib
import json
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, create_engine, select
from sqlalchemy.exc import OperationalError

from service.store.schema import dead_letters, hook_calls, make_engine, metadata
from service.store.spool import UNREADABLE
from service.store.writers import AuditWriter


def record(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "call_id": str(uuid.uuid4()),
        "received_at": datetime.now(UTC).isoformat(),
        "hook": "patient-view",
        "hook_instance": str(uuid.uuid4()),
        "service_id": "calf-pain",
        "status_code": 200,
        "facts": {},
        "notes": [],
        "cards": [],
        "suppressed": [],
        "rule_errors": [],
        "shadow": [],
        "prefetch_states": {},
        "client": {},
        "duration_ms": 1.0,
    }
    return base | overrides


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    engine = make_engine(f"sqlite:///{tmp_path / 'audit.sqlite3'}")
    metadata.create_all(engine)
    yield engine
    engine.dispose()


def unreachable(tmp_path: Path) -> Engine:
    """An audit store that refuses every connection (its folder does not exist)."""
    return create_engine(f"sqlite:///{tmp_path / 'no-such-folder' / 'audit.sqlite3'}")


def call_ids(engine: Engine) -> set[str]:
    with engine.connect() as connection:
        return set(connection.scalars(select(hook_calls.c.call_id)))


def wait_for(condition: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def test_records_spooled_while_the_store_is_down_arrive_when_it_returns(
    tmp_path: Path, engine: Engine
) -> None:
    """Refused batches go to the writer's own spool file, and into the database once it answers."""
    writer = AuditWriter(unreachable(tmp_path), tmp_path / "spool", retry_seconds=0.05)
    writer.start()
    records = [record() for _ in range(5)]
    for item in records:
        writer.submit(item)
    wait_for(lambda: writer.spool_depth() == 5)
    assert writer.spool_path.parent == tmp_path / "spool"
    writer.engine = engine  # the database is back
    wait_for(lambda: writer.spool_depth() == 0)
    writer.stop()
    assert call_ids(engine) == {r["call_id"] for r in records}
    assert list((tmp_path / "spool").iterdir()) == []


def test_a_spool_file_nobody_holds_is_adopted_once(tmp_path: Path, engine: Engine) -> None:
    """A spool left by a stopped process (here the single file of earlier releases) is written and
    deleted; a record it shares with the database is not written twice; its line cut short by a
    crash becomes a dead letter, not a silent loss."""
    spool_dir = tmp_path / "spool"
    spool_dir.mkdir()
    already = record()
    with engine.begin() as connection:
        connection.execute(hook_calls.insert(), [{**already, "received_at": datetime.now(UTC)}])
    left = [already, record(), record()]
    orphan = spool_dir / "audit-spool.jsonl"
    orphan.write_text("".join(json.dumps(r) + "\n" for r in left) + '{"call_id": "cut sh', encoding="utf-8")
    writer = AuditWriter(engine, spool_dir)
    writer.start()
    assert writer.flush_spool() == 4
    writer.stop()
    assert call_ids(engine) == {r["call_id"] for r in left}
    assert not orphan.exists()
    with engine.connect() as connection:
        letter = connection.execute(select(dead_letters)).mappings().one()
    assert json.loads(letter["record"]) == {
        UNREADABLE: '{"call_id": "cut sh',
        "spool_file": "audit-spool.jsonl",
    }
    assert "unreadable spool line" in letter["reason"]


def test_a_running_writers_spool_is_left_alone(tmp_path: Path, engine: Engine) -> None:
    """Two writers share the data folder (two worker processes): neither takes the other's spool."""
    spool_dir = tmp_path / "spool"
    first = AuditWriter(unreachable(tmp_path), spool_dir, retry_seconds=60)
    first.start()
    first.submit(record())
    wait_for(lambda: first.spool_depth() == 1)
    second = AuditWriter(engine, spool_dir, retry_seconds=60)
    second.start()
    assert second.flush_spool() == 0
    assert first.spool_path.exists()
    second.stop()
    first.stop(timeout=1)
    # Stopped: its file is no longer held, and the next writer adopts it.
    third = AuditWriter(engine, spool_dir)
    third.start()
    assert third.flush_spool() == 1
    third.stop()
    assert len(call_ids(engine)) == 1


class HangingEngine:
    """An audit store that accepts the connection, answers nothing until released, then fails."""

    def __init__(self) -> None:
        self.release = threading.Event()

    @contextlib.contextmanager
    def begin(self) -> Iterator[None]:
        self.release.wait(30)
        raise OperationalError("INSERT", {}, ConnectionResetError("gone"))
        yield


def test_stop_is_bounded_when_the_store_hangs_and_loses_nothing(tmp_path: Path, engine: Engine) -> None:
    """At shutdown the writer waits at most its timeout; the batch it was writing and the queue are
    spooled, and the next writer writes them."""
    hanging = HangingEngine()
    writer = AuditWriter(hanging, tmp_path / "spool", batch_size=2)  # type: ignore[arg-type]
    writer.start()
    records = [record() for _ in range(5)]
    for item in records:
        writer.submit(item)
    time.sleep(0.2)  # the writer thread is now stuck in the database with its first batch
    thread = writer._thread
    assert thread is not None
    writer.stop(timeout=0.5)
    assert thread.is_alive()  # stop() returned while the write still hangs: it did not wait for it
    hanging.release.set()  # the stuck write fails at last; the thread spools its batch and ends
    thread.join(5)
    assert not thread.is_alive()
    later = AuditWriter(engine, tmp_path / "spool")
    later.start()
    later.flush_spool()
    later.stop()
    assert call_ids(engine) == {r["call_id"] for r in records}


def test_a_server_database_gets_a_fixed_pool() -> None:
    """No overflow connections: under load callers wait for a pooled connection instead of opening
    and closing PostgreSQL sessions call after call."""
    engine = make_engine("postgresql+psycopg://nobody@127.0.0.1:1/none", pool_size=7)
    # QueuePool has no public accessor for its overflow limit
    assert (engine.pool.size(), engine.pool._max_overflow) == (7, 0)  # type: ignore[attr-defined]
    engine.dispose()
