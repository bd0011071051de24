"""Prefetch values: tell the four states of a prefetch value apart, and unpack Bundles.

CDS Hooks 2.0.1 defines what a client may put under a prefetch key:

==============  ==========================================================================
state           meaning
==============  ==========================================================================
``PRESENT``     a FHIR resource or a Bundle (possibly with zero entries)
``NULL``        ``null``: the client has no data for the template (e.g. a read found nothing)
``OUTCOME``     an ``OperationOutcome``: the client's own fetch failed; we may try ourselves
``MISSING``     the key is absent: the client chose not to, or could not, prefetch it
==============  ==========================================================================

The templates themselves are rendered by :mod:`cds_hooks.prefetch_template`.
"""

from __future__ import annotations

import enum
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

from cds_hooks.errors import RequestError

__all__ = [
    "JSON_OBJECT",
    "BundleEntry",
    "Ignored",
    "PrefetchState",
    "Resource",
    "bundle_resources",
    "classify",
    "iter_entries",
    "json_pointer",
    "next_link",
]

Resource = dict[str, Any]

#: Bundle types a prefetch value (or a search answer) may have.
BUNDLE_TYPES = frozenset({"searchset", "collection"})


class PrefetchState(enum.Enum):
    """What the client sent under one prefetch key (see the module docstring)."""

    PRESENT = "present"
    NULL = "null"
    OUTCOME = "outcome"
    MISSING = "missing"


@dataclass(frozen=True, slots=True)
class Ignored:
    """A resource that was in a prefetch value but not used, and why (never dropped silently)."""

    resource_type: str
    id: str | None
    reason: str
    pointer: str = ""


class BundleEntry(NamedTuple):
    """One entry of a Bundle: its JSON pointer, its resource and its ``search.mode`` (if any)."""

    pointer: str
    resource: Resource
    search_mode: str | None


JSON_OBJECT = (dict, Mapping)  # isinstance() tries dict first: no ABC machinery for parsed JSON


def json_pointer(*parts: str | int) -> str:
    """Build an RFC 6901 JSON pointer, escaping ``~`` and ``/`` in each part."""
    return "".join("/" + str(part).replace("~", "~0").replace("/", "~1") for part in parts)


def classify(prefetch: Mapping[str, object] | None, key: str) -> PrefetchState:
    """Say which of the four states the value under ``key`` is in.

    An ``OperationOutcome`` in place of the data is always ``OUTCOME``. A Bundle is ``OUTCOME``
    only when every entry is an OperationOutcome and at least one issue is an ``error`` or
    ``fatal`` (the spec's "OperationOutcome(s)"); a Bundle with zero entries is ``PRESENT`` (a
    search that found nothing), and so is one whose outcome entries are mere warnings.

    :raises RequestError: when the value is neither ``null`` nor a JSON object with a
        ``resourceType`` (pointer ``/prefetch/<key>``).
    """
    if prefetch is None or key not in prefetch:
        return PrefetchState.MISSING
    value = prefetch[key]
    pointer = json_pointer("prefetch", key)
    if value is None:
        return PrefetchState.NULL
    if not isinstance(value, Mapping) or not isinstance(value.get("resourceType"), str):
        raise RequestError(
            f"prefetch {key!r} must be null or a FHIR resource (an object with resourceType)",
            pointer=pointer,
        )
    if value["resourceType"] == "OperationOutcome":
        return PrefetchState.OUTCOME
    if value["resourceType"] == "Bundle":
        entries = value.get("entry")
        # a chart's Bundle fails the first test at its first entry: no pass over the rest
        if (
            isinstance(entries, list)
            and entries
            and all(_is_outcome(_resource_of(e)) for e in entries)
            and any(_is_failure_outcome(_resource_of(e)) for e in entries)
        ):
            return PrefetchState.OUTCOME
    return PrefetchState.PRESENT


def _resource_of(entry: object) -> object:
    return entry.get("resource") if isinstance(entry, Mapping) else None


def _is_outcome(value: object) -> bool:
    return isinstance(value, Mapping) and value.get("resourceType") == "OperationOutcome"


def _is_failure_outcome(value: object) -> bool:
    if not isinstance(value, Mapping) or value.get("resourceType") != "OperationOutcome":
        return False
    issues = value.get("issue")
    if not isinstance(issues, list) or not issues:
        return True  # an OperationOutcome with no issues still says the fetch did not happen
    return any(isinstance(issue, Mapping) and issue.get("severity") in ("error", "fatal") for issue in issues)


def iter_entries(bundle: Mapping[str, object], *, pointer: str = "") -> Iterator[BundleEntry]:
    """Yield every entry of a ``searchset`` or ``collection`` Bundle, checking its shape.

    :raises RequestError: for a value that is not a Bundle of those types, an ``entry`` that is
        not a list, or an entry without a resource object that has a ``resourceType``; the
        pointer is ``pointer`` plus the path inside the Bundle.
    """
    for index, entry in enumerate(_check_bundle(bundle, pointer)):
        yield _checked_entry(entry, index, pointer)


def _check_bundle(bundle: Mapping[str, object], pointer: str) -> list[Any]:
    """The entries of a Bundle of the types read (see :func:`iter_entries`)."""
    if bundle.get("resourceType") != "Bundle":
        raise RequestError("expected a Bundle", pointer=pointer + "/resourceType")
    bundle_type = bundle.get("type")
    if not isinstance(bundle_type, str) or bundle_type not in BUNDLE_TYPES:  # a list is unhashable
        raise RequestError(
            f"expected a Bundle of type searchset or collection, got {repr(bundle_type)[:80]}",
            pointer=pointer + "/type",
        )
    entries = bundle.get("entry", [])
    if not isinstance(entries, list):
        raise RequestError("Bundle.entry must be a list", pointer=pointer + "/entry")
    return entries


def _checked_entry(entry: object, index: int, pointer: str) -> BundleEntry:
    """One entry of a Bundle, checked (see :func:`iter_entries`); pointers are plain f-strings
    ("entry" and an index need no escaping), and parsed JSON objects are checked as dicts first."""
    if not isinstance(entry, JSON_OBJECT):
        raise RequestError("a Bundle entry must be an object", pointer=f"{pointer}/entry/{index}")
    resource = entry.get("resource")
    if not isinstance(resource, JSON_OBJECT):
        raise RequestError("a Bundle entry must have a resource object", pointer=f"{pointer}/entry/{index}")
    if not isinstance(resource.get("resourceType"), str):
        raise RequestError(
            "a Bundle entry's resource has no resourceType",
            pointer=f"{pointer}/entry/{index}/resource/resourceType",
        )
    search = entry.get("search")
    mode = search.get("mode") if isinstance(search, JSON_OBJECT) else None
    return BundleEntry(
        f"{pointer}/entry/{index}/resource", dict(resource), mode if isinstance(mode, str) else None
    )


def bundle_resources(
    value: Mapping[str, object], *, expected_types: frozenset[str], pointer: str = ""
) -> tuple[list[Resource], list[Ignored]]:
    """Return the resources of the expected types from a resource or a Bundle, and what was left.

    ``search.mode == "outcome"`` entries (a server's warnings) and resources of other types are
    reported as :class:`Ignored`. ``pointer`` (e.g. ``/prefetch/observations``) prefixes every
    JSON pointer in errors and in ``Ignored``.

    :raises RequestError: for malformed values (see :func:`iter_entries`).
    """
    if not isinstance(value, Mapping) or not isinstance(value.get("resourceType"), str):
        raise RequestError("expected a FHIR resource with a resourceType", pointer=pointer)
    if value["resourceType"] != "Bundle":
        single = dict(value)
        if single["resourceType"] in expected_types:
            return [single], []
        return [], [_ignored(single, "unexpected resource type", pointer)]
    kept: list[Resource] = []
    ignored: list[Ignored] = []
    # The hot path of every call, as long as the chart: iter_entries' checks, inline, with a JSON
    # pointer written only for what is reported (a parsed JSON object is a dict: kept as is).
    for index, entry in enumerate(_check_bundle(value, pointer)):
        resource: Any = entry.get("resource") if type(entry) is dict else None
        if type(resource) is dict and isinstance(resource.get("resourceType"), str):
            search = entry.get("search")
            mode = search.get("mode") if isinstance(search, JSON_OBJECT) else None
        else:  # not the everyday shape: refused as iter_entries refuses it, or a Mapping copied
            resource, mode = (checked := _checked_entry(entry, index, pointer)).resource, checked.search_mode
        if mode == "outcome":
            where = f"{pointer}/entry/{index}/resource"
            ignored.append(_ignored(resource, "search outcome (server message)", where))
        elif resource["resourceType"] in expected_types:
            kept.append(resource)
        else:
            ignored.append(
                _ignored(resource, "unexpected resource type", f"{pointer}/entry/{index}/resource")
            )
    return kept, ignored


def _ignored(resource: Mapping[str, Any], reason: str, pointer: str) -> Ignored:
    resource_id = resource.get("id")
    return Ignored(
        resource_type=str(resource["resourceType"]),
        id=resource_id if isinstance(resource_id, str) else None,
        reason=reason,
        pointer=pointer,
    )


def next_link(bundle: Mapping[str, object]) -> str | None:
    """The Bundle's ``link`` with relation ``next``, or ``None`` (also for malformed links)."""
    links = bundle.get("link")
    if not isinstance(links, list):
        return None
    for link in links:
        if isinstance(link, Mapping) and link.get("relation") == "next":
            url = link.get("url")
            if isinstance(url, str) and url.strip():
                return url.strip()
    return None
