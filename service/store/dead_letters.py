"""Dead letters: audit records the database refused, kept intact in ``audit_dead_letters`` with the reason.

A refused record never blocks the others and is never dropped: :func:`keep_dead_letter` stores it
as ASCII JSON text (any record is storable text) beside the reason, once per (source table, key);
``calf-cds db dead-letters`` (``service.governance.dead_letters``) lists and re-drives them.
"""

from __future__ import annotations

import json
import logging
import uuid
from typing import Any, Literal

from sqlalchemy import Engine, insert, select

from service.ops import telemetry
from service.store.schema import dead_letters
from service.store.spool import UNREADABLE

__all__ = ["keep_dead_letter"]

log = logging.getLogger("calf_cds.audit")


def keep_dead_letter(
    engine: Engine, record: object, reason: str, *, source_table: str, key: str
) -> list[dict[str, Any]]:
    """Keep a refused record of ``source_table`` (its identifier under ``key``) as a dead letter.

    Returns ``[]`` once it is kept (now, or already by an earlier attempt), and the record to spool
    again (``{UNREADABLE: text}`` for one that is not a JSON object) when the database is down.
    """
    record_key = record.get(key) if isinstance(record, dict) else None
    record_key = str(record_key).replace("\x00", "\\x00")[:128] if record_key is not None else None
    text = json.dumps(record, default=str)  # ASCII: any record is storable text
    try:
        outcome = _insert(engine, source_table, record_key, reason, text)
    except Exception as error:  # noqa: BLE001 -- whatever it is, the record goes back to the spool
        # Down (or, never seen, refusing even an ASCII text row): the record waits in the
        # spool and is tried again, so it is never dropped.
        log.warning("could not keep a refused audit record as a dead letter: %s", type(error).__name__)
        return [record] if isinstance(record, dict) else [{UNREADABLE: text}]
    if outcome == "kept":
        telemetry.count_audit_records(source_table, dead_lettered=1)
        log.error(
            "the audit store refused a %s record (%s); kept as a dead letter: %s",
            source_table,
            record_key,
            reason,
        )
    return []


def _insert(
    engine: Engine, source_table: str, record_key: str | None, reason: str, text: str
) -> Literal["kept", "present"]:
    with engine.begin() as connection:
        same = dead_letters.c.source_table == source_table
        if record_key is not None and connection.scalar(
            select(dead_letters.c.dead_letter_id).where(same, dead_letters.c.record_key == record_key)
        ):
            return "present"  # kept already (a replay of a batch that was half written)
        row = {
            "dead_letter_id": str(uuid.uuid4()),
            "source_table": source_table,
            "record_key": record_key,
            "reason": reason,
            "record": text,
        }
        connection.execute(insert(dead_letters), [row])
    return "kept"
