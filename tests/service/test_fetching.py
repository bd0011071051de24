"""Prefetch states and FHIR fetching through the whole service, against respx-mocked FHIR servers."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import respx
from starlette.testclient import TestClient

from service.app import create_app
from service.config import Settings
from service.hooks.fhir_fetcher import FhirFetcher, fetch_policy
from tests.fake_dns import FakeDns
from tests.fhir_builders import (
    NOW,
    SNOMED,
    bundle,
    calf_pain,
    condition,
    finding,
    hook_request,
    observation,
    patient,
    quantity,
)
from tests.service.test_app import assert_outcome, audit_rows
from tests.signing import dev_client

BASE = "https://ehr.example.org/fhir"
TOKEN = "fhir-access-token-7c1e"
DVT_SIGNS = [
    finding("calf-circumference-difference", quantity(3.4, "cm")),
    finding("entire-leg-swollen"),
]
PAIN = calf_pain()
OLD_DVT = condition(SNOMED, "128053003", clinical="resolved", days_ago=700)


def fhir_json(body: object, status: int = 200) -> httpx.Response:
    return httpx.Response(status, content=json.dumps(body), headers={"Content-Type": "application/fhir+json"})


#: The keys added in 1.1; sent as empty Bundles unless a test says otherwise.
OPTIONAL = ("procedures", "medication_requests", "medication_statements", "diagnostic_reports", "encounters")
OPTIONAL_TYPES = ("Procedure", "MedicationRequest", "MedicationStatement", "DiagnosticReport", "Encounter")


def fetching_request(*, with_optional: bool = True, **prefetch: Any) -> dict[str, Any]:
    """A patient-view call with fhirServer and a token, and only the prefetch keys given (plus
    the optional 1.1 keys as empty Bundles, unless ``with_optional`` is False)."""
    body = hook_request([])
    body["prefetch"] = ({key: bundle([]) for key in OPTIONAL} if with_optional else {}) | prefetch
    body["fhirServer"] = BASE
    body["fhirAuthorization"] = {
        "access_token": TOKEN,
        "token_type": "Bearer",
        "expires_in": 300,
        "scope": "patient/Patient.read patient/Observation.read patient/Condition.read",
        "subject": "calf-cds",
    }
    return body


def topics(response: Any) -> list[str]:
    assert response.status_code == 200, response.text
    return [card["source"]["topic"]["code"] for card in response.json()["cards"]]


@pytest.fixture
def fhir() -> respx.MockRouter:
    """The EHR's FHIR server, as a respx router used as the fetcher's transport."""
    return respx.MockRouter(assert_all_called=False, assert_all_mocked=True)


def serve_patient(
    router: respx.MockRouter,
    observations: list[dict[str, Any]],
    conditions: list[dict[str, Any]],
    base: str = BASE,
) -> dict[str, respx.Route]:
    for kind in OPTIONAL_TYPES:
        router.get(f"{BASE}/{kind}", params={"patient": "p1"}).mock(return_value=fhir_json(bundle([])))
    return {
        "patient": router.get(f"{base}/Patient/p1").mock(return_value=fhir_json(patient("p1"))),
        "observations": router.get(f"{base}/Observation", params={"patient": "p1"}).mock(
            return_value=fhir_json(bundle(observations))
        ),
        "conditions": router.get(f"{base}/Condition", params={"patient": "p1"}).mock(
            return_value=fhir_json(bundle(conditions))
        ),
    }


@pytest.fixture
def app(settings: Settings, fhir: respx.MockRouter) -> Iterator[TestClient]:
    """The service with its FHIR fetcher on the settings' limits, talking to ``fhir``."""
    fetcher = FhirFetcher(fetch_policy(settings), transport=httpx.MockTransport(fhir.async_handler))
    with dev_client(
        create_app(settings, clock=lambda: NOW, fetcher=fetcher, resolver=FakeDns()), settings
    ) as client:
        yield client


def call(client: TestClient, body: Any) -> Any:
    return client.post("/cds-services/calf-pain", json=body)


# --------------------------------------------------------------------------------------------
# Every prefetch state


def test_missing_prefetch_is_fetched_and_gives_the_same_cards(
    app: TestClient, fhir: respx.MockRouter
) -> None:
    """No prefetch at all: Patient, Observations and Conditions are fetched, and the cards match
    those of the same data sent as prefetch."""
    routes = serve_patient(fhir, [PAIN, *DVT_SIGNS], [OLD_DVT])
    fetched = call(app, fetching_request())
    prefetched = call(app, hook_request([PAIN, *DVT_SIGNS, OLD_DVT]))
    assert topics(fetched) == topics(prefetched) == ["duplex-dvt"]
    assert [c["summary"] for c in fetched.json()["cards"]] == [
        c["summary"] for c in prefetched.json()["cards"]
    ]
    assert all(route.call_count == 1 for route in routes.values())


def test_fetch_sends_the_bearer_token_to_fhir_server_only(app: TestClient, fhir: respx.MockRouter) -> None:
    """Every FHIR request carries `Authorization: Bearer <fhirAuthorization.access_token>`."""
    serve_patient(fhir, [PAIN], [])
    topics(call(app, fetching_request()))
    assert len(fhir.calls) == 3
    for request, _ in fhir.calls:
        assert request.headers["Authorization"] == f"Bearer {TOKEN}"
        assert str(request.url).startswith(BASE + "/")


def test_fetched_keys_are_audited_as_fetched(
    app: TestClient, fhir: respx.MockRouter, settings: Settings
) -> None:
    """The audit row says which keys were fetched, and never holds the token."""
    serve_patient(fhir, [PAIN], [])
    topics(call(app, fetching_request(patient=patient("p1"))))
    (row,) = audit_rows(settings, 1)
    assert row["prefetch_states"] == {
        "patient": "present",
        "observations": "missing+fetched",
        "conditions": "missing+fetched",
        **dict.fromkeys(OPTIONAL, "present"),
    }
    assert TOKEN not in json.dumps(dict(row), default=str)


def test_optional_keys_are_fetched_with_the_narrowed_queries(
    app: TestClient, fhir: respx.MockRouter, settings: Settings
) -> None:
    """Procedure, medications, DiagnosticReport and Encounter keys the client did not send are
    fetched; Procedures and Encounters only from their look-back date on."""
    serve_patient(fhir, [PAIN], [])
    topics(call(app, fetching_request(with_optional=False)))
    urls = sorted(str(request.url) for request, _ in fhir.calls)
    assert any("/Procedure?patient=p1&date=ge2026-" in url for url in urls)
    assert any("/Encounter?patient=p1&date=ge2026-" in url for url in urls)
    assert any("/DiagnosticReport?patient=p1&code=" in url for url in urls)
    (row,) = audit_rows(settings, 1)
    assert row["prefetch_states"]["procedures"] == "missing+fetched"


def test_a_failing_optional_fetch_degrades_to_no_data(
    app: TestClient, fhir: respx.MockRouter, settings: Settings
) -> None:
    """A server that refuses Procedure searches costs the Procedure facts, not the cards."""
    fhir.get(f"{BASE}/Procedure").mock(return_value=httpx.Response(403))
    serve_patient(fhir, [PAIN, *DVT_SIGNS], [])
    body = fetching_request(
        with_optional=False, patient=patient("p1"), observations=bundle([PAIN, *DVT_SIGNS])
    )
    assert topics(call(app, body)) == ["duplex-dvt"]
    (row,) = audit_rows(settings, 1)
    assert any("not fetched" in note and "read as no data" in note for note in row["notes"])


def test_oversized_whole_chart_prefetch_is_fetched_narrowly(
    fhir: respx.MockRouter, settings: Settings
) -> None:
    """A whole-chart prefetch over the body limit does not blank the patient: it is discarded,
    every key is fetched from fhirServer, and the audit record says so."""
    small = settings.model_copy(update={"max_body_bytes": 4096})
    fetcher = FhirFetcher(fetch_policy(small), transport=httpx.MockTransport(fhir.async_handler))
    routes = serve_patient(fhir, [PAIN, *DVT_SIGNS], [])
    noise = [observation(SNOMED, "300954003", days_ago=400, valueBoolean=True) for _ in range(40)]
    body = fetching_request(patient=patient("p1"), observations=bundle(noise), conditions=bundle([]))
    with dev_client(
        create_app(small, clock=lambda: NOW, fetcher=fetcher, resolver=FakeDns()), small
    ) as client:
        assert topics(call(client, body)) == ["duplex-dvt"]
    assert routes["observations"].call_count == 1
    (row,) = audit_rows(small, 1)
    assert any("prefetch discarded" in note for note in row["notes"])


def test_prefetch_over_the_json_limits_is_fetched_narrowly(
    fhir: respx.MockRouter, settings: Settings
) -> None:
    """A prefetch Bundle with more entries than the JSON limits allow, with a fhirServer, is fetched
    narrowly instead of refused."""
    small = settings.model_copy(update={"max_array_length": 100})
    fetcher = FhirFetcher(fetch_policy(small), transport=httpx.MockTransport(fhir.async_handler))
    routes = serve_patient(fhir, [PAIN, *DVT_SIGNS], [])
    noise = [observation(SNOMED, "300954003", days_ago=400, valueBoolean=True) for _ in range(150)]
    body = fetching_request(patient=patient("p1"), observations=bundle(noise), conditions=bundle([]))
    with dev_client(
        create_app(small, clock=lambda: NOW, fetcher=fetcher, resolver=FakeDns()), small
    ) as client:
        assert topics(call(client, body)) == ["duplex-dvt"]
    assert routes["observations"].call_count == 1


def test_operation_outcome_prefetch_is_fetched_again(app: TestClient, fhir: respx.MockRouter) -> None:
    """An OperationOutcome under a key (the client's fetch failed) is fetched by us."""
    routes = serve_patient(fhir, [PAIN, *DVT_SIGNS], [])
    failed = {"resourceType": "OperationOutcome", "issue": [{"severity": "error", "code": "timeout"}]}
    body = fetching_request(patient=patient("p1"), observations=failed, conditions=bundle([]))
    assert topics(call(app, body)) == ["duplex-dvt"]
    assert routes["observations"].call_count == 1
    assert routes["patient"].call_count == routes["conditions"].call_count == 0


def test_null_prefetch_means_no_data_and_is_not_fetched(app: TestClient, fhir: respx.MockRouter) -> None:
    """`null` says the client has no data: nothing is fetched for that key."""
    routes = serve_patient(fhir, [], [])
    body = fetching_request(patient=patient("p1"), observations=bundle([PAIN]), conditions=None)
    assert call(app, body).status_code == 200
    assert not fhir.calls
    assert routes["conditions"].call_count == 0


def test_complete_prefetch_makes_no_request(app: TestClient, fhir: respx.MockRouter) -> None:
    """With every key prefetched, the FHIR server is not called even though it is given."""
    body = hook_request([PAIN, *DVT_SIGNS]) | {"fhirServer": BASE}
    assert topics(call(app, body)) == ["duplex-dvt"]
    assert not fhir.calls


def test_first_page_prefetch_is_completed_by_paging(
    app: TestClient, fhir: respx.MockRouter, settings: Settings
) -> None:
    """A searchset page with a `next` link (what the CDS Hooks Sandbox sends) is completed: the
    DVT signs on page 2 give the duplex card."""
    page_2 = f"{BASE}/Observation?patient=p1&_page=2"
    first = bundle([PAIN]) | {"link": [{"relation": "next", "url": page_2}]}
    route = fhir.get(page_2).mock(return_value=fhir_json(bundle(DVT_SIGNS)))
    body = fetching_request(patient=patient("p1"), observations=first, conditions=bundle([]))
    assert topics(call(app, body)) == ["duplex-dvt"]
    assert route.call_count == 1
    assert route.calls[0].request.headers["Authorization"] == f"Bearer {TOKEN}"
    (row,) = audit_rows(settings, 1)
    assert row["prefetch_states"]["observations"] == "present+paged"


def test_next_link_to_another_server_is_not_followed(
    app: TestClient, fhir: respx.MockRouter, settings: Settings
) -> None:
    """The token never leaves fhirServer: a foreign `next` link is noted, not followed."""
    first = bundle([PAIN]) | {"link": [{"relation": "next", "url": "https://evil.example.com/fhir/x"}]}
    body = fetching_request(patient=patient("p1"), observations=first, conditions=bundle([]))
    topics(call(app, body))
    assert not fhir.calls
    (row,) = audit_rows(settings, 1)
    assert any("foreign next link not followed" in note for note in row["notes"])


def test_paged_prefetch_without_fhir_server_uses_the_first_page(
    client: TestClient, settings: Settings
) -> None:
    """Without a fhirServer the next page cannot be read: the first page is used and noted."""
    body = hook_request([PAIN])
    body["prefetch"]["observations"]["link"] = [{"relation": "next", "url": f"{BASE}/Observation?_page=2"}]
    topics(call(client, body))
    (row,) = audit_rows(settings, 1)
    assert any("only the first page" in note for note in row["notes"])


def test_keys_we_did_not_ask_for_are_ignored(client: TestClient, settings: Settings) -> None:
    """A prefetch key outside our templates is not read, whatever it holds."""
    body = hook_request([PAIN, *DVT_SIGNS])
    body["prefetch"]["medications"] = {"resourceType": "Patient", "id": "someone-else"}
    body["prefetch"]["junk"] = "not even a resource"
    assert topics(call(client, body)) == ["duplex-dvt"]
    (row,) = audit_rows(settings, 1)
    assert "ignored prefetch key 'junk': not one of our templates" in row["notes"]


@pytest.mark.parametrize(
    ("key", "value", "pointer"),
    [
        ("patient", finding("warmth"), "/prefetch/patient/resourceType"),
        ("patient", bundle([patient("p1")]), "/prefetch/patient/resourceType"),
        ("observations", patient("p1"), "/prefetch/observations/resourceType"),
        ("conditions", finding("warmth"), "/prefetch/conditions/resourceType"),
    ],
    ids=[
        "observation-as-patient",
        "bundle-as-patient",
        "patient-as-observations",
        "observation-as-conditions",
    ],
)
def test_key_of_the_wrong_type_is_400(client: TestClient, key: str, value: Any, pointer: str) -> None:
    """A value whose resource type does not fit its template is a 400 that points at it."""
    body = hook_request([PAIN])
    body["prefetch"][key] = value
    outcome = assert_outcome(call(client, body), 400)
    assert outcome["issue"][0]["expression"] == [pointer]


def test_single_resource_for_a_search_key_is_read(client: TestClient) -> None:
    """A lone Observation under the Observation search key counts as a one-entry result."""
    body = hook_request([])
    body["prefetch"]["observations"] = PAIN
    assert call(client, body).status_code == 200


def test_wrong_types_in_prefetched_bundles_are_ignored_and_audited(
    client: TestClient, settings: Settings
) -> None:
    """Inside a prefetched Bundle, a resource of another type is not read, and the audit notes say so."""
    odd = {"resourceType": "MedicationRequest", "id": "med-1"}
    body = hook_request([PAIN])
    body["prefetch"]["observations"]["entry"] += [{"resource": odd}]
    call(client, body)
    (row,) = audit_rows(settings, 1)
    assert "ignored MedicationRequest/med-1 in observations: unexpected resource type" in row["notes"]


def test_another_patients_resource_in_prefetch_is_a_400(client: TestClient) -> None:
    """The client's own prefetch about someone else is inconsistent input: 400 (the security rule)."""
    stranger = finding("entire-leg-swollen", patient_id="p2") | {"id": "stranger-obs"}
    body = hook_request([PAIN])
    body["prefetch"]["observations"]["entry"] += [{"resource": stranger}]
    assert_outcome(call(client, body), 400)


def test_another_patients_resource_from_the_fhir_server_is_ignored_and_audited(
    app: TestClient, fhir: respx.MockRouter, settings: Settings
) -> None:
    """What the FHIR server returns about someone else is not read, and the audit notes say so."""
    stranger = finding("entire-leg-swollen", patient_id="p2") | {"id": "stranger-obs"}
    serve_patient(fhir, [PAIN, stranger], [])
    assert topics(call(app, fetching_request())) == []
    (row,) = audit_rows(settings, 1)
    assert "ignored Observation/stranger-obs: not about the context patient" in row["notes"]
    assert "stranger-obs" not in json.dumps(row["facts"])


def test_fetching_can_be_switched_off(settings: Settings) -> None:
    """With `fhir_fetch` off, missing prefetch is a 412 even with a fhirServer."""
    with dev_client(
        create_app(settings.model_copy(update={"fhir_fetch": False})),
        settings.model_copy(update={"fhir_fetch": False}),
    ) as client:
        outcome = assert_outcome(call(client, fetching_request()), 412)
    assert "no fhirServer" in outcome["issue"][0]["diagnostics"]


def test_default_app_fetches_from_the_address_it_approved(settings: Settings) -> None:
    """`create_app(settings)` fetches with its own transport (intercepted by respx below it):
    `ehr.example.org` is resolved once, and every request goes to that address with the name kept
    in `Host` and as the TLS server name."""
    dns = FakeDns()
    with respx.mock(assert_all_mocked=True, assert_all_called=False) as mock:
        serve_patient(mock, [PAIN, *DVT_SIGNS], [], base="https://203.0.113.10/fhir")
        with dev_client(create_app(settings, clock=lambda: NOW, resolver=dns), settings) as client:
            assert topics(call(client, fetching_request())) == ["duplex-dvt"]
        assert len(mock.calls) == 3
        for request, _ in mock.calls:
            assert request.headers["Host"] == "ehr.example.org"
            assert request.extensions["sni_hostname"] == "ehr.example.org"
    assert dns.lookups == [("ehr.example.org", 443)]


# --------------------------------------------------------------------------------------------
# FHIR server failures → 412


@pytest.mark.parametrize("status", [401, 403])
def test_refused_token_is_412(app: TestClient, fhir: respx.MockRouter, status: int) -> None:
    """401 or 403 from the FHIR server: 412 with an OperationOutcome; the token is not echoed."""
    fhir.route().mock(return_value=httpx.Response(status))
    response = call(app, fetching_request())
    outcome = assert_outcome(response, 412)
    assert "refused the token" in outcome["issue"][0]["diagnostics"]
    assert TOKEN not in response.text


def test_unreachable_server_is_412(app: TestClient, fhir: respx.MockRouter) -> None:
    """Connection refused: retried (twice per request), then 412."""
    route = fhir.route().mock(side_effect=httpx.ConnectError("connection refused"))
    assert_outcome(call(app, fetching_request()), 412)
    assert route.call_count >= 3  # retried, not given up at the first refusal


def test_5xx_is_retried_then_cards(app: TestClient, fhir: respx.MockRouter) -> None:
    """A 503 then a good answer: the retry succeeds and the call answers 200."""
    observations = serve_patient(fhir, [PAIN, *DVT_SIGNS], [])["observations"]
    observations.side_effect = [httpx.Response(503), fhir_json(bundle([PAIN, *DVT_SIGNS]))]
    assert topics(call(app, fetching_request())) == ["duplex-dvt"]
    assert observations.call_count == 2


def test_slow_server_is_412_within_the_budget(fhir: respx.MockRouter, settings: Settings) -> None:
    """A server that never answers costs the configured budget, not a hang."""

    async def hang(request: httpx.Request) -> httpx.Response:
        await asyncio.sleep(30)
        return fhir_json(bundle([]))

    fhir.route().mock(side_effect=hang)
    tight = settings.model_copy(update={"fhir_request_timeout": 0.2, "fhir_total_budget": 0.5})
    fetcher = FhirFetcher(fetch_policy(tight), transport=httpx.MockTransport(fhir.async_handler))
    with dev_client(
        create_app(tight, clock=lambda: NOW, fetcher=fetcher, resolver=FakeDns()), tight
    ) as client:
        outcome = assert_outcome(call(client, fetching_request()), 412)
    # Had the budget not applied, the server's answer (after 30 s) would have given 200.
    assert "timed out" in outcome["issue"][0]["diagnostics"] or "budget" in outcome["issue"][0]["diagnostics"]


@pytest.mark.parametrize(
    "answer",
    [
        httpx.Response(200, text="<html>login</html>"),
        fhir_json({"resourceType": "Bundle", "type": "searchset", "entry": {"resource": {}}}),
        fhir_json({"resourceType": "Bundle", "type": "transaction", "entry": []}),
        fhir_json({"resourceType": "Bundle", "type": "searchset", "entry": [{"resource": {"id": "x"}}]}),
    ],
    ids=["html", "entry-not-a-list", "transaction", "resource-without-type"],
)
def test_malformed_bundle_from_fhir_server_is_412(
    app: TestClient, fhir: respx.MockRouter, answer: httpx.Response
) -> None:
    """A search answered with something that is not a well-formed searchset Bundle: 412."""
    serve_patient(fhir, [], [])["observations"].return_value = answer
    outcome = assert_outcome(call(app, fetching_request()), 412)
    assert "'observations'" in outcome["issue"][0]["diagnostics"]


def test_bad_fhir_server_url_is_400(app: TestClient) -> None:
    """A fhirServer that cannot be a FHIR base (credentials in it) is the client's error: 400."""
    body = fetching_request() | {"fhirServer": "https://user:pw@ehr.example.org/fhir"}
    outcome = assert_outcome(call(app, body), 400)
    assert outcome["issue"][0]["expression"] == ["/fhirServer"]


def test_token_never_reaches_logs(
    app: TestClient, fhir: respx.MockRouter, caplog: pytest.LogCaptureFixture
) -> None:
    """Fetching, retrying and failing log nothing that holds the token."""
    fhir.route().mock(return_value=httpx.Response(503))
    with caplog.at_level(logging.DEBUG):
        assert_outcome(call(app, fetching_request()), 412)
    assert caplog.records
    assert TOKEN not in caplog.text


def test_malformed_prefetch_is_400_before_any_fetch(app: TestClient, fhir: respx.MockRouter) -> None:
    """A malformed prefetch Bundle is the client's error: 400 at once, nothing fetched."""
    body = fetching_request(conditions={"resourceType": "Bundle", "type": "searchset", "entry": [{}]})
    outcome = assert_outcome(call(app, body), 400)
    assert outcome["issue"][0]["expression"] == ["/prefetch/conditions/entry/0"]
    assert not fhir.calls
