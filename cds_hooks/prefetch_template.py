"""Prefetch templates, rendered for one call's context and user.

Templates are rendered here with the CDS Hooks 2.0.1 tokens (``{{context.X}}``,
``{{userPractitionerId}}``, ``{{userPractitionerRoleId}}``, ``{{userPatientId}}``,
``{{userRelatedPersonId}}``) and the 3.0 ballot's relative dates (``{{today()}}``,
``{{today() - 90 days}}``). Any other FHIRPath (``ofType``, ``resolve``, ``%key``) is refused with
:class:`PrefetchTemplateError`; callers fetch such data themselves. Nothing here reads the clock:
``today`` is an argument.
"""

from __future__ import annotations

import calendar
import datetime
import re
from collections.abc import Mapping
from typing import Literal
from urllib.parse import quote

from cds_hooks.errors import CdsHooksError

__all__ = ["USER_TOKENS", "PrefetchTemplateError", "render_template"]

_Place = Literal["start", "path", "query"]

#: The user tokens of CDS Hooks 2.0.1, keyed by the resource type they stand for.
USER_TOKENS: Mapping[str, str] = {
    "userPractitionerId": "Practitioner",
    "userPractitionerRoleId": "PractitionerRole",
    "userPatientId": "Patient",
    "userRelatedPersonId": "RelatedPerson",
}
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
