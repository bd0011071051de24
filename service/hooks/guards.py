"""The guards of the front door: what a request body may hold on the way in, what a card must be
on the way out.

**In: hostile input**, checked before anything reads it. The body size is refused before reading (`max_body_bytes`). `decode_json_object` is the one decoder
of a request body (the hook, feedback and `$extract` routes): orjson parses in C, and already
refuses NaN and Infinity, lone surrogates and nesting deeper than 1024. `check_json_limits` walks
the parsed document once, level by level, touching each value once: nesting depth, items per array
(and members per object) and the length of string values. The walk is the only Python pass over
the whole body, so it is written for speed; the JSON pointer of a violation is found afterwards, on the slow path
only.

A refused body is a `RequestRefusedError`: its HTTP status, its OperationOutcome and the few words
the audit trail keeps (`reason`), for whichever route or front door received it::

    RequestRefusedError     a body refused before it is read as a request (4xx)
    ├── BodyTooLargeError       over the body limit (413)
    └── BodyNotJsonError        not JSON, or not a JSON object (400)
    LimitExceededError      a JSON limit is exceeded; `.limit` names it, `.pointer` locates it

:func:`read_document` applies the limits as the front door needs them (a whole-chart prefetch over
them is dropped, with a note, when the request names a fhirServer to fetch from), and
:func:`hook_request` reads the document as a hook request (400 at the first JSON pointer that does
not fit).

**Out: the card contract**, the last check before a response leaves, and what this service does
with a card that breaks it. The contract itself is CDS Hooks' and lives with the protocol
(:func:`cds_hooks.card_contract.card_problems`, driven by the :mod:`cds_hooks.models`). What is
this service's own: a card that fails is dropped and the drop is audited, except a red-flag card
(critical, or the ``urgent-referral`` topic), which is replaced by :func:`fallback_red_flag_card`
— a minimal, valid critical card — because a red flag must never disappear.

:func:`check_response` writes nothing: it returns the checked body with what the audit record
should say (:class:`CheckedResponse`), and the front door puts that in the record.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import orjson
from pydantic import ValidationError

from cds_hooks.card_contract import action_problems, card_problems
from cds_hooks.models import HookRequest
from cds_hooks.outcome import IssueType, operation_outcome
from rules.codes import Indicator, Topic
from service.config import Settings
from service.hooks.cards import RECOMMENDATION_SYSTEM

__all__ = [
    "FALLBACK_SUMMARY",
    "JSON_MEDIA_TYPES",
    "BodyNotJsonError",
    "BodyReader",
    "BodyTooLargeError",
    "CheckedResponse",
    "JsonLimits",
    "LimitExceededError",
    "LimitName",
    "RequestLimits",
    "RequestRefusedError",
    "body_reader",
    "check_json_limits",
    "check_response",
    "decode_json_object",
    "drop_oversized_prefetch",
    "fallback_red_flag_card",
    "hook_request",
    "is_json_media_type",
    "is_red_flag",
    "over_limit",
    "read_document",
]

LimitName = Literal["depth", "items", "string"]
JSON_MEDIA_TYPES = frozenset({"application/json", "application/fhir+json"})


class RequestRefusedError(Exception):
    """A request refused before it is read: ``status``, the outcome's ``diagnostics``, ``code`` and
    ``expression`` (a JSON pointer), and ``reason``, the audit trail's short word for it."""

    def __init__(
        self, status: int, diagnostics: str, *, code: IssueType, reason: str, expression: str | None = None
    ) -> None:
        super().__init__(diagnostics)
        self.status = status
        self.diagnostics = diagnostics
        self.code: IssueType = code
        self.reason = reason
        self.expression = expression

    def outcome(self) -> dict[str, Any]:
        """The OperationOutcome to answer with."""
        return operation_outcome(self.diagnostics, code=self.code, expression=self.expression)


class BodyTooLargeError(RequestRefusedError):
    """The request body is larger than the limit it was read under."""

    def __init__(self, diagnostics: str = "request body too large") -> None:
        super().__init__(413, diagnostics, code="too-long", reason="body too large")


class BodyNotJsonError(RequestRefusedError):
    """The body is not JSON, or not a JSON object."""

    def __init__(self, diagnostics: str, *, reason: str) -> None:
        super().__init__(400, diagnostics, code="structure", reason=reason)


class LimitExceededError(ValueError):
    """The document goes over one of the JSON limits."""

    def __init__(self, limit: LimitName, pointer: str) -> None:
        text = {
            "depth": "nests too deeply",
            "items": "has an array or object with too many items",
            "string": "has a string that is too long",
        }[limit]
        super().__init__(f"the request {text} (at {pointer or '/'})")
        self.limit = limit
        self.pointer = pointer


@dataclass(frozen=True, slots=True)
class JsonLimits:
    max_depth: int = 64
    max_items: int = 10_000
    max_string: int = 100_000

    @classmethod
    def from_settings(cls, settings: Settings) -> JsonLimits:
        return cls(settings.max_json_depth, settings.max_array_length, settings.max_string_length)


@dataclass(frozen=True, slots=True)
class RequestLimits:
    """What a hook request body may be: ``max_body_bytes``; up to ``max_oversized_body_bytes`` a
    larger body is read, to answer from fhirServer without its prefetch; and the JSON limits."""

    max_body_bytes: int = 5_000_000
    max_oversized_body_bytes: int = 32_000_000
    json: JsonLimits = JsonLimits()

    @classmethod
    def from_settings(cls, settings: Settings) -> RequestLimits:
        return cls(
            settings.max_body_bytes, settings.max_oversized_body_bytes, JsonLimits.from_settings(settings)
        )


def decode_json_object(body: bytes, limits: JsonLimits | None = None) -> dict[str, Any]:
    """The JSON object in ``body``, within ``limits`` if given.

    :raises BodyNotJsonError: for a body that is not JSON, or not an object (400).
    :raises RequestRefusedError: for a document over ``limits`` (400, at the violation's pointer).
    """
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise BodyNotJsonError("the body is not valid JSON", reason="malformed JSON") from None
    if not isinstance(document, dict):
        raise BodyNotJsonError("the body must be a JSON object", reason="not an object")
    if limits is not None:
        try:
            check_json_limits(document, limits, body_size=len(body))
        except LimitExceededError as error:
            raise over_limit(error) from None
    return document


def over_limit(error: LimitExceededError) -> RequestRefusedError:
    """The refusal of a document over a JSON limit."""
    return RequestRefusedError(
        400,
        str(error),
        code="too-long",
        reason=f"JSON limit: {error.limit}",
        expression=error.pointer or None,
    )


def check_json_limits(document: object, limits: JsonLimits, *, body_size: int) -> None:
    """Raise `LimitExceededError` if `document` (parsed from `body_size` bytes) breaks a limit.

    A JSON string of n characters takes at least n bytes, so when the whole body is no longer than
    `max_string` the string lengths need no check at all.
    """
    if _within_limits(document, limits, check_strings=body_size > limits.max_string):
        return
    violation = _locate(document, limits)
    if violation is not None:
        raise LimitExceededError(*violation)


def _within_limits(document: object, limits: JsonLimits, *, check_strings: bool) -> bool:
    """The fast walk: True when every limit holds.

    Object keys are not measured: the pipeline reads only known member names, so an unknown long
    key is ignored like any unknown member (and counted against `max_body_bytes`).
    """
    max_items, max_string = limits.max_items, limits.max_string
    level: list[Any] = [document] if type(document) in (dict, list) else []
    depth = 0
    while level:
        depth += 1
        if depth > limits.max_depth:
            return False
        deeper: list[Any] = []
        push = deeper.append
        for node in level:
            if len(node) > max_items:
                return False
            for value in node.values() if type(node) is dict else node:
                kind = type(value)
                if kind is str:
                    if check_strings and len(value) > max_string:
                        return False
                elif kind is dict or kind is list:
                    push(value)
        level = deeper
    return True


def _locate(document: object, limits: JsonLimits) -> tuple[LimitName, str] | None:
    """The first violation in document order, with its JSON pointer (slow path)."""
    stack: list[tuple[object, str, int]] = [(document, "", 0)]
    while stack:
        node, pointer, depth = stack.pop()
        if isinstance(node, str):
            if len(node) > limits.max_string:
                return "string", pointer
            continue
        if not isinstance(node, dict | list):
            continue
        if depth + 1 > limits.max_depth:
            return "depth", pointer
        if len(node) > limits.max_items:
            return "items", pointer
        if isinstance(node, dict):
            children = [(value, f"{pointer}/{_escape(str(key))}", depth + 1) for key, value in node.items()]
        else:
            children = [(value, f"{pointer}/{index}", depth + 1) for index, value in enumerate(node)]
        stack.extend(reversed(children))
    return None


def _escape(key: str) -> str:
    return key[:64].replace("~", "~0").replace("/", "~1")


def is_json_media_type(content_type: str | None) -> bool:
    """Whether a Content-Type header may carry our JSON body (absent counts as yes)."""
    if content_type is None:
        return True
    media = content_type.partition(";")[0].strip().lower()
    return media in JSON_MEDIA_TYPES or (media.startswith("application/") and media.endswith("+json"))


# -- in: the request body as the front door reads it ----------------------------------------------

#: Reads the request body, refusing more than the given number of bytes (:class:`BodyTooLargeError`).
BodyReader = Callable[[int], Awaitable[bytes]]


def body_reader(body: bytes) -> BodyReader:
    """A :data:`BodyReader` of a body already in hand (``calf-cds try``, tests)."""

    async def read(limit: int) -> bytes:
        if len(body) > limit:
            raise BodyTooLargeError
        return body

    return read


async def read_document(read_body: BodyReader, limits: RequestLimits, notes: list[str]) -> dict[str, Any]:
    """The request body as a JSON object within the limits; an oversized chart's prefetch dropped
    (with a note in ``notes``) when the request names a fhirServer to fetch from."""
    body = await read_body(max(limits.max_body_bytes, limits.max_oversized_body_bytes))
    document = decode_json_object(body)
    if len(body) > limits.max_body_bytes:
        drop_oversized_prefetch(document, len(body), notes)
    try:
        check_json_limits(document, limits.json, body_size=len(body))
    except LimitExceededError as error:
        within_prefetch = (error.pointer or "").startswith("/prefetch")
        if not (within_prefetch and isinstance(document.get("fhirServer"), str)):
            raise over_limit(error) from None
        # a chart too big for the JSON limits: fetch it narrowly, like an oversized body
        drop_oversized_prefetch(document, len(body), notes)
    return document


def hook_request(document: dict[str, Any]) -> HookRequest:
    """The hook request model of ``document`` (400 at the first JSON pointer that does not fit)."""
    try:
        return HookRequest.model_validate(document)
    except ValidationError as error:
        first = error.errors()[0]
        pointer = "/" + "/".join(str(part) for part in first.get("loc", ()))
        raise RequestRefusedError(
            400,
            f"invalid hook request at {pointer}",
            code="invalid",
            reason="invalid request",
            expression=pointer,
        ) from None


def drop_oversized_prefetch(document: dict[str, Any], size: int, notes: list[str]) -> None:
    """A whole-chart prefetch over the body limit must not blank the patient: with a fhirServer,
    the prefetch is discarded and every key is fetched with the narrowed templates; without one,
    413 (nothing else could be read)."""
    if not isinstance(document.get("fhirServer"), str):
        raise BodyTooLargeError(
            "request body too large; send the prefetch of the discovery document's narrowed templates, "
            "or a fhirServer to fetch from"
        )
    document["prefetch"] = {}
    notes.append(
        f"prefetch discarded: the request body ({size} bytes) is over the body or JSON limits; "
        "every key was fetched from fhirServer with the narrowed templates"
    )


# -- out: the card contract and the red-flag fallback ---------------------------------------------

RED_FLAG_TOPIC = Topic.URGENT_REFERRAL
FALLBACK_SUMMARY = "Red flag found: assess this patient in person now."
FALLBACK_DETAIL = (
    "A red-flag recommendation could not be shown in full because it failed the service's "
    "response checks. Assess the patient in person now; the call is recorded in the audit trail."
)


@dataclass(frozen=True)
class CheckedResponse:
    """The response to send, the audit notes of what the check changed, and per card uuid the
    outcome of a card that failed (the ``check`` of its entry in the audit record)."""

    body: dict[str, Any]
    notes: tuple[str, ...] = ()
    checks: Mapping[str, str] = field(default_factory=dict)


def is_red_flag(card: object, entry: Mapping[str, Any] | None = None) -> bool:
    """Whether a card (or the recommendation behind it) is a red flag: critical or urgent referral."""
    if entry is not None and (
        entry.get("indicator") == Indicator.CRITICAL or entry.get("topic") == RED_FLAG_TOPIC
    ):
        return True
    if not isinstance(card, Mapping):
        return False
    source = card.get("source")
    topic = source.get("topic") if isinstance(source, Mapping) else None
    code = topic.get("code") if isinstance(topic, Mapping) else None
    return card.get("indicator") == Indicator.CRITICAL or code == RED_FLAG_TOPIC


def fallback_red_flag_card(card: object) -> dict[str, Any]:
    """A minimal critical card that always passes the checks, keeping the card's uuid if it can."""
    card_uuid = card.get("uuid") if isinstance(card, Mapping) else None
    return {
        "uuid": card_uuid if isinstance(card_uuid, str) and card_uuid else str(uuid.uuid4()),
        "summary": FALLBACK_SUMMARY,
        "detail": FALLBACK_DETAIL,
        "indicator": Indicator.CRITICAL.value,
        "source": {
            "label": "calf-cds safety fallback",
            "topic": {
                "system": RECOMMENDATION_SYSTEM,
                "code": RED_FLAG_TOPIC.value,
                "display": RED_FLAG_TOPIC.display,
            },
        },
    }


def check_response(body: dict[str, Any], entries: Sequence[Mapping[str, Any]] = ()) -> CheckedResponse:
    """``body`` with every failing card dropped (or, for a red flag, replaced).

    ``entries`` are the audit record's card entries (``uuid``, ``topic``, ``indicator``): a card
    broken beyond recognition is still known as a red flag by the recommendation behind it.
    """
    cards = body.get("cards")
    if not isinstance(cards, list):
        return CheckedResponse(
            {**body, "cards": []}, ("response check: cards was not an array; answered with no cards",)
        )
    by_uuid = {entry.get("uuid"): entry for entry in entries if entry.get("uuid")}
    notes: list[str] = []
    checks: dict[str, str] = {}
    kept: list[Any] = []
    for index, card in enumerate(cards):
        problems = card_problems(card)
        if not problems:
            kept.append(card)
            continue
        card_uuid = card.get("uuid") if isinstance(card, Mapping) else None
        entry = by_uuid.get(card_uuid)
        shown = "; ".join(problems[:5])
        if is_red_flag(card, entry):
            kept.append(fallback_red_flag_card(card))
            outcome = "replaced by the minimal red-flag card"
        else:
            outcome = "dropped"
        notes.append(f"response check: card {index} ({card_uuid or 'no uuid'}) {outcome}: {shown}")
        if entry is not None:
            checks[str(card_uuid)] = f"{outcome}: {shown}"
    actions = body.get("systemActions", [])
    checked: dict[str, Any] = {**body, "cards": kept}
    if actions:
        bad = [p for i, a in enumerate(actions) for p in action_problems(a, f"/systemActions/{i}")]
        if bad:
            notes.append("response check: systemActions dropped: " + "; ".join(bad[:5]))
            checked.pop("systemActions")
    return CheckedResponse(checked, tuple(notes), checks)
