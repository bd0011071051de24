"""The two writers behind a hook call: its audit record, and its cards' explanations.

Both take what a call hands them through a C-level queue (a put costs the event loop a few hundred
nanoseconds) and write it in batches from a thread of their own, so that no call waits for the
database. The rest of the service sees them only through :mod:`service.store.sink`.

## The audit writer: one row per hook call, never lost

The audit writer: one row per hook call, written off the response path, never lost.

``AuditWriter`` (an :class:`~service.store.sink.AuditSink`) takes records from the request
handlers through a queue and writes them in batches from one background thread. It tells two
failures apart (``service.store.refusals``):

- the database is **down** (no connection, a dropped one, a pool timeout, a schema not yet
  migrated): the batch is appended to the writer's spool file (``service.store.spool``) and written
  again once the database answers;
- the database **refuses a record** (``DataError``, ``IntegrityError``, a value it cannot even be
  sent, a malformed spooled record): it would refuse it on every retry, so the batch is split in
  halves until the refused record is alone, the others are written, and the refused one is kept,
  intact, as a row of ``audit_dead_letters`` with the reason (``service.store.dead_letters``;
  counted by ``calf_cds_audit_records_total{outcome="dead_lettered"}``, shown by ``/readyz`` and by
  ``calf-cds db dead-letters``, which also re-drives them once the cause is fixed).

Records left at shutdown are flushed or spooled, never dropped; spool files of stopped processes
are adopted (moved into the running writer's own spool) at start-up and every retry.

Tables (:mod:`service.store.schema`, with the engine factory): ``hook_calls`` (one row per call),
``hook_cards`` (one row per card shown, written in the same transaction as its call, so that
feedback can find a card by its uuid) and ``feedback`` (one row per feedback entry; written by
``service.governance.feedback``), and ``audit_dead_letters`` (records of either kind the database
refused, each with its reason).

## The explanation store: where a card's explanation lives between the call and the click

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
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Generic, TypeVar

import orjson
from sqlalchemy import Connection, Engine, delete, insert, select
from sqlalchemy.exc import SQLAlchemyError

from service.ops import telemetry
from service.store.dead_letters import keep_dead_letter
from service.store.refusals import is_refusal, refusal_reason
from service.store.schema import card_explanations, card_rows, hook_calls, hook_cards, row_of_call
from service.store.sink import StoredExplanation
from service.store.spool import UNREADABLE, Spool

__all__ = ["PURGE_EVERY", "AuditWriter", "ExplanationStore"]

log = logging.getLogger("calf_cds.audit")
explanation_logger = logging.getLogger("calf_cds.explanations")
PURGE_EVERY = 200

Item = TypeVar("Item")


class _WriteBehind(Generic[Item]):
    """What both writers share: the database, the queue a call puts into, the thread that writes,
    and how long that thread lingers after a first item for more to batch with it."""

    def __init__(self, engine: Engine | None, *, linger_seconds: float) -> None:
        self.engine = engine
        # After the first item, wait this long for more before writing: at a few hundred calls a
        # second that makes one transaction of ~10 items rather than ten of one (less CPU per item,
        # and fewer wake-ups of the thread competing with the event loop for the GIL).
        self.linger_seconds = linger_seconds
        # SimpleQueue (C): a put is a few hundred nanoseconds on the event loop, and wakes the thread
        # without queue.Queue's Python-level Condition.
        self._queue: queue.SimpleQueue[Item | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None

    def _start_thread(self, name: str, stop: Callable[[float], None]) -> None:
        """Start the writer thread ``name``; ``stop(2.0)`` runs at interpreter exit unless called first."""
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()
        atexit.register(stop, 2.0)

    def _run(self) -> None:
        raise NotImplementedError


class AuditWriter(_WriteBehind[dict[str, Any]]):
    """Background, batched, spooling writer of audit records: the SQL :class:`AuditSink`.

    Subclasses write other kinds of record the same way by overriding ``key``, ``table``,
    ``spool_name`` and :meth:`store` (see ``service.governance.feedback.FeedbackWriter``).

    Each writer (one per worker process and kind) spools to a :class:`~service.store.spool.Spool`
    of its own, named after ``spool_name``. Replays are idempotent (by ``key``), so a record
    spooled twice is written once.
    """

    engine: Engine  # always a database: records are never only in memory
    key = "call_id"
    table = hook_calls
    spool_name = "audit-spool.jsonl"

    def __init__(
        self,
        engine: Engine,
        spool_dir: Path,
        *,
        batch_size: int = 200,
        retry_seconds: float = 2.0,
        linger_seconds: float = 0.05,
    ) -> None:
        super().__init__(engine, linger_seconds=linger_seconds)
        self.spool_dir = spool_dir
        self.spool = Spool(spool_dir, Path(self.spool_name).stem)
        self.batch_size = batch_size
        self.retry_seconds = retry_seconds
        self._inflight: list[dict[str, Any]] = []
        self._abandoned = threading.Event()  # stop() gave up waiting: the thread ends when it can

    @property
    def spool_path(self) -> Path:
        """This writer's own spool file."""
        return self.spool.path

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        if self._thread is None:
            self.spool.open()  # adopts orphans before any traffic: the spool depth counts them
            self.report_metrics()
            self._start_thread("audit-writer", self.stop)

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def stop(self, timeout: float = 10.0) -> None:
        """Write every queued record within ``timeout`` seconds; spool what is left, then stop.

        If the database hangs past the timeout, the batch being written is spooled as well: it
        is written again (idempotently) from the spool, so it is never lost and never doubled.
        """
        atexit.unregister(self.stop)
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join(timeout)
            stuck = self._thread.is_alive()
            self._thread = None
            if stuck:
                self._abandoned.set()
                log.warning("audit store did not answer within %.1f s at shutdown; spooling", timeout)
                leftover = [*self._inflight, *self._drain()]
                self.spool.abandon(leftover)
                if leftover:
                    telemetry.count_audit_records(self.table.name, spooled=len(leftover))
                telemetry.observe_audit_queue(self.table.name, 0, 0)
                return
        leftover = self._drain()
        if leftover:
            self._spool(leftover)
        telemetry.observe_audit_queue(self.table.name, 0, self.spool.depth)
        self.spool.close()

    # -- producers (the AuditSink) -----------------------------------------------------------

    def submit(self, record: Mapping[str, Any]) -> None:
        """Queue one record; never blocks, never raises."""
        self._queue.put(dict(record))

    def report_metrics(self) -> None:
        """Publish this writer's queue and spool depth (its thread does it after every batch)."""
        telemetry.observe_audit_queue(self.table.name, self._queue.qsize(), self.spool.depth)

    def spool_depth(self) -> int:
        """Records in this writer's spool file (its own and adopted ones), waiting for the database."""
        return self.spool.depth

    # -- the writer thread -----------------------------------------------------------------

    def _drain(self) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                return items
            if item is not None:
                items.append(item)

    def _run(self) -> None:
        last_retry = 0.0
        stopping = False
        while not stopping and not self._abandoned.is_set():
            batch, stopping = self._next_batch()
            reachable = True
            if batch:
                self._inflight = batch
                left = self.write(batch)
                if left:
                    self._spool(left)
                reachable = not left
                self._inflight = []
            # Retry the spool only while the database answers (no point re-reading it otherwise).
            if reachable and (stopping or time.monotonic() - last_retry >= self.retry_seconds):
                last_retry = time.monotonic()
                self.flush_spool()
            self.report_metrics()

    def _next_batch(self) -> tuple[list[dict[str, Any]], bool]:
        """Up to ``batch_size`` records, and whether ``stop()`` asked the thread to end.

        Waits up to ``retry_seconds`` for a first record, then sleeps ``linger_seconds`` and takes
        what has arrived meanwhile: records queued while the thread sleeps wake nobody.
        """
        try:
            item = self._queue.get(timeout=self.retry_seconds)
        except queue.Empty:
            return [], False
        if item is None:
            return [], True
        if self.linger_seconds:
            time.sleep(self.linger_seconds)
        batch = [item]
        while len(batch) < self.batch_size:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                return batch, False
            if item is None:
                return batch, True
            batch.append(item)
        return batch, False

    def store(self, connection: Connection, records: Sequence[Mapping[str, Any]]) -> None:
        """Insert ``records`` (none of them stored yet) in the caller's transaction."""
        connection.execute(insert(hook_calls), [row_of_call(record) for record in records])
        cards = [row for record in records for row in card_rows(record)]
        if cards:
            connection.execute(insert(hook_cards), cards)

    # -- writing, refusals and dead letters --------------------------------------------------

    def write(self, records: Sequence[dict[str, Any]], *, idempotent: bool = False) -> list[dict[str, Any]]:
        """Write ``records`` in one transaction if the database takes them all; otherwise isolate
        the ones it refuses (halving the batch) into dead letters and write the rest.

        Returns the records left unwritten because the database is down (for the spool); ``[]``
        when every record is in the database or among the dead letters. ``idempotent`` skips
        records already stored (spool replays).
        """
        readable = [r for r in records if self.malformed(r) is None]
        left: list[dict[str, Any]] = []
        for record in records:
            problem = self.malformed(record)
            if problem is not None:
                left.extend(self._dead_letter(record, problem))
        if readable:
            left.extend(self._write_isolating(readable, idempotent=idempotent))
        return left

    def malformed(self, record: object) -> str | None:
        """Why a spooled record cannot be a row at all (before asking the database)."""
        if not isinstance(record, dict):
            return "ValueError: not a JSON object"
        if UNREADABLE in record:
            return "ValueError: an unreadable spool line (cut short by a crash mid-write?)"
        if not isinstance(record.get(self.key), str):
            return f"ValueError: no {self.key} string"
        return None

    def _write_isolating(
        self, records: Sequence[dict[str, Any]], *, idempotent: bool
    ) -> list[dict[str, Any]]:
        try:
            with self.engine.begin() as connection:
                fresh = self.fresh(connection, records) if idempotent else list(records)
                if fresh:
                    self.store(connection, fresh)
        except Exception as error:  # noqa: BLE001 -- each failure is a refusal or an outage: never lost
            if not is_refusal(error):
                log.warning(
                    "audit store unavailable, spooling %d records: %s", len(records), type(error).__name__
                )
                return list(records)
            if len(records) == 1:
                if not idempotent:  # a duplicate key may mean it is stored already (a replay)
                    return self._write_isolating(records, idempotent=True)
                return self._dead_letter(records[0], refusal_reason(error))
            middle = len(records) // 2
            left = self._write_isolating(records[:middle], idempotent=idempotent)
            if left:  # the database went down meanwhile: the second half waits too
                return [*left, *records[middle:]]
            return self._write_isolating(records[middle:], idempotent=idempotent)
        telemetry.count_audit_records(self.table.name, written=len(fresh))
        return []

    def fresh(self, connection: Connection, records: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
        """The records whose key is not in the table yet (each key once)."""
        key = self.table.c[self.key]
        unique = {record[self.key]: record for record in records}
        present = set(connection.scalars(select(key).where(key.in_(list(unique)))))
        return [record for identifier, record in unique.items() if identifier not in present]

    def _dead_letter(self, record: object, reason: str) -> list[dict[str, Any]]:
        """Keep a refused record as a dead letter; ``[record]`` if the database is down."""
        return keep_dead_letter(self.engine, record, reason, source_table=self.table.name, key=self.key)

    # -- the spool ---------------------------------------------------------------------------

    def _spool(self, batch: list[dict[str, Any]]) -> None:
        self.spool.append(batch)
        telemetry.count_audit_records(self.table.name, spooled=len(batch))

    def flush_spool(self) -> int:
        """Adopt orphaned spool files, then write this writer's spool to the database.

        Returns how many records left the spool (written, or kept as dead letters).
        """
        self.spool.adopt_orphans()
        return self.spool.replay(lambda chunk: self.write(chunk, idempotent=True))


class ExplanationStore(_WriteBehind[tuple[Sequence[StoredExplanation], datetime]]):
    """Explanations by card uuid: bounded memory in front of an optional database table, written behind."""

    def __init__(
        self,
        engine: Engine | None,
        *,
        capacity: int = 2000,
        linger_seconds: float = 0.05,
        miss_wait_seconds: float = 1.0,
    ) -> None:
        self.capacity = capacity
        self.miss_wait_seconds = miss_wait_seconds
        super().__init__(engine, linger_seconds=linger_seconds)
        self._memory: OrderedDict[str, StoredExplanation] = OrderedDict()
        self._lock = threading.Lock()
        self._writes = 0
        self._pending: dict[str, StoredExplanation] = {}  # submitted, not yet through the database
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
                self._start_thread("explanation-writer", self.close)
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
                explanation_logger.warning(
                    "explanations still queued at shutdown were not stored in the database"
                )

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
                explanation_logger.exception("explanations not stored in the database")
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
            explanation_logger.warning(
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
            explanation_logger.warning("explanation lookup failed (%s)", type(error).__name__)
            raise _LookupFailedError from error
        if row is None:
            return None
        expires = row["expires_at"]
        if expires.tzinfo is None:  # SQLite keeps no zone; everything is written in UTC
            expires = expires.replace(tzinfo=UTC)
        return StoredExplanation(card_uuid, expires, orjson.loads(row["body"]))


class _LookupFailedError(Exception):
    """The database could not be asked (logged where it happened)."""
