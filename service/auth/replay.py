"""The replay check of client JWTs: each (iss, jti) pair is accepted once, until its token expires.

- :class:`MemoryReplayCache`: one process's memory.
- :class:`SqlReplayCache`: the ``jwt_replay`` table, shared by every replica on the same database.
- :class:`LayeredReplayCache`: the shared cache backed by this process's memory, which alone
  decides while the shared one is down (README "Security": availability over a refused call).

A shared store that fails raises :class:`~service.auth.errors.ReplayCacheUnavailableError`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Protocol

import anyio.to_thread
import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from service.auth.errors import ReplayCacheUnavailableError
from service.store.schema import jwt_replay_table

__all__ = ["LayeredReplayCache", "MemoryReplayCache", "ReplayCache", "SqlReplayCache"]

log = logging.getLogger("calf_cds.auth")


class ReplayCache(Protocol):
    """Remembers (iss, jti) pairs until `expires_at` (epoch seconds), for all who share it."""

    async def check_and_store(self, iss: str, jti: str, expires_at: float) -> bool:
        """Store the pair; True if it was not already stored (and unexpired), False for a replay."""
        ...


class MemoryReplayCache:
    """A replay cache for one process; expired entries are dropped now and then."""

    def __init__(self, *, clock: Callable[[], float], prune_interval_seconds: float = 60.0) -> None:
        self._clock = clock
        self._prune_interval = prune_interval_seconds
        self._next_prune = 0.0
        self._seen: dict[tuple[str, str], float] = {}

    def __len__(self) -> int:
        return len(self._seen)

    async def check_and_store(self, iss: str, jti: str, expires_at: float) -> bool:
        now = self._clock()
        if now >= self._next_prune:
            self._seen = {pair: until for pair, until in self._seen.items() if until > now}
            self._next_prune = now + self._prune_interval
        seen_until = self._seen.get((iss, jti))
        if seen_until is not None and seen_until > now:
            return False
        self._seen[(iss, jti)] = expires_at
        return True


class LayeredReplayCache:
    """The shared (database) replay cache, backed by this process's own memory.

    Every ``jti`` is remembered locally as well as in the shared store. While the shared store
    cannot be reached, the local memory alone decides: replay detection narrows to this replica
    for the length of the outage instead of refusing every call, because cards must still be
    answered while the database is down (the audit trail spools meanwhile). ``fallbacks`` counts
    the calls decided that way.
    """

    def __init__(self, shared: ReplayCache, local: ReplayCache) -> None:
        self.shared = shared
        self.local = local
        self.fallbacks = 0

    async def check_and_store(self, iss: str, jti: str, expires_at: float) -> bool:
        if not await self.local.check_and_store(iss, jti, expires_at):
            return False
        try:
            return await self.shared.check_and_store(iss, jti, expires_at)
        except ReplayCacheUnavailableError as error:
            self.fallbacks += 1
            log.warning("replay store unreachable (%s): jti checked in this process only", error)
            return True


class SqlReplayCache:
    """A replay cache in the `jwt_replay` table, shared by every replica using the same database.

    The insert is the check: a duplicate (iss, jti) violates the primary key. A row left over from
    an expired token is reclaimed by a conditional update. Expired rows are deleted every
    `prune_interval_seconds`. Blocking database calls run in a worker thread. Create the table with
    `auth_metadata.create_all(engine)` or the project's migrations.
    """

    def __init__(
        self,
        engine: sa.Engine,
        *,
        clock: Callable[[], float],
        prune_interval_seconds: float = 300.0,
    ) -> None:
        self._engine = engine
        self._clock = clock
        self._prune_interval = prune_interval_seconds
        self._next_prune = 0.0

    async def check_and_store(self, iss: str, jti: str, expires_at: float) -> bool:
        return await anyio.to_thread.run_sync(self._check_and_store, iss, jti, expires_at)

    def _check_and_store(self, iss: str, jti: str, expires_at: float) -> bool:
        table = jwt_replay_table
        now = self._clock()
        try:
            if now >= self._next_prune:
                self._next_prune = now + self._prune_interval
                with self._engine.begin() as connection:
                    connection.execute(sa.delete(table).where(table.c.expires_at <= now))
            try:
                with self._engine.begin() as connection:
                    connection.execute(sa.insert(table).values(iss=iss, jti=jti, expires_at=expires_at))
                return True
            except IntegrityError:
                pass
            with self._engine.begin() as connection:
                reclaimed = connection.execute(
                    sa.update(table)
                    .where(table.c.iss == iss, table.c.jti == jti, table.c.expires_at <= now)
                    .values(expires_at=expires_at)
                )
                return reclaimed.rowcount == 1
        except SQLAlchemyError as exc:
            raise ReplayCacheUnavailableError(f"replay store failed: {type(exc).__name__}") from exc
