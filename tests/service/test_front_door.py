"""One front door: `calf-cds try` and the web route answer through it alike, and a hook is one definition."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import httpx
import pytest
import respx
from rich.console import Console
from starlette.testclient import TestClient

import service.hooks.registry
from cds_hooks.models import PatientViewContext
from cds_hooks.prefetch_plan import PatientData
from service.app import create_app
from service.cli import build_parser
from service.cli_try import answer_in_process, build_request, run_try
from service.config import Settings
from service.hooks.discovery import standard_hooks
from service.hooks.fhir_fetcher import FhirFetcher, fetch_policy
from service.hooks.guards import FALLBACK_SUMMARY
from service.hooks.registry import HookDefinition, HookKit, HookResult
from tests.fake_dns import FakeDns
from tests.fhir_builders import NOW, bundle, calf_pain, finding, patient, quantity
from tests.service.test_app import audit_rows
from tests.signing import dev_client

FHIR = "https://fhir.example.org/r4"
TOKEN = "fhir-access-token-3f9a"
RED_FLAG = [calf_pain(days_ago=0), finding("sudden-onset", days_ago=0), finding("cold-pale-limb", days_ago=0)]
DVT = [calf_pain(days_ago=0), finding("calf-circumference-difference", quantity(3.4, "cm"), days_ago=0)]
#: What differs between two calls of the same request by design: who and when, not what.
PER_CALL = ("call_id", "received_at", "duration_ms", "client")


def fhir_json(body: object) -> httpx.Response:
    return httpx.Response(200, content=json.dumps(body), headers={"Content-Type": "application/fhir+json"})


@pytest.fixture
def fhir() -> respx.MockRouter:
    """The EHR's FHIR server: patient p1 with DVT signs, and a red flag."""
    router = respx.MockRouter(assert_all_called=False, assert_all_mocked=True)
    router.get(f"{FHIR}/Patient/p1").mock(return_value=fhir_json(patient("p1")))
    router.get(f"{FHIR}/Observation").mock(return_value=fhir_json(bundle([*DVT, *RED_FLAG])))
    router.route().mock(return_value=fhir_json(bundle([])))  # the other searches
    return router


def fetcher(settings: Settings, fhir: respx.MockRouter) -> FhirFetcher:
    return FhirFetcher(fetch_policy(settings), transport=httpx.MockTransport(fhir.async_handler))


@pytest.fixture
def web(
    settings: Settings, fhir: respx.MockRouter, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[TestClient, list[dict[str, Any]]]]:
    """The web service reading ``fhir``, and every audit record it submits."""
    app = create_app(settings, clock=lambda: NOW, fetcher=fetcher(settings, fhir), resolver=FakeDns())
    submitted: list[dict[str, Any]] = []
    with dev_client(app, settings) as client:
        writer = app.state.runtime.audit
        submit = writer.submit

        def keep(record: Mapping[str, Any]) -> None:
            submitted.append(dict(record))
            submit(record)

        monkeypatch.setattr(writer, "submit", keep)
        yield client, submitted


def named_uuids(value: Any, names: dict[str, str]) -> Any:
    """``value`` with every card and suggestion uuid named by its order of appearance (they are new
    in every call)."""
    if isinstance(value, Mapping):
        return {key: _named(key, item, names) for key, item in value.items()}
    if isinstance(value, list):
        return [named_uuids(item, names) for item in value]
    return value


def _named(key: str, item: Any, names: dict[str, str]) -> Any:
    if key == "uuid":
        return names.setdefault(item, f"uuid-{len(names)}")
    if key == "suggestions" and all(isinstance(uuid, str) for uuid in item):  # an audit card entry
        return [names.setdefault(uuid, f"uuid-{len(names)}") for uuid in item]
    return named_uuids(item, names)


def without_web_links(card: dict[str, Any]) -> dict[str, Any]:
    """``card`` without the links only the web app gives (its own explanation page and assessment
    app: the call's ``CardLinks``, which `calf-cds try` has not)."""
    links = [link for link in card.get("links", []) if not link["url"].startswith("http://testserver/")]
    return {key: value for key, value in card.items() if key != "links"} | ({"links": links} if links else {})


def comparable(record: dict[str, Any]) -> dict[str, Any]:
    """An audit record without what differs between two calls by design (``PER_CALL``, uuids)."""
    return named_uuids({key: value for key, value in record.items() if key not in PER_CALL}, {})


def test_try_and_the_web_route_give_the_same_cards_and_the_same_audit_record(
    settings: Settings, fhir: respx.MockRouter, web: tuple[TestClient, list[dict[str, Any]]]
) -> None:
    """The same request through the web route and through `calf-cds try`'s in-process call: the same
    status, the same cards and the same audit record — except, by design, the call id, the time it
    was received, its duration and who called (``PER_CALL``), the card and suggestion uuids (new in
    every call) and the links only the web app gives (explanation pages, assessment app)."""
    body = build_request(FHIR, "p1", bearer=TOKEN, user_id="Practitioner/example")
    client, submitted = web
    response = client.post("/cds-services/calf-pain", json=body)
    answer = answer_in_process(
        body, settings, fetcher=fetcher(settings, fhir), resolver=FakeDns(), clock=lambda: NOW
    )

    assert (response.status_code, answer.status) == (200, 200)
    web_cards, try_cards = response.json()["cards"], answer.body["cards"]
    assert len(web_cards) >= 2
    assert named_uuids([without_web_links(card) for card in web_cards], {}) == named_uuids(try_cards, {})

    (web_record,) = submitted
    try_record = answer.record.to_json()
    assert list(web_record) == list(try_record)
    assert web_record["client"]["iss"]  # the web call has a client; `calf-cds try` has none
    assert try_record["client"] == {}
    assert comparable(web_record) == comparable(try_record)
    assert try_record["pack_id"] == "calf-pain"


def test_try_applies_the_response_check(
    settings: Settings, fhir: respx.MockRouter, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`calf-cds try` answers what the web route would: a red-flag card that breaks the card
    contract becomes the minimal critical card, and the note says why."""
    original = service.hooks.registry.build_cards

    def broken(*args: Any, **kwargs: Any) -> Any:
        pairs = original(*args, **kwargs)
        for card, _ in pairs:
            card.summary = "x" * 200  # got around the model (no validation on assignment)
        return pairs

    monkeypatch.setattr(service.hooks.registry, "build_cards", broken)
    out, err = Console(file=io.StringIO(), width=200), Console(file=io.StringIO(), width=200)
    argv = ["try", "--fhir-server", FHIR, "--patient", "p1", "--json"]
    code = run_try(
        build_parser().parse_args(argv),
        settings=settings,
        fetcher=fetcher(settings, fhir),
        resolver=FakeDns(),
        console=out,
        progress=err,
        clock=lambda: NOW,
    )
    assert code == 0
    cards = json.loads(out.file.getvalue())["cards"]  # type: ignore[attr-defined]
    assert [card["summary"] for card in cards] == [FALLBACK_SUMMARY]  # the DVT card is dropped


# --------------------------------------------------------------------------------------------
# A hook is one definition


def echo(context: PatientViewContext, data: PatientData, kit: HookKit) -> HookResult:
    """A throwaway handler: the calf-pain decision, on whatever the prefetch holds."""
    ECHO_CALLS.append(context)
    return kit.decide(kit.facts(context.patient_id, data), patient_id=context.patient_id)


ECHO_CALLS: list[PatientViewContext] = []
ECHO = HookDefinition(
    id="throwaway-echo",
    hook="patient-view",
    title="Echo",
    description="A hook defined in a test, to show that adding one touches no production code.",
    context=PatientViewContext,
    context_error="context needs userId and patientId strings",
    prefetch={
        "patient": "Patient/{{context.patientId}}",
        "observations": "Observation?patient={{context.patientId}}",
    },
    handler=echo,
)


def test_a_hook_defined_in_a_test_is_discovered_and_routed(settings: Settings, tmp_path: Path) -> None:
    """One definition, given to the app, is in discovery and answers calls through the front door."""
    ECHO_CALLS.clear()
    app = create_app(settings, clock=lambda: NOW, hooks=standard_hooks().with_definitions(ECHO))
    with dev_client(app, settings) as client:
        services = client.get("/cds-services").json()["services"]
        assert [service["id"] for service in services] == [
            "calf-pain",
            "calf-pain-order-select",
            "calf-pain-order-sign",
            "throwaway-echo",
        ]
        assert services[-1]["prefetch"] == ECHO.prefetch
        body = {
            "hook": "patient-view",
            "hookInstance": "0a4c8f1e-5d0b-4d55-9f2e-6f3c1f1d2b7a",
            "context": {"userId": "Practitioner/example", "patientId": "p1"},
            "prefetch": {"patient": patient("p1"), "observations": bundle(DVT)},
        }
        response = client.post("/cds-services/throwaway-echo", json=body)
        wrong_hook = client.post("/cds-services/throwaway-echo", json=body | {"hook": "order-sign"})
    assert response.status_code == 200, response.text
    assert [card["source"]["topic"]["code"] for card in response.json()["cards"]] == ["duplex-dvt"]
    assert [PatientViewContext(userId="Practitioner/example", patientId="p1")] == ECHO_CALLS
    assert wrong_hook.status_code == 400
    rows = sorted(audit_rows(settings, 2), key=lambda row: row["status_code"])
    assert [(row["service_id"], row["status_code"]) for row in rows] == [
        ("throwaway-echo", 200),
        ("throwaway-echo", 400),
    ]
    assert rows[0]["prefetch_states"] == {"patient": "present", "observations": "present"}
