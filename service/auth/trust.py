"""Whom a running service trusts, and the authenticator built on them at start-up.

:mod:`service.auth.verifier` verifies a token and puts the check in front of an endpoint
(`ClientAuthenticator`); this module decides, once at start-up, which issuers a running service
trusts and builds the authenticator the HTTP surface puts in front of the endpoints that need it
(``service.http.deps.AuthenticatedClient``; failures are answered by ``service.http.errors``):

- `trusted_issuers(settings)`: the issuers of `CALF_CDS_TRUSTED_ISSUERS_FILE`, plus the local
  development issuer when `dev` is on. No issuer at all is an `AuthConfigError`, never "open".
- `build_authenticator`: one `ClientAuthenticator` per app, built at start-up on the replay store's
  engine (the replay cache is the `jwt_replay` table, shared by every replica: in the audit
  database, or beside a SQLite audit file in a file of its own, see
  ``service.store.schema.open_replay_store``). `audience(path, origin=...)` is the exact URL
  called: `public_base_url` + path, or the request's own origin + path when no public base is
  configured.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import httpx
import sqlalchemy as sa
from pydantic import ValidationError

from service.auth.caches import KeyStore, LayeredReplayCache, MemoryReplayCache, SqlReplayCache
from service.auth.dev_issuer import DevIssuer
from service.auth.errors import AuthConfigError
from service.auth.jwks import TrustedIssuer, load_trusted_issuers
from service.auth.verifier import ClientAuthenticator, JwtVerifier
from service.config import Settings

__all__ = [
    "NO_ISSUER_MESSAGE",
    "build_authenticator",
    "trusted_issuers",
    "warn_dev_mode",
]

log = logging.getLogger("calf_cds.auth")

NO_ISSUER_MESSAGE = (
    "no trusted CDS Client is configured, so no call could ever be accepted. Set "
    "CALF_CDS_TRUSTED_ISSUERS_FILE to your trusted-issuer file (README, 'Security'), or run "
    "`calf-cds serve --dev` to trust a local development issuer while you try the service."
)


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


def build_authenticator(
    settings: Settings,
    engine: sa.Engine,
    http_client: httpx.AsyncClient,
    *,
    clock: Callable[[], float],
) -> ClientAuthenticator:
    """The authenticator of one app; ``engine`` holds the `jwt_replay` table (the migrations create
    it; ``service.store.schema.open_replay_store`` gives a SQLite audit file's own replay file)."""
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
