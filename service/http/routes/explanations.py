"""The explanation pages on the web: links for a call's cards, and the page behind each link.

``GET /explanations/{card_uuid}?expires=…&sig=…`` needs no client JWT — a clinician's browser
opens it from the card — the signed link is the credential (see :mod:`service.hooks.explanation`).
Every answer, page or refusal, is ``no-store`` with a strict CSP; a refusal is a 4xx page (or a
FHIR OperationOutcome to a client that asks for JSON).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response

from fhir_mappings.facts import Facts, Vocabulary
from rules.engine import Assessment
from service.config import Settings
from service.hooks.explanation import (
    HEADERS,
    PATH,
    LinkError,
    LinkSigner,
    load_secret,
    render_page,
    render_refusal,
    stored,
    stylesheet,
)
from service.hooks.pipeline import HookResult
from service.http.errors import error_response
from service.store.explanations import ExplanationStore

__all__ = [
    "FHIR_JSON",
    "HTML",
    "SAVE_WAIT_SECONDS",
    "Explanations",
    "explanation_page",
    "router",
    "stylesheet_file",
]

HTML = "text/html; charset=utf-8"
FHIR_JSON = "application/fhir+json"
SAVE_WAIT_SECONDS = 0.25


@dataclass
class Explanations:
    """One app's explanation links: signer, store, clock and the public base URL."""

    signer: LinkSigner
    store: ExplanationStore
    clock: Callable[[], datetime]
    public_base_url: str | None = None
    _saving: set[asyncio.Future[bool]] = field(default_factory=set)

    @classmethod
    def from_settings(
        cls, settings: Settings, store: ExplanationStore, clock: Callable[[], datetime]
    ) -> Explanations:
        secret = settings.explanation_secret.get_secret_value() if settings.explanation_secret else None
        signer = LinkSigner(
            load_secret(secret, settings.data_dir),
            timedelta(seconds=settings.explanation_link_seconds),
        )
        return cls(signer, store, clock, settings.public_base_url)

    def base_url(self, request: Request) -> str:
        """Where clients reach us: ``public_base_url``, else the request's own scheme and host."""
        if self.public_base_url is not None:
            return self.public_base_url
        return f"{request.url.scheme}://{request.url.netloc}"

    def links(self, request: Request, now: datetime) -> tuple[Callable[[str], str], datetime]:
        """A link maker for the cards of one call, and the links' expiry."""
        expires_at = self.signer.expiry(now)
        base = self.base_url(request)
        return (lambda card_uuid: self.signer.url(base, card_uuid, expires_at)), expires_at

    async def keep(
        self,
        result: HookResult,
        facts: Facts,
        vocabulary: Vocabulary,
        assessment: Assessment,
        *,
        now: datetime,
        expires_at: datetime,
    ) -> None:
        """Store the explanations of ``result``'s cards: in memory now, in the database off-loop.

        The response waits for the database write at most :data:`SAVE_WAIT_SECONDS` (it is done
        in milliseconds when the database is up); a slow or unreachable database finishes, or
        fails, in the background and never holds the cards back.
        """
        entries = stored(list(result.cards), assessment, facts, vocabulary, now=now, expires_at=expires_at)
        self.store.remember(entries)
        task = asyncio.ensure_future(asyncio.to_thread(self.store.save, entries, now=now))
        self._saving.add(task)
        task.add_done_callback(self._saving.discard)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(task), SAVE_WAIT_SECONDS)


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
