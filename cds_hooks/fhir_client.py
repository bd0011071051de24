"""An async FHIR client for what prefetch lacks: paged, retried, within a budget, token kept safe.

One :class:`FhirClient` serves one hook call: it holds that call's ``fhirServer`` and bearer token,
and its :class:`FetchPolicy` budget runs from ``async with`` to the last page. The HTTP connections
underneath are a shared ``httpx.AsyncClient`` (:func:`new_http_client`, one per worker process:
one TLS context, pooled connections, no cookie jar, no default credentials) when the caller passes
one, else a client of its own; either way the token goes on each request, never on the client.
Errors come from :mod:`cds_hooks.errors`::

    FhirFetchError                (every one carries ``url``: the URL without credentials)
    ├── FhirAuthError             401 or 403 (never retried)
    ├── FhirUnavailableError      connect error, timeout, budget spent, 429, 5xx after retries
    └── FhirResponseError         not JSON, too large, wrong resourceType, malformed Bundle,
                                  a redirect (not followed), 404 on a search, any other 4xx

A 404 or 410 on a *read* is not an error: it means "no data" and :meth:`FhirClient.read` returns
``None``, like a ``null`` prefetch value. The token is sent only to URLs under ``base_url`` (same
scheme, host, port and path prefix); a ``next`` link elsewhere is recorded in the result's notes
and not followed. No message, note or log line contains the token.

The policy, the result and the shared HTTP client are in :mod:`cds_hooks.fhir_fetch`; base URLs,
what lies under them and how a URL is shown, in :mod:`cds_hooks.fhir_urls`. This module is where
callers import them from, with the client.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Awaitable, Callable, Mapping
from types import TracebackType
from typing import Self
from urllib.parse import unquote

import httpx
import orjson

from cds_hooks.errors import (
    FhirAuthError,
    FhirFetchError,
    FhirResponseError,
    FhirUnavailableError,
    RequestError,
)
from cds_hooks.fhir_fetch import FHIR_JSON, FetchPolicy, FetchResult, new_http_client
from cds_hooks.fhir_urls import is_under, parse_base_url, redact, resolve
from cds_hooks.prefetch import BundleEntry, Resource, iter_entries, next_link

__all__ = ["FhirClient"]

logger = logging.getLogger(__name__)

# RFC 6750 b64token: anything else could not be sent as a header value anyway.
_BEARER = re.compile(r"[A-Za-z0-9\-._~+/]+=*")
_READ = re.compile(r"(?P<type>[A-Z][A-Za-z]{0,63})/(?P<id>[A-Za-z0-9\-.%]{1,200})")
# Failures worth another GET: connect errors, timeouts, connections dropped mid-answer.
_RETRYABLE_ERRORS = (httpx.NetworkError, httpx.TimeoutException, httpx.RemoteProtocolError)


class FhirClient:
    """Reads and searches one FHIR server for one hook call. Use as ``async with``.

    ``http`` is a shared client from :func:`new_http_client` (left open on exit); without one,
    the client makes its own (``transport`` replaces the network: tests, proxies) and closes it.
    ``sleep`` and ``monotonic`` replace the clock.

    :raises RequestError: for a ``base_url`` that is not an absolute http(s) URL without
        credentials, query or fragment (pointer ``/fhirServer``), or a token that is not a
        valid bearer token (pointer ``/fhirAuthorization/access_token``).
    """

    def __init__(
        self,
        base_url: str,
        *,
        bearer_token: str | None,
        policy: FetchPolicy,
        transport: httpx.AsyncBaseTransport | None = None,
        http: httpx.AsyncClient | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._base = parse_base_url(base_url)
        if bearer_token is not None and not _BEARER.fullmatch(bearer_token):
            raise RequestError(
                "fhirAuthorization.access_token is not a valid bearer token",
                pointer="/fhirAuthorization/access_token",
            )
        self._token = bearer_token
        self._policy = policy
        self._transport = transport
        self._shared = http
        self._sleep = sleep
        self._monotonic = monotonic
        self._client: httpx.AsyncClient | None = None
        self._deadline = 0.0

    def __repr__(self) -> str:
        return f"FhirClient({self.base_url!r}, token={'set' if self._token else 'none'})"

    @property
    def base_url(self) -> str:
        """The FHIR base URL, without a trailing slash."""
        return str(self._base).rstrip("/")

    async def __aenter__(self) -> Self:
        self._client = self._shared or new_http_client(self._policy, self._transport)
        self._deadline = self._monotonic() + self._policy.total_budget
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self._client is not None and self._client is not self._shared:
            await self._client.aclose()
        self._client = None

    # ----------------------------------------------------------------------------------------
    # Public operations

    async def read(self, path: str) -> Resource | None:
        """Read one resource (``"Patient/123"``); ``None`` when the server says 404 or 410.

        :raises ValueError: if ``path`` is not ``Type/id``.
        """
        match = _READ.fullmatch(path)
        if not match:
            raise ValueError(f"not a FHIR read path: {path!r}")
        url = resolve(path, self._base)
        status, body = await self._get(url)
        if status in (404, 410):
            return None
        shown = redact(url, self._token)
        self._check_status(status, shown)
        resource = _parse_json(body, shown)
        if resource.get("resourceType") != match["type"]:
            raise FhirResponseError(f"read of {match['type']} answered with {_kind(resource)}", url=shown)
        if "id" in resource and resource["id"] != unquote(match["id"]):
            raise FhirResponseError("read answered with a resource of another id", url=shown)
        return resource

    async def search(self, query: str) -> FetchResult:
        """Run a search (``"Observation?patient=123"``, or an absolute URL under ``base_url``)
        and follow its ``next`` links within the policy's page, resource and time limits.

        :raises ValueError: for an absolute ``query`` that is not under ``base_url``.
        """
        return await self._collect(resolve(query, self._base), None, pointer="")

    async def follow_pages(self, bundle: Mapping[str, object], *, pointer: str = "") -> FetchResult:
        """Complete a searchset Bundle that came in prefetch with a ``next`` link.

        The result holds the prefetched page's resources followed by those of the fetched
        pages; the prefetched page counts towards ``max_pages``.

        :raises RequestError: when ``bundle`` itself is malformed (``pointer`` prefixes the
            JSON pointer, e.g. ``/prefetch/orders``).
        """
        return await self._collect(None, bundle, pointer=pointer)

    async def fetch_all(self, queries: Mapping[str, str]) -> dict[str, FetchResult | Resource | None]:
        """Fetch every key's query in parallel, all within the policy's ``total_budget``.

        A query of the form ``Type/id`` is a read (its value is the resource, or ``None``);
        anything else is a search (a :class:`FetchResult`). The first failure cancels the
        other keys and is raised with the key in its message.

        :raises ValueError: for a query that is not under ``base_url`` (before any request).
        """
        for query in queries.values():
            if not _READ.fullmatch(query):
                resolve(query, self._base)
        results: dict[str, FetchResult | Resource | None] = {}

        async def fetch_one(key: str, query: str) -> None:
            try:
                if _READ.fullmatch(query):
                    results[key] = await self.read(query)
                else:
                    results[key] = await self.search(query)
            except FhirFetchError as error:
                raise type(error)(f"prefetch key {key!r}: {error}", url=error.url) from error

        remaining = self._remaining(self.base_url)
        try:
            async with asyncio.timeout(remaining), asyncio.TaskGroup() as group:
                for key, query in queries.items():
                    group.create_task(fetch_one(key, query))
        except TimeoutError:
            raise FhirUnavailableError(
                f"FHIR fetch budget of {self._policy.total_budget:g} s spent", url=self.base_url
            ) from None
        except ExceptionGroup as failures:
            raise failures.exceptions[0] from None
        return {key: results[key] for key in queries}

    # ----------------------------------------------------------------------------------------
    # Paging

    async def _collect(
        self, url: httpx.URL | None, page: Mapping[str, object] | None, *, pointer: str
    ) -> FetchResult:
        policy = self._policy
        resources: list[Resource] = []
        outcomes: list[Resource] = []
        notes: list[str] = []
        truncated = False
        pages = 0
        visited: set[str] = set()
        current = url if url is not None else httpx.URL(self.base_url + "/")
        while True:
            if page is None:
                visited.add(str(current))
                page = await self._search_page(current)
                entries = _entries_or_response_error(page, redact(current, self._token))
            else:
                entries = list(iter_entries(page, pointer=pointer))
            pages += 1
            for entry in entries:
                if entry.search_mode == "outcome":
                    outcomes.append(entry.resource)
                elif len(resources) < policy.max_resources:
                    resources.append(entry.resource)
                elif not truncated:
                    truncated = True
                    notes.append(f"truncated: more than max_resources={policy.max_resources}")
            link = next_link(page)
            if link is None or truncated:
                break
            if pages >= policy.max_pages:
                truncated = True
                notes.append(f"truncated: stopped after max_pages={policy.max_pages}")
                break
            try:
                following = current.join(link)
            except httpx.InvalidURL:
                truncated = True
                notes.append("truncated: next link is not a valid URL")
                break
            if not is_under(following, self._base):
                truncated = True
                notes.append(f"foreign next link not followed: {redact(following, self._token)}")
                break
            if str(following) in visited:
                notes.append(f"next link repeats a page, stopped: {redact(following, self._token)}")
                break
            current, page = following, None
        first = redact(url, self._token) if url is not None else self.base_url
        return FetchResult(first, resources, outcomes, tuple(notes), pages, truncated)

    async def _search_page(self, url: httpx.URL) -> Mapping[str, object]:
        shown = redact(url, self._token)
        status, body = await self._get(url)
        if status in (404, 410):
            raise FhirResponseError(f"search answered HTTP {status}", url=shown)
        self._check_status(status, shown)
        bundle = _parse_json(body, shown)
        if bundle.get("resourceType") != "Bundle" or bundle.get("type") != "searchset":
            raise FhirResponseError(
                f"search answered with {_kind(bundle)}, not a searchset Bundle", url=shown
            )
        return bundle

    # ----------------------------------------------------------------------------------------
    # HTTP

    async def _get(self, url: httpx.URL) -> tuple[int, bytes]:
        """GET ``url`` with retries; return the status and the body of the final answer."""
        if not is_under(url, self._base):  # the one gate between the token and the network
            raise ValueError("refusing to send the FHIR token outside base_url")
        shown = redact(url, self._token)
        attempt = 0
        while True:
            remaining = self._remaining(shown)
            try:
                async with asyncio.timeout(min(self._policy.request_timeout, remaining)):
                    status, body = await self._send(url, shown)
            except (TimeoutError, *_RETRYABLE_ERRORS) as error:
                failure = "timed out" if _is_timeout(error) else f"failed ({type(error).__name__})"
            except httpx.HTTPError as error:
                raise FhirUnavailableError(f"request failed ({type(error).__name__})", url=shown) from None
            else:
                if status < 500 or status == 501 or status > 504:
                    return status, body
                failure = f"answered HTTP {status}"
            if attempt >= self._policy.max_retries:
                raise FhirUnavailableError(f"FHIR server {failure} ({attempt + 1} attempts)", url=shown)
            delay = self._policy.backoff(attempt)
            if delay >= self._deadline - self._monotonic():
                raise FhirUnavailableError(f"FHIR server {failure}; no budget left to retry", url=shown)
            path = shown.partition("?")[0]  # no search values (patient ids) in logs
            logger.info("FHIR GET %s %s; retry %d in %.2f s", path, failure, attempt + 1, delay)
            await self._sleep(delay)
            attempt += 1

    async def _send(self, url: httpx.URL, shown: str) -> tuple[int, bytes]:
        client = self._client
        if client is None:
            raise RuntimeError("use FhirClient as 'async with FhirClient(...) as client'")
        headers = {"Accept": FHIR_JSON}
        if self._token:  # per request: the shared client holds no credentials
            headers["Authorization"] = f"Bearer {self._token}"
        request = client.build_request("GET", url, headers=headers)
        response = await client.send(request, stream=True)
        try:
            body = bytearray()
            async for chunk in response.aiter_bytes():
                body += chunk
                if len(body) > self._policy.max_response_bytes:
                    raise FhirResponseError(
                        f"answer larger than {self._policy.max_response_bytes} bytes", url=shown
                    )
        finally:
            await response.aclose()
        return response.status_code, bytes(body)

    def _check_status(self, status: int, shown: str) -> None:
        if status in (401, 403):
            raise FhirAuthError(f"FHIR server refused the token (HTTP {status})", url=shown)
        if status == 429 or status >= 500:
            raise FhirUnavailableError(f"FHIR server answered HTTP {status}", url=shown)
        if 300 <= status < 400:
            raise FhirResponseError(f"FHIR server redirected (HTTP {status}); not followed", url=shown)
        if not 200 <= status < 300:
            raise FhirResponseError(f"FHIR server answered HTTP {status}", url=shown)

    def _remaining(self, shown: str) -> float:
        if self._client is None:
            raise RuntimeError("use FhirClient as 'async with FhirClient(...) as client'")
        remaining = self._deadline - self._monotonic()
        if remaining <= 0:
            raise FhirUnavailableError(
                f"FHIR fetch budget of {self._policy.total_budget:g} s spent", url=shown
            )
        return remaining


def _parse_json(body: bytes, shown: str) -> Resource:
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise FhirResponseError("FHIR server answered with something that is not JSON", url=shown) from None
    if not isinstance(value, dict):
        raise FhirResponseError("FHIR server answered with JSON that is not an object", url=shown)
    return value


def _entries_or_response_error(bundle: Mapping[str, object], shown: str) -> list[BundleEntry]:
    try:
        return list(iter_entries(bundle))
    except RequestError as error:
        raise FhirResponseError(f"malformed Bundle at {error.pointer}: {error}", url=shown) from None


def _kind(resource: Mapping[str, object]) -> str:
    kind = resource.get("resourceType")
    return repr(kind) if isinstance(kind, str) else "no resourceType"


def _is_timeout(error: BaseException) -> bool:
    return isinstance(error, (TimeoutError, httpx.TimeoutException))
