"""The shared replay store (`jwt_replay`) on SQLite and on the real PostgreSQL: one statement decides.

Each "worker" has an engine of its own on one database, as the processes of `calf-cds serve
--workers N` (or replicas) do. The PostgreSQL runs are marked ``postgres`` and skipped only when no
server answers on 127.0.0.1:5432; each gets a database of its own, dropped afterwards.
"""

from __future__ import annotations

import os
import sqlite3
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import anyio
import psycopg
import pytest
import sqlalchemy as sa

from service.auth import caches
from service.auth.caches import SqlReplayCache
from service.auth.errors import ReplayCacheUnavailableError
from service.governance.database import purge
from service.store.schema import (
    auth_metadata,
    jwt_replay_table,
    make_engine,
    open_replay_store,
    replay_store_url,
)
from tests.service.jwt_factory import ISSUER, NOW, FakeClock

PG_ADMIN = os.environ.get("CALF_CDS_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")
WORKERS = 4


def _postgres_reachable() -> bool:
    try:
        with psycopg.connect(PG_ADMIN, connect_timeout=3):
            return True
    except psycopg.Error:
        return False


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty database with the `jwt_replay` table: a SQLite file, or a PostgreSQL database of its own."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'replay.sqlite3'}"
        name = None
    else:
        if not _postgres_reachable():
            pytest.skip("PostgreSQL is not reachable on 127.0.0.1:5432")
        name = f"calf_test_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(PG_ADMIN, autocommit=True, connect_timeout=5) as admin:
            admin.execute(f'CREATE DATABASE "{name}"')
        base = PG_ADMIN.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://", 1)
        url = f"{base}/{name}"
    engine = sa.create_engine(url)
    auth_metadata.create_all(engine)
    engine.dispose()
    try:
        yield url
    finally:
        if name is not None:
            with psycopg.connect(PG_ADMIN, autocommit=True, connect_timeout=5) as admin:
                admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def workers(database_url: str) -> Iterator[list[sa.Engine]]:
    engines = [
        sa.create_engine(database_url, connect_args=_connect_args(database_url)) for _ in range(WORKERS)
    ]
    yield engines
    for engine in engines:
        engine.dispose()


def _connect_args(url: str) -> dict[str, Any]:
    return {"timeout": 15} if url.startswith("sqlite") else {}


def _rows(engine: sa.Engine) -> list[tuple[str, float]]:
    with engine.connect() as connection:
        return [
            (row.jti, row.expires_at)
            for row in connection.execute(sa.text("SELECT jti, expires_at FROM jwt_replay"))
        ]


def test_one_token_sent_to_every_worker_at_once_is_accepted_once(workers: list[sa.Engine]) -> None:
    """Every worker checks the same jti at the same moment, many times over: exactly one acceptance."""
    clock = FakeClock()
    caches = [SqlReplayCache(engine, clock=clock, inline=False) for engine in workers]

    def check(cache: SqlReplayCache) -> bool:
        return anyio.run(cache.check_and_store, ISSUER, "jti-raced", NOW + 60)

    with ThreadPoolExecutor(max_workers=2 * WORKERS) as pool:
        answers = list(pool.map(check, caches * 5))
    for cache in caches:
        cache.wait_pruned()

    assert answers.count(True) == 1
    assert _rows(workers[0]) == [("jti-raced", NOW + 60)]


@pytest.mark.anyio
@pytest.mark.parametrize("inline", [True, False])
async def test_a_live_jti_is_refused_and_an_expired_one_reclaimed(
    workers: list[sa.Engine], inline: bool
) -> None:
    """A jti seen at one worker is refused at another until its token expires; then it is new again."""
    clock = FakeClock()
    first, second = (SqlReplayCache(engine, clock=clock, inline=inline) for engine in workers[:2])

    assert await first.check_and_store(ISSUER, "jti-1", NOW + 10)
    assert not await second.check_and_store(ISSUER, "jti-1", NOW + 10)
    assert not await first.check_and_store(ISSUER, "jti-1", NOW + 10)
    assert await second.check_and_store("https://other-issuer.example", "jti-1", NOW + 10)
    clock.advance(10)  # the token's expiry: the row is stale from this second on
    assert await second.check_and_store(ISSUER, "jti-1", clock.now + 30)
    assert not await first.check_and_store(ISSUER, "jti-1", clock.now + 30)
    for cache in (first, second):
        cache.wait_pruned()

    assert sorted(_rows(workers[0])) == [("jti-1", NOW + 10), ("jti-1", NOW + 40)]


@pytest.mark.anyio
async def test_a_database_without_upsert_gets_insert_then_update(workers: list[sa.Engine]) -> None:
    """The portable path (no ON CONFLICT known for the dialect) gives the same verdicts."""
    clock = FakeClock()
    first, second = (SqlReplayCache(engine, clock=clock) for engine in workers[:2])
    for cache in (first, second):
        cache._statement = None  # as for a dialect other than SQLite and PostgreSQL

    assert await first.check_and_store(ISSUER, "jti-1", NOW + 10)
    assert not await second.check_and_store(ISSUER, "jti-1", NOW + 10)
    clock.advance(10)
    assert await second.check_and_store(ISSUER, "jti-1", clock.now + 30)
    assert not await first.check_and_store(ISSUER, "jti-1", clock.now + 30)
    for cache in (first, second):
        cache.wait_pruned()


@pytest.mark.anyio
async def test_sqlite_checks_on_the_calling_thread_and_postgresql_off_it(
    workers: list[sa.Engine], database_url: str
) -> None:
    """SQLite (a local file) needs no thread hop; PostgreSQL (a round trip) keeps the event loop free."""
    cache = SqlReplayCache(workers[0], clock=FakeClock())

    assert cache.inline is database_url.startswith("sqlite")


@pytest.mark.anyio
async def test_a_database_without_the_table_is_an_outage(tmp_path: Path) -> None:
    """A failing statement raises ReplayCacheUnavailableError (→ 503), inline or not; pruning only logs."""
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'empty.sqlite3'}")
    try:
        for inline in (True, False):
            cache = SqlReplayCache(engine, clock=FakeClock(), inline=inline)
            with pytest.raises(ReplayCacheUnavailableError):
                await cache.check_and_store(ISSUER, "jti-1", NOW + 10)
            cache.wait_pruned()
    finally:
        engine.dispose()


# -- the inline SQLite check's own connection (issue 15) ------------------------------------------


@pytest.fixture
def wal_engine(tmp_path: Path) -> Iterator[sa.Engine]:
    """The audit store's SQLite engine as the service makes it (WAL), with the `jwt_replay` table."""
    engine = make_engine(f"sqlite:///{tmp_path / 'audit.sqlite3'}")
    auth_metadata.create_all(engine)
    yield engine
    engine.dispose()


def _write_lock(path: str) -> sqlite3.Connection:
    """Another connection holding the file's write lock, as the audit writer does during a batch."""
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    return holder


@pytest.mark.anyio
async def test_a_locked_file_makes_the_check_wait_without_blocking_the_event_loop(
    wal_engine: sa.Engine,
) -> None:
    """While another connection writes, the inline check polls and lets other coroutines run; it
    decides once the lock is released, and still refuses the replay afterwards."""
    cache = SqlReplayCache(wal_engine, clock=FakeClock())
    assert await cache.check_and_store(ISSUER, "jti-0", NOW + 60)  # opens the cache's connection
    holder = _write_lock(str(wal_engine.url.database))
    ticks = 0
    answers: list[bool] = []

    async def check() -> None:
        answers.append(await cache.check_and_store(ISSUER, "jti-1", NOW + 60))

    async with anyio.create_task_group() as group:
        group.start_soon(check)
        while ticks < 20:  # the event loop keeps running while the check waits
            await anyio.sleep(0.001)
            ticks += 1
        assert answers == []  # still waiting for the lock
        holder.execute("COMMIT")
    holder.close()

    assert answers == [True]
    assert not await cache.check_and_store(ISSUER, "jti-1", NOW + 60)
    cache.close()


@pytest.mark.anyio
async def test_a_lock_that_is_never_released_is_an_outage(
    wal_engine: sa.Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The check gives up like an unreachable database (ReplayCacheUnavailableError → the
    process's memory decides), and nothing was stored meanwhile."""
    monkeypatch.setattr(caches, "BUSY_GIVE_UP_SECONDS", 0.05)
    cache = SqlReplayCache(wal_engine, clock=FakeClock())
    holder = _write_lock(str(wal_engine.url.database))
    try:
        with pytest.raises(ReplayCacheUnavailableError, match="locked"):
            await cache.check_and_store(ISSUER, "jti-1", NOW + 60)
    finally:
        holder.execute("ROLLBACK")
        holder.close()

    assert _rows(wal_engine) == []
    assert await cache.check_and_store(ISSUER, "jti-1", NOW + 60)  # the lock is gone: decided
    cache.close()


@pytest.mark.anyio
async def test_another_thread_and_a_reopened_connection_give_the_same_verdicts(wal_engine: sa.Engine) -> None:
    """The connection belongs to the thread that opened it: another thread takes the SQLAlchemy
    path on the same table; after close() (or a failure) the next check opens a new connection."""
    cache = SqlReplayCache(wal_engine, clock=FakeClock())
    assert await cache.check_and_store(ISSUER, "jti-1", NOW + 60)

    def from_another_thread(jti: str) -> bool:
        return anyio.run(cache.check_and_store, ISSUER, jti, NOW + 60)

    with ThreadPoolExecutor(max_workers=1) as pool:
        assert not pool.submit(from_another_thread, "jti-1").result()
        assert pool.submit(from_another_thread, "jti-2").result()
    assert not await cache.check_and_store(ISSUER, "jti-2", NOW + 60)
    cache.close()
    assert not await cache.check_and_store(ISSUER, "jti-1", NOW + 60)
    assert await cache.check_and_store(ISSUER, "jti-3", NOW + 60)
    cache.close()
    cache.wait_pruned()

    assert sorted(jti for jti, _ in _rows(wal_engine)) == ["jti-1", "jti-2", "jti-3"]


# -- where the table lives: a SQLite audit file's replay file beside it (issue 15) ----------------


@pytest.mark.parametrize(
    ("audit_url", "replay_url"),
    [
        ("sqlite:////data/audit.sqlite3", "sqlite:////data/audit.replay.sqlite3"),
        ("sqlite:///relative/calf.db", "sqlite:///relative/calf.replay.db"),
        ("sqlite:////data/audit", "sqlite:////data/audit.replay.sqlite3"),
        ("sqlite://", "sqlite://"),  # in memory: no file to put beside it
        ("sqlite:///:memory:", "sqlite:///:memory:"),
        ("sqlite:///file:audit?mode=ro&uri=true", "sqlite:///file:audit?mode=ro&uri=true"),
        ("postgresql+psycopg://calf:secret@db:5432/calf", "postgresql+psycopg://calf:secret@db:5432/calf"),
    ],
)
def test_the_replay_store_is_a_sqlite_files_own_file_and_otherwise_the_audit_database(
    audit_url: str, replay_url: str
) -> None:
    assert replay_store_url(audit_url) == replay_url


def test_opening_the_replay_store_creates_its_file_and_moves_the_audit_files_rows_once(
    tmp_path: Path,
) -> None:
    """A first start after the upgrade takes the rows earlier versions kept in the audit file, so
    a token used just before the upgrade is still refused after it; a second start moves nothing."""
    audit = make_engine(f"sqlite:///{tmp_path / 'audit.sqlite3'}")
    auth_metadata.create_all(audit)  # as the migrations leave it
    with audit.begin() as connection:
        connection.execute(
            sa.insert(jwt_replay_table), [{"iss": ISSUER, "jti": "used", "expires_at": NOW + 60}]
        )
    replay = open_replay_store(audit)
    try:
        assert replay is not audit
        assert replay.url.database == str(tmp_path / "audit.replay.sqlite3")
        assert _rows(replay) == [("used", NOW + 60)]
        assert _rows(audit) == []
        assert not anyio.run(
            SqlReplayCache(replay, clock=FakeClock()).check_and_store, ISSUER, "used", NOW + 60
        )
        with audit.begin() as connection:  # an old worker still running during a rolling restart
            connection.execute(
                sa.insert(jwt_replay_table), [{"iss": ISSUER, "jti": "late", "expires_at": NOW}]
            )
        again = open_replay_store(audit)  # the table exists now: nothing moves
        assert _rows(again) == [("used", NOW + 60)]
        again.dispose()
    finally:
        replay.dispose()
        audit.dispose()


def test_two_workers_opening_the_replay_store_at_once_both_get_it(tmp_path: Path) -> None:
    """Every worker of `calf-cds serve --workers N` opens it at start-up: IF NOT EXISTS, no race."""
    audit = make_engine(f"sqlite:///{tmp_path / 'audit.sqlite3'}")
    auth_metadata.create_all(audit)
    with ThreadPoolExecutor(max_workers=WORKERS) as pool:
        opened = list(pool.map(lambda _: open_replay_store(audit), range(WORKERS)))
    for engine in opened:
        assert _rows(engine) == []
        engine.dispose()
    audit.dispose()


def test_a_postgresql_audit_store_keeps_its_replay_table(database_url: str) -> None:
    """PostgreSQL locks rows, not the database: the table stays in it (the same engine)."""
    engine = sa.create_engine(database_url)
    replay = open_replay_store(engine)
    try:
        assert (replay is engine) is database_url.startswith("postgresql")
    finally:
        if replay is not engine:
            replay.dispose()
        engine.dispose()


def test_purge_deletes_the_expired_rows_of_the_replay_file_too(tmp_path: Path) -> None:
    """`calf-cds db purge` and the retention job count and delete both tables' expired rows."""
    audit = make_engine(f"sqlite:///{tmp_path / 'audit.sqlite3'}")
    auth_metadata.create_all(audit)
    replay = open_replay_store(audit)
    expired, live = {"iss": ISSUER, "expires_at": NOW - 1}, {"iss": ISSUER, "expires_at": NOW + 60}
    for engine, prefix in ((audit, "audit"), (replay, "replay")):
        with engine.begin() as connection:
            connection.execute(
                sa.insert(jwt_replay_table),
                [{**expired, "jti": f"{prefix}-old"}, {**live, "jti": f"{prefix}-new"}],
            )
    when = datetime.fromtimestamp(NOW, UTC)
    try:
        assert purge(audit, retention_days=None, now=when, dry_run=True).replay_entries == 2
        assert purge(audit, retention_days=None, now=when).replay_entries == 2
        assert [jti for jti, _ in _rows(audit)] == ["audit-new"]
        assert [jti for jti, _ in _rows(replay)] == ["replay-new"]
    finally:
        replay.dispose()
        audit.dispose()
