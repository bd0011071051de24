"""order-select → order-sign: exact reuse of the mapped patient facts, and what the audit record keeps.

Through the front door (:class:`service.hooks.pipeline.FrontDoor`) with the default packs and an
injected clock: an order-sign reuses the facts of an order-select only when issuer, FHIR server,
patient, encounter, user and the data read are all the same, within the cache's TTL; it always
reads the draft orders afresh. The record of an order call keeps the draft orders (reference,
kinds, selected, status), the deleted references of each suggestion, and ``facts_reused_from``.
"""

from __future__ import annotations

import asyncio
import copy
import json
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from fhir_mappings.facts import Facts
from service.config import Settings
from service.hooks.discovery import standard_hooks
from service.hooks.facts_cache import FactsCache, FactsKey
from service.hooks.guards import RequestLimits, body_reader
from service.hooks.packs import PackRegistry
from service.hooks.pipeline import Answer, FrontDoor, HookCall
from tests.rules.order_cases import load_order_cases
from tests.service.test_order_hooks import order_request

CASE = next(c for c in load_order_cases() if "order-duplex-d-dimer-first" in c["expect"].get("rules", ()))
TEMPLATES = dict(standard_hooks().get("calf-pain-order-sign").prefetch)  # type: ignore[union-attr]
NOW = datetime.fromisoformat(CASE["now"].replace("Z", "+00:00"))


class Clock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def door(tmp_path: Path) -> tuple[FrontDoor, Clock]:
    clock = Clock()
    settings = Settings(data_dir=tmp_path / "data", dev=True)
    services = PackRegistry.load(settings).service(clock=clock)
    return FrontDoor(standard_hooks(), services, RequestLimits.from_settings(settings)), clock


def answer(door: FrontDoor, body: dict[str, Any], *, issuer: str = "https://ehr.example.org") -> Answer:
    hook = body["hook"]
    call = HookCall(
        service_id=f"calf-pain-{hook}",
        content_type="application/json",
        read_body=body_reader(json.dumps(body).encode()),
        client={"iss": issuer, "sub": "client"},
    )
    result = asyncio.run(door.answer(call))
    assert result.status == 200, result.body
    return result


def select_then_sign(
    door: FrontDoor,
    clock: Clock,
    *,
    change: Any = None,
    issuer: str = "https://ehr.example.org",
    later: float = 0,
) -> tuple[Answer, Answer]:
    clock.now = NOW
    select = answer(door, order_request(CASE, "order-select", TEMPLATES), issuer=issuer)
    clock.now = NOW + timedelta(minutes=later)
    sign_body = copy.deepcopy(order_request(CASE, "order-sign", TEMPLATES))
    if change is not None:
        sign_body = change(sign_body) or sign_body
    return select, answer(door, sign_body)


def test_order_sign_reuses_the_facts_of_the_matching_order_select(door: tuple[FrontDoor, Clock]) -> None:
    select, sign = select_then_sign(*door)
    assert sign.record.facts_reused_from == select.record.call_id
    assert sign.record.to_json()["facts_reused_from"] == select.record.call_id
    assert select.record.facts_reused_from is None
    # the same cards as a sign that maps the record itself
    assert [c["summary"] for c in sign.body["cards"]] == [c["summary"] for c in select.body["cards"]]


def _other_patient(body: dict[str, Any]) -> dict[str, Any]:
    """The same chart and orders, about patient p2."""
    moved: dict[str, Any] = json.loads(json.dumps(body).replace('"Patient/p1"', '"Patient/p2"'))
    moved["context"]["patientId"] = "p2"
    moved["prefetch"]["patient"]["id"] = "p2"
    return moved


def _other_user(body: dict[str, Any]) -> None:
    body["context"]["userId"] = "Practitioner/someone-else"


def _other_encounter(body: dict[str, Any]) -> None:
    body["context"]["encounterId"] = "enc-2"


def _other_prefetch(body: dict[str, Any]) -> None:
    """The chart changed in between (here only the Patient's version: still no reuse)."""
    body["prefetch"]["patient"]["meta"] = {"versionId": "2"}


@pytest.mark.parametrize(
    "change",
    [_other_patient, _other_user, _other_encounter, _other_prefetch],
    ids=["patient", "user", "encounter", "prefetch"],
)
def test_no_reuse_when_anything_in_the_key_differs(door: tuple[FrontDoor, Clock], change: Any) -> None:
    _, sign = select_then_sign(*door, change=change)
    assert sign.record.facts_reused_from is None
    assert "facts_reused_from" not in sign.record.to_json()


def test_no_reuse_across_issuers(door: tuple[FrontDoor, Clock]) -> None:
    _, sign = select_then_sign(*door, issuer="https://other-ehr.example.org")
    assert sign.record.facts_reused_from is None


def test_no_reuse_once_expired_on_the_injected_clock(door: tuple[FrontDoor, Clock]) -> None:
    _, sign = select_then_sign(*door, later=10)
    assert sign.record.facts_reused_from is None
    _, sign = select_then_sign(*door, later=9.9)
    assert sign.record.facts_reused_from is not None


def test_order_sign_reads_the_draft_orders_afresh(door: tuple[FrontDoor, Clock]) -> None:
    """Reused patient facts never carry the order-select's order facts: a sign with no drafts has no
    order card."""

    def no_drafts(body: dict[str, Any]) -> None:
        body["context"]["draftOrders"] = {"resourceType": "Bundle", "type": "collection", "entry": []}

    select, sign = select_then_sign(*door, change=no_drafts)
    assert sign.record.facts_reused_from == select.record.call_id
    assert select.body["cards"]
    assert not sign.body["cards"]


def test_the_record_keeps_the_draft_orders_and_the_deleted_references(door: tuple[FrontDoor, Clock]) -> None:
    select, _ = select_then_sign(*door)
    record = select.record.to_json()
    orders = record["draft_orders"]["orders"]
    assert orders
    assert {"reference", "kinds", "selected", "status"} == set(orders[0])
    assert "venous_duplex" in {kind for order in orders for kind in order["kinds"]}
    assert record["draft_orders"]["foreign"] == []
    deletes = [refs for card in record["cards"] for refs in card.get("deletes", {}).values()]
    assert deletes
    assert all(ref.startswith("ServiceRequest/") for refs in deletes for ref in refs)
    assert "resource" not in json.dumps(record["draft_orders"])


def test_the_cache_is_bounded() -> None:
    cache = FactsCache(size=2)
    facts = Facts(by_name={}, declared=frozenset())
    keys = [FactsKey("i", None, f"p{n}", None, "u", "d") for n in range(3)]
    for key in keys:
        cache.put(key, facts, call_id=key.patient_id, now=NOW)
    assert len(cache) == 2
    assert cache.get(keys[0], now=NOW) is None
    assert cache.get(keys[2], now=NOW) == (facts, "p2")
    assert cache.get(keys[2], now=NOW - timedelta(seconds=1)) is None  # a clock set back: no reuse
