"""Where a hook call's records go: the interfaces the rest of the service writes to and reads from.

**Audit records** (:class:`AuditSink`). A record is a JSON-able mapping (a hook call's record, a
feedback entry): whoever builds it owns its shape, the sink only keeps it.
:class:`~service.store.writers.AuditWriter` is the implementation (the SQL tables, the spool while
the database is down, dead letters for what it refuses); callers that only submit records, report
on them (``/readyz``, ``/metrics``) or check that the sink runs depend on this protocol.

**Card explanations** (:class:`ExplanationSink`): each card's explanation, kept until its link
expires (:class:`StoredExplanation`, plain data); the hook room submits them, the explanation page
finds them. :class:`~service.store.writers.ExplanationStore` is the implementation.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, NamedTuple, Protocol

__all__ = ["AuditSink", "ExplanationSink", "StoredExplanation"]


class AuditSink(Protocol):
    """Takes audit records off the response path and keeps them, never losing one."""

    def submit(self, record: Mapping[str, Any]) -> None:
        """Queue one record; never blocks, never raises."""
        ...

    def spool_depth(self) -> int:
        """Records waiting on local disk for the database (this process's)."""
        ...

    def report_metrics(self) -> None:
        """Publish the queue and spool depth as metrics."""
        ...

    @property
    def alive(self) -> bool:
        """Whether records submitted now will be written (the writer runs)."""
        ...


class StoredExplanation(NamedTuple):
    """One card's explanation as kept: plain data (JSON), not HTML, until its link expires."""

    card_uuid: str
    expires_at: datetime
    body: Mapping[str, Any]


class ExplanationSink(Protocol):
    """Keeps cards' explanations for their links: submitted behind the call, found at the click."""

    def submit(self, entries: Sequence[StoredExplanation], *, now: datetime) -> None:
        """Keep ``entries`` (findable at once in this process); never blocks on the database."""
        ...

    def find(self, card_uuid: str, *, now: datetime) -> StoredExplanation | None:
        """The unexpired explanation of ``card_uuid`` (blocking: call it off the event loop)."""
        ...
