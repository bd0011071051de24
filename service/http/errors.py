"""Every error answer of the HTTP surface, from one table: exception type → status, issue code, headers.

Each answer is a FHIR OperationOutcome (``cds_hooks.outcome``); no stack trace ever leaves the
process. The first row whose type the error is an instance of answers it::

    exception (room)                      status  issue code     diagnostics / headers
  * AuthenticationError (auth)             401    login          the category only; WWW-Authenticate:
                                                                 Bearer (no token), else Bearer
                                                                 error="invalid_token", error_description=
                                                                 "<category>" (RFC 6750 §3)
  * ReplayCacheUnavailableError (auth)     503    transient      Retry-After: 5
    CdsHooksError (cds_hooks)                                    cds_hooks.outcome.error_outcome:
      PrefetchMissingError, FhirFetchError 412    incomplete
      RequestError (FeedbackError too)     400    invalid        expression: its JSON pointer
    RequestRefusedError (hooks)            its own: BodyTooLargeError 413 too-long, BodyNotJsonError
                                           400 structure, a JSON limit 400 too-long + its pointer
    LimitExceededError (hooks)             400    too-long       expression: its JSON pointer
    LinkError (hooks, explanation link)    410 expired, 403 invalid (security), 404 unknown (not-found)
    SQLAlchemyError (the audit store)      503    exception      "try again later"
  * HTTPException (Starlette)              its    not-found (404), else not-supported; its headers (Allow)
  * RequestValidationError (FastAPI)       400    invalid
  * Exception                              500    exception      "internal error; the call was recorded"

Rows marked ``*`` (``app_wide``) are raised past the routes (by dependencies and by FastAPI itself):
:func:`install_error_handlers` registers a handler for each, which also logs (and counts refused
tokens). A route that catches an error itself (the hook route keeps it in the audit record first)
answers it with :func:`error_response`, from the same table.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar
from urllib.parse import quote

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from sqlalchemy.exc import SQLAlchemyError
from starlette.exceptions import HTTPException as StarletteHTTPException

from cds_hooks.errors import CdsHooksError
from cds_hooks.outcome import IssueType, error_outcome, operation_outcome
from service.auth.errors import (
    AudienceError,
    AuthenticationError,
    MissingTokenError,
    ReplayCacheUnavailableError,
)
from service.hooks.explanation import REFUSALS, LinkError
from service.hooks.guards import LimitExceededError, RequestRefusedError, over_limit
from service.http.deps import JSON_MEDIA, expected_audience
from service.ops import telemetry

__all__ = [
    "ERROR_TABLE",
    "ErrorAnswer",
    "ErrorRow",
    "answer_for",
    "challenge",
    "error_response",
    "install_error_handlers",
]

log = logging.getLogger("calf_cds.service")
auth_log = logging.getLogger("calf_cds.auth")

E = TypeVar("E", bound=Exception)


@dataclass(frozen=True, slots=True)
class ErrorAnswer:
    """An error answer: the status, the OperationOutcome and any headers it needs."""

    status: int
    outcome: dict[str, Any]
    headers: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def of(
        cls,
        status: int,
        diagnostics: str,
        *,
        code: IssueType,
        expression: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> ErrorAnswer:
        return cls(status, operation_outcome(diagnostics, code=code, expression=expression), headers or {})


@dataclass(frozen=True)
class ErrorRow(Generic[E]):
    """One row of the table: an exception type, its answer, and whether the app answers it."""

    kind: type[E]
    answer: Callable[[E, Request | None], ErrorAnswer]
    app_wide: bool = False  # raised past the routes: an app-wide handler answers it
    report: Callable[[E, Request], None] | None = None  # what the app-wide handler logs or counts


# -- client authentication (RFC 6750) ------------------------------------------------------------

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


def _unauthorized(error: AuthenticationError, request: Request | None) -> ErrorAnswer:
    """401 with the RFC 6750 challenge; the OperationOutcome says the same category, nothing more
    (in development mode an audience mismatch also names the `aud` expected)."""
    expected = expected_audience(request) if request is not None else None
    if isinstance(error, MissingTokenError):
        diagnostics = "no client JWT: send Authorization: Bearer <JWT>"
    else:
        diagnostics = "invalid client JWT: " + _description(error, expected)
    header = challenge(error, expected_audience=expected)
    return ErrorAnswer.of(401, diagnostics, code="login", headers={"WWW-Authenticate": header})


def _log_refusal(error: AuthenticationError, request: Request) -> None:
    telemetry.count_auth_rejection(error.reason)
    auth_log.warning(
        "authentication refused on %s: %s (iss=%r kid=%r)",
        request.url.path,
        error.reason,
        error.iss,
        error.kid,
    )


def _log_auth_outage(error: ReplayCacheUnavailableError, request: Request) -> None:
    auth_log.error("authentication unavailable on %s: %s", request.url.path, error)


# -- the rest ------------------------------------------------------------------------------------


def _protocol(error: CdsHooksError, _: Request | None) -> ErrorAnswer:
    status, outcome = error_outcome(error)
    return ErrorAnswer(status, outcome)


def _refused(error: RequestRefusedError, _: Request | None) -> ErrorAnswer:
    return ErrorAnswer(error.status, error.outcome())


def _link_refused(error: LinkError, _: Request | None) -> ErrorAnswer:
    status = REFUSALS[error.reason][0]
    code: IssueType = "not-found" if status == 404 else "security"
    return ErrorAnswer.of(status, f"explanation link {error.reason}", code=code)


def _http_error(error: StarletteHTTPException, _: Request | None) -> ErrorAnswer:
    code: IssueType = "not-found" if error.status_code == 404 else "not-supported"
    # error.headers: e.g. a 405's `Allow` (RFC 9110)
    return ErrorAnswer.of(error.status_code, str(error.detail), code=code, headers=error.headers)


def _log_unexpected(error: Exception, _: Request) -> None:
    log.error("unexpected error: %s", type(error).__name__)


ERROR_TABLE: tuple[ErrorRow[Any], ...] = (
    ErrorRow(AuthenticationError, _unauthorized, app_wide=True, report=_log_refusal),
    ErrorRow(
        ReplayCacheUnavailableError,
        lambda _, __: ErrorAnswer.of(
            503, "authentication is unavailable", code="transient", headers={"Retry-After": "5"}
        ),
        app_wide=True,
        report=_log_auth_outage,
    ),
    ErrorRow(CdsHooksError, _protocol),
    ErrorRow(RequestRefusedError, _refused),
    ErrorRow(LimitExceededError, lambda error, request: _refused(over_limit(error), request)),
    ErrorRow(LinkError, _link_refused),
    ErrorRow(
        SQLAlchemyError,
        lambda _, __: ErrorAnswer.of(
            503, "the audit store is unavailable; try again later", code="exception"
        ),
    ),
    ErrorRow(StarletteHTTPException, _http_error, app_wide=True),
    ErrorRow(
        RequestValidationError,
        lambda _, __: ErrorAnswer.of(400, "the request is not valid", code="invalid"),
        app_wide=True,
    ),
    ErrorRow(
        Exception,
        lambda _, __: ErrorAnswer.of(500, "internal error; the call was recorded", code="exception"),
        app_wide=True,
        report=_log_unexpected,
    ),
)


def _row(error: Exception) -> ErrorRow[Any]:
    return next(row for row in ERROR_TABLE if isinstance(error, row.kind))  # the last row takes any


def answer_for(error: Exception, request: Request | None = None) -> ErrorAnswer:
    """The table's answer to ``error`` (``request``, when given, lets a 401 name the `aud` expected
    in development mode)."""
    return _row(error).answer(error, request)


def error_response(
    error: Exception,
    request: Request | None = None,
    *,
    media_type: str = JSON_MEDIA,
    headers: Mapping[str, str] | None = None,
) -> Response:
    """The table's answer to ``error`` as a response; ``headers`` are added to the row's own."""
    return _response(answer_for(error, request), media_type, headers)


def _response(answer: ErrorAnswer, media_type: str, headers: Mapping[str, str] | None) -> Response:
    return Response(
        orjson.dumps(answer.outcome),
        status_code=answer.status,
        media_type=media_type,
        headers={**answer.headers, **(headers or {})},
    )


def install_error_handlers(app: FastAPI) -> None:
    """Answer the errors of every ``app_wide`` row (after its report: a log line, a count).

    Starlette picks the handler of the nearest registered type in the error's class hierarchy, and
    that row answers: an error that escapes a route unexpectedly is a 500 even when a route-level
    row would have matched it.
    """
    for row in ERROR_TABLE:
        if row.app_wide:
            app.add_exception_handler(row.kind, _handler(row))


def _handler(row: ErrorRow[Any]) -> Callable[[Request, Exception], Any]:
    async def answer(request: Request, error: Exception) -> Response:
        if row.report is not None:
            row.report(error, request)
        return _response(row.answer(error, request), JSON_MEDIA, None)

    return answer
