"""What the routes share: the app's runtime, the authenticated CDS Client, reading a body and
writing a JSON answer.

- ``RuntimeDep``: the app's runtime, built once at start-up by the lifespan.
- ``AuthenticatedClient`` guards discovery, service and feedback routes: the request's bearer JWT,
  verified by the app's :class:`~service.auth.verifier.ClientAuthenticator` against the exact URL
  called. A refusal raises an ``AuthenticationError`` (401) or ``ReplayCacheUnavailableError``
  (503), which :mod:`service.http.errors` answers. ``/healthz``, ``/readyz`` and ``/metrics`` do
  not use it.
- :func:`read_body`: a request body under a size limit. Decoding it is
  :func:`service.hooks.guards.decode_json_object`, the one decoder of a request body: it
  lives below the web layer because the hook front door, which ``calf-cds try`` also goes through,
  decodes the body itself.
- :func:`json_response` and :func:`outcome_response`: JSON and OperationOutcome answers, written
  with orjson (no second serialisation pass).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Annotated, Any

import orjson
from fastapi import Depends, Request
from fastapi.responses import Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from cds_hooks.outcome import IssueType, operation_outcome
from service.auth.errors import ReplayCacheUnavailableError
from service.auth.verifier import ClientAuthenticator, ClientIdentity
from service.config import Settings
from service.hooks.fhir_server_guard import FhirServerGuard
from service.hooks.guards import BodyTooLargeError, RequestLimits
from service.hooks.pipeline import CalfPainService, Fetcher
from service.store.probe import StoreProbe
from service.store.sink import AuditSink

__all__ = [
    "BEARER_SCHEME",
    "JSON_MEDIA",
    "AuthenticatedClient",
    "BodyTooLargeError",
    "Runtime",
    "RuntimeDep",
    "authenticated_client",
    "expected_audience",
    "get_runtime",
    "json_response",
    "outcome_response",
    "read_body",
]

BEARER_SCHEME = "cdsClientJwt"


@dataclass
class Runtime:
    """Everything one app instance owns, built at start-up."""

    settings: Settings
    service: CalfPainService
    audit: AuditSink
    fetcher: Fetcher | None
    guard: FhirServerGuard
    store_probe: StoreProbe | None = None

    @cached_property
    def limits(self) -> RequestLimits:
        """The request limits of ``settings``, derived once rather than on every call."""
        return RequestLimits.from_settings(self.settings)


async def get_runtime(request: Request) -> Runtime:
    """The runtime of the app serving ``request`` (built in the lifespan).

    ``async`` on purpose: FastAPI runs a plain ``def`` dependency on a worker thread, a thread
    hop per call for a field lookup.
    """
    value: Runtime = request.app.state.runtime
    return value


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]


_bearer = HTTPBearer(
    bearerFormat="JWT",
    scheme_name=BEARER_SCHEME,
    description=(
        "CDS Hooks client JWT (CDS Hooks 2.0 'Trusting CDS Clients'): signed ES384 or RS384 by a "
        "trusted issuer, `aud` the exact URL called, a fresh `jti` on every call."
    ),
    auto_error=False,
)


def _authenticator(request: Request) -> ClientAuthenticator | None:
    authenticator: ClientAuthenticator | None = getattr(request.app.state, "authenticator", None)
    return authenticator


def _audience(authenticator: ClientAuthenticator, request: Request) -> str:
    url = request.url
    return authenticator.audience(url.path, origin=f"{url.scheme}://{url.netloc}")


def expected_audience(request: Request) -> str | None:
    """The ``aud`` this request needed, for a refusal to name: in development mode only."""
    authenticator = _authenticator(request)
    if authenticator is None or not authenticator.dev:
        return None
    return _audience(authenticator, request)


async def authenticated_client(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> ClientIdentity:
    """The verified caller; raises `AuthenticationError` (→ 401) or `ReplayCacheUnavailableError` (→ 503)."""
    authenticator = _authenticator(request)
    if authenticator is None:  # not started: fail closed
        raise ReplayCacheUnavailableError("the service is not started")
    token = credentials.credentials if credentials is not None else None
    identity = await authenticator.authenticate(token, audience=_audience(authenticator, request))
    request.state.client = identity
    return identity


AuthenticatedClient = Annotated[ClientIdentity, Depends(authenticated_client)]


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refusing more than ``limit`` bytes (:class:`BodyTooLargeError`) before
    reading them all."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise BodyTooLargeError
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise BodyTooLargeError
        chunks.append(chunk)
    return b"".join(chunks)


JSON_MEDIA = "application/json"


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(body), status_code=status, media_type=JSON_MEDIA, headers=headers)


def outcome_response(
    status: int, diagnostics: str, *, code: IssueType, expression: str | None = None
) -> Response:
    return json_response(operation_outcome(diagnostics, code=code, expression=expression), status)
