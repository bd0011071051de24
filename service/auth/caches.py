"""What the verifier keeps between calls: the trusted issuers' public keys, and the token ids used.

**Keys** (`KeyStore`): resolves (issuer, kid, jku) to a `VerificationKey`, caching each JWK Set
source with a TTL and reloading a source at most once per `min_refresh_interval_seconds`, so key
rotation is picked up and a flood of made-up `kid`s cannot make us hammer a client's JWKS endpoint.
Inline and file sources never touch the network. Failures are `JkuNotAllowedError`,
`UnknownKeyIdError` and `JwksUnavailableError` (:mod:`service.auth.errors`). The JWK Sets
themselves and the trusted issuers' configuration are :mod:`service.auth.jwks`.

**Token ids** (the replay check of client JWTs): each (iss, jti) pair is accepted once, until its
token expires.

- :class:`MemoryReplayCache`: one process's memory.
- :class:`SqlReplayCache`: the ``jwt_replay`` table, shared by every replica on the same database.
- :class:`LayeredReplayCache`: the shared cache backed by this process's memory, which alone
  decides while the shared one is down (README "Security": availability over a refused call).

A shared store that fails raises :class:`~service.auth.errors.ReplayCacheUnavailableError`.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
import time
import weakref
from collections.abc import Callable, Mapping
from dataclasses import KW_ONLY, dataclass, field
from typing import Any, Literal, Protocol

import anyio
import anyio.to_thread
import httpx
import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from service.auth.errors import (
    JkuNotAllowedError,
    JwksUnavailableError,
    ReplayCacheUnavailableError,
    UnknownKeyIdError,
)
from service.auth.jwks import TrustedIssuer, VerificationKey, parse_jwks
from service.store.schema import jwt_replay_table

__all__ = ["KeyStore", "LayeredReplayCache", "MemoryReplayCache", "ReplayCache", "SqlReplayCache"]

log = logging.getLogger("calf_cds.auth")


# Keys


@dataclass(frozen=True, slots=True)
class _Source:
    kind: Literal["file", "url"]
    location: str


@dataclass(frozen=True, slots=True)
class _Entry:
    keys: Mapping[str, VerificationKey]
    loaded_at: float


@dataclass
class KeyStore:
    """Resolves (issuer, kid, jku) to a public key, caching each JWK Set source.

    A source (a JWK Set file, or a URL: the issuer's `jwks_url` or an allowlisted `jku`) is
    (re)loaded when it is missing, older than `ttl_seconds`, or lacks the wanted `kid`; but never
    more than once per `min_refresh_interval_seconds`, failed attempts included, and concurrent
    callers share one load. If a reload fails, the previous keys serve until they are
    `max_stale_seconds` old. URLs are fetched without following redirects, within
    `timeout_seconds` overall and at most `max_bytes` of body.
    """

    http_client: httpx.AsyncClient
    _: KW_ONLY
    clock: Callable[[], float]
    ttl_seconds: float = 300.0
    min_refresh_interval_seconds: float = 30.0
    max_stale_seconds: float = 3600.0
    timeout_seconds: float = 2.0
    max_bytes: int = 256 * 1024
    _inline: dict[str, tuple[TrustedIssuer, Mapping[str, VerificationKey]]] = field(
        default_factory=dict, init=False
    )
    _entries: dict[_Source, _Entry] = field(default_factory=dict, init=False)
    _last_attempt: dict[_Source, float] = field(default_factory=dict, init=False)
    _locks: dict[_Source, anyio.Lock] = field(default_factory=dict, init=False)

    def __post_init__(self) -> None:
        if not 0 < self.min_refresh_interval_seconds <= self.ttl_seconds <= self.max_stale_seconds:
            raise ValueError("need 0 < min_refresh_interval <= ttl <= max_stale (seconds)")

    async def get_key(self, issuer: TrustedIssuer, kid: str, jku: str | None = None) -> VerificationKey:
        """The key `kid` of `issuer`. Pinned keys win: an inline or file JWK Set that holds `kid`
        answers without any fetch, whatever `jku` the token names; an allowlisted `jku` is fetched
        only for a `kid` the pinned keys lack (or for an issuer whose keys are at a URL)."""
        if jku is not None and jku not in issuer.jku_allowlist:
            raise JkuNotAllowedError(f"jku {jku[:200]!r} is not allowlisted", iss=issuer.iss, kid=kid)
        if issuer.jwks is not None:
            cached = self._inline.get(issuer.iss)
            if cached is None or cached[0] is not issuer:  # a reloaded configuration
                cached = self._inline[issuer.iss] = (issuer, parse_jwks(issuer.jwks, strict=True))
            keys = cached[1]
            if kid in keys:
                return keys[kid]
        elif issuer.jwks_file is not None:
            pinned = _Source("file", str(issuer.jwks_file))
            if jku is None:
                return await self._key_from(pinned, issuer, kid)
            try:
                return await self._key_from(pinned, issuer, kid)
            except (UnknownKeyIdError, JwksUnavailableError):
                pass  # not pinned: the allowlisted jku may hold it (key rotation)
        elif jku is None:
            return await self._key_from(_Source("url", str(issuer.jwks_url)), issuer, kid)
        if jku is None:  # inline keys without the kid, and no jku to look further
            raise UnknownKeyIdError("kid not in the configured JWK Set", iss=issuer.iss, kid=kid)
        return await self._key_from(_Source("url", jku), issuer, kid)

    async def _key_from(self, source: _Source, issuer: TrustedIssuer, kid: str) -> VerificationKey:
        entry = self._entries.get(source)
        if entry is None or self.clock() - entry.loaded_at >= self.ttl_seconds or kid not in entry.keys:
            entry = await self._refresh(source)
        if entry is None or self.clock() - entry.loaded_at >= self.max_stale_seconds:
            raise JwksUnavailableError(f"no usable JWK Set from {source.location}", iss=issuer.iss, kid=kid)
        if kid in entry.keys:
            return entry.keys[kid]
        raise UnknownKeyIdError(f"kid not in the JWK Set at {source.location}", iss=issuer.iss, kid=kid)

    async def _refresh(self, source: _Source) -> _Entry | None:
        lock = self._locks.setdefault(source, anyio.Lock())
        async with lock:
            now = self.clock()
            last = self._last_attempt.get(source)
            if last is not None and now - last < self.min_refresh_interval_seconds:
                # Loaded (or failed) moments ago: do not ask again yet.
                return self._entries.get(source)
            self._last_attempt[source] = now
            try:
                keys = parse_jwks(json.loads(await self._read(source)), strict=False)
            except (OSError, ValueError, RecursionError, httpx.HTTPError) as exc:
                log.warning("cannot load JWK Set %s: %s", source.location, exc)
                return self._entries.get(source)
            entry = self._entries[source] = _Entry(keys=keys, loaded_at=now)
            return entry

    async def _read(self, source: _Source) -> bytes:
        if source.kind == "file":
            data = await anyio.Path(source.location).read_bytes()
            if len(data) > self.max_bytes:
                raise ValueError("JWK Set file too large")
            return data
        try:
            with anyio.fail_after(self.timeout_seconds):
                async with self.http_client.stream(
                    "GET",
                    source.location,
                    headers={"Accept": "application/json"},
                    timeout=self.timeout_seconds,
                    follow_redirects=False,
                ) as response:
                    if response.status_code != httpx.codes.OK:
                        raise ValueError(f"HTTP {response.status_code}")
                    body = bytearray()
                    async for chunk in response.aiter_bytes():
                        body += chunk
                        if len(body) > self.max_bytes:
                            raise ValueError("JWK Set response too large")
                    return bytes(body)
        except TimeoutError:
            raise ValueError(f"no answer within {self.timeout_seconds} s") from None


# Token ids


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


#: How often the inline SQLite check tries again while another connection writes (see SqlReplayCache).
BUSY_POLL_SECONDS = 0.0002
#: How long it tries before answering like an unreachable database (the engine's own busy timeout).
BUSY_GIVE_UP_SECONDS = 15.0


class SqlReplayCache:
    """A replay cache in the `jwt_replay` table, shared by every replica using the same database.

    One statement is the check: ``INSERT … ON CONFLICT (iss, jti) DO UPDATE SET expires_at = …
    WHERE jwt_replay.expires_at <= now RETURNING jti`` inserts a new pair, reclaims the row of an
    expired token, and returns nothing for a live one (a replay). The database decides atomically:
    two replicas that race with one token conflict on the primary key, and the loser's update finds
    the winner's unexpired row. No read before the write, one round trip, one transaction. (Another
    database than these two gets an insert and, for a duplicate, the conditional update.)

    Where the statement runs: on PostgreSQL (a network round trip) in a worker thread, off the event
    loop; on SQLite (a local file, ~0.1 ms) on the calling thread (``inline``), since handing it to
    a worker thread and back cost more than the statement itself. Expired rows are deleted every
    `prune_interval_seconds` on a background thread, never on a call's path. Create the table
    with `auth_metadata.create_all(engine)` or the project's migrations.

    Inline on SQLite, the statement goes straight to one ``sqlite3`` connection of the cache's own
    (opened at the first check, by the thread that then owns it; the SQL compiled once), in
    autocommit: a single statement is its own transaction. That connection does not wait in
    SQLite's busy handler, which sleeps 1, 2, 5… ms on the event loop's thread while the audit or
    explanation writer holds the file's write lock: the check polls every `BUSY_POLL_SECONDS`,
    yielding to the event loop in between, and gives up after `BUSY_GIVE_UP_SECONDS` like an
    unreachable database. (Issue 15: the check's p50 went from 0.70 to 0.21 ms; with the replay
    table in a file of its own, ``service.store.schema.replay_store_url``, its p99 from ~6 to
    ~1.9 ms.) Another thread than the owner, and a cache whose statement is the portable pair,
    take the SQLAlchemy path.
    """

    def __init__(
        self,
        engine: sa.Engine,
        *,
        clock: Callable[[], float],
        prune_interval_seconds: float = 300.0,
        inline: bool | None = None,
    ) -> None:
        self._engine = engine
        self._clock = clock
        self._prune_interval = prune_interval_seconds
        self._next_prune = 0.0
        self._pruning: threading.Thread | None = None
        self.inline = engine.dialect.name == "sqlite" if inline is None else inline
        self._statement = _check_statement(engine.dialect.name)
        self._connection: sqlite3.Connection | None = None  # the inline SQLite check's own
        self._owner: int | None = None  # the thread that opened it
        self._sqlite_sql: tuple[str, tuple[str, ...]] | None = None  # its SQL, its parameters' order
        if engine.dialect.name == "sqlite" and self._statement is not None:
            compiled = self._statement.compile(dialect=engine.dialect)
            self._sqlite_sql = (compiled.string, tuple(compiled.positiontup or ()))

    async def check_and_store(self, iss: str, jti: str, expires_at: float) -> bool:
        now = self._clock()
        if now >= self._next_prune:
            self._next_prune = now + self._prune_interval
            self._start_pruning(now)
        if not self.inline:
            return await anyio.to_thread.run_sync(self._check_and_store, iss, jti, expires_at, now)
        if (
            self._sqlite_sql is not None
            and self._statement is not None  # None: the portable pair, as for another dialect
            and self._owner in (None, threading.get_ident())
        ):
            parameters = {"iss": iss, "jti": jti, "expires_at": expires_at, "now": now}
            return await self._check_sqlite(*self._sqlite_sql, parameters)
        return self._check_and_store(iss, jti, expires_at, now)

    async def _check_sqlite(self, sql: str, order: tuple[str, ...], parameters: dict[str, Any]) -> bool:
        """The inline SQLite check on the cache's own connection, polling while the file is locked."""
        give_up_at = None
        values = [parameters[name] for name in order]
        while (fresh := self._upsert_sqlite(sql, values)) is None:
            give_up_at = give_up_at or time.monotonic() + BUSY_GIVE_UP_SECONDS
            if time.monotonic() > give_up_at:
                raise ReplayCacheUnavailableError("replay store failed: the database stayed locked")
            await anyio.sleep(BUSY_POLL_SECONDS)
        return fresh

    def _upsert_sqlite(self, sql: str, values: list[Any]) -> bool | None:
        """One try of the statement: True for a new pair, False for a replay, None while locked."""
        try:
            connection = self._connection or self._open_sqlite()
            cursor = connection.execute(sql, values)
            rows = cursor.fetchall()  # to the statement's end, which commits it (autocommit)
        except sqlite3.OperationalError as exc:
            if exc.sqlite_errorcode & 0xFF in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED):
                return None  # nothing was written: the statement is its own transaction
            self.close()
            raise ReplayCacheUnavailableError(f"replay store failed: {type(exc).__name__}") from exc
        except (sqlite3.Error, SQLAlchemyError) as exc:
            self.close()
            raise ReplayCacheUnavailableError(f"replay store failed: {type(exc).__name__}") from exc
        return bool(rows)

    def _open_sqlite(self) -> sqlite3.Connection:
        """The cache's own connection to the engine's file (its pragmas: WAL), out of the pool."""
        pooled = self._engine.raw_connection()
        pooled.detach()  # ours until close(): the pool neither resets nor reuses it
        connection = pooled.dbapi_connection
        if not isinstance(connection, sqlite3.Connection):  # pragma: no cover - the pysqlite driver
            raise sqlite3.InterfaceError(f"not a sqlite3 connection: {type(connection).__name__}")
        connection.isolation_level = None  # autocommit: no implicit BEGIN to hold the write lock
        connection.execute("PRAGMA busy_timeout = 0")  # locked: answer at once, the check polls
        self._connection, self._owner = connection, threading.get_ident()
        weakref.finalize(self, connection.close)
        return connection

    def close(self) -> None:
        """Close the inline SQLite check's connection (the next check opens another)."""
        connection, self._connection, self._owner = self._connection, None, None
        if connection is not None:
            connection.close()

    def _check_and_store(self, iss: str, jti: str, expires_at: float, now: float) -> bool:
        parameters = {"iss": iss, "jti": jti, "expires_at": expires_at, "now": now}
        try:
            if self._statement is None:
                return self._insert_or_reclaim(iss, jti, expires_at, now)
            with self._engine.begin() as connection:
                return connection.execute(self._statement, parameters).first() is not None
        except SQLAlchemyError as exc:
            raise ReplayCacheUnavailableError(f"replay store failed: {type(exc).__name__}") from exc

    def _insert_or_reclaim(self, iss: str, jti: str, expires_at: float, now: float) -> bool:
        """A database without ``ON CONFLICT``: insert (the primary key refuses a duplicate), else
        reclaim the row of an expired token with a conditional update."""
        table = jwt_replay_table
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

    def _start_pruning(self, now: float) -> None:
        if self._pruning is not None and self._pruning.is_alive():
            return  # the last one is still at it
        self._pruning = threading.Thread(target=self._prune, args=(now,), name="replay-prune", daemon=True)
        self._pruning.start()

    def _prune(self, now: float) -> None:
        try:
            with self._engine.begin() as connection:
                connection.execute(sa.delete(jwt_replay_table).where(jwt_replay_table.c.expires_at <= now))
        except SQLAlchemyError as exc:  # the next prune tries again; the check itself reports outages
            log.warning("expired jtis not pruned: %s", type(exc).__name__)

    def wait_pruned(self, timeout: float | None = None) -> None:
        """Wait for the prune under way, if any (tests, shutdown)."""
        if self._pruning is not None:
            self._pruning.join(timeout)


def _check_statement(dialect: str) -> sa.Insert | None:
    """The one-statement check of :class:`SqlReplayCache` in ``dialect``'s upsert syntax (None: the
    dialect has none here, and the check takes an insert and, for a duplicate, an update)."""
    table = jwt_replay_table
    insert: Any
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    elif dialect == "sqlite":
        from sqlalchemy.dialects.sqlite import insert
    else:
        return None
    statement = insert(table).values(
        iss=sa.bindparam("iss"), jti=sa.bindparam("jti"), expires_at=sa.bindparam("expires_at")
    )
    reclaim_expired: sa.Insert = statement.on_conflict_do_update(
        index_elements=[table.c.iss, table.c.jti],
        set_={"expires_at": statement.excluded.expires_at},
        where=table.c.expires_at <= sa.bindparam("now"),
    ).returning(table.c.jti)
    return reclaim_expired
