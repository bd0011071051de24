"""Spool files: audit records waiting on local disk for the database, one JSON object a line.

A writer appends whole lines and ``fsync``s them. A line cut short by a crash mid-write cannot be
read back as a record; it is not skipped (that would lose it silently) but read as
``{UNREADABLE: <the line's text>}``, which the writer keeps as a dead letter with that reason.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

log = logging.getLogger("calf_cds.audit")

UNREADABLE = "unreadable_spool_line"


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


def read_spool(path: Path) -> list[dict[str, Any]]:
    """The records in a spool file; a line that is not a JSON object is kept as ``{UNREADABLE: text}``."""
    records: list[dict[str, Any]] = []
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
