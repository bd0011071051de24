"""One hook call, end to end: request → resources → facts → assessment(s) → cards + audit record.

The hook is a :class:`~service.hooks.registry.HookDefinition`: its context model, prefetch
templates and handler. Used by the web app and by ``calf-cds try`` alike, so both give the same cards.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from cds_hooks.models import Card, HookRequest
from cds_hooks.prefetch_plan import Fetcher, gather_patient_data
from fhir_mappings.facts import Facts
from rules.engine import Assessment, Recommendation
from service.hooks.registry import CalfPainService, CardLinks, HookDefinition, HookKit, HookResult

__all__ = ["CalfPainService", "CallRecord", "Fetcher", "HookResult", "call_hook", "new_record"]


@dataclass
class CallRecord:
    """What the audit trail keeps of one call (never the access token)."""

    call_id: str
    received_at: datetime
    hook: str
    hook_instance: str
    service_id: str
    patient_id: str | None = None
    user_id: str | None = None
    fhir_server: str | None = None
    status_code: int = 200
    error: str | None = None
    pack_id: str | None = None
    pack_version: str | None = None
    pack_hash: str | None = None
    facts: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    cards: list[dict[str, Any]] = field(default_factory=list)
    suppressed: list[dict[str, str]] = field(default_factory=list)
    rule_errors: list[str] = field(default_factory=list)
    shadow: list[dict[str, Any]] = field(default_factory=list)
    prefetch_states: dict[str, str] = field(default_factory=dict)
    client: dict[str, Any] = field(default_factory=dict)
    duration_ms: float = 0.0

    def to_json(self) -> dict[str, Any]:
        body = {k: v for k, v in self.__dict__.items() if k != "received_at"}
        body["received_at"] = self.received_at.isoformat()
        if self.error is not None:  # our diagnostic text; a NUL (from fetched data) escaped, not lost
            body["error"] = self.error.replace("\x00", "\\x00")
        return body


async def call_hook(
    definition: HookDefinition[Any],
    services: CalfPainService,
    request: HookRequest,
    record: CallRecord,
    *,
    fetcher: Fetcher | None = None,
    links: CardLinks | None = None,
) -> HookResult:
    """Run ``definition``'s hook; raises ``CdsHooksError`` leaves for the web layer to map.

    ``links`` are what the cards link to: each card's explanation page and the base of the
    assessment app that cards lacking findings link to (web app only).
    """
    started = time.perf_counter()
    context = definition.read_context(request)
    record.patient_id, record.user_id = context.patient_id, context.user_id
    record.fhir_server = request.fhir_server
    now = services.clock()
    data = await gather_patient_data(
        request,
        patient_id=context.patient_id,
        user_id=context.user_id,
        today=now.date(),
        fetcher=fetcher,
        states=record.prefetch_states,
        notes=record.notes,
        templates=definition.prefetch,
        optional=definition.optional_prefetch,
    )
    result = definition.handler(context, data, HookKit(services, now, links or CardLinks(), record.notes))
    for shadow in result.shadows:
        record.shadow.append(_assessment_json(shadow))
    _fill(record, result.assessment, result.facts, result.cards)
    record.duration_ms = round((time.perf_counter() - started) * 1000, 3)
    return result


def new_record(request: HookRequest | None, *, service_id: str, now: datetime) -> CallRecord:
    return CallRecord(
        call_id=str(uuid.uuid4()),
        received_at=now,
        hook=request.hook if request else "",
        hook_instance=request.hook_instance if request else "",
        service_id=service_id,
    )


def _assessment_json(assessment: Assessment) -> dict[str, Any]:
    return {
        "pack_id": assessment.pack_id,
        "pack_version": assessment.pack_version,
        "pack_hash": assessment.pack_hash,
        "recommendations": [
            {"rule_id": r.rule_id, "topic": r.topic, "indicator": r.indicator, "pattern": r.pattern}
            for r in assessment.recommendations
        ],
        "suppressed": [s.__dict__ for s in assessment.suppressed],
        "errors": list(assessment.errors),
    }


def _fill(
    record: CallRecord,
    assessment: Assessment,
    facts: Facts,
    pairs: Sequence[tuple[Card, Recommendation]],
) -> None:
    record.pack_id = assessment.pack_id
    record.pack_version = assessment.pack_version
    record.pack_hash = assessment.pack_hash
    record.facts = facts.to_json()
    record.cards = [
        {
            "uuid": card.uuid,
            "topic": recommendation.topic,
            "indicator": card.indicator,
            "summary": card.summary,
            "rule_id": recommendation.rule_id,
            "fallback": recommendation.fallback,
            "suggestions": [s.uuid for s in card.suggestions],
        }
        for card, recommendation in pairs
    ]
    record.suppressed = [s.__dict__ for s in assessment.suppressed]
    record.rule_errors = list(assessment.errors)
