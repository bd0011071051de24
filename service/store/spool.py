"""Spool files: audit records waiting on local disk for the database, one JSON object a line.

A writer appends whole lines and ``fsync``s them. A line cut short by a crash mid-write cannot be
read back as a record; it is not skipped (that would lose it silently) but read as
``{UNREADABLE: <the line's text>}``, which the writer keeps as a dead letter with that reason.

Each writer (one per worker process and kind of record) spools to a :class:`Spool` of its own: a
file named after the kind, the process and a random suffix, locked (``flock``) while the writer
runs, so that processes sharing the data folder never read or delete each other's records. A
spool file of the same kind that no running writer holds (its process stopped or died) is adopted
by the next writer that finds it: its records move into that writer's own spool (counted in its
depth), and the file is deleted.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import threading
import uuid
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import IO, Any

__all__ = ["UNREADABLE", "Spool", "read_spool", "rewrite_spool_file", "write_spool_file"]

log = logging.getLogger("calf_cds.audit")

UNREADABLE = "unreadable_spool_line"
SPOOL_CHUNK = 500  # records per transaction when replaying a spool

Records = list[dict[str, Any]]


def write_spool_file(path: Path, records: Iterable[Mapping[str, Any]]) -> None:
    """Append records to a spool file, one JSON line each, and make sure they reached the disk.

    ``ensure_ascii`` (the default): every character, a NUL or a lone surrogate included, is kept
    as an escape, so what is read back is exactly what was written.
    """
    lines = [json.dumps(record, default=str) + "\n" for record in records]
    with path.open("a", encoding="utf-8") as handle:
        handle.writelines(lines)
        handle.flush()
        os.fsync(handle.fileno())


def rewrite_spool_file(path: Path, records: Iterable[Mapping[str, Any]]) -> None:
    """Replace a spool file's content with ``records`` (the caller holds its lock)."""
    with path.open("r+b") as handle:
        handle.truncate(0)
    write_spool_file(path, records)


def read_spool(path: Path) -> Records:
    """The records in a spool file; a line that is not a JSON object is kept as ``{UNREADABLE: text}``."""
    records: Records = []
    with path.open("rb") as handle:
        for line in handle:
            if not line.strip():
                continue
            try:
                value = json.loads(line)
            except ValueError:
                value = None
            if isinstance(value, dict):
                records.append(value)
            else:
                log.warning("an unreadable line in %s becomes a dead letter", path.name)
                text = line.decode("utf-8", errors="backslashreplace").rstrip("\n")
                records.append({UNREADABLE: text, "spool_file": path.name})
    return records


class Spool:
    """One writer's spool file (see the module docstring): append, replay, adopt orphans, close.

    ``kind`` names the files of one kind of record (``audit-spool``: also the single file of
    earlier releases, adopted like any orphan). ``depth`` counts the records in this spool, its
    own and adopted ones.
    """

    def __init__(self, folder: Path, kind: str) -> None:
        self.folder = folder
        self.kind = kind
        self.path = folder / f"{kind}-{os.getpid()}-{uuid.uuid4().hex[:8]}.jsonl"
        self.depth = 0
        self._lock = threading.Lock()
        self._lock_file: IO[bytes] | None = None

    def open(self) -> None:
        """Create and lock this spool's file, then adopt what stopped writers left behind."""
        self.folder.mkdir(parents=True, exist_ok=True)
        self._lock_file = self.path.open("ab")
        fcntl.flock(self._lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        self.adopt_orphans()

    def append(self, records: Records) -> None:
        with self._lock:
            write_spool_file(self.path, records)
            self.depth += len(records)

    def replay(self, write: Callable[[Records], Records]) -> int:
        """Hand the spooled records to ``write`` in chunks, keep what it gives back (the database
        went down again: the rest of the chunks wait too); how many records left the spool."""
        with self._lock:
            if not self.depth:
                return 0
            records = read_spool(self.path)
            left: Records = []
            for start in range(0, len(records), SPOOL_CHUNK):
                chunk = records[start : start + SPOOL_CHUNK]
                left.extend(chunk if left else write(chunk))
            if len(left) != len(records):
                rewrite_spool_file(self.path, left)
            self.depth = len(left)
            return len(records) - len(left)

    def close(self) -> None:
        """Release the file (deleted when empty): the next writer adopts what is left."""
        if self._lock_file is not None:
            with self._lock:
                if self.depth == 0:
                    self.path.unlink(missing_ok=True)
                self._lock_file.close()
                self._lock_file = None

    def abandon(self, records: Records) -> None:
        """Stop without this spool's lock (a writer thread stuck in the database may hold it): the
        records go to a file of their own, which the next writer adopts."""
        if records:
            write_spool_file(self.path.with_suffix(".shutdown.jsonl"), records)
        if self._lock_file is not None:
            self._lock_file.close()
            self._lock_file = None

    def adopt_orphans(self) -> int:
        """Move the records of spool files no running writer holds into this spool.

        No database is needed: the records are counted in this spool's depth at once, and
        written (or dead-lettered) by the writer's next replay. Returns how many were adopted.
        """
        adopted = 0
        for path in sorted(self.folder.glob(f"{self.kind}*.jsonl")):
            if path != self.path:
                adopted += self._adopt(path)
        return adopted

    def _adopt(self, path: Path) -> int:
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
            records = read_spool(path)
            if records:
                self.append(records)  # moved, not newly spooled: the spooled-records metric stays
            path.unlink(missing_ok=True)
        if records:
            log.info("adopted %d spooled audit records from %s", len(records), path.name)
        return len(records)
