"""The shared replay store (`jwt_replay`) on SQLite and on the real PostgreSQL: one statement decides.

Each "worker" has an engine of its own on one database, as the processes of `calf-cds serve
--workers N` (or replicas) do. The PostgreSQL runs are marked ``postgres`` and skipped only when no
server answers on 127.0.0.1:5432; each gets a database of its own, dropped afterwards.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import anyio
import psycopg
import pytest
import sqlalchemy as sa

from service.auth.caches import SqlReplayCache
from service.auth.errors import ReplayCacheUnavailableError
from service.store.schema import auth_metadata
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
