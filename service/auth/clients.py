"""The web side of CDS Client authentication: who we trust, and the FastAPI dependency that checks.

`service.auth.tokens` verifies a token; this module decides which issuers a running service trusts and
puts the check in front of the endpoints that need it:

- `trusted_issuers(settings)`: the issuers of `CALF_CDS_TRUSTED_ISSUERS_FILE`, plus the local
  development issuer when `dev` is on. No issuer at all is a configuration error, never "open".
- `ClientAuthenticator`: one per app, built at start-up on the audit engine (the replay cache is
  the `jwt_replay` table, shared by every replica). `audience(request)` is the exact URL called:
  `public_base_url` + path, or the request's own URL when no public base is configured.
- `AuthenticatedClient`: the `Annotated` dependency for discovery, service and feedback routes.
  `/healthz`, `/readyz` and `/metrics` do not use it.

Failures answer 401 (RFC 6750 §3): without a token, the bare challenge `WWW-Authenticate: Bearer`;
with one that does not verify, `Bearer error="invalid_token", error_description="<category>"`
(expired, not yet valid, audience mismatch, replayed, unknown key, untrusted issuer, algorithm not
allowed, …; in development mode an audience mismatch also names the `aud` expected). The
OperationOutcome body says the same. Never a key, a claim value or the token: details go to the log
line. A replay store outage answers 503.

    AuthConfigError         the service cannot start: no trusted issuer, or a bad issuer file
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Annotated
from urllib.parse import quote

import httpx
import orjson
import sqlalchemy as sa
from fastapi import Depends, FastAPI, Request
from fastapi.responses import Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import ValidationError

from service.auth.dev_issuer import DevIssuer
from service.auth.jwks import KeyStore, TrustedIssuer, load_trusted_issuers
from service.auth.tokens import (
    AudienceError,
    AuthenticationError,
    ClientIdentity,
    JwtVerifier,
    LayeredReplayCache,
    MemoryReplayCache,
    MissingTokenError,
    ReplayCacheUnavailableError,
    SqlReplayCache,
)
from service.config import Settings
from service.ops import metrics

log = logging.getLogger("calf_cds.auth")

BEARER_SCHEME = "cdsClientJwt"
_UNAVAILABLE_BODY = orjson.dumps(
    {
        "resourceType": "OperationOutcome",
        "issue": [{"severity": "error", "code": "transient", "diagnostics": "authentication is unavailable"}],
    }
)
NO_ISSUER_MESSAGE = (
    "no trusted CDS Client is configured, so no call could ever be accepted. Set "
    "CALF_CDS_TRUSTED_ISSUERS_FILE to your trusted-issuer file (README, 'Security'), or run "
    "`calf-cds serve --dev` to trust a local development issuer while you try the service."
)


class AuthConfigError(Exception):
    """The service cannot authenticate anyone with this configuration; it must not start."""


def trusted_issuers(settings: Settings) -> list[TrustedIssuer]:
    """The issuers this service trusts: the configured file, plus the dev issuer in dev mode."""
    issuers: list[TrustedIssuer] = []
    path = settings.trusted_issuers_file
    if path is not None:
        try:
            issuers.extend(load_trusted_issuers(path))
        except OSError as error:
            raise AuthConfigError(f"cannot read the trusted-issuer file {path}: {error}") from None
        except (ValidationError, ValueError) as error:
            raise AuthConfigError(f"the trusted-issuer file {path} is not valid: {error}") from None
    if settings.dev:
        dev_issuer = DevIssuer.load_or_create(settings.data_dir)
        if any(issuer.iss == dev_issuer.iss for issuer in issuers):
            raise AuthConfigError(f"{path} may not name the development issuer {dev_issuer.iss!r}")
        issuers.append(dev_issuer.trusted_issuer())
    if not issuers:
        raise AuthConfigError(NO_ISSUER_MESSAGE)
    return issuers


def warn_dev_mode(settings: Settings) -> None:
    """The loud line every development-mode start logs."""
    if settings.dev:
        log.warning(
            "DEVELOPMENT MODE: trusting the local development issuer (key in %s). Anyone who can "
            "read that key can call this service. Never use --dev / CALF_CDS_DEV in production.",
            (settings.data_dir / "dev-issuer").resolve(),
        )


class ClientAuthenticator:
    """Checks the bearer JWT of a request against the trusted issuers."""

    def __init__(self, verifier: JwtVerifier, *, public_base_url: str | None, dev: bool = False) -> None:
        self.verifier = verifier
        self.public_base_url = public_base_url
        self.dev = dev  # development mode: a refusal may say more (the `aud` expected)

    def audience(self, request: Request) -> str:
        """The exact URL of the endpoint called, as the client must have put it in `aud`."""
        path = request.url.path
        if self.public_base_url is not None:
            return self.public_base_url + path
        url = request.url
        return f"{url.scheme}://{url.netloc}{path}"

    async def authenticate(self, request: Request, token: str | None) -> ClientIdentity:
        if not token:
            raise MissingTokenError("no bearer token")
        return await self.verifier.verify(token, audience=self.audience(request))


def build_authenticator(
    settings: Settings,
    engine: sa.Engine,
    http_client: httpx.AsyncClient,
    *,
    clock: Callable[[], float],
) -> ClientAuthenticator:
    """The authenticator of one app (the `jwt_replay` table comes with the database migrations)."""
    issuers = trusted_issuers(settings)
    verifier = JwtVerifier(
        issuers,
        key_store=KeyStore(http_client, clock=clock, ttl_seconds=settings.jwks_cache_seconds),
        replay_cache=LayeredReplayCache(SqlReplayCache(engine, clock=clock), MemoryReplayCache(clock=clock)),
        clock=clock,
        leeway_seconds=settings.jwt_leeway_seconds,
        algorithms=settings.jwt_algorithms,
        max_lifetime_seconds=settings.jwt_max_lifetime_seconds,
    )
    log.info("trusting %d CDS Client issuer(s): %s", len(issuers), ", ".join(i.iss for i in issuers))
    if settings.public_base_url is None and not settings.dev:
        log.warning(
            "CALF_CDS_PUBLIC_BASE_URL is not set: JWT audiences are checked against each request's "
            "own URL (its Host header). Set it to the URL clients call in production."
        )
    return ClientAuthenticator(verifier, public_base_url=settings.public_base_url, dev=settings.dev)


_bearer = HTTPBearer(
    bearerFormat="JWT",
    scheme_name=BEARER_SCHEME,
    description=(
        "CDS Hooks client JWT (CDS Hooks 2.0 'Trusting CDS Clients'): signed ES384 or RS384 by a "
        "trusted issuer, `aud` the exact URL called, a fresh `jti` on every call."
    ),
    auto_error=False,
)


async def authenticated_client(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> ClientIdentity:
    """The verified caller; raises `AuthenticationError` (→ 401) or `ReplayCacheUnavailableError` (→ 503)."""
    authenticator: ClientAuthenticator | None = getattr(request.app.state, "authenticator", None)
    if authenticator is None:  # not started: fail closed
        raise ReplayCacheUnavailableError("the service is not started")
    token = credentials.credentials if credentials is not None else None
    identity = await authenticator.authenticate(request, token)
    request.state.client = identity
    return identity


AuthenticatedClient = Annotated[ClientIdentity, Depends(authenticated_client)]


def client_record(identity: ClientIdentity) -> dict[str, str]:
    """What the audit trail keeps of the caller: never the token."""
    record = {"iss": identity.iss, "jti": identity.jti, "kid": identity.kid}
    if identity.sub is not None:
        record["sub"] = identity.sub
    if identity.tenant is not None:
        record["tenant"] = identity.tenant
    return record


# RFC 6750 §3: error_description is %x20-21 / %x23-5B / %x5D-7E; anything else (a quote, a
# backslash, a control or non-ASCII character from a Host header) is percent-encoded.
_DESCRIPTION_SAFE = "".join(chr(c) for c in range(0x20, 0x7F) if chr(c) not in '"\\%')


def _description(error: AuthenticationError, expected_audience: str | None) -> str:
    description = error.description
    if expected_audience is not None and isinstance(error, AudienceError):
        description += f"; expected aud {expected_audience}"
    return quote(description, safe=_DESCRIPTION_SAFE)


def challenge(error: AuthenticationError, *, expected_audience: str | None = None) -> str:
    """The `WWW-Authenticate` value for ``error``: RFC 6750's bare challenge when no token came."""
    if isinstance(error, MissingTokenError):
        return "Bearer"
    description = _description(error, expected_audience)
    return f'Bearer error="invalid_token", error_description="{description}"'


def unauthorized(error: AuthenticationError, *, expected_audience: str | None = None) -> Response:
    """401 with the RFC 6750 challenge; the OperationOutcome says the same category, nothing more."""
    if isinstance(error, MissingTokenError):
        diagnostics = "no client JWT: send Authorization: Bearer <JWT>"
    else:
        diagnostics = "invalid client JWT: " + _description(error, expected_audience)
    body = {
        "resourceType": "OperationOutcome",
        "issue": [{"severity": "error", "code": "login", "diagnostics": diagnostics}],
    }
    return Response(
        orjson.dumps(body),
        status_code=401,
        media_type="application/json",
        headers={"WWW-Authenticate": challenge(error, expected_audience=expected_audience)},
    )


def install_auth_errors(app: FastAPI) -> None:
    """Map authentication failures to 401 and replay-store outages to 503."""

    async def refused(request: Request, error: Exception) -> Response:
        if not isinstance(error, AuthenticationError):  # registered for that type only
            raise error
        metrics.count_auth_rejection(error.reason)
        log.warning(
            "authentication refused on %s: %s (iss=%r kid=%r)",
            request.url.path,
            error.reason,
            error.iss,
            error.kid,
        )
        authenticator: ClientAuthenticator | None = getattr(request.app.state, "authenticator", None)
        expected = (
            authenticator.audience(request) if authenticator is not None and authenticator.dev else None
        )
        return unauthorized(error, expected_audience=expected)

    async def unavailable(request: Request, error: Exception) -> Response:
        log.error("authentication unavailable on %s: %s", request.url.path, error)
        return Response(
            _UNAVAILABLE_BODY,
            status_code=503,
            media_type="application/json",
            headers={"Retry-After": "5"},
        )

    app.add_exception_handler(AuthenticationError, refused)
    app.add_exception_handler(ReplayCacheUnavailableError, unavailable)
