"""Errors of client authentication, in one tree. Standard library only: every auth module imports it.

A refused token is an :class:`AuthenticationError` leaf. ``.reason`` is for metrics and logs;
``.description``, the category, is what the 401's ``WWW-Authenticate`` says (``service.http.errors``
answers it); the message, with values from the token, is for the log only. ``.iss`` and ``.kid``
name the issuer and key when they are known::

    AuthenticationError                                   a token that does not authenticate (→ 401)
     ├── MissingTokenError          "missing-token"      no `Authorization: Bearer` (service.http.deps)
     ├── MalformedTokenError        "malformed"          not a JWS; bad JSON, types; crit; no kid
     ├── AlgorithmNotAllowedError   "alg-not-allowed"    never none or HS*; must fit the key
     ├── TokenTypeError             "typ"                typ missing or not JWT
     ├── UnknownIssuerError         "unknown-issuer"
     ├── JkuNotAllowedError         "jku-not-allowed"    (raised by service.auth.caches.KeyStore)
     ├── UnknownKeyIdError          "unknown-kid"        (raised by service.auth.caches.KeyStore)
     ├── JwksUnavailableError       "jwks-unavailable"   (raised by service.auth.caches.KeyStore)
     ├── BadSignatureError          "bad-signature"
     ├── MissingClaimError          "missing-claim"      .claim names it
     ├── AudienceError              "audience"
     ├── ExpiredTokenError          "expired"
     ├── NotYetValidError           "not-yet-valid"      nbf in the future
     ├── IssuedInFutureError        "iat-in-future"
     ├── LifetimeTooLongError       "lifetime-too-long"  exp - iat above max_lifetime_seconds
     ├── TenantNotAllowedError      "tenant"
     └── ReplayedTokenError         "replayed"

    ReplayCacheUnavailableError     the shared replay store failed: an outage (→ 503), not a 401
    AuthConfigError                 no trusted issuer, or a bad issuer file: the service must not start
    InvalidJwksError (ValueError)   a JWK Set that cannot be used (configuration, or a client's set)

(``service.auth.dev_issuer.DevIssuerMissingError``, a ``FileNotFoundError``, is `calf-cds token`
run where no development issuer exists: a missing file, not a refused token.)

Messages and context never contain the token; values read from an unverified token are cut short.
"""

from __future__ import annotations

from typing import ClassVar, Literal

__all__ = [
    "AlgorithmNotAllowedError",
    "AudienceError",
    "AuthConfigError",
    "AuthFailureReason",
    "AuthenticationError",
    "BadSignatureError",
    "ExpiredTokenError",
    "InvalidJwksError",
    "IssuedInFutureError",
    "JkuNotAllowedError",
    "JwksUnavailableError",
    "LifetimeTooLongError",
    "MalformedTokenError",
    "MissingClaimError",
    "MissingTokenError",
    "NotYetValidError",
    "ReplayCacheUnavailableError",
    "ReplayedTokenError",
    "TenantNotAllowedError",
    "TokenTypeError",
    "UnknownIssuerError",
    "UnknownKeyIdError",
]

AuthFailureReason = Literal[
    "missing-token", "malformed", "alg-not-allowed", "typ", "unknown-issuer", "jku-not-allowed", "unknown-kid",
    "jwks-unavailable", "bad-signature", "missing-claim", "audience", "expired", "not-yet-valid",
    "iat-in-future", "lifetime-too-long", "tenant", "replayed",
]  # fmt: skip


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


class AuthConfigError(Exception):
    """The service cannot authenticate anyone with this configuration; it must not start."""


class InvalidJwksError(ValueError):
    """A JWK Set that cannot be used: not `{"keys": [...]}`, or a bad key in configuration."""
