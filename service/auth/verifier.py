"""Verify the JWT a CDS Client sends as `Authorization: Bearer <jwt>`.

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

`ClientAuthenticator` puts the verifier in front of an endpoint: the exact URL called is the
`aud` it expects, and no token at all is a `MissingTokenError`. What it proves is a
`ClientIdentity`; `client_record` is what the audit trail keeps of it (never the token).

Each failure is an `AuthenticationError` leaf (the tree is in :mod:`service.auth.errors`). Messages
never contain the token; values read from an unverified token are cut short.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import jwt

from service.auth.errors import (
    AlgorithmNotAllowedError,
    AudienceError,
    BadSignatureError,
    ExpiredTokenError,
    IssuedInFutureError,
    LifetimeTooLongError,
    MalformedTokenError,
    MissingClaimError,
    MissingTokenError,
    NotYetValidError,
    ReplayedTokenError,
    TenantNotAllowedError,
    TokenTypeError,
    UnknownIssuerError,
)
from service.auth.jwks import KeyStore, PublicKey, TrustedIssuer
from service.auth.replay import ReplayCache
from service.config import SUPPORTED_ALGORITHMS
from service.store.schema import MAX_JTI_LENGTH

__all__ = ["MAX_TOKEN_LENGTH", "ClientAuthenticator", "ClientIdentity", "JwtVerifier", "client_record"]

MAX_TOKEN_LENGTH = 16 * 1024


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


def client_record(identity: ClientIdentity) -> dict[str, str]:
    """What the audit trail keeps of the caller: never the token."""
    record = {"iss": identity.iss, "jti": identity.jti, "kid": identity.kid}
    if identity.sub is not None:
        record["sub"] = identity.sub
    if identity.tenant is not None:
        record["tenant"] = identity.tenant
    return record


def _shown(value: object) -> str:
    """A value from an unverified token, safe to put in a log line."""
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


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


class ClientAuthenticator:
    """Checks the bearer JWT of a request against the trusted issuers."""

    def __init__(self, verifier: JwtVerifier, *, public_base_url: str | None, dev: bool = False) -> None:
        self.verifier = verifier
        self.public_base_url = public_base_url
        self.dev = dev  # development mode: a refusal may say more (the `aud` expected)

    def audience(self, path: str, *, origin: str) -> str:
        """The exact URL of the endpoint called (``origin`` is the request's own scheme://host:port),
        as the client must have put it in `aud`."""
        if self.public_base_url is not None:
            return self.public_base_url + path
        return origin + path

    async def authenticate(self, token: str | None, *, audience: str) -> ClientIdentity:
        """The verified caller; `MissingTokenError` without a token, else the verifier's verdict."""
        if not token:
            raise MissingTokenError("no bearer token")
        return await self.verifier.verify(token, audience=audience)
