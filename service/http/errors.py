"""Errors as OperationOutcomes: FastAPI's own (unknown routes, invalid requests, the unexpected) and
client authentication's (401 with RFC 6750's challenge, 503 when the replay store is down).

Errors of a hook call are answered by the hook route (``service.http.routes.hooks``); no stack
trace ever leaves the process.
"""

from __future__ import annotations

import logging
from urllib.parse import quote

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from cds_hooks.outcome import IssueType
from service.auth.errors import (
    AudienceError,
    AuthenticationError,
    MissingTokenError,
    ReplayCacheUnavailableError,
)
from service.http.deps import expected_audience
from service.http.responses import outcome_response
from service.ops import metrics

__all__ = ["challenge", "install_auth_errors", "install_error_handlers", "unauthorized"]

log = logging.getLogger("calf_cds.service")
auth_log = logging.getLogger("calf_cds.auth")

_UNAVAILABLE_BODY = orjson.dumps(
    {
        "resourceType": "OperationOutcome",
        "issue": [{"severity": "error", "code": "transient", "diagnostics": "authentication is unavailable"}],
    }
)


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, error: StarletteHTTPException) -> Response:
        code: IssueType = "not-found" if error.status_code == 404 else "not-supported"
        response = outcome_response(error.status_code, str(error.detail), code=code)
        response.headers.update(error.headers or {})  # e.g. a 405's `Allow` (RFC 9110)
        return response

    @app.exception_handler(RequestValidationError)
    async def validation_error(_: Request, error: RequestValidationError) -> Response:
        return outcome_response(400, "the request is not valid", code="invalid")

    @app.exception_handler(Exception)
    async def unexpected(_: Request, error: Exception) -> Response:
        log.error("unexpected error: %s", type(error).__name__)
        return outcome_response(500, "internal error; the call was recorded", code="exception")


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
        auth_log.warning(
            "authentication refused on %s: %s (iss=%r kid=%r)",
            request.url.path,
            error.reason,
            error.iss,
            error.kid,
        )
        return unauthorized(error, expected_audience=expected_audience(request))

    async def unavailable(request: Request, error: Exception) -> Response:
        auth_log.error("authentication unavailable on %s: %s", request.url.path, error)
        return Response(
            _UNAVAILABLE_BODY,
            status_code=503,
            media_type="application/json",
            headers={"Retry-After": "5"},
        )

    app.add_exception_handler(AuthenticationError, refused)
    app.add_exception_handler(ReplayCacheUnavailableError, unavailable)
