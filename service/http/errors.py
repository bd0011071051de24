"""Errors FastAPI raises itself, as OperationOutcomes: unknown routes, invalid requests, the unexpected.

Errors of a hook call are answered by the hook route (``service.http.routes.hooks``), client
authentication errors by ``service.auth.clients``; no stack trace ever leaves the process.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from cds_hooks.outcome import IssueType
from service.http.responses import outcome_response

__all__ = ["install_error_handlers"]

log = logging.getLogger("calf_cds.service")


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
