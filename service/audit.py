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

import json
import logging
import queue
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

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

log = logging.getLogger("calf_cds.audit")
metadata = MetaData()

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


def make_engine(url: str) -> Engine:
    """An engine for the audit store; SQLite gets WAL so readers never block the writer."""
    if url.startswith("sqlite:///"):
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"timeout": 15})

        from sqlalchemy import event

        @event.listens_for(engine, "connect")
        def _pragmas(connection: Any, _: Any) -> None:
            cursor = connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.close()

        return engine
    return create_engine(url, pool_pre_ping=True)


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
    ) -> None:
        self.engine = engine
        self.spool_path = spool_dir / self.spool_name
        spool_dir.mkdir(parents=True, exist_ok=True)
        self.batch_size = batch_size
        self.retry_seconds = retry_seconds
        self._queue: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self.written = 0

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="audit-writer", daemon=True)
            self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Drain the queue (writing or spooling every record), then stop the thread."""
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join(timeout)
            self._thread = None
        leftover = self._drain()
        if leftover:
            self._spool(leftover)

    # -- producers -------------------------------------------------------------------------

    def submit(self, record: Mapping[str, Any]) -> None:
        """Queue one record; never blocks, never raises."""
        self._queue.put(dict(record))

    @property
    def pending(self) -> int:
        return self._queue.qsize()

    def spool_depth(self) -> int:
        """Records waiting in the spool file for the database to come back."""
        with self._lock:
            if not self.spool_path.exists():
                return 0
            with self.spool_path.open("rb") as handle:
                return sum(1 for _ in handle)

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
        while not stopping:
            batch: list[dict[str, Any]] = []
            try:
                item = self._queue.get(timeout=self.retry_seconds)
                while item is not None:
                    batch.append(item)
                    if len(batch) >= self.batch_size:
                        break
                    item = self._queue.get_nowait()
                stopping = item is None
            except queue.Empty:
                pass
            if batch and not self._write(batch):
                self._spool(batch)
            if stopping or time.monotonic() - last_retry >= self.retry_seconds:
                last_retry = time.monotonic()
                self.flush_spool()

    def store(self, connection: Connection, records: Sequence[Mapping[str, Any]]) -> None:
        """Insert ``records`` (none of them stored yet) in the caller's transaction."""
        connection.execute(insert(hook_calls), [_row(record) for record in records])
        cards = [row for record in records for row in card_rows(record)]
        if cards:
            connection.execute(insert(hook_cards), cards)

    def _write(self, batch: Iterable[Mapping[str, Any]]) -> bool:
        records = list(batch)
        try:
            with self.engine.begin() as connection:
                self.store(connection, records)
        except SQLAlchemyError as error:
            log.warning(
                "audit store unavailable, spooling %d records: %s", len(records), type(error).__name__
            )
            return False
        self.written += len(records)
        return True

    def _spool(self, batch: Iterable[Mapping[str, Any]]) -> None:
        with self._lock, self.spool_path.open("a", encoding="utf-8") as handle:
            for record in batch:
                handle.write(json.dumps(record, default=str) + "\n")
            handle.flush()

    def flush_spool(self) -> int:
        """Write spooled records to the database; returns how many were written."""
        with self._lock:
            if not self.spool_path.exists():
                return 0
            lines = self.spool_path.read_text("utf-8").splitlines()
            records = [json.loads(line) for line in lines if line.strip()]
            if not records:
                self.spool_path.unlink()
                return 0
            if not self._write_idempotent(records):
                return 0
            self.spool_path.unlink()
            return len(records)

    def _write_idempotent(self, records: list[dict[str, Any]]) -> bool:
        key = self.table.c[self.key]
        ids = [record[self.key] for record in records]
        try:
            with self.engine.begin() as connection:
                present: set[str] = set()
                for start in range(0, len(ids), 500):
                    present.update(connection.scalars(select(key).where(key.in_(ids[start : start + 500]))))
                fresh = list({r[self.key]: r for r in records if r[self.key] not in present}.values())
                if fresh:
                    self.store(connection, fresh)
        except SQLAlchemyError:
            return False
        self.written += len(fresh)
        return True
