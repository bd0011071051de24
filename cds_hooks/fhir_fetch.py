"""The terms of a FHIR fetch: its limits (:class:`FetchPolicy`), what a search returns
(:class:`FetchResult`), and the HTTP client every fetch of a worker shares (:func:`new_http_client`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from http.cookiejar import CookieJar, DefaultCookiePolicy

import httpx

from cds_hooks.prefetch import Resource

__all__ = ["FHIR_JSON", "FetchPolicy", "FetchResult", "new_http_client"]

FHIR_JSON = "application/fhir+json"


@dataclass(frozen=True, slots=True)
class FetchPolicy:
    """Limits of one fetch phase. Times are in seconds.

    ``total_budget`` covers everything a client does (all keys, pages, retries and back-off
    sleeps). Retries happen only for GETs that failed with a connect error, a timeout or a
    5xx other than 501, never for a 4xx; back-off is ``backoff_base * 2**attempt`` capped at
    ``backoff_cap``, and a retry is not attempted when its sleep would not fit in the budget.
    """

    request_timeout: float = 2.0
    total_budget: float = 4.0
    max_retries: int = 2
    backoff_base: float = 0.1
    backoff_cap: float = 1.0
    max_pages: int = 20
    max_resources: int = 5000
    max_response_bytes: int = 16 * 1024 * 1024

    def __post_init__(self) -> None:
        for name in ("request_timeout", "total_budget", "max_pages", "max_resources"):
            if not getattr(self, name) > 0:
                raise ValueError(f"FetchPolicy.{name} must be positive")
        for name in ("max_retries", "backoff_base", "backoff_cap"):
            if getattr(self, name) < 0:
                raise ValueError(f"FetchPolicy.{name} must not be negative")
        if self.max_response_bytes < 1024:
            raise ValueError("FetchPolicy.max_response_bytes must be at least 1024")

    def backoff(self, attempt: int) -> float:
        """The sleep before retry number ``attempt + 1``."""
        return float(min(self.backoff_cap, self.backoff_base * 2**attempt))


@dataclass(frozen=True, slots=True)
class FetchResult:
    """The resources a search (all its pages) returned, and what the client noticed on the way.

    ``outcomes`` holds the ``search.mode == "outcome"`` OperationOutcomes (server warnings);
    ``truncated`` is true when pages or resources were left unfetched (see ``notes``).
    """

    url: str
    resources: list[Resource] = field(default_factory=list)
    outcomes: list[Resource] = field(default_factory=list)
    notes: tuple[str, ...] = ()
    pages: int = 0
    truncated: bool = False

    def as_bundle(self) -> Resource:
        """The result as one searchset Bundle, to stand in for a prefetch value."""
        entries: list[Resource] = [{"resource": resource} for resource in self.resources]
        entries += [{"resource": oo, "search": {"mode": "outcome"}} for oo in self.outcomes]
        return {"resourceType": "Bundle", "type": "searchset", "entry": entries}


class _NoCookies(CookieJar):
    """A cookie jar that keeps nothing: a shared client must never carry one call's session to another."""

    def __init__(self) -> None:
        super().__init__(policy=DefaultCookiePolicy(allowed_domains=[]))


def new_http_client(
    policy: FetchPolicy, transport: httpx.AsyncBaseTransport | None = None
) -> httpx.AsyncClient:
    """The HTTP client FHIR fetches share (one per worker, made at start-up, closed at shutdown).

    Building one costs a TLS context (tens of milliseconds of CPU): once per worker, not per call.
    TLS certificates are verified, redirects are not followed, no environment variable (proxy,
    netrc, CA bundle) is read, cookies are never kept, and it carries no credentials of its own.
    """
    return httpx.AsyncClient(
        headers={"Accept": FHIR_JSON},
        timeout=httpx.Timeout(policy.request_timeout),
        follow_redirects=False,
        verify=True,
        trust_env=False,
        cookies=_NoCookies(),
        transport=transport,
    )
