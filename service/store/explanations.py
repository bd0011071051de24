"""Where a card's explanation lives between the hook call and the clinician's click.

Keyed by card uuid, with the link's expiry, in two layers:

- an in-process LRU of bounded size (``explanation_cache_size``) that answers a click on the
  worker that made the card without touching the database;
- the ``card_explanations`` table of the audit database (migration 0002), so that a click that a
  load balancer sends to another worker or replica still finds it. Rows are deleted once expired
  (on every ``PURGE_EVERY``-th write, with an index on ``expires_at``).

A database that is down only costs the cross-worker case: the write is logged and skipped, the
card is still answered, and the worker that made it still serves its page. What is stored is the
explanation as plain data (JSON), not HTML: the page is rendered, escaped, at click time.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
from sqlalchemy import Column, DateTime, Engine, MetaData, String, Table, Text, delete, insert, select
from sqlalchemy.exc import SQLAlchemyError

__all__ = [
    "PURGE_EVERY",
    "ExplanationStore",
    "StoredExplanation",
    "card_explanations",
    "explanation_metadata",
]

log = logging.getLogger("calf_cds.explanations")
PURGE_EVERY = 200

explanation_metadata = MetaData()
card_explanations = Table(
    "card_explanations",
    explanation_metadata,
    Column("card_uuid", String(64), primary_key=True),
    Column("expires_at", DateTime(timezone=True), nullable=False, index=True),
    Column("body", Text, nullable=False),
)


@dataclass(frozen=True)
class StoredExplanation:
    card_uuid: str
    expires_at: datetime
    body: Mapping[str, Any]


class ExplanationStore:
    """Explanations by card uuid: bounded memory in front of an optional database table."""

    def __init__(self, engine: Engine | None, *, capacity: int = 2000) -> None:
        self.engine = engine
        self.capacity = capacity
        self._memory: OrderedDict[str, StoredExplanation] = OrderedDict()
        self._lock = threading.Lock()
        self._writes = 0

    def remember(self, entries: Sequence[StoredExplanation]) -> None:
        """Keep ``entries`` in memory (the oldest fall out beyond ``capacity``)."""
        with self._lock:
            for entry in entries:
                self._memory[entry.card_uuid] = entry
                self._memory.move_to_end(entry.card_uuid)
            while len(self._memory) > self.capacity:
                self._memory.popitem(last=False)

    def save(self, entries: Sequence[StoredExplanation], *, now: datetime) -> bool:
        """Write ``entries`` to the database (blocking: call it off the event loop)."""
        if self.engine is None or not entries:
            return False
        rows = [
            {"card_uuid": e.card_uuid, "expires_at": e.expires_at, "body": orjson.dumps(e.body).decode()}
            for e in entries
        ]
        try:
            with self.engine.begin() as connection:
                connection.execute(insert(card_explanations), rows)
                self._writes += 1
                if self._writes % PURGE_EVERY == 1:
                    connection.execute(delete(card_explanations).where(card_explanations.c.expires_at < now))
        except SQLAlchemyError as error:
            log.warning(
                "explanations not stored in the database (%s); this worker still serves them",
                type(error).__name__,
            )
            return False
        return True

    def find(self, card_uuid: str, *, now: datetime) -> StoredExplanation | None:
        """The unexpired explanation of ``card_uuid`` (blocking when it has to ask the database)."""
        with self._lock:
            entry = self._memory.get(card_uuid)
        if entry is None and self.engine is not None:
            entry = self._load(card_uuid)
        if entry is None or entry.expires_at <= now:
            return None
        return entry

    def _load(self, card_uuid: str) -> StoredExplanation | None:
        query = select(card_explanations).where(card_explanations.c.card_uuid == card_uuid)
        try:
            with self.engine.connect() as connection:  # type: ignore[union-attr]
                row = connection.execute(query).mappings().first()
        except SQLAlchemyError as error:
            log.warning("explanation lookup failed (%s)", type(error).__name__)
            return None
        if row is None:
            return None
        expires = row["expires_at"]
        if expires.tzinfo is None:  # SQLite keeps no zone; everything is written in UTC
            expires = expires.replace(tzinfo=UTC)
        return StoredExplanation(card_uuid, expires, orjson.loads(row["body"]))
