"""Dead letters: audit records the database refused, listed and re-driven by ``calf-cds db``::

    calf-cds db dead-letters list [--json]       each one: when, which table, its key, the reason
    calf-cds db dead-letters redrive [ID...]     write them again (all, or the ones named)

A record lands in ``audit_dead_letters`` when the database refuses it (see ``service.store.writers``):
a value its column cannot hold, a constraint, a spool line cut short by a crash. Once the cause is
fixed (a migration that widens a column, a constraint dropped, a release that normalises the
value), ``redrive`` writes each record through its writer's own ``store`` (idempotently: a record
already in its table is not written twice) and deletes the dead letter; a record refused again
stays, with the new reason.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Engine, delete, func, select, update
from sqlalchemy.exc import SQLAlchemyError

from service.config import Settings
from service.governance.feedback import FeedbackWriter
from service.store.refusals import is_refusal, refusal_reason
from service.store.schema import dead_letters, make_engine
from service.store.writers import AuditWriter

__all__ = [
    "DeadLetter",
    "RedriveResult",
    "count",
    "list_command",
    "list_dead_letters",
    "redrive",
    "redrive_command",
]


@dataclass(frozen=True)
class DeadLetter:
    dead_letter_id: str
    dead_lettered_at: datetime
    source_table: str
    record_key: str | None
    reason: str
    record: str


@dataclass(frozen=True)
class RedriveResult:
    written: int
    refused: int

    def describe(self) -> str:
        return f"{self.written} re-driven into their tables, {self.refused} refused again (kept)"


def count(engine: Engine) -> int:
    with engine.connect() as connection:
        return int(connection.scalar(select(func.count()).select_from(dead_letters)) or 0)


def list_dead_letters(engine: Engine, ids: Sequence[str] = ()) -> list[DeadLetter]:
    query = select(dead_letters).order_by(dead_letters.c.dead_lettered_at, dead_letters.c.dead_letter_id)
    if ids:
        query = query.where(dead_letters.c.dead_letter_id.in_(list(ids)))
    with engine.connect() as connection:
        return [DeadLetter(**row) for row in connection.execute(query).mappings()]


def _writers(engine: Engine, settings: Settings) -> dict[str, AuditWriter]:
    spool = settings.data_dir / "spool"  # never started: only their `store` and `key` are used
    return {
        writer.table.name: writer for writer in (AuditWriter(engine, spool), FeedbackWriter(engine, spool))
    }


def redrive(engine: Engine, settings: Settings, ids: Sequence[str] = ()) -> RedriveResult:
    """Write dead letters into their tables again; raises ``SQLAlchemyError`` when the database is down."""
    writers = _writers(engine, settings)
    written = refused = 0
    for letter in list_dead_letters(engine, ids):
        writer = writers.get(letter.source_table)
        row = dead_letters.c.dead_letter_id == letter.dead_letter_id
        try:
            record = json.loads(letter.record)
            if writer is None or writer.malformed(record) is not None:
                raise ValueError(f"not a {letter.source_table} record")
            with engine.begin() as connection:
                fresh = writer.fresh(connection, [record])
                if fresh:
                    writer.store(connection, fresh)
                connection.execute(delete(dead_letters).where(row))
        except Exception as error:
            if not is_refusal(error):
                raise
            refused += 1
            with engine.begin() as connection:
                connection.execute(update(dead_letters).where(row).values(reason=refusal_reason(error)))
            continue
        written += 1
    return RedriveResult(written, refused)


def list_command(args: argparse.Namespace) -> int:
    engine = make_engine(Settings().resolved_database_url())
    try:
        letters = list_dead_letters(engine)
    finally:
        engine.dispose()
    if args.json:
        print(json.dumps([_json(letter, full=True) for letter in letters], indent=2))
        return 0
    print(f"{len(letters)} dead letter{'' if len(letters) == 1 else 's'}")
    for letter in letters:
        print(
            f"{letter.dead_letter_id}  {letter.dead_lettered_at:%Y-%m-%d %H:%M:%S}  "
            f"{letter.source_table}  {letter.record_key or '-'}\n    {letter.reason}"
        )
    return 0


def _json(letter: DeadLetter, *, full: bool) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": letter.dead_letter_id,
        "dead_lettered_at": letter.dead_lettered_at.isoformat(),
        "table": letter.source_table,
        "key": letter.record_key,
        "reason": letter.reason,
    }
    if full:
        body["record"] = json.loads(letter.record)
    return body


def redrive_command(args: argparse.Namespace) -> int:
    settings = Settings()
    engine = make_engine(settings.resolved_database_url())
    try:
        result = redrive(engine, settings, args.ids)
    except SQLAlchemyError as error:
        print(f"the database did not answer ({type(error).__name__}); nothing was changed")
        return 1
    finally:
        engine.dispose()
    print(result.describe())
    return 1 if result.refused else 0
