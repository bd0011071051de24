"""Prefetch: render templates, tell the four states of a prefetch value apart, and unpack Bundles.

CDS Hooks 2.0.1 defines what a client may put under a prefetch key:

==============  ==========================================================================
state           meaning
==============  ==========================================================================
``PRESENT``     a FHIR resource or a Bundle (possibly with zero entries)
``NULL``        ``null``: the client has no data for the template (e.g. a read found nothing)
``OUTCOME``     an ``OperationOutcome``: the client's own fetch failed; we may try ourselves
``MISSING``     the key is absent: the client chose not to, or could not, prefetch it
==============  ==========================================================================

Templates are rendered here with the 2.0.1 tokens (``{{context.X}}``, ``{{userPractitionerId}}``,
``{{userPractitionerRoleId}}``, ``{{userPatientId}}``, ``{{userRelatedPersonId}}``) and the 3.0
ballot's relative dates (``{{today()}}``, ``{{today() - 90 days}}``). Any other FHIRPath
(``ofType``, ``resolve``, ``%key``) is refused with :class:`PrefetchTemplateError`; callers fetch
such data themselves. Nothing here reads the clock: ``today`` is an argument.
"""

from __future__ import annotations

import calendar
import datetime
import enum
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple
from urllib.parse import quote

from cds_hooks.errors import CdsHooksError, RequestError

__all__ = [
    "BundleEntry",
    "Ignored",
    "PrefetchState",
    "PrefetchTemplateError",
    "Resource",
    "bundle_resources",
    "classify",
    "iter_entries",
    "json_pointer",
    "next_link",
    "render_template",
]

Resource = dict[str, Any]
_Place = Literal["start", "path", "query"]

#: The user tokens of CDS Hooks 2.0.1, keyed by the resource type they stand for.
USER_TOKENS: Mapping[str, str] = {
    "userPractitionerId": "Practitioner",
    "userPractitionerRoleId": "PractitionerRole",
    "userPatientId": "Patient",
    "userRelatedPersonId": "RelatedPerson",
}
#: Bundle types a prefetch value (or a search answer) may have.
BUNDLE_TYPES = frozenset({"searchset", "collection"})

_TOKEN = re.compile(r"\{\{(.*?)\}\}", re.DOTALL)
_CONTEXT_PATH = re.compile(r"context((?:\.[A-Za-z_][A-Za-z0-9_\-]*)+)")
_TODAY = re.compile(
    r"today\(\s*\)"
    r"(?:\s*(?P<sign>[+-])\s*(?P<amount>\d{1,6})\s*"
    r"(?P<unit>days?|weeks?|months?|years?|'d'|'wk'))?"
)
# A relative reference made only of characters that are safe in a URL as they are.
_REFERENCE = re.compile(r"(?P<type>[A-Z][A-Za-z]{0,63})/(?P<id>[A-Za-z0-9\-.]{1,64})")
_USER_ID = re.compile(r"(?P<type>[A-Za-z]+)/(?P<id>[^/]+)")
# FHIR search separators that must be escaped with a backslash inside a parameter value.
_SEARCH_SPECIALS = str.maketrans({"\\": "\\\\", ",": "\\,", "$": "\\$", "|": "\\|"})


class PrefetchTemplateError(CdsHooksError):
    """A prefetch template cannot be rendered; ``token`` is the offending token (without braces).

    Raised for unknown tokens, unsupported FHIRPath, context fields that are missing, empty or not
    strings, and user tokens that do not match the type of ``context.userId``.
    """

    def __init__(self, message: str, *, token: str = "") -> None:
        super().__init__(message)
        self.token = token


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


# --------------------------------------------------------------------------------------------
# Templates


def render_template(
    template: str,
    *,
    context: Mapping[str, object],
    user_id: str | None,
    today: datetime.date,
) -> str:
    """Replace every prefetch token in ``template`` and return the relative FHIR URL.

    Values from the context are percent-encoded (and, after the ``?``, FHIR search separators
    ``, $ | \\`` are backslash-escaped first), so no context value can add a path segment, a query
    parameter or an ``or`` alternative. The one exception: a token that starts the template and
    holds a plain relative reference such as ``Practitioner/123`` (``{{context.userId}}`` used
    as a read) is kept as it is.

    :raises PrefetchTemplateError: on any token it cannot render, and on unbalanced braces.
    """
    if not isinstance(template, str):
        raise PrefetchTemplateError("a prefetch template must be a string")
    parts: list[str] = []
    position = 0
    for match in _TOKEN.finditer(template):
        literal = template[position : match.start()]
        _check_literal(literal)
        parts.append(literal)
        parts.append(
            _render_token(
                match.group(1).strip(),
                context=context,
                user_id=user_id,
                today=today,
                place=_place(template, match.start()),
            )
        )
        position = match.end()
    tail = template[position:]
    _check_literal(tail)
    parts.append(tail)
    return "".join(parts)


def _check_literal(text: str) -> None:
    for brace, problem in (("{{", "'{{' without '}}'"), ("}}", "'}}' without '{{'")):
        if brace in text:
            raise PrefetchTemplateError(f"unbalanced prefetch token: {problem}", token=brace)


def _place(template: str, start: int) -> _Place:
    if start == 0:
        return "start"
    return "query" if "?" in template[:start] else "path"


def _render_token(
    token: str,
    *,
    context: Mapping[str, object],
    user_id: str | None,
    today: datetime.date,
    place: _Place,
) -> str:
    if token in USER_TOKENS:
        return _encode(_user_token(token, user_id), place=place, token=token)
    if _CONTEXT_PATH.fullmatch(token):
        return _encode(_context_value(token, context), place=place, token=token)
    today_match = _TODAY.fullmatch(token)
    if today_match:
        return _relative_date(today_match, today, token).isoformat()
    if token.startswith(("context.", "%")) or "(" in token:
        raise PrefetchTemplateError(
            f"prefetch token {{{{{token}}}}} uses FHIRPath this service does not render",
            token=token,
        )
    raise PrefetchTemplateError(f"unknown prefetch token {{{{{token}}}}}", token=token)


def _user_token(token: str, user_id: str | None) -> str:
    if user_id is None:
        raise PrefetchTemplateError(
            f"prefetch token {{{{{token}}}}} needs context.userId, and there is none", token=token
        )
    match = _USER_ID.fullmatch(user_id)
    if not match:
        raise PrefetchTemplateError(
            f"context.userId {user_id!r} is not of the form ResourceType/id", token=token
        )
    wanted = USER_TOKENS[token]
    if match["type"] != wanted:
        raise PrefetchTemplateError(
            f"prefetch token {{{{{token}}}}} needs a {wanted} user, but context.userId is a {match['type']}",
            token=token,
        )
    return match["id"]


def _context_value(token: str, context: Mapping[str, object]) -> str:
    value: object = context
    for name in token.split(".")[1:]:
        if not isinstance(value, Mapping) or name not in value:
            raise PrefetchTemplateError(
                f"prefetch token {{{{{token}}}}}: the hook context has no field {name!r}",
                token=token,
            )
        value = value[name]
    if not isinstance(value, str):
        kind = "a list" if isinstance(value, list) else type(value).__name__
        raise PrefetchTemplateError(
            f"prefetch token {{{{{token}}}}} must name a string context field, not {kind}",
            token=token,
        )
    return value


def _encode(value: str, *, place: _Place, token: str) -> str:
    if not value:
        raise PrefetchTemplateError(f"prefetch token {{{{{token}}}}} is empty", token=token)
    reference = _REFERENCE.fullmatch(value)
    if place == "start" and reference and reference["id"].strip("."):
        # "{{context.userId}}" as a whole read: "Practitioner/123" stays a path.
        return value
    if not value.strip("."):
        # "." and ".." would be dot segments in the URL path.
        raise PrefetchTemplateError(
            f"prefetch token {{{{{token}}}}} is not a usable id: {value!r}", token=token
        )
    if place == "query":
        value = value.translate(_SEARCH_SPECIALS)
    try:
        return quote(value, safe="")
    except UnicodeEncodeError:
        raise PrefetchTemplateError(
            f"prefetch token {{{{{token}}}}} is not valid Unicode text", token=token
        ) from None


def _relative_date(match: re.Match[str], today: datetime.date, token: str) -> datetime.date:
    if isinstance(today, datetime.datetime):
        today = today.date()  # a date token is a date, whatever the caller's clock gives
    if match["sign"] is None:
        return today
    amount = int(match["amount"]) * (1 if match["sign"] == "+" else -1)
    unit = match["unit"].strip("'").rstrip("s")
    try:
        if unit in ("day", "d"):
            return today + datetime.timedelta(days=amount)
        if unit in ("week", "wk"):
            return today + datetime.timedelta(weeks=amount)
        months = amount * 12 if unit == "year" else amount
        return _add_months(today, months)
    except (OverflowError, ValueError):
        raise PrefetchTemplateError(
            f"prefetch token {{{{{token}}}}} gives a date out of range", token=token
        ) from None


def _add_months(day: datetime.date, months: int) -> datetime.date:
    """Calendar month arithmetic; a day that does not exist becomes the month's last day."""
    index = day.year * 12 + (day.month - 1) + months
    year, month = divmod(index, 12)
    if not datetime.MINYEAR <= year <= datetime.MAXYEAR:
        raise OverflowError("year out of range")
    last = calendar.monthrange(year, month + 1)[1]
    return datetime.date(year, month + 1, min(day.day, last))


# --------------------------------------------------------------------------------------------
# Prefetch values


_OBJECT = (dict, Mapping)  # isinstance() tries dict first: no ABC machinery for parsed JSON


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
    if not isinstance(entry, _OBJECT):
        raise RequestError("a Bundle entry must be an object", pointer=f"{pointer}/entry/{index}")
    resource = entry.get("resource")
    if not isinstance(resource, _OBJECT):
        raise RequestError("a Bundle entry must have a resource object", pointer=f"{pointer}/entry/{index}")
    if not isinstance(resource.get("resourceType"), str):
        raise RequestError(
            "a Bundle entry's resource has no resourceType",
            pointer=f"{pointer}/entry/{index}/resource/resourceType",
        )
    search = entry.get("search")
    mode = search.get("mode") if isinstance(search, _OBJECT) else None
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
            mode = search.get("mode") if isinstance(search, _OBJECT) else None
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
