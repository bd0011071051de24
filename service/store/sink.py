"""Where audit records go: the interface the rest of the service writes to and reports on.

A record is a JSON-able mapping (a hook call's record, a feedback entry): whoever builds it owns
its shape, the sink only keeps it. :class:`~service.store.audit.AuditWriter` is the implementation
(the SQL tables, the spool while the database is down, dead letters for what it refuses); callers
that only submit records, report on them (``/readyz``, ``/metrics``) or check that the sink runs
depend on this protocol.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

__all__ = ["AuditSink"]


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
