"""The audit record of one hook call: built once, by the front door, from what the call showed.

:class:`CallRecord` is frozen. While a call runs, the front door (:mod:`service.hooks.pipeline`)
keeps what it learns in a :class:`CallDraft` of its own — the request's identity, the prefetch
states and the notes as they come, the decision once it is made — and makes the record from it
once, when it knows the status it answers (:meth:`CallDraft.record`), whichever step the call
ended at. The audit store takes the record as JSON (:meth:`CallRecord.to_json`); it never holds
the access token.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from cds_hooks.models import Card
from fhir_mappings.facts import Facts
from fhir_mappings.orders import DraftOrders
from rules.engine import Assessment, Recommendation

__all__ = ["CallDraft", "CallRecord", "assessment_json", "card_entries", "drafts_json"]


@dataclass(frozen=True)
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
    facts: Mapping[str, Any] = field(default_factory=dict)
    notes: tuple[str, ...] = ()
    cards: tuple[Mapping[str, Any], ...] = ()
    suppressed: tuple[Mapping[str, Any], ...] = ()
    rule_errors: tuple[str, ...] = ()
    shadow: tuple[Mapping[str, Any], ...] = ()
    prefetch_states: Mapping[str, str] = field(default_factory=dict)
    client: Mapping[str, Any] = field(default_factory=dict)
    duration_ms: float = 0.0
    draft_orders: Mapping[str, Any] | None = None
    facts_reused_from: str | None = None

    def to_json(self) -> dict[str, Any]:
        """The record as the audit store takes it (``received_at`` last, as an ISO 8601 string)."""
        return {
            "call_id": self.call_id,
            "hook": self.hook,
            "hook_instance": self.hook_instance,
            "service_id": self.service_id,
            "patient_id": self.patient_id,
            "user_id": self.user_id,
            "fhir_server": self.fhir_server,
            "status_code": self.status_code,
            # our diagnostic text; a NUL (from fetched data) escaped, not lost
            "error": self.error.replace("\x00", "\\x00") if self.error is not None else None,
            "pack_id": self.pack_id,
            "pack_version": self.pack_version,
            "pack_hash": self.pack_hash,
            "facts": dict(self.facts),
            "notes": list(self.notes),
            "cards": [dict(card) for card in self.cards],
            "suppressed": [dict(item) for item in self.suppressed],
            "rule_errors": list(self.rule_errors),
            "shadow": [dict(item) for item in self.shadow],
            "prefetch_states": dict(self.prefetch_states),
            "client": dict(self.client),
            "duration_ms": self.duration_ms,
            # order hooks only (a patient-view record is key for key what it was)
            **({"draft_orders": dict(self.draft_orders)} if self.draft_orders is not None else {}),
            **({"facts_reused_from": self.facts_reused_from} if self.facts_reused_from else {}),
            "received_at": self.received_at.isoformat(),
        }


@dataclass(frozen=True)
class _Decided:
    """What the decision adds to the record: the pack, the facts, the cards' entries, what was
    suppressed, rule errors, the shadow packs, and how long it took."""

    assessment: Assessment
    facts: Facts
    cards: tuple[Mapping[str, Any], ...]
    shadows: tuple[Assessment, ...]
    duration_ms: float


@dataclass
class CallDraft:
    """What one call has shown so far; the front door's own, written nowhere else."""

    call_id: str
    received_at: datetime
    service_id: str
    client: Mapping[str, Any]
    hook: str = ""
    hook_instance: str = ""
    patient_id: str | None = None
    user_id: str | None = None
    fhir_server: str | None = None
    notes: list[str] = field(default_factory=list)
    prefetch_states: dict[str, str] = field(default_factory=dict)
    checks: Mapping[str, str] = field(default_factory=dict)
    drafts: DraftOrders | None = None
    facts_reused_from: str | None = None
    _decided: _Decided | None = None

    @classmethod
    def start(
        cls, service_id: str, received_at: datetime, client: Mapping[str, Any] | None = None
    ) -> CallDraft:
        """The draft of a new call (a new ``call_id``) to ``service_id`` by ``client``."""
        return cls(str(uuid.uuid4()), received_at, service_id, client if client is not None else {})

    @property
    def cards(self) -> tuple[Mapping[str, Any], ...]:
        """The entries of the cards decided so far (none before the decision)."""
        return self._decided.cards if self._decided else ()

    def decide(
        self,
        assessment: Assessment,
        facts: Facts,
        cards: tuple[Mapping[str, Any], ...],
        shadows: tuple[Assessment, ...],
        seconds: float,
    ) -> None:
        """The decision: the active pack's ``assessment`` of ``facts``, the ``cards``' entries
        (:func:`card_entries`), the ``shadows``' assessments, made in ``seconds``."""
        self._decided = _Decided(assessment, facts, cards, shadows, round(seconds * 1000, 3))

    def record(self, status_code: int, error: str | None = None) -> CallRecord:
        """The frozen record of the call, answered with ``status_code`` (``error``: why not 200)."""
        decided = self._decided
        assessment = decided.assessment if decided else None
        return CallRecord(
            call_id=self.call_id,
            received_at=self.received_at,
            hook=self.hook,
            hook_instance=self.hook_instance,
            service_id=self.service_id,
            patient_id=self.patient_id,
            user_id=self.user_id,
            fhir_server=self.fhir_server,
            status_code=status_code,
            error=error,
            pack_id=assessment.pack_id if assessment else None,
            pack_version=assessment.pack_version if assessment else None,
            pack_hash=assessment.pack_hash if assessment else None,
            facts=decided.facts.to_json() if decided else {},
            notes=tuple(self.notes),
            cards=tuple(_checked(card, self.checks) for card in decided.cards) if decided else (),
            suppressed=tuple(s.__dict__ for s in assessment.suppressed) if assessment else (),
            rule_errors=tuple(assessment.errors) if assessment else (),
            shadow=tuple(assessment_json(shadow) for shadow in decided.shadows) if decided else (),
            prefetch_states=dict(self.prefetch_states),
            client=self.client,
            duration_ms=decided.duration_ms if decided else 0.0,
            draft_orders=drafts_json(self.drafts) if self.drafts is not None else None,
            facts_reused_from=self.facts_reused_from,
        )


def card_entries(pairs: Sequence[tuple[Card, Recommendation]]) -> tuple[dict[str, Any], ...]:
    """One audit entry per card built: the card, and the recommendation and rule behind it."""
    return tuple(
        {
            "uuid": card.uuid,
            "topic": recommendation.topic,
            "indicator": card.indicator,
            "summary": card.summary,
            "rule_id": recommendation.rule_id,
            "fallback": recommendation.fallback,
            "suggestions": [s.uuid for s in card.suggestions],
            **_deleted(card),
        }
        for card, recommendation in pairs
    )


def _deleted(card: Card) -> dict[str, Any]:
    """``{"deletes": {suggestion uuid: [resourceId, …]}}`` for a card whose suggestions delete draft
    orders; nothing otherwise (a patient-view card's entry is what it was)."""
    deletes = {
        str(s.uuid): [a.resource_id for a in s.actions if a.type == "delete"]
        for s in card.suggestions
        if any(a.type == "delete" for a in s.actions)
    }
    return {"deletes": deletes} if deletes else {}


def drafts_json(drafts: DraftOrders) -> dict[str, Any]:
    """The draft orders of an order-hook call as the record keeps them: each order's reference, kinds,
    whether it was being decided (selected) and its status — never the resources themselves — with
    the references read as about another patient and what the reading noted."""
    return {
        "orders": [
            {
                "reference": order.reference,
                "kinds": list(order.kinds),
                "selected": order.selected,
                "status": order.status,
            }
            for order in drafts.orders
        ],
        "foreign": list(drafts.foreign),
        "notes": list(drafts.notes),
    }


def _checked(entry: Mapping[str, Any], checks: Mapping[str, str]) -> Mapping[str, Any]:
    """``entry`` with the response check's verdict (``check``) if its card failed the check."""
    verdict = checks.get(entry.get("uuid") or "")
    return entry if verdict is None else {**entry, "check": verdict}


def assessment_json(assessment: Assessment) -> dict[str, Any]:
    """A shadow pack's assessment as the record keeps it."""
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
