"""The outermost HTTP layer: request id, latency histogram and one log line per request.

A plain ASGI middleware (no per-request task or body buffering): it sets the request id for the
call's log records, adds ``X-Request-ID`` to the response, and when the response is done observes
``calf_cds_request_duration_seconds`` and logs the request. Routes add fields to that log line
through :func:`log_fields` (the hook route adds ``call_id`` and the card count).
"""

from __future__ import annotations

import contextvars
import logging
import time
from collections.abc import MutableMapping
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.ops import telemetry
from service.ops.telemetry import request_id_from, request_id_var

__all__ = ["QUIET_ENDPOINTS", "REQUEST_ID_HEADER", "RequestObserver", "endpoint_of", "log_fields"]

log = logging.getLogger("calf_cds.http")

REQUEST_ID_HEADER = b"x-request-id"
# Probes and scrapes arrive every few seconds from every kubelet and Prometheus: debug level only.
QUIET_ENDPOINTS = frozenset({"/healthz", "/readyz", "/metrics"})
_fields_var: contextvars.ContextVar[dict[str, Any] | None] = contextvars.ContextVar(
    "log_fields", default=None
)


def log_fields() -> dict[str, Any]:
    """Fields a route adds to this request's log line (a throwaway dict outside a request)."""
    fields = _fields_var.get()
    return fields if fields is not None else {}


def endpoint_of(scope: MutableMapping[str, Any], services: frozenset[str]) -> str:
    """The endpoint label: the matched route's path, with a known CDS service id filled in.

    ``/cds-services/{service_id}`` becomes ``/cds-services/calf-pain`` for a service we have, and
    stays a template otherwise, so a client cannot create time series by inventing paths.
    """
    route = scope.get("route")
    template = getattr(route, "path_format", None) or getattr(route, "path", None)
    if not isinstance(template, str):
        return "unmatched"
    service_id = scope.get("path_params", {}).get("service_id")
    if service_id in services:
        template = template.replace("{service_id}", service_id)
    return template


class RequestObserver:
    """Request id, latency metric and access log for every HTTP request."""

    def __init__(self, app: ASGIApp, *, services: frozenset[str]) -> None:
        self.app = app
        self.services = services

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        header = None
        for name, value in scope["headers"]:
            if name == REQUEST_ID_HEADER:
                header = value.decode("latin-1")
                break
        request_id = request_id_from(header)
        request_id_token = request_id_var.set(request_id)
        fields: dict[str, Any] = {}
        fields_token = _fields_var.set(fields)
        encoded_id = request_id.encode()
        status = 500
        started = time.perf_counter()

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", ()), (REQUEST_ID_HEADER, encoded_id)]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            seconds = time.perf_counter() - started
            endpoint = endpoint_of(scope, self.services)
            telemetry.observe_request(endpoint, scope["method"], status, seconds)
            level = logging.DEBUG if endpoint in QUIET_ENDPOINTS else logging.INFO
            if log.isEnabledFor(level):
                log.log(
                    level,
                    "request",
                    extra={
                        "method": scope["method"],
                        "endpoint": endpoint,
                        "status": status,
                        "duration_ms": round(seconds * 1000, 2),
                        **fields,
                    },
                )
            _fields_var.reset(fields_token)
            request_id_var.reset(request_id_token)
