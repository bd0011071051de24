"""Readiness of the audit store: is the database reachable, or can records be spooled to disk?

``/readyz`` asks :meth:`StoreProbe.status` on every probe, from every kubelet, every few seconds;
the database is pinged at most once per ``interval`` seconds, in a worker thread, and never for
longer than ``timeout`` seconds (a ping still running is not started again). Between pings the
last answer is reused.

The same round trip counts the dead letters (audit records the database refused, see
``service.store.writers``): ``/readyz`` reports them and ``calf_cds_audit_dead_letters`` exports them.
They do not make the service unready (every other record is still written), but an operator
must look at them (``calf-cds db dead-letters list``).
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import KW_ONLY, dataclass, field
from pathlib import Path
from typing import Literal

from sqlalchemy import Engine, func, select, text
from sqlalchemy.exc import SQLAlchemyError

from service.ops import telemetry
from service.store.schema import dead_letters

__all__ = ["AuditPath", "StoreProbe", "StoreStatus", "count_dead_letters", "ping"]

log = logging.getLogger("calf_cds.health")

AuditPath = Literal["database", "spooling", "unavailable"]


@dataclass(frozen=True)
class StoreStatus:
    """Where audit records go right now; ``ready`` unless they could go nowhere."""

    audit: AuditPath
    database: bool
    dead_letters: int | None = None  # None: not counted (the database did not answer)

    @property
    def ready(self) -> bool:
        return self.audit != "unavailable"


def ping(engine: Engine) -> bool:
    """One round trip to the database."""
    try:
        with engine.connect() as connection:
            connection.execute(text("SELECT 1"))
    except (SQLAlchemyError, OSError) as error:
        log.warning("audit store ping failed: %s", type(error).__name__)
        return False
    return True


def count_dead_letters(engine: Engine) -> int | None:
    """Rows in ``audit_dead_letters``; None when they cannot be counted (e.g. schema not migrated)."""
    try:
        with engine.connect() as connection:
            return int(connection.scalar(select(func.count()).select_from(dead_letters)) or 0)
    except (SQLAlchemyError, OSError) as error:
        log.warning("could not count audit dead letters: %s", type(error).__name__)
        return None


@dataclass
class StoreProbe:
    """A cached, time-bounded check of the audit store and of the spool as its fallback.

    ``writer_alive`` tells whether the audit writer runs (``AuditSink.alive``); ``interval`` and
    ``timeout`` are the seconds between pings and the longest wait for one.
    """

    engine: Engine
    spool_dir: Path
    _: KW_ONLY
    writer_alive: Callable[[], bool]
    interval: float = 5.0
    timeout: float = 1.0
    monotonic: Callable[[], float] = time.monotonic
    _checked_at: float | None = field(default=None, init=False)
    _database: bool = field(default=False, init=False)
    _dead_letters: int | None = field(default=None, init=False)
    _ping: asyncio.Future[bool] | None = field(default=None, init=False)
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock, init=False)
    # One thread of its own: a hung database never holds the event loop or the request threads.
    _executor: ThreadPoolExecutor = field(
        default_factory=lambda: ThreadPoolExecutor(max_workers=1, thread_name_prefix="audit-store-ping"),
        init=False,
    )

    async def status(self) -> StoreStatus:
        database = await self._database_reachable()
        letters = self._dead_letters if database else None
        if not self.writer_alive():
            return StoreStatus("unavailable", database, letters)
        if database:
            return StoreStatus("database", database, letters)
        spool_writable = os.access(self.spool_dir, os.W_OK)
        return StoreStatus("spooling" if spool_writable else "unavailable", database, letters)

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)

    async def _database_reachable(self) -> bool:
        async with self._lock:
            if self._checked_at is not None and self.monotonic() - self._checked_at < self.interval:
                return self._database
            if self._ping is None or self._ping.done():
                self._ping = asyncio.get_running_loop().run_in_executor(self._executor, self._check)
            try:
                # shield: a slow ping keeps running and is awaited again by the next probe.
                self._database = await asyncio.wait_for(asyncio.shield(self._ping), self.timeout)
            except TimeoutError:
                log.warning("audit store ping took longer than %.1f s", self.timeout)
                self._database = False
            self._checked_at = self.monotonic()
            return self._database

    def _check(self) -> bool:
        """Ping, then count the dead letters (in the probe's own thread)."""
        if not ping(self.engine):
            return False
        self._dead_letters = count_dead_letters(self.engine)
        if self._dead_letters is not None:
            telemetry.set_audit_dead_letters(self._dead_letters)
        return True
