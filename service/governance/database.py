"""The service's database schema (Alembic, configured in code) and retention.

``upgrade`` brings a database to the newest revision. On PostgreSQL it first takes a
transaction-scoped advisory lock, so that several pods starting at once (or several
``calf-cds db upgrade`` jobs) migrate one after another: the first does the work, the others find
the schema at head and do nothing. SQLite serialises writers itself.

``prepare`` is what the app runs at start-up, per ``Settings.db_migrate``:

==========  ===================================================================================
``auto``    ``upgrade`` on SQLite (the embedded default: one command, no operator), ``verify``
            on any other database (an operator or a deploy job runs ``calf-cds db upgrade``)
``upgrade`` migrate at start-up (safe with many replicas: the advisory lock)
``verify``  refuse to start when the schema is behind the code; start (and spool) when the
            database cannot be reached at all, so an outage never stops the cards
``off``     do nothing
==========  ===================================================================================

``purge`` deletes audit rows (calls, cards, feedback) received more than ``retention_days`` ago
and expired JWT replay entries.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine, create_engine, delete, func, make_url, select, text
from sqlalchemy.exc import SQLAlchemyError

from service.config import Settings
from service.governance.errors import SchemaError
from service.store.schema import feedback, hook_calls, hook_cards, jwt_replay_table, replay_store_url

__all__ = [
    "ADVISORY_LOCK_KEY",
    "PurgeResult",
    "alembic_config",
    "current_revisions",
    "head_revisions",
    "prepare",
    "purge",
    "upgrade",
    "upgrade_sql",
    "verify",
]

log = logging.getLogger("calf_cds.database")

# pg_advisory_xact_lock key: "calfcds" in ASCII, so it cannot collide with an application's own small keys.
ADVISORY_LOCK_KEY = 0x63616C66636473


def alembic_config(url: str | None = None) -> Config:
    """Alembic configured in code: scripts from the installed ``service.store.migrations`` package."""
    config = Config(stdout=io.StringIO())
    config.set_main_option("script_location", "service.store:migrations")
    if url is not None:
        config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def head_revisions() -> tuple[str, ...]:
    return tuple(ScriptDirectory.from_config(alembic_config()).get_heads())


def current_revisions(connection: Connection) -> tuple[str, ...]:
    return tuple(MigrationContext.configure(connection).get_current_heads())


@contextmanager
def _locked(engine: Engine) -> Iterator[Connection]:
    """A connection in a transaction that holds the migration lock (PostgreSQL) until commit."""
    with engine.begin() as connection:
        if connection.dialect.name == "postgresql":
            connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": ADVISORY_LOCK_KEY})
        yield connection


def upgrade(engine: Engine, revision: str = "head") -> tuple[str, ...]:
    """Migrate to ``revision``; returns the revisions the database is at afterwards."""
    with _locked(engine) as connection:
        config = alembic_config()
        config.attributes["connection"] = connection
        command.upgrade(config, revision)
        return current_revisions(connection)


def upgrade_sql(url: str, revision: str = "head") -> str:
    """The SQL ``upgrade`` would run on an empty database, for a DBA to review or apply."""
    output = io.StringIO()
    config = alembic_config(url)
    config.output_buffer = output
    command.upgrade(config, revision, sql=True)
    return output.getvalue()


def verify(engine: Engine) -> None:
    """Raise :class:`SchemaError` when the database is reachable and not at the newest revision."""
    try:
        with engine.connect() as connection:
            current = current_revisions(connection)
    except SQLAlchemyError as error:
        log.warning("database unreachable at start-up (%s): audit records will spool", type(error).__name__)
        return
    heads = head_revisions()
    if set(current) != set(heads):
        raise SchemaError(
            f"database schema is at {', '.join(current) or 'no revision'}, this code needs "
            f"{', '.join(heads)}: run `calf-cds db upgrade`",
            current=current,
            expected=heads,
        )


def prepare(settings: Settings, engine: Engine) -> None:
    """Migrate or verify at start-up, as ``settings.db_migrate`` says (see the module docstring)."""
    mode = settings.db_migrate
    if mode == "auto":
        mode = "upgrade" if engine.dialect.name == "sqlite" else "verify"
    if mode == "upgrade":
        try:
            upgrade(engine)
        except SQLAlchemyError as error:
            if engine.dialect.name == "sqlite":
                raise
            log.warning("could not migrate at start-up (%s): audit records will spool", type(error).__name__)
    elif mode == "verify":
        try:
            verify(engine)
        except SchemaError:
            engine.dispose()  # the service will not start: leave no connection behind
            raise


@dataclass(frozen=True)
class PurgeResult:
    cutoff: datetime | None
    calls: int
    cards: int
    feedback: int
    replay_entries: int

    def describe(self) -> str:
        kept = f"older than {self.cutoff:%Y-%m-%d %H:%M} UTC" if self.cutoff else "(retention off)"
        return (
            f"{_count(self.calls, 'call')}, {_count(self.cards, 'card')}, "
            f"{_count(self.feedback, 'feedback entry', 'feedback entries')} {kept}; "
            f"{_count(self.replay_entries, 'expired JWT replay entry', 'expired JWT replay entries')}"
        )


def _count(number: int, one: str, many: str | None = None) -> str:
    return f"{number} {one if number == 1 else many or one + 's'}"


def purge(engine: Engine, *, retention_days: int | None, now: datetime, dry_run: bool = False) -> PurgeResult:
    """Delete audit rows received before ``now - retention_days`` and expired replay entries."""
    cutoff = None if retention_days is None else now - timedelta(days=retention_days)
    tables = (hook_calls, hook_cards, feedback)
    counts: list[int] = []
    with engine.begin() as connection:
        for table in tables:
            if cutoff is None:
                counts.append(0)
                continue
            where = table.c.received_at < cutoff
            if dry_run:
                counts.append(
                    int(connection.scalar(select(func.count()).select_from(table).where(where)) or 0)
                )
            else:
                counts.append(connection.execute(delete(table).where(where)).rowcount)
        replay = _purge_replay(connection, now, dry_run=dry_run)
    url = engine.url.render_as_string(hide_password=False)
    replay_url = replay_store_url(url)  # a SQLite audit file's own replay file, if it has one
    if replay_url != url and Path(str(make_url(replay_url).database)).exists():
        replay_engine = create_engine(replay_url)
        try:
            with replay_engine.begin() as connection:
                replay += _purge_replay(connection, now, dry_run=dry_run)
        finally:
            replay_engine.dispose()
    return PurgeResult(cutoff, counts[0], counts[1], counts[2], replay)


def _purge_replay(connection: Connection, now: datetime, *, dry_run: bool) -> int:
    """Delete (or with ``dry_run`` count) the expired `jwt_replay` rows."""
    expired = jwt_replay_table.c.expires_at <= now.timestamp()
    if dry_run:
        return int(connection.scalar(select(func.count()).select_from(jwt_replay_table).where(expired)) or 0)
    return connection.execute(delete(jwt_replay_table).where(expired)).rowcount
