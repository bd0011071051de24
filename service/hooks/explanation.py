"""A card's explanation page: built with the card, reached by a short-lived signed link.

**The link.** ``{base}/explanations/{card_uuid}?expires={unix seconds}&sig={mac}`` where ``mac`` is
base64url(HMAC-SHA256(secret, "calf-cds explanation v1" | card uuid | expires)). Why this scheme:

- card-bound and short-lived: the MAC covers the card's uuid and the expiry (default 15 minutes,
  ``explanation_link_seconds``), so a link opens one card's page, only until it expires;
- no patient data in the URL: the uuid is random, the page's content stays on the server;
- one party signs and verifies, so a symmetric MAC is enough; unlike a JWT there is no algorithm
  to negotiate (no ``alg: none``, no key confusion), and it is checked with a constant-time compare
  before anything is looked up;
- the secret is ``explanation_secret`` (a ``SecretStr``: every replica of a deployment sets the
  same one) or, by default, a random key kept in ``data_dir/explanation.key`` (mode 0600) that the
  workers of one machine share. Changing it voids every outstanding link, and nothing else.

Anyone holding an unexpired link can open it (as with any bearer link): that is why it is short,
why the page is ``Cache-Control: no-store`` and ``Referrer-Policy: no-referrer``, and why a strict
CSP (``default-src 'none'``, no script at all) and Jinja2 autoescaping (plus
:func:`service.hooks.card_text.escape_html` on every expression) keep chart text inert.
Expired, tampered and unknown links get a 4xx page that says which; the content itself lives in
:mod:`service.store.writers` until the link expires.

:class:`Explanations` is one app's: it makes a call's links and keeps its cards' explanations; the
page itself is served by :mod:`service.http.routes.explanations`.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import logging
import os
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from jinja2 import Environment, PackageLoader, select_autoescape

from cds_hooks.models import Card
from fhir_mappings.facts import Facts, Vocabulary
from rules.engine import Assessment, Recommendation
from service.config import Settings
from service.hooks.card_text import card_evidence, escape_html, score_title
from service.hooks.registry import HookResult
from service.store.sink import ExplanationSink, StoredExplanation

__all__ = [
    "HEADERS",
    "PATH",
    "REFUSALS",
    "SECRET_FILE",
    "Explanations",
    "LinkError",
    "LinkSigner",
    "explanation",
    "load_secret",
    "render_page",
    "render_refusal",
    "stored",
    "stylesheet",
]

log = logging.getLogger("calf_cds.explanations")
PATH = "/explanations"
SECRET_FILE = "explanation.key"  # noqa: S105 - a file name, not a secret
_CONTEXT = b"calf-cds explanation v1"
HEADERS = {
    "Cache-Control": "no-store",
    "Pragma": "no-cache",
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'self'; img-src 'none'; base-uri 'none'; "
        "form-action 'none'; frame-ancestors 'none'"
    ),
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
}


class LinkError(Exception):
    """A link that opens nothing: ``reason`` is expired, invalid or unknown."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def load_secret(configured: str | None, data_dir: Path) -> bytes:
    """The signing key: the configured secret, else the data folder's key file (made on first use).

    The file appears whole or not at all: the key is written to a temporary file of this process
    and linked to its name, which fails if another worker linked its own first (then theirs is
    read). Workers starting together on a fresh data folder so all end up with one key; before,
    a worker could read the file between another's create and write and refuse to start.
    """
    if configured is not None:
        if len(configured) < 32:
            raise ValueError("explanation_secret must be at least 32 characters")
        return configured.encode()
    path = data_dir / SECRET_FILE
    if not path.exists():
        data_dir.mkdir(parents=True, exist_ok=True)
        _create_secret_file(path)
    key = path.read_text("utf-8").strip()
    if len(key) < 32:
        raise ValueError(f"{path} holds a key shorter than 32 characters")
    return key.encode()


def _create_secret_file(path: Path) -> None:
    """Write a new key to ``path`` (0600) atomically; if it exists already, leave it."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(descriptor, "w") as handle:
            handle.write(secrets.token_hex(32))
            handle.flush()
            os.fsync(handle.fileno())
        with contextlib.suppress(FileExistsError):  # another worker made it first: theirs it is
            os.link(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


@dataclass(frozen=True)
class LinkSigner:
    """Signs and checks card-bound explanation links."""

    secret: bytes
    lifetime: timedelta = timedelta(minutes=15)

    def _mac(self, card_uuid: str, expires: int) -> str:
        message = b"|".join((_CONTEXT, card_uuid.encode(), str(expires).encode()))
        digest = hmac.new(self.secret, message, hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()

    def expiry(self, now: datetime) -> datetime:
        return (now + self.lifetime).replace(microsecond=0)

    def url(self, base_url: str, card_uuid: str, expires_at: datetime) -> str:
        expires = int(expires_at.timestamp())
        query = urlencode({"expires": expires, "sig": self._mac(card_uuid, expires)})
        return f"{base_url.rstrip('/')}{PATH}/{card_uuid}?{query}"

    def check(self, card_uuid: str, expires: str | None, sig: str | None, now: datetime) -> None:
        """Raise :class:`LinkError` unless the link is genuine and unexpired."""
        if not expires or not sig or not expires.isdigit() or len(expires) > 12 or len(card_uuid) > 64:
            raise LinkError("invalid")
        if not hmac.compare_digest(self._mac(card_uuid, int(expires)), sig):
            raise LinkError("invalid")
        if int(expires) <= now.timestamp():
            raise LinkError("expired")


def _criterion(label: str, state: str, points: int | None) -> dict[str, Any]:
    return {
        "label": label,
        "state": "not recorded" if state == "not documented" else state,
        "points": f"{points:+d}" if points is not None else None,
    }


def explanation(
    card: Card,
    recommendation: Recommendation,
    assessment: Assessment,
    facts: Facts,
    vocabulary: Vocabulary,
    *,
    now: datetime,
    expires_at: datetime,
) -> dict[str, Any]:
    """Everything the page shows about ``card``, as plain JSON data (escaped when rendered)."""
    evidence = card_evidence(recommendation, facts, vocabulary)
    score = recommendation.score
    citation = recommendation.citation
    return {
        "card": {
            "uuid": card.uuid,
            "summary": card.summary,
            "indicator": card.indicator,
            "topic": recommendation.topic.display,
            "side": evidence.side_label or "no leg finding documented",
        },
        "rule": {"id": recommendation.rule_id, "title": recommendation.title},
        "pattern": {
            "overall": assessment.pattern,
            "card": recommendation.pattern,
            "all": list(assessment.patterns),
        },
        "detail": [line.replace("**", "") for line in recommendation.detail],  # the pack's emphasis, as text
        "criteria": [_criterion(c.label, c.state, None) for c in recommendation.criteria if c.points is None],
        "score": None
        if score is None
        else {
            "title": score_title(score.name),
            "points": score.points,
            "minimum": score.minimum,
            "maximum": score.maximum,
            "undocumented": score.undocumented,
            "items": [
                _criterion(c.label, c.state, c.points)
                for c in recommendation.criteria
                if c.points is not None
            ],
        },
        "findings": [
            {
                "label": f.label,
                "value": f.value,
                "side": f.side or "—",
                "date": f.date or "undated",
                "source": f.source,
                "recorded_as": f.recorded_as,
                "status": f.status or "—",
            }
            for f in evidence.findings
        ],
        "not_recorded": list(evidence.not_recorded),
        "suggestions": [s.label for s in card.suggestions],
        "citation": {"guideline": citation.guideline, "section": citation.section, "url": citation.url},
        "pack": {
            "id": assessment.pack_id,
            "version": assessment.pack_version,
            "hash": assessment.pack_hash,
        },
        "generated_at": now.astimezone(UTC).isoformat(timespec="seconds"),
        "expires_at": expires_at.astimezone(UTC).isoformat(timespec="seconds"),
    }


def stored(
    pairs: list[tuple[Card, Recommendation]],
    assessment: Assessment,
    facts: Facts,
    vocabulary: Vocabulary,
    *,
    now: datetime,
    expires_at: datetime,
) -> list[StoredExplanation]:
    """The explanations of a call's cards, ready for the store."""
    return [
        StoredExplanation(
            card.uuid,
            expires_at,
            explanation(card, rec, assessment, facts, vocabulary, now=now, expires_at=expires_at),
        )
        for card, rec in pairs
        if card.uuid
    ]


def _environment() -> Environment:
    env = Environment(
        loader=PackageLoader("service", "templates"),
        autoescape=select_autoescape(default=True, default_for_string=True),
        finalize=escape_html,
        auto_reload=False,
    )
    env.policies["json.dumps_function"] = None
    return env


@cache
def _env() -> Environment:
    return _environment()


REFUSALS = {
    "expired": (410, "This link has expired", "Explanation links last a few minutes. Open the card again."),
    "invalid": (403, "This link is not valid", "The link was changed or was not made by this service."),
    "unknown": (404, "Nothing to show", "This explanation is no longer kept (or was never made)."),
}


def render_page(body: dict[str, Any]) -> str:
    """The explanation page's HTML."""
    return _env().get_template("explanation.html").render(x=body)


def render_refusal(reason: str) -> tuple[int, str]:
    """Status and HTML of the page for a link that opens nothing."""
    status, title, text = REFUSALS[reason]
    return status, _env().get_template("refusal.html").render(title=title, text=text, status=status)


@cache
def stylesheet() -> str:
    """The pages' stylesheet."""
    return _env().get_template("explanation.css").render()


@dataclass
class Explanations:
    """One app's explanation links: signer, store, clock and the public base URL."""

    signer: LinkSigner
    store: ExplanationSink
    clock: Callable[[], datetime]
    public_base_url: str | None = None

    @classmethod
    def from_settings(
        cls, settings: Settings, store: ExplanationSink, clock: Callable[[], datetime]
    ) -> Explanations:
        secret = settings.explanation_secret.get_secret_value() if settings.explanation_secret else None
        signer = LinkSigner(
            load_secret(secret, settings.data_dir),
            timedelta(seconds=settings.explanation_link_seconds),
        )
        return cls(signer, store, clock, settings.public_base_url)

    def base_url(self, origin: str) -> str:
        """Where clients reach us: ``public_base_url``, else the request's own ``origin``
        (scheme://host:port)."""
        return self.public_base_url if self.public_base_url is not None else origin

    def links(self, base: str, now: datetime) -> tuple[Callable[[str], str], datetime]:
        """A link maker for the cards of one call (served at ``base``), and the links' expiry."""
        expires_at = self.signer.expiry(now)
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
        """Store the explanations of ``result``'s cards: in memory now, in the database behind the call.

        Nothing here waits for the database: the store's writer thread writes them, and until it
        has, this worker finds them in memory or among its pending writes, and another worker waits
        a moment for them (:class:`~service.store.writers.ExplanationStore`).
        """
        entries = stored(list(result.cards), assessment, facts, vocabulary, now=now, expires_at=expires_at)
        self.store.submit(entries, now=now)
