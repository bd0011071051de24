"""Running an order-hook clinical case: patient resources → facts, draft orders → order facts, one pack.

Shared by ``test_order_cases.py`` and the property tests. The case format is the patient-view one
(``tests/rules/cases/README.md``) plus ``hook``, ``draftOrders``, ``selections`` and
``site_orderables``; ``tests/rules/order-cases/README.md`` describes it. Everything below the service
runs: the mapper, :mod:`fhir_mappings.orders`, :meth:`Facts.with_facts` and
:func:`rules.engine.evaluate` with the case's hook; a suggestion's ``delete`` is resolved to the
draft orders' references the way ``/work/coord/orders-contract.md`` tells the service to.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from functools import cache
from pathlib import Path
from typing import Any

from fhir_mappings.facts import Facts, vocabulary
from fhir_mappings.mapper import Mapper
from fhir_mappings.orderables import bundled_catalogue
from fhir_mappings.orders import DraftOrders, OrderReader, bundled_reader
from fhir_mappings.terminology import bundled_terminology
from rules.engine import Assessment, Recommendation, evaluate
from rules.pack import RulePack, bundled_pack_files, load_pack

ORDER_CASES_DIR = Path(__file__).parent / "order-cases"
#: Pack versions with order-hook rules (every order case runs on each that it applies to).
ORDER_VERSIONS = ("1.2.0",)
TYPES = {name: kind for name, (kind, _) in vocabulary().types().items()}


def load_order_cases() -> list[dict[str, Any]]:
    cases: list[dict[str, Any]] = []
    for path in sorted(ORDER_CASES_DIR.glob("*.json")):
        cases += json.loads(path.read_text("utf-8"))
    return cases


@cache
def mapper() -> Mapper:
    return Mapper(vocabulary(), bundled_terminology())


@cache
def pack(version: str) -> RulePack:
    path = bundled_pack_files()[f"calf-pain@{version}"]
    return load_pack(json.loads(path.read_text("utf-8")), TYPES)


def hooks_of(case: Mapping[str, Any]) -> tuple[str, ...]:
    hook = case["hook"]
    return tuple(hook) if isinstance(hook, list) else (str(hook),)


def reader_for(case: Mapping[str, Any]) -> OrderReader:
    """The bundled reader, or one with the case's site orderables file added."""
    site = case.get("site_orderables")
    if site is None:
        return bundled_reader()
    return OrderReader(bundled_catalogue().extended(site, path=f"case {case['id']}"), vocabulary())


@dataclass(frozen=True)
class OrderRun:
    facts: Facts
    drafts: DraftOrders
    assessment: Assessment

    def resolved(self, recommendation: Recommendation) -> list[dict[str, Any]]:
        """Each suggestion as the service sends it: the deleted drafts' references and the request."""
        return [
            {
                "label": suggestion["label"],
                "recommended": bool(suggestion.get("recommended")),
                "delete": [
                    ref for kind in suggestion.get("delete", ()) for ref in self.drafts.delete_targets(kind)
                ],
                "request": suggestion["request"],
            }
            for suggestion in recommendation.suggestions
        ]


def run_order_case(case: Mapping[str, Any], version: str, hook: str) -> OrderRun:
    now = datetime.fromisoformat(str(case["now"]).replace("Z", "+00:00"))
    patient = case["patient"]
    facts = mapper().map(patient_id=patient["id"], patient=patient, resources=case["resources"], now=now)
    drafts, extra = reader_for(case).read(
        case.get("draftOrders"), patient_id=patient["id"], hook=hook, selections=case.get("selections")
    )
    facts = facts.with_facts(extra.values(), notes=drafts.notes)
    return OrderRun(facts, drafts, evaluate(pack(version), facts, hook=hook))


def request_codes(request: Mapping[str, Any]) -> set[str]:
    """The codes and the text of a suggestion's request template (what the draft order will carry)."""
    code = request.get("code", {})
    found = {str(c.get("code")) for c in code.get("coding", [])}
    return found | {str(code.get("text", ""))}
