"""Small readers of FHIR JSON shared by the mappings: dates, codings, text, lists.

Every reader is total: a member of the wrong JSON type reads as absent, never as an error.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, date, datetime
from typing import Any

__all__ = [
    "ASSERTED_DATE",
    "asserted_date",
    "codes",
    "codings",
    "concepts",
    "first",
    "get",
    "items",
    "parse_datetime",
    "text",
]

ASSERTED_DATE = "http://hl7.org/fhir/StructureDefinition/condition-assertedDate"


def parse_datetime(text: object) -> datetime | None:
    """A FHIR date or dateTime as an aware datetime (dates and partial dates at UTC midnight)."""
    if not isinstance(text, str) or not text:
        return None
    try:
        if len(text) == 4:
            return datetime(int(text), 1, 1, tzinfo=UTC)
        if len(text) == 7:
            return datetime(int(text[:4]), int(text[5:7]), 1, tzinfo=UTC)
        if len(text) == 10:
            return datetime.combine(date.fromisoformat(text), datetime.min.time(), UTC)
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def codings(concept: object) -> list[Mapping[str, Any]]:
    if not isinstance(concept, dict):  # JSON objects are dicts: the cheap check in the hot path
        return []
    found = concept.get("coding")
    return [c for c in found if isinstance(c, dict)] if isinstance(found, list) else []


def codes(concept: object) -> set[str]:
    """The string codes of a CodeableConcept (a code of any other JSON type is no code)."""
    return {code for c in codings(concept) if isinstance(code := c.get("code"), str)}


def text(concept: object) -> str:
    """A CodeableConcept's text and displays, joined (what a clinician would read)."""
    if not isinstance(concept, Mapping):
        return ""
    parts = [concept.get("text")] + [c.get("display") for c in codings(concept)]
    return " ".join(p for p in parts if isinstance(p, str))


def get(resource: Mapping[str, Any], key: str, inner: str) -> object:
    value = resource.get(key)
    return value.get(inner) if isinstance(value, dict) else None


def items(value: object) -> list[Mapping[str, Any]]:
    """The JSON objects of a list (anything else in it, or a non-list, is skipped)."""
    return [v for v in value if isinstance(v, dict)] if isinstance(value, list) else []


def first(value: object) -> object:
    found = items(value)
    return found[0] if found else value


def concepts(value: object) -> list[object]:
    """A CodeableConcept or a list of them, as a list."""
    return list(items(value)) if isinstance(value, list) else [value] if isinstance(value, dict) else []


def asserted_date(resource: Mapping[str, Any]) -> datetime | None:
    """The R4 ``condition-assertedDate`` extension, if present."""
    for extension in items(resource.get("extension")):
        if extension.get("url") == ASSERTED_DATE:
            return parse_datetime(extension.get("valueDateTime"))
    return None
