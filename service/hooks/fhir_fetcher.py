"""The production :class:`~cds_hooks.prefetch_plan.Fetcher`: reads the EHR's ``fhirServer`` with httpx.

One :class:`~cds_hooks.fhir_client.FhirClient` per hook call, holding that call's ``fhirServer``
and ``fhirAuthorization`` bearer token (used for that server only, sent on each of its requests,
never logged, never stored). Underneath, one ``httpx.AsyncClient`` per worker process
(:meth:`FhirFetcher.open` at start-up, :meth:`FhirFetcher.aclose` at shutdown): one TLS context and
a connection pool, instead of a new client (~30 ms of CPU) per call.

Every query and every prefetched page to complete runs in parallel under one
:class:`~cds_hooks.fhir_client.FetchPolicy` budget (per-request timeout, total budget, bounded
retries for GETs on 5xx and connection errors). The total budget is a deadline fixed when the
fetch begins, on the event loop's clock, around everything the fetch does (the client, every
request, the pages): a slow or dead server costs at most the budget, however late a busy CPU lets
the loop run.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from typing import Any

import httpx

from cds_hooks.errors import (
    CdsHooksError,
    FhirAuthError,
    FhirFetchError,
    FhirResponseError,
    FhirUnavailableError,
    RequestError,
)
from cds_hooks.fhir_client import FhirClient
from cds_hooks.fhir_fetch import FetchPolicy, FetchResult, new_http_client
from cds_hooks.models import HookRequest
from cds_hooks.prefetch import json_pointer
from cds_hooks.prefetch_plan import Fetched, FetchPlan
from service.config import Settings
from service.ops import telemetry
from service.outbound.pinned_transport import PinnedTransport

__all__ = ["FhirFetcher", "fetch_policy"]


def fetch_policy(settings: Settings) -> FetchPolicy:
    """The fetch limits an operator configured (``CALF_CDS_FHIR_*``)."""
    return FetchPolicy(
        request_timeout=settings.fhir_request_timeout,
        total_budget=settings.fhir_total_budget,
        max_retries=settings.fhir_max_retries,
    )


class FhirFetcher:
    """Fetches a :class:`FetchPlan` from the request's ``fhirServer``.

    ``transport`` replaces the network (tests); by default a
    :class:`~service.outbound.pinned_transport.PinnedTransport` (TLS verified), which connects only to the
    addresses :class:`~service.hooks.fhir_server_guard.FhirServerGuard` approved for this call.
    Between :meth:`open` and :meth:`aclose` every call shares one HTTP client on that transport; a
    fetcher that is not open (``calf-cds try``, tests) makes one per call.
    """

    def __init__(self, policy: FetchPolicy, transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.policy = policy
        self.transport = transport if transport is not None else PinnedTransport()
        self._http: httpx.AsyncClient | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> FhirFetcher:
        return cls(policy=fetch_policy(settings))

    def __repr__(self) -> str:
        return f"FhirFetcher({self.policy!r})"

    async def open(self) -> None:
        """Build the shared HTTP client (in the worker's event loop, at start-up)."""
        if self._http is None:
            self._http = new_http_client(self.policy, self.transport)

    async def aclose(self) -> None:
        """Close the shared client and its pooled connections (at shutdown)."""
        http, self._http = self._http, None
        if http is not None:
            await http.aclose()

    async def __call__(self, request: HookRequest, plan: FetchPlan) -> Fetched:
        """Every query and page of ``plan``, in parallel, within the policy's total budget.

        Each fetch is timed in ``calf_cds_fhir_fetch_duration_seconds`` by outcome (``ok`` or
        the failure: ``auth``, ``unavailable``, ``invalid-response``, ``bad-request``, ``error``).

        :raises RequestError: for a ``fhirServer`` or token that cannot be used (400).
        :raises FhirFetchError: when the server refuses, fails, is slow or answers nonsense (412).
        """
        started = time.perf_counter()
        deadline = asyncio.get_running_loop().time() + self.policy.total_budget
        outcome = "error"
        try:
            try:
                async with asyncio.timeout_at(deadline):
                    fetched = await self._fetch(request, plan)
            except TimeoutError:
                raise FhirUnavailableError(
                    f"FHIR fetch budget of {self.policy.total_budget:g} s spent",
                    url=request.fhir_server or "",
                ) from None
            outcome = "ok"
            return fetched
        except (CdsHooksError, ValueError) as error:
            outcome = _outcome(error)
            raise
        finally:
            telemetry.observe_fetch(time.perf_counter() - started, outcome)

    async def _fetch(self, request: HookRequest, plan: FetchPlan) -> Fetched:
        if request.fhir_server is None:
            raise ValueError("FhirFetcher needs a request with fhirServer")
        authorization = request.fhir_authorization
        token = authorization.access_token if authorization is not None else None
        values: dict[str, Any] = {}
        notes: list[str] = []
        client = FhirClient(
            request.fhir_server,
            bearer_token=token,
            policy=self.policy,
            transport=self.transport,
            http=self._http,
        )
        async with client:
            try:
                async with asyncio.TaskGroup() as group:  # within the deadline set in __call__
                    queried = group.create_task(client.fetch_all(plan.queries)) if plan.queries else None
                    paged = {
                        key: group.create_task(_complete(client, key, page))
                        for key, page in plan.pages.items()
                    }
            except ExceptionGroup as failures:
                raise _first(failures) from None
        if queried is not None:
            for key, result in queried.result().items():
                values[key] = _value(key, result, notes)
        for key, task in paged.items():
            values[key] = _value(key, task.result(), notes)
        return Fetched(values=values, notes=tuple(notes))


async def _complete(client: FhirClient, key: str, page: Mapping[str, Any]) -> FetchResult:
    try:
        return await client.follow_pages(page, pointer=json_pointer("prefetch", key))
    except FhirFetchError as error:
        raise type(error)(f"prefetch key {key!r}: {error}", url=error.url) from error


def _value(key: str, result: FetchResult | Mapping[str, Any] | None, notes: list[str]) -> Any:
    if isinstance(result, FetchResult):
        notes.extend(f"{key}: {note}" for note in result.notes)
        return result.as_bundle()
    return result


def _outcome(error: Exception) -> str:
    """The metric label for a failed fetch: a few fixed words, never the message."""
    if isinstance(error, FhirAuthError):
        return "auth"
    if isinstance(error, FhirUnavailableError):
        return "unavailable"
    if isinstance(error, FhirResponseError):
        return "invalid-response"
    if isinstance(error, RequestError):
        return "bad-request"
    return "error"


def _first(failures: BaseExceptionGroup[BaseException]) -> BaseException:
    """The error to report: a fetch error if there is one, else the first failure."""
    leaves: list[BaseException] = []
    pending: list[BaseException] = [failures]
    while pending:
        failure = pending.pop(0)
        if isinstance(failure, BaseExceptionGroup):
            pending[:0] = failure.exceptions
        else:
            leaves.append(failure)
    return next((leaf for leaf in leaves if isinstance(leaf, FhirFetchError)), leaves[0])
