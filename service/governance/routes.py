"""Web routes of the governance layer: the CDS Hooks feedback endpoint and the HTML report.

Authentication hook: both are ``APIRouter``s that ``service.app`` includes, so requiring a
credential is one argument there, e.g.
``app.include_router(feedback_router, dependencies=[Depends(authenticate_client)])`` for the
feedback endpoint (a CDS Client's JWT, like the hook itself) and an authorised-user dependency for
``report_router``. Nothing here reads credentials.
"""

from __future__ import annotations

import logging
import re
from datetime import UTC, date, datetime, time
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse, Response
from sqlalchemy.exc import SQLAlchemyError

from service.governance.errors import FeedbackError
from service.governance.feedback import feedback_records, parse_feedback
from service.governance.report import render
from service.governance.reportdata import collect
from service.governance.runtime import GovernanceDep
from service.hooks.discovery import standard_hooks
from service.hooks.guards import RequestRefusedError, decode_json_object
from service.http.deps import outcome_response, read_body
from service.http.errors import error_response

__all__ = ["FULL_DATE", "feedback_router", "get_report", "post_feedback", "report_router"]

log = logging.getLogger("calf_cds.feedback")
FULL_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")

feedback_router = APIRouter(tags=["CDS Hooks feedback"])
report_router = APIRouter(prefix="/governance", tags=["governance"])


def _client(request: Request) -> dict[str, Any]:
    """Who sent the feedback, if an authentication dependency put a ``ClientIdentity`` on the request."""
    identity = getattr(request.state, "client", None)
    if identity is None:
        return {}
    return {name: getattr(identity, name, None) for name in ("iss", "sub", "tenant")}


@feedback_router.post("/cds-services/{service_id}/feedback")
async def post_feedback(service_id: str, request: Request, governance: GovernanceDep) -> Response:
    """CDS Hooks feedback: 200 with an empty body once the entries are queued for the audit trail.

    Any service of the app's hook registry takes feedback (``calf-pain`` and the order services: the
    CDS Hooks Sandbox posts it when a suggestion is accepted)."""
    hooks = getattr(request.app.state, "hooks", None) or standard_hooks()
    if service_id not in hooks:
        return outcome_response(404, f"no CDS service {service_id!r} here", code="not-found")
    try:
        document = decode_json_object(await read_body(request, governance.settings.max_body_bytes))
    except RequestRefusedError as error:
        return error_response(error)
    try:
        entries = parse_feedback(document)
    except FeedbackError as error:
        return error_response(error)
    records = feedback_records(
        entries, service_id=service_id, received_at=governance.clock(), client=_client(request)
    )
    for record in records:
        governance.feedback.submit(record)
    log.info("feedback: %d entries queued", len(records))
    return Response(status_code=200)


def _full_date(text: str) -> date | None:
    """An RFC 3339 full-date, and nothing else (pydantic would also read ``0.0`` as 1970-01-01)."""
    if not FULL_DATE.fullmatch(text):
        return None
    try:
        return date.fromisoformat(text)
    except ValueError:
        return None


@report_router.get("/report", response_class=HTMLResponse)
def get_report(
    governance: GovernanceDep,
    since: Annotated[str | None, Query(json_schema_extra={"format": "date"})] = None,
) -> Response:
    """The governance report as HTML (``?since=YYYY-MM-DD`` limits it to recent calls)."""
    settings = governance.settings
    day = _full_date(since) if since is not None else None
    if since is not None and day is None:
        return outcome_response(400, "since must be a date, YYYY-MM-DD", code="invalid", expression="since")
    start = datetime.combine(day, time(), tzinfo=UTC) if day else None
    try:
        data = collect(
            governance.engine,
            governance.catalogue(),
            active=settings.active_pack,
            shadows=settings.shadow_packs,
            since=start,
            now=governance.clock(),
        )
    except SQLAlchemyError as error:
        log.warning("report: audit store unavailable: %s", type(error).__name__)
        return error_response(error)
    page = render(data, active=settings.active_pack, shadows=settings.shadow_packs)
    return HTMLResponse(page, headers={"Cache-Control": "no-store"})
