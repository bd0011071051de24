"""The audit trail: one row per hook call, written off the response path, never lost.

``AuditWriter`` takes records from the request handlers through a queue and writes them in
batches from one background thread. When the database refuses a batch, the batch is appended
to a spool file (JSON lines) in the data folder and written again once the database answers;
records left at shutdown are flushed or spooled, never dropped.

Tables: ``hook_calls`` (one row per call), ``hook_cards`` (one row per card shown, written in the
same transaction as its call, so that feedback can find a card by its uuid) and ``feedback`` (one
row per feedback entry; written by ``service.governance.feedback``). The schema is managed by the
Alembic migrations in ``service/migrations``; a test keeps these declarations and the migrations
in step.
"""

from __future__ import annotations

import atexit
import fcntl
import json
import logging
import os
import queue
import threading
import time
import uuid
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import IO, Any

import orjson
from sqlalchemy import (
    JSON,
    Boolean,
    Column,
    Connection,
    DateTime,
    Engine,
    Float,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    create_engine,
    insert,
    select,
)
from sqlalchemy.exc import SQLAlchemyError

from service import metrics

log = logging.getLogger("calf_cds.audit")
metadata = MetaData()
SPOOL_CHUNK = 500  # records per transaction when replaying a spool

hook_calls = Table(
    "hook_calls",
    metadata,
    Column("call_id", String(36), primary_key=True),
    Column("received_at", DateTime(timezone=True), nullable=False, index=True),
    Column("hook", String(64), nullable=False),
    Column("hook_instance", String(128), nullable=False, index=True),
    Column("service_id", String(64), nullable=False),
    Column("patient_id", String(64), index=True),
    Column("user_id", String(256)),
    Column("fhir_server", String(2048)),
    Column("status_code", Integer, nullable=False),
    Column("error", Text),
    Column("pack_id", String(64)),
    Column("pack_version", String(32), index=True),
    Column("pack_hash", String(80)),
    Column("facts", JSON, nullable=False),
    Column("notes", JSON, nullable=False),
    Column("cards", JSON, nullable=False),
    Column("suppressed", JSON, nullable=False),
    Column("rule_errors", JSON, nullable=False),
    Column("shadow", JSON, nullable=False),
    Column("prefetch_states", JSON, nullable=False),
    Column("client", JSON, nullable=False),
    Column("duration_ms", Float, nullable=False),
)


hook_cards = Table(
    "hook_cards",
    metadata,
    Column("card_uuid", String(128), primary_key=True),
    Column("call_id", String(36), nullable=False, index=True),
    Column("received_at", DateTime(timezone=True), nullable=False, index=True),
    Column("pack_id", String(64)),
    Column("pack_version", String(32)),
    Column("pack_hash", String(80)),
    Column("rule_id", String(64)),
    Column("topic", String(32), index=True),
    Column("indicator", String(16)),
    Column("fallback", Boolean, nullable=False),
    Column("suggestions", JSON, nullable=False),  # the uuids of the card's suggestions
)


feedback = Table(
    "feedback",
    metadata,
    Column("feedback_id", String(36), primary_key=True),
    Column("received_at", DateTime(timezone=True), nullable=False, index=True),
    Column("service_id", String(64)),
    Column("card_uuid", String(128), nullable=False, index=True),
    Column("call_id", String(36), index=True),  # the hook call whose card this is, when known
    Column("pack_id", String(64)),
    Column("rule_id", String(64)),
    Column("pack_version", String(32)),
    Column("topic", String(32)),
    Column("outcome", String(16), nullable=False),  # accepted | overridden
    Column("accepted_suggestions", JSON, nullable=False),
    Column("override_reason_system", String(256)),
    Column("override_reason_code", String(128)),
    Column("override_reason_display", String(512)),
    Column("user_comment", Text),
    Column("outcome_timestamp", DateTime(timezone=True), nullable=False),
    Column("client", JSON, nullable=False),
    Column("note", Text),  # e.g. the card was not in the audit trail when the feedback was written
)


def make_engine(url: str, *, pool_size: int = 10) -> Engine:
    """An engine for the audit store; SQLite gets WAL so readers never block the writer.

    A server database gets a fixed pool of ``pool_size`` connections and no overflow: under load a
    caller waits a moment for a pooled connection rather than opening one of its own and closing
    it again (measured with bench/load.py: SQLAlchemy's default 5 + 10 overflow opened a PostgreSQL
    session for one call in seven, and those backends took a third of a core). It waits at most
    ``pool_timeout`` seconds, then fails like an unreachable database (the audit spools, the JWT
    replay check falls back to this process's memory).
    """
    if url.startswith("sqlite:///"):
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"timeout": 15}, json_serializer=_json)

        from sqlalchemy import event

        @event.listens_for(engine, "connect")
        def _pragmas(connection: Any, _: Any) -> None:
            cursor = connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.close()

        return engine
    # A database that does not answer must not hold the writer (or a readiness ping) for minutes.
    connect_args = {"connect_timeout": 5} if url.startswith("postgresql") else {}
    return create_engine(
        url,
        pool_pre_ping=True,
        pool_size=pool_size,
        max_overflow=0,
        pool_timeout=5,
        connect_args=connect_args,
        json_serializer=_json,
    )


def _json(value: Any) -> str:
    """JSON columns, encoded by orjson: a third of the writer's time per row with the standard library."""
    return orjson.dumps(value, default=str, option=orjson.OPT_NON_STR_KEYS).decode()


def _instant(value: Any) -> Any:
    return datetime.fromisoformat(value) if isinstance(value, str) else value


def _row(record: Mapping[str, Any]) -> dict[str, Any]:
    row = dict(record)
    row["received_at"] = _instant(row["received_at"])
    return {c.name: row.get(c.name) for c in hook_calls.columns}


def card_rows(record: Mapping[str, Any]) -> list[dict[str, Any]]:
    """One ``hook_cards`` row per card the call showed."""
    return [
        {
            "card_uuid": card["uuid"],
            "call_id": record["call_id"],
            "received_at": _instant(record["received_at"]),
            "pack_id": record.get("pack_id"),
            "pack_version": record.get("pack_version"),
            "pack_hash": record.get("pack_hash"),
            "rule_id": card.get("rule_id"),
            "topic": card.get("topic"),
            "indicator": card.get("indicator"),
            "fallback": bool(card.get("fallback", False)),
            "suggestions": list(card.get("suggestions", ())),
        }
        for card in record.get("cards", ())
        if card.get("uuid")
    ]


class AuditWriter:
    """Background, batched, spooling writer of audit records.

    Subclasses write other kinds of record the same way by overriding ``key``, ``table``,
    ``spool_name`` and :meth:`store` (see ``service.governance.feedback.FeedbackWriter``).

    Each writer (one per worker process and kind) spools to a file of its own, named after
    ``spool_name`` and locked (``flock``) while the writer runs, so processes sharing the data
    folder never read or delete each other's records. A spool file of the same kind that no
    running writer holds (its process stopped or died) is adopted by the next writer that finds
    it: written to the database, then deleted. Replays are idempotent (by ``key``), so a record
    spooled twice is written once.
    """

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
        self.engine = engine
        self.spool_dir = spool_dir
        self.spool_kind = Path(self.spool_name).stem  # "audit-spool": also the file of earlier releases
        self.spool_path = spool_dir / f"{self.spool_kind}-{os.getpid()}-{uuid.uuid4().hex[:8]}.jsonl"
        spool_dir.mkdir(parents=True, exist_ok=True)
        self.batch_size = batch_size
        self.retry_seconds = retry_seconds
        # After the first record, wait this long for more before writing: at a few hundred calls a
        # second that makes one transaction of ~10 records rather than ten of one (less CPU per
        # record, and fewer wake-ups of this thread competing with the event loop for the GIL).
        self.linger_seconds = linger_seconds
        self._queue: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._lock_file: IO[bytes] | None = None
        self._inflight: list[dict[str, Any]] = []
        self._abandoned = threading.Event()  # stop() gave up waiting: the thread ends when it can
        self._spooled = 0
        self.written = 0

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        if self._thread is None:
            self._lock_file = self.spool_path.open("ab")
            fcntl.flock(self._lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
            self._thread = threading.Thread(target=self._run, name="audit-writer", daemon=True)
            self._thread.start()
            atexit.register(self.stop, 2.0)

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
                # The thread may hold the spool lock while it waits on the database: write what
                # is left to a file of its own instead, which the next writer adopts.
                log.warning("audit store did not answer within %.1f s at shutdown; spooling", timeout)
                leftover = [*self._inflight, *self._drain()]
                if leftover:
                    _write_spool_file(self.spool_path.with_suffix(".shutdown.jsonl"), leftover)
                    metrics.count_audit_records(self.table.name, spooled=len(leftover))
                metrics.observe_audit_queue(self.table.name, 0, 0)
                if self._lock_file is not None:
                    self._lock_file.close()
                    self._lock_file = None
                return
        leftover = self._drain()
        if leftover:
            self._spool(leftover)
        metrics.observe_audit_queue(self.table.name, 0, self._spooled)
        if self._lock_file is not None:
            with self._lock:
                if self._spooled == 0:
                    self.spool_path.unlink(missing_ok=True)
                self._lock_file.close()  # releases the flock: a later writer adopts what is left
                self._lock_file = None

    # -- producers -------------------------------------------------------------------------

    def submit(self, record: Mapping[str, Any]) -> None:
        """Queue one record; never blocks, never raises."""
        self._queue.put(dict(record))

    @property
    def pending(self) -> int:
        return self._queue.qsize()

    def report_metrics(self) -> None:
        """Publish this writer's queue and spool depth (its thread does it after every batch)."""
        metrics.observe_audit_queue(self.table.name, self._queue.qsize(), self._spooled)

    def spool_depth(self) -> int:
        """Records in this writer's spool file, waiting for the database to come back."""
        return self._spooled

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
            written = True
            if batch:
                self._inflight = batch
                written = self._write(batch)
                if not written:
                    self._spool(batch)
                self._inflight = []
            # Retry the spool only while the database answers (no point re-reading it otherwise).
            if written and (stopping or time.monotonic() - last_retry >= self.retry_seconds):
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
        connection.execute(insert(hook_calls), [_row(record) for record in records])
        cards = [row for record in records for row in card_rows(record)]
        if cards:
            connection.execute(insert(hook_cards), cards)

    def _write(self, batch: list[dict[str, Any]]) -> bool:
        records = batch
        try:
            with self.engine.begin() as connection:
                self.store(connection, records)
        except SQLAlchemyError as error:
            log.warning(
                "audit store unavailable, spooling %d records: %s", len(records), type(error).__name__
            )
            return False
        self.written += len(records)
        metrics.count_audit_records(self.table.name, written=len(records))
        return True

    def _spool(self, batch: list[dict[str, Any]]) -> None:
        with self._lock:
            _write_spool_file(self.spool_path, batch)
            self._spooled += len(batch)
        metrics.count_audit_records(self.table.name, spooled=len(batch))

    def flush_spool(self) -> int:
        """Write spooled records (this writer's, and any orphaned spool file) to the database.

        Returns how many records left the spool files.
        """
        flushed = 0
        with self._lock:
            if self._spooled:
                records = _read_spool(self.spool_path)
                if self._write_idempotent(records):
                    with self.spool_path.open("r+b") as handle:
                        handle.truncate(0)
                    flushed += len(records)
                    self._spooled = 0
        for path in sorted(self.spool_dir.glob(f"{self.spool_kind}*.jsonl")):
            if path != self.spool_path:
                flushed += self._adopt(path)
        return flushed

    def _adopt(self, path: Path) -> int:
        """Write and delete a spool file no running writer holds; 0 if one does, or on failure."""
        try:
            handle = path.open("rb")
        except FileNotFoundError:
            return 0
        with handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return 0  # its writer is running
            try:
                if os.fstat(handle.fileno()).st_ino != path.stat().st_ino:
                    return 0  # adopted and deleted by another writer meanwhile
            except FileNotFoundError:
                return 0
            records = _read_spool(path)
            if not self._write_idempotent(records):
                return 0
            path.unlink(missing_ok=True)
            if records:
                log.info("adopted %d spooled audit records from %s", len(records), path.name)
            return len(records)

    def _write_idempotent(self, records: list[dict[str, Any]]) -> bool:
        key = self.table.c[self.key]
        unique = list({record[self.key]: record for record in records}.values())
        for start in range(0, len(unique), SPOOL_CHUNK):
            chunk = unique[start : start + SPOOL_CHUNK]
            try:
                with self.engine.begin() as connection:
                    ids = [record[self.key] for record in chunk]
                    present = set(connection.scalars(select(key).where(key.in_(ids))))
                    fresh = [record for record in chunk if record[self.key] not in present]
                    if fresh:
                        self.store(connection, fresh)
            except SQLAlchemyError:
                return False
            self.written += len(fresh)
            metrics.count_audit_records(self.table.name, written=len(fresh))
        return True


def _write_spool_file(path: Path, records: Iterable[Mapping[str, Any]]) -> None:
    """Append records to a spool file, one JSON line each, and make sure they reached the disk."""
    lines = [json.dumps(record, default=str) + "\n" for record in records]
    with path.open("a", encoding="utf-8") as handle:
        handle.writelines(lines)
        handle.flush()
        os.fsync(handle.fileno())


def _read_spool(path: Path) -> list[dict[str, Any]]:
    """The records in a spool file; a line cut short by a crash mid-write is skipped."""
    records = []
    with path.open("rb") as handle:
        for line in handle:
            try:
                records.append(json.loads(line))
            except ValueError:
                log.warning("skipped a truncated line in %s", path.name)
    return records
