"""Where a card's explanation lives between the hook call and the clinician's click.

Keyed by card uuid, with the link's expiry, in two layers:

- an in-process LRU of bounded size (``explanation_cache_size``) that answers a click on the
  worker that made the card without touching the database;
- the ``card_explanations`` table of the audit database (migration 0002), so that a click that a
  load balancer sends to another worker or replica still finds it. Rows are deleted once expired
  (on every ``PURGE_EVERY``-th write, with an index on ``expires_at``).

The database write is behind the call (:meth:`ExplanationStore.submit`): a thread of its own,
``explanation-writer``, writes what the calls queued, in batches, so that no hook call waits for
it. A link still opens right after the call that made it:

- on the worker that made it, from memory, or from the writer's pending entries (read-through:
  an entry is findable from the moment it is submitted until it is in the database);
- on another worker, from the database; an explanation not there yet is looked for again for up
  to ``miss_wait_seconds`` (the other worker's writer may be a few milliseconds behind), before
  the link is called unknown. Only a genuine, unexpired link gets that far.

A database that is down only costs the cross-worker case: the write is logged and skipped, the
card is still answered, and the worker that made it still serves its page. What is stored is the
explanation as plain data (JSON), not HTML: the page is rendered, escaped, at click time.
"""

from __future__ import annotations

import atexit
import logging
import queue
import threading
import time
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
from sqlalchemy import Engine, delete, insert, select
from sqlalchemy.exc import SQLAlchemyError

from service.store.schema import card_explanations

__all__ = [
    "PURGE_EVERY",
    "ExplanationStore",
    "StoredExplanation",
]

log = logging.getLogger("calf_cds.explanations")
PURGE_EVERY = 200


@dataclass(frozen=True)
class StoredExplanation:
    card_uuid: str
    expires_at: datetime
    body: Mapping[str, Any]


class ExplanationStore:
    """Explanations by card uuid: bounded memory in front of an optional database table, written behind."""

    def __init__(
        self,
        engine: Engine | None,
        *,
        capacity: int = 2000,
        linger_seconds: float = 0.05,
        miss_wait_seconds: float = 1.0,
    ) -> None:
        self.engine = engine
        self.capacity = capacity
        # Like the audit writer: after the first entry, wait this long for more, and write them in
        # one transaction (at a few hundred calls a second, one write instead of ten).
        self.linger_seconds = linger_seconds
        self.miss_wait_seconds = miss_wait_seconds
        self._memory: OrderedDict[str, StoredExplanation] = OrderedDict()
        self._lock = threading.Lock()
        self._writes = 0
        self._pending: dict[str, StoredExplanation] = {}  # submitted, not yet through the database
        self._queue: queue.SimpleQueue[tuple[Sequence[StoredExplanation], datetime] | None] = (
            queue.SimpleQueue()
        )
        self._thread: threading.Thread | None = None
        self._idle = threading.Condition(self._lock)
        self._closing = threading.Event()  # cuts the writer's linger short

    def remember(self, entries: Sequence[StoredExplanation]) -> None:
        """Keep ``entries`` in memory (the oldest fall out beyond ``capacity``)."""
        with self._lock:
            self._remember(entries)

    def _remember(self, entries: Sequence[StoredExplanation]) -> None:
        for entry in entries:
            self._memory[entry.card_uuid] = entry
            self._memory.move_to_end(entry.card_uuid)
        while len(self._memory) > self.capacity:
            self._memory.popitem(last=False)

    # -- write-behind --------------------------------------------------------------------------

    def submit(self, entries: Sequence[StoredExplanation], *, now: datetime) -> None:
        """Keep ``entries`` in memory now and queue them for the database; never blocks on it."""
        if not entries:
            return
        with self._lock:
            self._remember(entries)
            if self.engine is None:
                return
            for entry in entries:
                self._pending[entry.card_uuid] = entry
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="explanation-writer", daemon=True)
                self._thread.start()
                atexit.register(self.close, 2.0)
        self._queue.put((entries, now))

    def flush(self, timeout: float = 5.0) -> bool:
        """Wait until everything submitted so far went to the database (or failed); True if it did."""
        deadline = time.monotonic() + timeout
        with self._idle:
            while self._pending and self._thread is not None and self._thread.is_alive():
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._idle.wait(left)
            return not self._pending

    def close(self, timeout: float = 5.0) -> None:
        """Write what is queued (within ``timeout`` seconds) and stop the writer thread."""
        atexit.unregister(self.close)
        with self._lock:
            thread, self._thread = self._thread, None
        if thread is not None:
            self._queue.put(None)
            self._closing.set()
            thread.join(timeout)
            if thread.is_alive():
                log.warning("explanations still queued at shutdown were not stored in the database")

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            if self.linger_seconds:
                self._closing.wait(self.linger_seconds)
            calls = [item]
            stopping = False
            while True:
                try:
                    more = self._queue.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    stopping = True
                    break
                calls.append(more)
            batch = [entry for entries, _ in calls for entry in entries]
            try:
                if not self.save(batch, now=max(now for _, now in calls)) and len(calls) > 1:
                    for entries, now in calls:  # one call's refused row must not cost the others theirs
                        self.save(entries, now=now)
            except Exception:  # never let the writer die; memory still serves the page
                log.exception("explanations not stored in the database")
            with self._idle:
                for entry in batch:
                    if self._pending.get(entry.card_uuid) is entry:
                        del self._pending[entry.card_uuid]
                self._idle.notify_all()
            if stopping:
                return

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
        """The unexpired explanation of ``card_uuid`` (blocking when it has to ask the database).

        Not in this worker's memory nor among its pending writes: the database, asked again for up
        to ``miss_wait_seconds`` while it is not there (another worker's writer may be behind).
        """
        with self._lock:
            entry = self._memory.get(card_uuid) or self._pending.get(card_uuid)
        if entry is None and self.engine is not None:
            try:
                entry = self._load(card_uuid)
                deadline = time.monotonic() + self.miss_wait_seconds
                pause = 0.005
                while entry is None and time.monotonic() < deadline:
                    time.sleep(pause)
                    pause = min(pause * 2, 0.1)
                    entry = self._load(card_uuid)
            except _LookupFailedError:
                return None
        if entry is None or entry.expires_at <= now:
            return None
        return entry

    def _load(self, card_uuid: str) -> StoredExplanation | None:
        """The database's row of ``card_uuid``; raises :class:`_LookupFailedError` if it cannot say."""
        query = select(card_explanations).where(card_explanations.c.card_uuid == card_uuid)
        try:
            with self.engine.connect() as connection:  # type: ignore[union-attr]
                row = connection.execute(query).mappings().first()
        except SQLAlchemyError as error:
            log.warning("explanation lookup failed (%s)", type(error).__name__)
            raise _LookupFailedError from error
        if row is None:
            return None
        expires = row["expires_at"]
        if expires.tzinfo is None:  # SQLite keeps no zone; everything is written in UTC
            expires = expires.replace(tzinfo=UTC)
        return StoredExplanation(card_uuid, expires, orjson.loads(row["body"]))


class _LookupFailedError(Exception):
    """The database could not be asked (logged where it happened)."""
