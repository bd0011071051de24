"""FHIR base URLs and the URLs under them: what a ``fhirServer`` may be, where its token may go, and
how a URL is shown in a message (never with a credential).

- :func:`parse_base_url`: a ``fhirServer`` as a base URL (absolute http(s); no credentials, query
  or fragment), or a :class:`~cds_hooks.errors.RequestError` at ``/fhirServer``;
- :func:`is_under`: whether a URL lies under a base, segment by segment: the one test between the
  token and the network;
- :func:`resolve`: a query (relative, or absolute under the base) as a URL;
- :func:`redact`: a URL for messages, notes and logs, without userinfo, credential query values
  (:data:`CREDENTIAL_PARAMS`) or the token.
"""

from __future__ import annotations

import re
from urllib.parse import unquote

import httpx

from cds_hooks.errors import RequestError

__all__ = ["CREDENTIAL_PARAMS", "is_under", "parse_base_url", "redact", "resolve"]

#: Query parameters whose values never appear in an error, a note or a log line.
CREDENTIAL_PARAMS = frozenset(
    {"access_token", "token", "code", "client_secret", "password", "api_key", "apikey", "key"}
)
_ABSOLUTE = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*://")


def is_under(url: httpx.URL, base: httpx.URL) -> bool:
    """Whether ``url`` lies under the FHIR base ``base``: the same scheme, host and port, and a path
    equal to base's or below it segment by segment (``/fhir`` covers ``/fhir/Patient``, never
    ``/fhir2``). URLs with userinfo, a fragment or dot segments never do."""
    if (url.scheme, url.host, url.port) != (base.scheme, base.host, base.port):
        return False
    if url.userinfo or url.fragment:
        return False
    if any(segment in (".", "..") for segment in url.path.split("/")):
        return False  # percent-encoded dot segments, which httpx leaves in place
    prefix = base.path.rstrip("/")
    return url.path == prefix or url.path.startswith(prefix + "/")


def parse_base_url(base_url: str) -> httpx.URL:
    """A ``fhirServer`` as a base URL: absolute http(s), no credentials, query or fragment.

    :raises RequestError: otherwise (pointer ``/fhirServer``).
    """
    try:
        url = httpx.URL(base_url)
    except (httpx.InvalidURL, TypeError):
        raise RequestError("fhirServer is not a valid URL", pointer="/fhirServer") from None
    if url.scheme not in ("http", "https") or not url.host:
        raise RequestError("fhirServer must be an absolute http(s) URL", pointer="/fhirServer")
    if url.userinfo or url.query or url.fragment:
        raise RequestError(
            "fhirServer must not hold credentials, a query or a fragment", pointer="/fhirServer"
        )
    return url.copy_with(path=url.path.rstrip("/") or "/")


def resolve(query: str, base: httpx.URL) -> httpx.URL:
    """``query`` (``"Observation?patient=1"``, or an absolute URL) as a URL under ``base``.

    :raises ValueError: for a query that is not a valid URL or not under ``base``.
    """
    base_url = str(base).rstrip("/")
    absolute = _ABSOLUTE.match(query) is not None
    try:
        url = httpx.URL(query if absolute else base_url + "/" + query.lstrip("/"))
    except httpx.InvalidURL:
        raise ValueError("not a valid FHIR query URL") from None
    if not is_under(url, base):
        raise ValueError(f"FHIR query is not under {base_url}")
    return url


def redact(url: httpx.URL, token: str | None) -> str:
    """``url`` without userinfo, credential query values or ``token``, for messages."""
    text = str(url.copy_with(userinfo=b"", fragment=None))
    head, mark, query = text.partition("?")
    if mark:
        params = []
        for param in query.split("&"):
            name, equals, _ = param.partition("=")
            if equals and unquote(name).lower() in CREDENTIAL_PARAMS:
                param = f"{name}=REDACTED"
            params.append(param)
        text = head + "?" + "&".join(params)
    if token:
        text = text.replace(token, "REDACTED")
    return text
