"""The FHIR client (cds_hooks.fhir_client) against respx-mocked FHIR servers."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import respx

from cds_hooks.errors import (
    FhirAuthError,
    FhirFetchError,
    FhirResponseError,
    FhirUnavailableError,
    RequestError,
)
from cds_hooks.fhir_client import FhirClient
from cds_hooks.fhir_fetch import FetchPolicy, FetchResult

SPEC = Path(__file__).parents[1] / "data" / "cds-hooks-spec"
BASE = "https://ehr.example.org/fhir"
# The 2.0.1 spec's fhirAuthorization example.
TOKEN = json.loads((SPEC / "examples-v2.0.1" / "09-fhirAuthorization.json").read_text())["fhirAuthorization"][
    "access_token"
]
PAGED_REQUEST = json.loads(
    (SPEC / "examples-v3.0.0-ballot" / "04-service-request-order-sign-paginated-prefetch.json").read_text(
        encoding="utf-8"
    )
)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def router() -> respx.MockRouter:
    """A respx router used as the client's transport (no global patching)."""
    return respx.MockRouter(assert_all_called=False, assert_all_mocked=True)


class Sleeps:
    """A fake ``sleep`` that records the back-off delays instead of waiting."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, delay: float) -> None:
        self.delays.append(delay)


def make_client(
    router: respx.MockRouter,
    *,
    policy: FetchPolicy | None = None,
    token: str | None = TOKEN,
    sleep: Callable[[float], Any] | None = None,
    monotonic: Callable[[], float] = time.monotonic,
) -> FhirClient:
    return FhirClient(
        BASE,
        bearer_token=token,
        policy=policy or FetchPolicy(),
        transport=httpx.MockTransport(router.async_handler),
        sleep=sleep or Sleeps(),
        monotonic=monotonic,
    )


def observation(number: int) -> dict[str, Any]:
    return {"resourceType": "Observation", "id": f"o{number}"}


def page(*resources: dict[str, Any], next_url: str | None = None) -> dict[str, Any]:
    links = [{"relation": "next", "url": next_url}] if next_url else []
    return {
        "resourceType": "Bundle",
        "type": "searchset",
        "link": links,
        "entry": [{"resource": r, "search": {"mode": "match"}} for r in resources],
    }


def fhir_json(body: object, status: int = 200) -> httpx.Response:
    return httpx.Response(status, content=json.dumps(body), headers={"Content-Type": "application/fhir+json"})


def mock_three_pages(router: respx.MockRouter) -> list[respx.Route]:
    page_2 = f"{BASE}/Observation?patient=123&_page=2"
    page_3 = f"{BASE}/Observation?patient=123&_page=3"
    return [
        router.get(f"{BASE}/Observation?patient=123").mock(
            return_value=fhir_json(page(observation(1), next_url=page_2))
        ),
        router.get(page_2).mock(return_value=fhir_json(page(observation(2), next_url=page_3))),
        router.get(page_3).mock(return_value=fhir_json(page(observation(3)))),
    ]


# --------------------------------------------------------------------------------------------
# Paging


@pytest.mark.anyio
async def test_search_follows_next_links_across_three_pages(router: respx.MockRouter) -> None:
    """All three pages are fetched and their resources returned in order."""
    mock_three_pages(router)
    async with make_client(router) as client:
        result = await client.search("Observation?patient=123")
    assert [r["id"] for r in result.resources] == ["o1", "o2", "o3"]
    assert (result.pages, result.truncated, result.notes) == (3, False, ())
    assert result.url == f"{BASE}/Observation?patient=123"


@pytest.mark.anyio
async def test_bearer_token_sent_on_every_page(router: respx.MockRouter) -> None:
    """Every page request carries the bearer token and asks for FHIR JSON."""
    mock_three_pages(router)
    async with make_client(router) as client:
        await client.search("Observation?patient=123")
    assert len(router.calls) == 3
    for call in router.calls:
        assert call.request.headers["Authorization"] == f"Bearer {TOKEN}"
        assert call.request.headers["Accept"] == "application/fhir+json"


@pytest.mark.anyio
async def test_no_authorization_header_without_token(router: respx.MockRouter) -> None:
    """Without a token (an open sandbox server) no Authorization header is sent."""
    router.get(f"{BASE}/Observation").mock(return_value=fhir_json(page()))
    async with make_client(router, token=None) as client:
        await client.search("Observation")
    assert "Authorization" not in router.calls.last.request.headers


FOREIGN_NEXT_LINKS = [
    "https://evil.example.com/fhir/Observation?_page=2",
    "http://ehr.example.org/fhir/Observation?_page=2",
    "https://ehr.example.org:8443/fhir/Observation?_page=2",
    "https://ehr.example.org/fhir-other/Observation?_page=2",
    "https://ehr.example.org/fhir/%2e%2e/admin?_page=2",
    "https://user:pw@ehr.example.org/fhir/Observation?_page=2",
]


@pytest.mark.anyio
@pytest.mark.parametrize("foreign", FOREIGN_NEXT_LINKS)
async def test_foreign_next_link_is_not_followed(router: respx.MockRouter, foreign: str) -> None:
    """A next link off base_url (host, scheme, port, path prefix, dot segments, userinfo) is
    recorded and never requested, so the token never goes there."""
    router.get(f"{BASE}/Observation?patient=123").mock(
        return_value=fhir_json(page(observation(1), next_url=foreign))
    )
    elsewhere = router.route().mock(return_value=fhir_json(page(observation(2))))
    async with make_client(router) as client:
        result = await client.search("Observation?patient=123")
    assert not elsewhere.called
    assert len(router.calls) == 1
    assert [r["id"] for r in result.resources] == ["o1"]
    assert result.truncated
    assert any(note.startswith("foreign next link not followed") for note in result.notes)


@pytest.mark.anyio
async def test_foreign_next_link_note_hides_credentials(router: respx.MockRouter) -> None:
    """A foreign link's credentials (and our token, if echoed) do not reach the notes."""
    foreign = f"https://evil.example.com/x?access_token={TOKEN}&other={TOKEN}"
    router.get(f"{BASE}/Observation").mock(return_value=fhir_json(page(next_url=foreign)))
    async with make_client(router) as client:
        result = await client.search("Observation")
    assert not any(TOKEN in note for note in result.notes)
    assert "access_token=REDACTED" in result.notes[0]


@pytest.mark.anyio
async def test_search_value_with_a_system_url_stays_relative(router: respx.MockRouter) -> None:
    """``code=http://loinc.org|4548-4`` is a relative query, not an absolute URL."""
    route = router.get(path="/fhir/Observation").mock(return_value=fhir_json(page()))
    async with make_client(router) as client:
        await client.search("Observation?patient=123&code=http://loinc.org|4548-4")
    assert route.calls.last.request.url.params["code"] == "http://loinc.org|4548-4"


@pytest.mark.anyio
async def test_hapi_style_next_link_on_the_base_path_is_followed(
    router: respx.MockRouter,
) -> None:
    """``base?_getpages=…`` (HAPI FHIR's paging) is on the base path, so it is followed."""
    second = f"{BASE}?_getpages=abc&_getpagesoffset=1"
    router.get(f"{BASE}/Observation").mock(return_value=fhir_json(page(observation(1), next_url=second)))
    router.get(second).mock(return_value=fhir_json(page(observation(2))))
    async with make_client(router) as client:
        result = await client.search("Observation")
    assert [r["id"] for r in result.resources] == ["o1", "o2"]


def endless_pages(request: httpx.Request) -> httpx.Response:
    number = int(request.url.params.get("_page", "1"))
    following = f"{BASE}/Observation?_page={number + 1}"
    return fhir_json(page(observation(number), next_url=following))


@pytest.mark.anyio
async def test_max_pages_caps_paging(router: respx.MockRouter) -> None:
    """An endless chain of next links stops at max_pages, flagged as truncated."""
    router.get(path="/fhir/Observation").mock(side_effect=endless_pages)
    async with make_client(router, policy=FetchPolicy(max_pages=3)) as client:
        result = await client.search("Observation")
    assert len(router.calls) == 3
    assert (result.pages, result.truncated) == (3, True)
    assert result.notes == ("truncated: stopped after max_pages=3",)


@pytest.mark.anyio
async def test_max_resources_caps_collection(router: respx.MockRouter) -> None:
    """Resources beyond max_resources are dropped, no further page is fetched, and it says so."""
    mock_three_pages(router)
    async with make_client(router, policy=FetchPolicy(max_resources=2)) as client:
        result = await client.search("Observation?patient=123")
    assert [r["id"] for r in result.resources] == ["o1", "o2"]
    assert result.truncated
    assert result.notes == ("truncated: more than max_resources=2",)


@pytest.mark.anyio
async def test_next_link_back_to_a_fetched_page_stops(router: respx.MockRouter) -> None:
    """A next link that repeats a page ends paging instead of looping."""
    first = f"{BASE}/Observation"
    router.get(first).mock(return_value=fhir_json(page(observation(1), next_url=first)))
    async with make_client(router) as client:
        result = await client.search("Observation")
    assert len(router.calls) == 1
    assert result.notes[0].startswith("next link repeats a page")


@pytest.mark.anyio
async def test_outcome_entries_are_kept_apart(router: respx.MockRouter) -> None:
    """``search.mode = outcome`` entries are server messages, not data."""
    bundle = page(observation(1))
    warning = {"resourceType": "OperationOutcome", "issue": [{"severity": "warning"}]}
    bundle["entry"].append({"resource": warning, "search": {"mode": "outcome"}})
    router.get(f"{BASE}/Observation").mock(return_value=fhir_json(bundle))
    async with make_client(router) as client:
        result = await client.search("Observation")
    assert [r["id"] for r in result.resources] == ["o1"]
    assert result.outcomes == [warning]
    assert result.as_bundle()["entry"][-1]["search"] == {"mode": "outcome"}


@pytest.mark.anyio
async def test_follow_pages_completes_the_spec_paged_prefetch(router: respx.MockRouter) -> None:
    """The 3.0 ballot's paged ``orders`` prefetch is completed from its next link."""
    orders = PAGED_REQUEST["prefetch"]["orders"]
    second = {"resourceType": "MedicationRequest", "id": "rx-page-2-01", "status": "active"}
    route = router.get(orders["link"][1]["url"]).mock(return_value=fhir_json(page(second)))
    async with make_client(router) as client:
        result = await client.follow_pages(orders, pointer="/prefetch/orders")
    assert route.called
    assert route.calls.last.request.headers["Authorization"] == f"Bearer {TOKEN}"
    assert [r["id"] for r in result.resources] == ["rx\u2011page\u20111\u201101", "rx-page-2-01"]
    assert result.pages == 2


@pytest.mark.anyio
async def test_follow_pages_does_not_follow_a_prefetch_link_to_another_server(
    router: respx.MockRouter,
) -> None:
    """A prefetched page's next link to another server gets no request and no token."""
    orders = page(observation(1), next_url="https://elsewhere.example.net/fhir/Observation?p=2")
    elsewhere = router.route().mock(return_value=fhir_json(page()))
    async with make_client(router) as client:
        result = await client.follow_pages(orders)
    assert not elsewhere.called
    assert (result.pages, result.truncated) == (1, True)


@pytest.mark.anyio
async def test_follow_pages_refuses_a_malformed_prefetch_page(router: respx.MockRouter) -> None:
    """A malformed prefetched page is the request's fault: RequestError with a pointer."""
    bundle = {"resourceType": "Bundle", "type": "searchset", "entry": ["x"]}
    async with make_client(router) as client:
        with pytest.raises(RequestError) as caught:
            await client.follow_pages(bundle, pointer="/prefetch/orders")
    assert caught.value.pointer == "/prefetch/orders/entry/0"


# --------------------------------------------------------------------------------------------
# Retries and status codes


@pytest.mark.anyio
async def test_retry_on_503_then_success(router: respx.MockRouter) -> None:
    """A 503 is retried after the first back-off step, and the second answer is used."""
    sleeps = Sleeps()
    route = router.get(f"{BASE}/Observation").mock(
        side_effect=[httpx.Response(503), fhir_json(page(observation(1)))]
    )
    async with make_client(router, sleep=sleeps) as client:
        result = await client.search("Observation")
    assert route.call_count == 2
    assert sleeps.delays == [0.1]
    assert [r["id"] for r in result.resources] == ["o1"]


@pytest.mark.anyio
async def test_5xx_after_all_retries_is_unavailable(router: respx.MockRouter) -> None:
    """A server that keeps answering 502 is unavailable after 1 + max_retries attempts, with
    exponential back-off between them."""
    sleeps = Sleeps()
    route = router.get(f"{BASE}/Observation").mock(return_value=httpx.Response(502))
    async with make_client(router, sleep=sleeps) as client:
        with pytest.raises(FhirUnavailableError, match="502") as caught:
            await client.search("Observation")
    assert route.call_count == 3
    assert sleeps.delays == [0.1, 0.2]
    assert caught.value.url == f"{BASE}/Observation"


@pytest.mark.anyio
async def test_501_is_not_retried(router: respx.MockRouter) -> None:
    """501 Not Implemented will not change on a retry."""
    route = router.get(f"{BASE}/Observation").mock(return_value=httpx.Response(501))
    async with make_client(router) as client:
        with pytest.raises(FhirUnavailableError):
            await client.search("Observation")
    assert route.call_count == 1


@pytest.mark.anyio
@pytest.mark.parametrize("status", [400, 404, 422])
async def test_no_retry_on_4xx_search(router: respx.MockRouter, status: int) -> None:
    """A 4xx on a search is answered once and is a response error."""
    route = router.get(f"{BASE}/Observation").mock(return_value=httpx.Response(status))
    async with make_client(router) as client:
        with pytest.raises(FhirResponseError, match=str(status)):
            await client.search("Observation")
    assert route.call_count == 1


@pytest.mark.anyio
@pytest.mark.parametrize("status", [404, 410])
async def test_read_of_absent_resource_is_none(router: respx.MockRouter, status: int) -> None:
    """404 or 410 on a read means "no data" (like a null prefetch), asked once."""
    route = router.get(f"{BASE}/Patient/123").mock(return_value=httpx.Response(status))
    async with make_client(router) as client:
        assert await client.read("Patient/123") is None
    assert route.call_count == 1


@pytest.mark.anyio
@pytest.mark.parametrize("status", [401, 403])
async def test_refused_token_is_auth_error(router: respx.MockRouter, status: int) -> None:
    """401 and 403 are FhirAuthError, not retried, and the message holds no token."""
    route = router.get(f"{BASE}/Observation").mock(return_value=httpx.Response(status))
    async with make_client(router) as client:
        with pytest.raises(FhirAuthError) as caught:
            await client.search("Observation")
    assert route.call_count == 1
    assert TOKEN not in str(caught.value)
    assert TOKEN not in caught.value.url


@pytest.mark.anyio
async def test_429_is_unavailable_without_retry(router: respx.MockRouter) -> None:
    """Rate limiting is the server being unavailable; a 4xx is never retried."""
    route = router.get(f"{BASE}/Observation").mock(return_value=httpx.Response(429))
    async with make_client(router) as client:
        with pytest.raises(FhirUnavailableError, match="429"):
            await client.search("Observation")
    assert route.call_count == 1


@pytest.mark.anyio
async def test_connect_error_is_retried_then_unavailable(router: respx.MockRouter) -> None:
    """Connection failures are retried max_retries times, then FhirUnavailableError."""
    sleeps = Sleeps()
    route = router.get(f"{BASE}/Patient/123").mock(side_effect=httpx.ConnectError("refused"))
    async with make_client(router, sleep=sleeps) as client:
        with pytest.raises(FhirUnavailableError, match="ConnectError"):
            await client.read("Patient/123")
    assert route.call_count == 3
    assert sleeps.delays == [0.1, 0.2]


@pytest.mark.anyio
async def test_redirect_is_not_followed(router: respx.MockRouter) -> None:
    """A redirect is refused: following it could hand the token to another server."""
    router.get(f"{BASE}/Patient/123").mock(
        return_value=httpx.Response(302, headers={"Location": "https://evil.example.com/p"})
    )
    elsewhere = router.route(host="evil.example.com").mock(return_value=fhir_json({}))
    async with make_client(router) as client:
        with pytest.raises(FhirResponseError, match="redirect"):
            await client.read("Patient/123")
    assert not elsewhere.called


@pytest.mark.anyio
async def test_no_retry_when_the_budget_cannot_hold_the_backoff(router: respx.MockRouter) -> None:
    """With the budget almost spent, a 503 is final: no sleep that the budget would cut."""
    now = [0.0]
    sleeps = Sleeps()
    route = router.get(f"{BASE}/Observation").mock(
        side_effect=lambda request: now.__setitem__(0, 3.95) or httpx.Response(503)
    )
    async with make_client(router, sleep=sleeps, monotonic=lambda: now[0]) as client:
        with pytest.raises(FhirUnavailableError, match="no budget left"):
            await client.search("Observation")
    assert route.call_count == 1
    assert sleeps.delays == []


@pytest.mark.anyio
async def test_error_url_hides_query_credentials(router: respx.MockRouter) -> None:
    """Errors carry the URL with credential parameters redacted."""
    router.get(path="/fhir/Observation").mock(return_value=httpx.Response(400))
    async with make_client(router) as client:
        with pytest.raises(FhirResponseError) as caught:
            await client.search("Observation?patient=1&access_token=s3cret")
    assert caught.value.url == f"{BASE}/Observation?patient=1&access_token=REDACTED"
    assert "s3cret" not in str(caught.value)


# --------------------------------------------------------------------------------------------
# Time limits


class Hang:
    """A server that takes every request and answers none of them (for 30 s)."""

    def __init__(self) -> None:
        self.requests: list[httpx.Request] = []

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        await asyncio.sleep(30)
        return fhir_json(page())


@pytest.mark.anyio
async def test_slow_server_times_out(router: respx.MockRouter) -> None:
    """A server that does not answer: each attempt times out (else its answer would come after 30 s)."""
    hang = Hang()
    router.get(f"{BASE}/Observation").mock(side_effect=hang)
    policy = FetchPolicy(request_timeout=0.2, max_retries=1, backoff_base=0.01)
    async with make_client(router, policy=policy, sleep=asyncio.sleep) as client:
        with pytest.raises(FhirUnavailableError, match="timed out"):
            await client.search("Observation")
    assert len(hang.requests) == 2


@pytest.mark.anyio
async def test_total_budget_caps_parallel_keys(router: respx.MockRouter) -> None:
    """fetch_all gives up on all keys together when total_budget is spent."""
    hang = Hang()
    router.route().mock(side_effect=hang)
    policy = FetchPolicy(request_timeout=10, total_budget=0.3)
    queries = {"patient": "Patient/1", "obs": "Observation?patient=1", "cond": "Condition"}
    async with make_client(router, policy=policy, sleep=asyncio.sleep) as client:
        with pytest.raises(FhirUnavailableError, match="budget"):
            await client.fetch_all(queries)
    assert len(hang.requests) == 3


# --------------------------------------------------------------------------------------------
# fetch_all


@pytest.mark.anyio
async def test_fetch_all_runs_keys_in_parallel(router: respx.MockRouter) -> None:
    """All keys are in flight at once; reads give resources, searches give FetchResults."""
    in_flight = [0, 0]  # current, highest

    async def answer(request: httpx.Request) -> httpx.Response:
        in_flight[0] += 1
        in_flight[1] = max(in_flight)
        await asyncio.sleep(0.05)
        in_flight[0] -= 1
        if request.url.path == "/fhir/Patient/123":
            return fhir_json({"resourceType": "Patient", "id": "123"})
        if request.url.path == "/fhir/Encounter/9":
            return httpx.Response(404)
        return fhir_json(page(observation(1)))

    router.route().mock(side_effect=answer)
    queries = {"patient": "Patient/123", "obs": "Observation?patient=123", "enc": "Encounter/9"}
    async with make_client(router) as client:
        results = await client.fetch_all(queries)
    assert in_flight[1] == 3
    assert list(results) == ["patient", "obs", "enc"]
    assert results["patient"] == {"resourceType": "Patient", "id": "123"}
    assert isinstance(results["obs"], FetchResult)
    assert results["enc"] is None


@pytest.mark.anyio
async def test_fetch_all_names_the_failing_key(router: respx.MockRouter) -> None:
    """A failing key's error says which key it was and keeps its class."""
    router.get(f"{BASE}/Patient/123").mock(return_value=fhir_json({"resourceType": "Patient"}))
    router.get(f"{BASE}/Condition").mock(return_value=httpx.Response(403))
    async with make_client(router) as client:
        with pytest.raises(FhirAuthError, match="'conditions'") as caught:
            await client.fetch_all({"patient": "Patient/123", "conditions": "Condition"})
    assert caught.value.url == f"{BASE}/Condition"


@pytest.mark.anyio
async def test_fetch_all_refuses_a_query_off_the_server(router: respx.MockRouter) -> None:
    """An absolute query on another server is refused before any request is made."""
    async with make_client(router) as client:
        with pytest.raises(ValueError, match="not under"):
            await client.fetch_all({"x": "https://evil.example.com/fhir/Observation"})
    assert not router.calls


# --------------------------------------------------------------------------------------------
# Malformed answers


MALFORMED = {
    "html": httpx.Response(200, text="<html>login</html>"),
    "json-array": fhir_json([]),
    "operation-outcome": fhir_json({"resourceType": "OperationOutcome", "issue": []}),
    "transaction-bundle": fhir_json({"resourceType": "Bundle", "type": "transaction"}),
    "history-bundle": fhir_json({"resourceType": "Bundle", "type": "history"}),
    "entry-not-list": fhir_json({"resourceType": "Bundle", "type": "searchset", "entry": {}}),
    "entry-no-resource": fhir_json({"resourceType": "Bundle", "type": "searchset", "entry": [{}]}),
    "resource-no-type": fhir_json(
        {"resourceType": "Bundle", "type": "searchset", "entry": [{"resource": {"id": "1"}}]}
    ),
}


@pytest.mark.anyio
@pytest.mark.parametrize("name", list(MALFORMED))
async def test_malformed_bundle_is_response_error(router: respx.MockRouter, name: str) -> None:
    """Anything but a well-formed searchset Bundle is a FhirResponseError, not retried."""
    route = router.get(f"{BASE}/Observation").mock(return_value=MALFORMED[name])
    async with make_client(router) as client:
        with pytest.raises(FhirResponseError):
            await client.search("Observation")
    assert route.call_count == 1


@pytest.mark.anyio
async def test_read_of_wrong_resource_type_is_response_error(router: respx.MockRouter) -> None:
    """A read answered with another resource type is refused."""
    router.get(f"{BASE}/Patient/123").mock(return_value=fhir_json({"resourceType": "OperationOutcome"}))
    async with make_client(router) as client:
        with pytest.raises(FhirResponseError, match="Patient"):
            await client.read("Patient/123")


@pytest.mark.anyio
async def test_oversized_answer_is_response_error(router: respx.MockRouter) -> None:
    """An answer above max_response_bytes is cut off rather than held in memory."""
    router.get(f"{BASE}/Observation").mock(return_value=httpx.Response(200, content=b" " * 4096))
    async with make_client(router, policy=FetchPolicy(max_response_bytes=1024)) as client:
        with pytest.raises(FhirResponseError, match="larger than"):
            await client.search("Observation")


# --------------------------------------------------------------------------------------------
# Construction


@pytest.mark.parametrize(
    "base_url",
    [
        "ehr.example.org/fhir",
        "ftp://ehr.example.org",
        "https://u:p@ehr.example.org/fhir",
        "https://ehr.example.org/fhir?x=1",
        "http://[::1",
    ],
)
def test_bad_fhir_server_is_a_request_error(base_url: str) -> None:
    """fhirServer must be an absolute http(s) URL without credentials or query."""
    with pytest.raises(RequestError) as caught:
        FhirClient(base_url, bearer_token=None, policy=FetchPolicy())
    assert caught.value.pointer == "/fhirServer"


def test_bad_token_is_a_request_error_without_the_token() -> None:
    """A token that cannot be a header value is refused without echoing it."""
    with pytest.raises(RequestError) as caught:
        FhirClient(BASE, bearer_token="secret\r\nX-Evil: 1", policy=FetchPolicy())
    assert "secret" not in str(caught.value)
    assert caught.value.pointer == "/fhirAuthorization/access_token"


def test_repr_does_not_show_the_token() -> None:
    """The client's repr says whether a token is set, never what it is."""
    assert TOKEN not in repr(FhirClient(BASE, bearer_token=TOKEN, policy=FetchPolicy()))


@pytest.mark.parametrize(
    "overrides",
    [{"request_timeout": 0}, {"total_budget": -1}, {"max_retries": -1}, {"max_pages": 0}],
)
def test_policy_refuses_nonsense(overrides: dict[str, float]) -> None:
    """Limits must be positive (retries and back-off may be zero)."""
    with pytest.raises(ValueError, match="FetchPolicy"):
        FetchPolicy(**overrides)  # type: ignore[arg-type]


@pytest.mark.anyio
async def test_client_must_be_entered(router: respx.MockRouter) -> None:
    """Using the client outside ``async with`` is a programming error."""
    client = make_client(router)
    with pytest.raises(RuntimeError, match="async with"):
        await client.read("Patient/1")


def test_errors_share_the_fetch_base() -> None:
    """Callers can catch every fetch failure as FhirFetchError."""
    for error in (FhirAuthError, FhirUnavailableError, FhirResponseError):
        assert issubclass(error, FhirFetchError)
