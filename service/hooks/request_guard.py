"""Hostile input: what a request body may hold, checked before anything reads it.

The body size is refused before reading (`max_body_bytes`). `decode_json_object` is the one decoder
of a request body (the hook, feedback and `$extract` routes): orjson parses in C, and already
refuses NaN and Infinity, lone surrogates and nesting deeper than 1024. `check_json_limits` walks
the parsed document once, level by level, touching each value once: nesting depth, items per array
(and members per object) and the length of string values. The walk is the only Python pass over the whole body,
so it is written for speed; the JSON pointer of a violation is found afterwards, on the slow path
only.

A refused body is a `RequestRefusedError`: its HTTP status, its OperationOutcome and the few words
the audit trail keeps (`reason`), for whichever route or front door received it::

    RequestRefusedError     a body refused before it is read as a request (4xx)
    ├── BodyTooLargeError       over the body limit (413)
    └── BodyNotJsonError        not JSON, or not a JSON object (400)
    LimitExceededError      a JSON limit is exceeded; `.limit` names it, `.pointer` locates it
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import orjson

from cds_hooks.outcome import IssueType, operation_outcome
from service.config import Settings

__all__ = [
    "JSON_MEDIA_TYPES",
    "BodyNotJsonError",
    "BodyTooLargeError",
    "JsonLimits",
    "LimitExceededError",
    "LimitName",
    "RequestLimits",
    "RequestRefusedError",
    "check_json_limits",
    "decode_json_object",
    "is_json_media_type",
    "over_limit",
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
