"""Readiness of the audit store: is the database reachable, or can records be spooled to disk?

``/readyz`` asks :meth:`StoreProbe.status` on every probe, from every kubelet, every few seconds;
the database is pinged at most once per ``interval`` seconds, in a worker thread, and never for
longer than ``timeout`` seconds (a ping still running is not started again). Between pings the
last answer is reused.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from sqlalchemy import Engine, text
from sqlalchemy.exc import SQLAlchemyError

log = logging.getLogger("calf_cds.health")

AuditPath = Literal["database", "spooling", "unavailable"]


@dataclass(frozen=True)
class StoreStatus:
    """Where audit records go right now; ``ready`` unless they could go nowhere."""

    audit: AuditPath
    database: bool

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


class StoreProbe:
    """A cached, time-bounded check of the audit store and of the spool as its fallback."""

    def __init__(
        self,
        engine: Engine,
        spool_dir: Path,
        *,
        writer_alive: Callable[[], bool],
        interval: float = 5.0,
        timeout: float = 1.0,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.engine = engine
        self.spool_dir = spool_dir
        self.writer_alive = writer_alive
        self.interval = interval
        self.timeout = timeout
        self.monotonic = monotonic
        self._checked_at: float | None = None
        self._database = False
        self._ping: asyncio.Future[bool] | None = None
        self._lock = asyncio.Lock()
        # One thread of its own: a hung database never holds the event loop or the request threads.
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="audit-store-ping")

    async def status(self) -> StoreStatus:
        database = await self._database_reachable()
        if not self.writer_alive():
            return StoreStatus("unavailable", database)
        if database:
            return StoreStatus("database", database)
        spool_writable = os.access(self.spool_dir, os.W_OK)
        return StoreStatus("spooling" if spool_writable else "unavailable", database)

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)

    async def _database_reachable(self) -> bool:
        async with self._lock:
            if self._checked_at is not None and self.monotonic() - self._checked_at < self.interval:
                return self._database
            if self._ping is None or self._ping.done():
                self._ping = asyncio.get_running_loop().run_in_executor(self._executor, ping, self.engine)
            try:
                # shield: a slow ping keeps running and is awaited again by the next probe.
                self._database = await asyncio.wait_for(asyncio.shield(self._ping), self.timeout)
            except TimeoutError:
                log.warning("audit store ping took longer than %.1f s", self.timeout)
                self._database = False
            self._checked_at = self.monotonic()
            return self._database
