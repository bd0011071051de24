"""Hostile input: what a hook request body may hold, checked before the pipeline reads it.

The body size is refused before reading (`max_body_bytes`). orjson then parses in C, and already
refuses NaN and Infinity, lone surrogates and nesting deeper than 1024. `check_json_limits` walks
the parsed document once, level by level, touching each value once: nesting depth, items per array
(and members per object) and the length of string values. The walk is the only Python pass over the whole body,
so it is written for speed; the JSON pointer of a violation is found afterwards, on the slow path
only.

    LimitExceededError      a JSON limit is exceeded; `.limit` names it, `.pointer` locates it
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from service.config import Settings

LimitName = Literal["depth", "items", "string"]
JSON_MEDIA_TYPES = frozenset({"application/json", "application/fhir+json"})


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
