"""The order hooks end to end through HTTP: discovery, the 58 order cases, errors and feedback.

The app is built as deployed by default (dev issuer, embedded packs; 1.2.0 active) with a clock set
to each case's ``now``; every call is a signed ``order-select`` / ``order-sign`` whose prefetch
answers the templates the app's discovery publishes, with the case's draft orders in the context.
Cases with a ``site_orderables`` file run on a second app started with ``CALF_CDS_SITE_ORDERABLES``
(the site file), the others on the bundled catalogue. Expectations are the cases' own
(``tests/rules/order-cases/README.md``): topics present and forbidden, indicators, and the
recommended suggestion — the exact ``resourceId``s it deletes and the code it creates.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from service.app import create_app
from service.auth.dev_issuer import DevIssuer
from service.config import Settings
from tests.charts.charts import matches, parse_instant, search_parameters
from tests.rules.order_cases import hooks_of, load_order_cases
from tests.signing import signed_client

if TYPE_CHECKING:
    from starlette.testclient import TestClient

CASES = load_order_cases()
RUNS = [(case, hook) for case in CASES for hook in hooks_of(case)]
RECOMMENDATION_SYSTEM = "http://calf-cds.org/fhir/CodeSystem/recommendation"
ORDER_SERVICES = {"order-select": "calf-pain-order-select", "order-sign": "calf-pain-order-sign"}
(SITE_FILE,) = {json.dumps(c["site_orderables"], sort_keys=True) for c in CASES if "site_orderables" in c}


@dataclass
class Clock:
    now: datetime = field(default_factory=lambda: parse_instant("2026-11-20T09:00:00Z"))

    def __call__(self) -> datetime:
        return self.now


@dataclass
class App:
    client: TestClient
    clock: Clock
    templates: dict[str, str]
    discovery: dict[str, Any]


def _start(data_dir: Path, **settings: Any) -> Iterator[App]:
    clock = Clock()
    app = create_app(Settings(data_dir=data_dir, dev=True, **settings), clock=clock)
    with signed_client(app, DevIssuer.load_or_create(data_dir)) as client:
        response = client.get("/cds-services")
        assert response.status_code == 200, response.text
        document = response.json()
        (service,) = [s for s in document["services"] if s["id"] == "calf-pain-order-sign"]
        yield App(client, clock, dict(service.get("prefetch", {})), document)


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[App]:
    yield from _start(tmp_path_factory.mktemp("orders") / "data")


@pytest.fixture(scope="module")
def site_app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[App]:
    folder = tmp_path_factory.mktemp("site")
    site = folder / "orderables.json"
    site.write_text(SITE_FILE, "utf-8")
    yield from _start(folder / "data", site_orderables=site)


def prefetch_for(case: Mapping[str, Any], templates: Mapping[str, str]) -> dict[str, Any]:
    """Every template answered with the case's patient and resources."""
    prefetch: dict[str, Any] = {}
    for key, template in templates.items():
        resource_type, parameters = search_parameters(template)
        if not parameters and "/" in resource_type:
            prefetch[key] = case["patient"]
            continue
        found = [
            r for r in case["resources"] if r["resourceType"] == resource_type and matches(r, parameters)
        ]
        prefetch[key] = {
            "resourceType": "Bundle",
            "type": "searchset",
            "entry": [{"resource": r, "search": {"mode": "match"}} for r in found],
        }
    return prefetch


def order_request(case: Mapping[str, Any], hook: str, templates: Mapping[str, str]) -> dict[str, Any]:
    context: dict[str, Any] = {
        "userId": "Practitioner/example",
        "patientId": case["patient"]["id"],
        "draftOrders": case["draftOrders"],
    }
    if hook == "order-select":
        context["selections"] = case.get("selections") or [
            f"{e['resource']['resourceType']}/{e['resource'].get('id')}" for e in case["draftOrders"]["entry"]
        ]
    return {
        "hook": hook,
        "hookInstance": str(uuid.uuid4()),
        "context": context,
        "prefetch": prefetch_for(case, templates),
    }


def call(app: App, case: Mapping[str, Any], hook: str) -> Any:
    app.clock.now = parse_instant(case["now"])
    return app.client.post(
        f"/cds-services/{ORDER_SERVICES[hook]}", json=order_request(case, hook, app.templates)
    )


def topic(card: Mapping[str, Any]) -> str:
    coding = card["source"]["topic"]
    assert coding["system"] == RECOMMENDATION_SYSTEM
    return str(coding["code"])


def describe(cards: list[dict[str, Any]]) -> str:
    return "\n".join(f"  [{topic(c)}/{c['indicator']}] {c['summary']}" for c in cards) or "  (no cards)"


def created_codes(resource: Mapping[str, Any]) -> set[str]:
    code = resource.get("code", {})
    return {str(c.get("code")) for c in code.get("coding", [])} | {str(code.get("text", ""))}


@pytest.mark.parametrize(("case", "hook"), RUNS, ids=[f"{c['id']}:{h}" for c, h in RUNS])
def test_order_case_through_http(app: App, site_app: App, case: dict[str, Any], hook: str) -> None:
    """Each order case as a signed call: topics, indicators, exact deletes and the created order."""
    response = call(site_app if "site_orderables" in case else app, case, hook)
    expect = case["expect"]
    if expect.get("foreign"):
        assert response.status_code == 400, response.text
        assert "/context/draftOrders" in response.text
        return
    assert response.status_code == 200, response.text[:2000]
    cards: list[dict[str, Any]] = response.json()["cards"]
    shown = describe(cards)
    by_topic: dict[str, list[dict[str, Any]]] = {}
    for card in cards:
        by_topic.setdefault(topic(card), []).append(card)
    for wanted in expect["topics"]:
        assert wanted in by_topic, f"missing {wanted}:\n{shown}"
    for forbidden in expect["forbidden"]:
        assert forbidden not in by_topic, f"forbidden {forbidden} shown:\n{shown}"
    for name, indicator in expect.get("indicators", {}).items():
        assert {c["indicator"] for c in by_topic[name]} == {indicator}, shown
    for name, wanted in expect.get("recommended", {}).items():
        recommended = [s for c in by_topic[name] for s in c.get("suggestions", []) if s.get("isRecommended")]
        if wanted is None:
            assert not recommended, recommended
            continue
        assert recommended, f"{name} card recommends nothing:\n{shown}"
        actions = recommended[0]["actions"]
        assert [a["resourceId"] for a in actions if a["type"] == "delete"] == wanted["delete"], actions
        (create,) = [a for a in actions if a["type"] == "create"]
        assert any(wanted["create"] in code for code in created_codes(create["resource"])), create
        assert create["resource"]["subject"] == {"reference": f"Patient/{case['patient']['id']}"}
    for card in cards:
        if card.get("suggestions"):
            assert card["selectionBehavior"] == "at-most-one"


def test_discovery_lists_the_three_services(app: App) -> None:
    services = {s["id"]: s for s in app.discovery["services"]}
    assert set(services) == {"calf-pain", "calf-pain-order-select", "calf-pain-order-sign"}
    assert services["calf-pain-order-select"]["hook"] == "order-select"
    assert services["calf-pain-order-sign"]["hook"] == "order-sign"
    # the draft orders are context: the order hooks prefetch what patient-view does
    assert services["calf-pain-order-sign"]["prefetch"] == services["calf-pain"]["prefetch"]
    assert services["calf-pain-order-select"]["prefetch"] == services["calf-pain"]["prefetch"]


def _first(rule: str) -> dict[str, Any]:
    return next(c for c in CASES if rule in c["expect"].get("rules", ()))


@pytest.mark.parametrize("draft_orders", [[], "Bundle", None, 3])
def test_draft_orders_that_are_not_an_object_are_a_400(app: App, draft_orders: object) -> None:
    case = _first("order-duplex-d-dimer-first")
    body = order_request(case, "order-sign", app.templates)
    body["context"]["draftOrders"] = draft_orders
    response = app.client.post("/cds-services/calf-pain-order-sign", json=body)
    assert response.status_code == 400, response.text
    assert "/context/draftOrders" in response.text


def test_order_select_needs_selections(app: App) -> None:
    case = _first("order-duplex-d-dimer-first")
    body = order_request(case, "order-select", app.templates)
    body["context"]["selections"] = []
    response = app.client.post("/cds-services/calf-pain-order-select", json=body)
    assert response.status_code == 400, response.text
    assert "/context/selections" in response.text


def test_a_patient_view_request_to_an_order_service_is_a_400(app: App) -> None:
    case = _first("order-duplex-d-dimer-first")
    body = order_request(case, "order-sign", app.templates)
    body["hook"] = "patient-view"
    response = app.client.post("/cds-services/calf-pain-order-sign", json=body)
    assert response.status_code == 400, response.text


def test_feedback_on_an_accepted_order_suggestion_is_taken(app: App) -> None:
    case = _first("order-duplex-d-dimer-first")
    response = call(app, case, "order-select")
    assert response.status_code == 200, response.text
    card = next(c for c in response.json()["cards"] if c.get("suggestions"))
    feedback = {
        "feedback": [
            {
                "card": card["uuid"],
                "outcome": "accepted",
                "acceptedSuggestions": [{"id": card["suggestions"][0]["uuid"]}],
                "outcomeTimestamp": "2026-11-20T09:01:00Z",
            }
        ]
    }
    for service in ("calf-pain-order-select", "calf-pain-order-sign", "calf-pain"):
        answered = app.client.post(f"/cds-services/{service}/feedback", json=feedback)
        assert answered.status_code == 200, answered.text
    assert app.client.post("/cds-services/nope/feedback", json=feedback).status_code == 404


def test_order_card_override_reasons_fit_an_order_decision(app: App) -> None:
    case = _first("order-duplex-d-dimer-first")
    cards = call(app, case, "order-sign").json()["cards"]
    card = next(c for c in cards if topic(c) == "duplex-dvt")
    reasons = {r["code"]: r["display"] for r in card["overrideReasons"]}
    assert reasons["clinically-indicated"] == "Clinically indicated regardless"
    assert reasons["discussed-with-specialist"] == "Already discussed with a specialist"


def test_a_delete_action_names_one_resource() -> None:
    """cds-resp-2: a delete action's resourceId is one relative reference."""
    from pydantic import ValidationError

    from cds_hooks.models import Action

    assert Action(type="delete", description="Remove", resource_id="ServiceRequest/us1").resource_id
    for bad in (None, "", "us1"):
        with pytest.raises(ValidationError):
            Action(type="delete", description="Remove", resource_id=bad)


def test_a_bad_site_order_catalogue_stops_the_start_up(tmp_path: Path) -> None:
    from fhir_mappings.errors import OrderCatalogueError
    from service.hooks.packs import PackRegistry

    site = tmp_path / "site.json"
    site.write_text('{"site": "x", "orderables": {"no_such_kind": {"codes": []}}}', "utf-8")
    with pytest.raises(OrderCatalogueError, match=r"site\.json"):
        PackRegistry.load(Settings(data_dir=tmp_path / "data", site_orderables=site))
