"""The explanation pages on the web: the page behind each link of a card (the links are made by
:class:`service.hooks.explanation.Explanations`).

``GET /explanations/{card_uuid}?expires=…&sig=…`` needs no client JWT — a clinician's browser
opens it from the card — the signed link is the credential (see :mod:`service.hooks.explanation`).
Every answer, page or refusal, is ``no-store`` with a strict CSP; a refusal is a 4xx page (or a
FHIR OperationOutcome to a client that asks for JSON).
"""

from __future__ import annotations

import asyncio
from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response

from service.hooks.explanation import (
    HEADERS,
    PATH,
    Explanations,
    LinkError,
    render_page,
    render_refusal,
    stylesheet,
)
from service.http.errors import error_response

__all__ = [
    "FHIR_JSON",
    "HTML",
    "explanation_page",
    "router",
    "stylesheet_file",
]

HTML = "text/html; charset=utf-8"
FHIR_JSON = "application/fhir+json"


router = APIRouter(include_in_schema=False)


def _wants_json(request: Request) -> bool:
    accept = request.headers.get("accept", "")
    return "json" in accept and "text/html" not in accept


def _refusal(request: Request, error: LinkError) -> Response:
    """The refusal page, or its OperationOutcome (``service.http.errors``) to a client that asks for JSON."""
    if _wants_json(request):
        return error_response(error, media_type=FHIR_JSON, headers=HEADERS)
    status, page = render_refusal(error.reason)
    return Response(page, status, headers=HEADERS, media_type=HTML)


@router.get(f"{PATH}/style.css")
async def stylesheet_file() -> Response:
    """The pages' only stylesheet (the CSP allows no inline style)."""
    return Response(
        stylesheet(), headers={**HEADERS, "Cache-Control": "public, max-age=3600"}, media_type="text/css"
    )


@router.get(PATH + "/{card_uuid}")
async def explanation_page(
    card_uuid: str,
    request: Request,
    expires: Annotated[str | None, Query(max_length=12)] = None,
    sig: Annotated[str | None, Query(max_length=64)] = None,
) -> Response:
    """A card's explanation, for as long as its signed link is valid."""
    explanations: Explanations | None = getattr(request.app.state, "explanations", None)
    if explanations is None:
        return _refusal(request, LinkError("unknown"))
    now = explanations.clock()
    try:
        explanations.signer.check(card_uuid, expires, sig, now)
    except LinkError as error:
        return _refusal(request, error)
    entry = await asyncio.to_thread(explanations.store.find, card_uuid, now=now)
    if entry is None:
        return _refusal(request, LinkError("unknown"))
    return Response(render_page(dict(entry.body)), headers=HEADERS, media_type=HTML)
