"""CDS Client authentication: verify the JWT a CDS Client sends as `Authorization: Bearer <jwt>`.

CDS Hooks 2.0 "Trusting CDS Clients": the token is a JWS signed with the client's private key. Its
header carries `alg`, `kid` and `typ` ("JWT"), all REQUIRED, and an OPTIONAL `jku`; its payload
carries `iss`, `aud` (the URL of the endpoint being called), `exp`, `iat` and `jti`, all REQUIRED,
and an OPTIONAL `tenant`. `none` and symmetric (HMAC) algorithms SHALL NOT be used; ES384 and RS384
are RECOMMENDED.

`JwtVerifier.verify` checks, in this order, and stops at the first failure: header shape -> `alg`
on the allowlist -> `typ` JWT -> `kid` present -> `iss` trusted (read unverified, only to choose
the issuer) -> `jku` allowlisted -> key found -> key fits `alg` -> signature, required claims and
`aud` -> `exp`, `nbf`, `iat` and lifetime against the injected clock -> `tenant` -> `jti` not seen
before (stored last, so only fully valid tokens use up a `jti`).

Exceptions (`.reason` is for metrics and logs; `.description`, the category, is what the 401's
`WWW-Authenticate` says; the message, with values from the token, is for the log only)::

    AuthenticationError
     ├── MissingTokenError          "missing-token"      no `Authorization: Bearer` (service.auth.clients)
     ├── MalformedTokenError        "malformed"          not a JWS; bad JSON, types; crit; no kid
     ├── AlgorithmNotAllowedError   "alg-not-allowed"    never none or HS*; must fit the key
     ├── TokenTypeError             "typ"                typ missing or not JWT
     ├── UnknownIssuerError         "unknown-issuer"
     ├── JkuNotAllowedError         "jku-not-allowed"    (raised by service.auth.jwks.KeyStore)
     ├── UnknownKeyIdError          "unknown-kid"        (raised by service.auth.jwks.KeyStore)
     ├── JwksUnavailableError       "jwks-unavailable"   (raised by service.auth.jwks.KeyStore)
     ├── BadSignatureError          "bad-signature"
     ├── MissingClaimError          "missing-claim"      .claim names it
     ├── AudienceError              "audience"
     ├── ExpiredTokenError          "expired"
     ├── NotYetValidError           "not-yet-valid"      nbf in the future
     ├── IssuedInFutureError        "iat-in-future"
     ├── LifetimeTooLongError       "lifetime-too-long"  exp - iat above max_lifetime_seconds
     ├── TenantNotAllowedError      "tenant"
     └── ReplayedTokenError         "replayed"

    ReplayCacheUnavailableError     the shared replay store failed: an outage (503), not a 401

Messages and context never contain the token; values read from an unverified token are cut short.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, ClassVar, Literal, Protocol

import anyio.to_thread
import jwt
import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from service.config import SUPPORTED_ALGORITHMS
from service.store.schema import MAX_JTI_LENGTH, jwt_replay_table

if TYPE_CHECKING:
    from service.auth.jwks import KeyStore, PublicKey, TrustedIssuer

AuthFailureReason = Literal[
    "missing-token", "malformed", "alg-not-allowed", "typ", "unknown-issuer", "jku-not-allowed", "unknown-kid",
    "jwks-unavailable", "bad-signature", "missing-claim", "audience", "expired", "not-yet-valid",
    "iat-in-future", "lifetime-too-long", "tenant", "replayed",
]  # fmt: skip

log = logging.getLogger("calf_cds.auth")

MAX_TOKEN_LENGTH = 16 * 1024


class AuthenticationError(Exception):
    """The request's JWT does not authenticate a trusted CDS Client."""

    reason: ClassVar[AuthFailureReason]
    # What the 401 tells the client (RFC 6750 `error_description`): the category only, never a
    # key, a claim value or the token.
    description: ClassVar[str]

    def __init__(self, message: str, *, iss: str | None = None, kid: str | None = None) -> None:
        super().__init__(message)
        self.iss = None if iss is None else iss[:512]  # may come from an unverified token
        self.kid = None if kid is None else kid[:512]


class MissingTokenError(AuthenticationError):
    reason = "missing-token"
    description = "no bearer token"


class MalformedTokenError(AuthenticationError):
    reason = "malformed"
    description = "malformed token"


class AlgorithmNotAllowedError(AuthenticationError):
    reason = "alg-not-allowed"
    description = "algorithm not allowed"


class TokenTypeError(AuthenticationError):
    reason = "typ"
    description = "token type not allowed (typ must be JWT)"


class UnknownIssuerError(AuthenticationError):
    reason = "unknown-issuer"
    description = "untrusted issuer"


class JkuNotAllowedError(AuthenticationError):
    reason = "jku-not-allowed"
    description = "jku not on the issuer's allowlist"


class UnknownKeyIdError(AuthenticationError):
    reason = "unknown-kid"
    description = "unknown key (kid)"


class JwksUnavailableError(AuthenticationError):
    reason = "jwks-unavailable"
    description = "the issuer's keys are unavailable"


class BadSignatureError(AuthenticationError):
    reason = "bad-signature"
    description = "bad signature"


class MissingClaimError(AuthenticationError):
    reason = "missing-claim"
    description = "missing claim"

    def __init__(self, claim: str, *, iss: str | None = None, kid: str | None = None) -> None:
        super().__init__(f"required claim {claim!r} is missing", iss=iss, kid=kid)
        self.claim = claim


class AudienceError(AuthenticationError):
    reason = "audience"
    description = "audience mismatch"


class ExpiredTokenError(AuthenticationError):
    reason = "expired"
    description = "expired"


class NotYetValidError(AuthenticationError):
    reason = "not-yet-valid"
    description = "not yet valid"


class IssuedInFutureError(AuthenticationError):
    reason = "iat-in-future"
    description = "not yet valid (issued in the future)"


class LifetimeTooLongError(AuthenticationError):
    reason = "lifetime-too-long"
    description = "lifetime too long"


class TenantNotAllowedError(AuthenticationError):
    reason = "tenant"
    description = "tenant not allowed"


class ReplayedTokenError(AuthenticationError):
    reason = "replayed"
    description = "replayed (jti already used)"


class ReplayCacheUnavailableError(Exception):
    """The replay store could not be read or written; the token was neither accepted nor refused."""


def _shown(value: object) -> str:
    """A value from an unverified token, safe to put in a log line."""
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


@dataclass(frozen=True, slots=True)
class ClientIdentity:
    """Who called: the verified claims of an accepted token (safe to log; the token is not)."""

    iss: str
    sub: str | None
    tenant: str | None
    jti: str
    kid: str
    alg: str
    expires_at: datetime


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


class JwtVerifier:
    """Verifies CDS Hooks client JWTs against a set of trusted issuers."""

    def __init__(
        self,
        issuers: Iterable[TrustedIssuer],
        *,
        key_store: KeyStore,
        replay_cache: ReplayCache,
        clock: Callable[[], float],
        leeway_seconds: float = 5.0,
        algorithms: Iterable[str] = ("ES384", "RS384"),
        max_lifetime_seconds: float | None = 3600.0,
    ) -> None:
        self._algorithms = tuple(algorithms)
        refused = sorted(set(self._algorithms) - SUPPORTED_ALGORITHMS)
        if refused or not self._algorithms:
            raise ValueError(
                f"algorithms {refused or '(none)'} refused: only asymmetric signatures "
                f"{sorted(SUPPORTED_ALGORITHMS)}; CDS Hooks forbids 'none' and HMAC (HS*)"
            )
        if not 0 <= leeway_seconds <= 300:
            raise ValueError("leeway_seconds must be between 0 and 300")
        if max_lifetime_seconds is not None and max_lifetime_seconds <= 0:
            raise ValueError("max_lifetime_seconds must be positive (or None for no limit)")
        self._issuers: dict[str, TrustedIssuer] = {}
        for issuer in issuers:
            if issuer.iss in self._issuers:
                raise ValueError(f"issuer {issuer.iss!r} is configured twice")
            self._issuers[issuer.iss] = issuer
        self._key_store = key_store
        self._replay_cache = replay_cache
        self._clock = clock
        self._leeway = leeway_seconds
        self._max_lifetime = max_lifetime_seconds

    async def verify(self, token: str, *, audience: str) -> ClientIdentity:
        """The identity a valid token proves; raises an `AuthenticationError` leaf otherwise.

        `audience` is the exact public URL of the endpoint being called (e.g.
        `https://cds.example.org/cds-services/calf-pain`); `aud` must equal it or be a list
        containing it.
        """
        header = self._header(token)
        alg, kid, jku = header["alg"], header["kid"], header.get("jku")
        iss = self._unverified_issuer(token)
        issuer = self._issuers.get(iss)
        if issuer is None:
            raise UnknownIssuerError(f"issuer {_shown(iss)} is not trusted", kid=kid)
        key = await self._key_store.get_key(issuer, kid, jku)
        if not key.allows(alg):
            raise AlgorithmNotAllowedError(f"alg {alg} does not fit the key", iss=iss, kid=kid)
        claims = self._decode(token, key.public_key, issuer, audience, kid=kid)

        def numeric(name: str) -> float:
            value = claims[name]
            if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
                raise MalformedTokenError(f"claim {name!r} is not a number", iss=iss, kid=kid)
            return float(value)

        now, leeway = self._clock(), self._leeway
        exp, iat = numeric("exp"), numeric("iat")
        nbf = numeric("nbf") if claims.get("nbf") is not None else None
        if now >= exp + leeway:
            raise ExpiredTokenError(f"expired {now - exp:.0f} s ago", iss=iss, kid=kid)
        if nbf is not None and nbf > now + leeway:
            raise NotYetValidError(f"not valid for another {nbf - now:.0f} s", iss=iss, kid=kid)
        if iat > now + leeway:
            raise IssuedInFutureError(f"issued {iat - now:.1f} s in the future", iss=iss, kid=kid)
        if self._max_lifetime is not None and exp - iat > self._max_lifetime:
            raise LifetimeTooLongError(f"lifetime {exp - iat:.0f} s", iss=iss, kid=kid)
        jti, sub, tenant = claims["jti"], claims.get("sub"), claims.get("tenant")
        if not jti or len(jti) > MAX_JTI_LENGTH:
            raise MalformedTokenError("jti is empty or too long", iss=iss, kid=kid)
        if tenant is not None and not isinstance(tenant, str):
            raise MalformedTokenError("tenant is not a string", iss=iss, kid=kid)
        if issuer.tenants is not None and tenant not in issuer.tenants:
            raise TenantNotAllowedError(f"tenant {_shown(tenant)} is not allowed", iss=iss, kid=kid)
        if not await self._replay_cache.check_and_store(iss, jti, exp + leeway):
            raise ReplayedTokenError(f"jti {_shown(jti)} was already used", iss=iss, kid=kid)
        return ClientIdentity(
            iss=iss,
            sub=sub,
            tenant=tenant,
            jti=jti,
            kid=kid,
            alg=alg,
            expires_at=datetime.fromtimestamp(exp, tz=UTC),
        )

    def _header(self, token: str) -> dict[str, Any]:
        if not isinstance(token, str) or not token.isascii() or len(token) > MAX_TOKEN_LENGTH:
            raise MalformedTokenError("not a compact JWS of reasonable size")
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as exc:
            raise MalformedTokenError(f"unreadable header: {exc}") from None
        if "crit" in header or "b64" in header:
            raise MalformedTokenError("header uses crit/b64 extensions, which CDS Hooks does not use")
        alg, kid, jku = header.get("alg"), header.get("kid"), header.get("jku")
        if not isinstance(alg, str) or alg not in self._algorithms:
            raise AlgorithmNotAllowedError(f"alg {_shown(alg)} is not allowed")
        typ = header.get("typ")
        if not isinstance(typ, str) or typ.upper() != "JWT":
            raise TokenTypeError(f"typ {_shown(typ)} is not JWT")
        if not isinstance(kid, str) or not kid:
            raise MalformedTokenError("header has no kid")
        if jku is not None and not isinstance(jku, str):
            raise MalformedTokenError("jku is not a string", kid=kid)
        return header

    @staticmethod
    def _unverified_issuer(token: str) -> str:
        try:
            claims = jwt.decode(token, options={"verify_signature": False})
        except jwt.PyJWTError as exc:
            raise MalformedTokenError(f"unreadable payload: {exc}") from None
        iss = claims.get("iss")
        if iss is None:
            raise MissingClaimError("iss")
        if not isinstance(iss, str):
            raise MalformedTokenError("iss is not a string")
        return iss

    def _decode(
        self, token: str, key: PublicKey, issuer: TrustedIssuer, audience: str, *, kid: str
    ) -> dict[str, Any]:
        iss = issuer.iss
        try:
            return jwt.decode(
                token,
                key,
                algorithms=list(self._algorithms),
                audience=audience,
                issuer=iss,
                options={
                    "verify_signature": True,
                    "require": ["exp", "iat", "iss", "aud", "jti"],
                    "verify_aud": True,
                    "strict_aud": False,
                    "verify_iss": True,
                    "verify_sub": True,
                    "verify_jti": True,
                    # `verify` checks times against the injected clock, not pyjwt's wall clock.
                    "verify_exp": False,
                    "verify_nbf": False,
                    "verify_iat": False,
                    "enforce_minimum_key_length": True,
                },
            )
        except jwt.InvalidSignatureError:
            raise BadSignatureError("signature does not verify", iss=iss, kid=kid) from None
        except jwt.MissingRequiredClaimError as exc:
            raise MissingClaimError(exc.claim, iss=iss, kid=kid) from None
        except jwt.InvalidAudienceError:
            raise AudienceError("aud does not name this endpoint", iss=iss, kid=kid) from None
        except (jwt.InvalidAlgorithmError, jwt.InvalidKeyError) as exc:
            raise AlgorithmNotAllowedError(str(exc), iss=iss, kid=kid) from None
        except jwt.PyJWTError as exc:
            raise MalformedTokenError(f"{type(exc).__name__}: {exc}", iss=iss, kid=kid) from None
