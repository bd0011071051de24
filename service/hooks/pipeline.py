"""The front door of a hook call: the one pipeline every entry point goes through.

The web route (``service.http.routes.hooks``) and ``calf-cds try`` (``service.cli_try``) each turn
what they received into a :class:`HookCall` and ask :meth:`FrontDoor.answer`, which owns, in order:

1. the service, by its id in the :class:`~service.hooks.registry.HookRegistry` (404);
2. the media type (415); the body, read under the size limit (413) — a body over it but under
   the oversized limit keeps its fhirServer and loses its prefetch, which is fetched narrowly;
3. JSON decoding and the JSON limits (400; over the limits within the prefetch, with a
   fhirServer: as an oversized body); the request model (400);
4. the prefetch's subjects (400), the context, by the definition's model (400);
5. the patient's data: prefetch checked, the rest fetched by the guarded fetcher (400, 412);
6. the definition's handler: facts, rules, cards (:class:`~service.hooks.registry.HookKit`);
7. the entry point's ``keep`` (the web app stores the cards' explanations), then the response
   check (:func:`~service.hooks.guards.check_response`);
8. the audit record, built once (:class:`CallRecord`, below), whatever step the call ended at.

Steps 2 and 3, and the response check, are :mod:`service.hooks.guards`.

It answers an :class:`Answer`: the status, the body (the cards, or an OperationOutcome) and the
record, which the entry point keeps (the web app submits it to the audit store). Something no step
expected is answered with status 500 and the ``error``, for the entry point to raise once it has
kept the record.

**The audit record** of one hook call is built once, by the front door, from what the call
showed. :class:`CallRecord` is frozen. While a call runs, the front door keeps what it learns in a :class:`CallDraft` of its own — the request's identity, the prefetch
states and the notes as they come, the decision once it is made — and makes the record from it
once, when it knows the status it answers (:meth:`CallDraft.record`), whichever step the call
ended at. The audit store takes the record as JSON (:meth:`CallRecord.to_json`); it never holds
the access token.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from cds_hooks.errors import CdsHooksError
from cds_hooks.models import Card, HookRequest
from cds_hooks.outcome import error_outcome
from cds_hooks.prefetch_plan import Fetcher, check_prefetch_subjects, gather_patient_data
from fhir_mappings.facts import Facts
from fhir_mappings.orders import DraftOrders
from rules.engine import Assessment, Recommendation
from service.hooks.fhir_server_guard import FhirServerGuard
from service.hooks.guards import (
    BodyReader,
    RequestLimits,
    RequestRefusedError,
    check_response,
    hook_request,
    is_json_media_type,
    read_document,
)
from service.hooks.registry import (
    CalfPainService,
    CallOrigin,
    CardLinks,
    HookDefinition,
    HookKit,
    HookRegistry,
    HookResult,
)

__all__ = [
    "Answer",
    "CalfPainService",
    "CallDraft",
    "CallRecord",
    "Fetcher",
    "FrontDoor",
    "HookCall",
    "HookResult",
    "assessment_json",
    "card_entries",
    "drafts_json",
]


@dataclass(frozen=True)
class HookCall:
    """One call as its entry point received it.

    ``client`` is who called, as the audit trail keeps it (its ``iss`` decides which FHIR servers
    may be read); ``links`` what the cards link to; ``keep`` what the entry point does with the
    decision before the response check (the web app stores the cards' explanations).
    """

    service_id: str
    content_type: str | None
    read_body: BodyReader
    client: Mapping[str, Any] = field(default_factory=dict)
    links: CardLinks = field(default_factory=CardLinks)
    keep: Callable[[HookResult], Awaitable[None]] | None = None


@dataclass(frozen=True)
class Answer:
    """The answer to a call: HTTP ``status`` and ``body`` (the response, or an OperationOutcome), the
    call's audit ``record``, the handler's ``result`` when there was one, and the ``error`` no step
    expected (status 500, an empty body), which the entry point raises once it has kept the record."""

    status: int
    body: dict[str, Any]
    record: CallRecord
    result: HookResult | None = None
    error: Exception | None = None


def _storable_service_id(service_id: str, hooks: HookRegistry) -> str:
    """The service id as the audit column can hold it: a registered one as is; another (404) escaped
    and cut to the column's 64 characters (the record's ``error`` keeps it in full)."""
    if service_id in hooks:
        return service_id
    return json.dumps(service_id)[1:-1][:64]


@dataclass(frozen=True)
class FrontDoor:
    """Answers hook calls for the definitions of ``hooks`` with ``services``.

    ``fetcher`` fetches what the prefetch lacks (``None``: nothing is fetched), through ``guard``,
    which approves the FHIR server for the calling client; ``timer`` measures the decision's
    ``duration_ms``. The call is received, and decided, at ``services.clock()``.
    """

    hooks: HookRegistry
    services: CalfPainService
    limits: RequestLimits
    fetcher: Fetcher | None = None
    guard: FhirServerGuard | None = None
    timer: Callable[[], float] = time.perf_counter

    async def answer(self, call: HookCall) -> Answer:
        """Answer ``call`` (see the module docstring); never raises."""
        storable = _storable_service_id(call.service_id, self.hooks)
        draft = CallDraft.start(storable, self.services.clock(), call.client)
        try:
            try:
                result, body = await self._answer(call, draft)
            except RequestRefusedError as refusal:
                return Answer(refusal.status, refusal.outcome(), draft.record(refusal.status, refusal.reason))
            except CdsHooksError as error:
                status, outcome = error_outcome(error)
                return Answer(status, outcome, draft.record(status, f"{type(error).__name__}: {error}"))
        except Exception as error:  # noqa: BLE001 -- recorded here, raised by the entry point
            return Answer(500, {}, draft.record(500, type(error).__name__), error=error)
        return Answer(200, body, draft.record(200), result)

    async def _answer(self, call: HookCall, draft: CallDraft) -> tuple[HookResult, dict[str, Any]]:
        definition = self.hooks.get(call.service_id)
        if definition is None or definition.hook not in self.services.hooks:
            # a service whose hook the active pack does not answer is not listed, nor answered
            raise RequestRefusedError(
                404,
                f"no CDS service {call.service_id!r} here",
                code="not-found",
                reason=f"unknown service {json.dumps(call.service_id)}",  # as sent, in full (escaped)
            )
        if not is_json_media_type(call.content_type):
            raise RequestRefusedError(
                415, "the body must be application/json", code="not-supported", reason="not JSON"
            )
        request = hook_request(await read_document(call.read_body, self.limits, draft.notes))
        draft.hook, draft.hook_instance = request.hook, request.hook_instance
        check_prefetch_subjects(request, definition.search_types)
        return await self._decide(call, definition, request, draft)

    async def _decide(
        self, call: HookCall, definition: HookDefinition[Any], request: HookRequest, draft: CallDraft
    ) -> tuple[HookResult, dict[str, Any]]:
        fetcher = None  # without a fhirServer, nothing can be fetched
        if self.fetcher is not None and self.guard is not None and request.fhir_server is not None:
            # the one place a fetcher meets the caller's identity
            fetcher = self.guard.bind(self.fetcher, issuer=call.client.get("iss"), notes=draft.notes)
        started = self.timer()
        context = definition.read_context(request)
        draft.patient_id, draft.user_id = context.patient_id, context.user_id
        draft.fhir_server = request.fhir_server
        now = self.services.clock()
        data = await gather_patient_data(
            request,
            patient_id=context.patient_id,
            user_id=context.user_id,
            today=now.date(),
            fetcher=fetcher,
            states=draft.prefetch_states,
            notes=draft.notes,
            templates=definition.prefetch,
            optional=definition.optional_prefetch,
        )
        origin = CallOrigin(draft.call_id, _issuer(call.client), request.fhir_server)
        kit = HookKit(self.services, now, call.links, draft.notes, origin)
        result = definition.handler(context, data, kit)
        draft.drafts, draft.facts_reused_from = result.drafts, result.facts_reused_from
        entries = card_entries(result.cards)
        draft.decide(result.assessment, result.facts, entries, result.shadows, self.timer() - started)
        if call.keep is not None:
            await call.keep(result)
        checked = check_response(result.response.to_json(), draft.cards)
        draft.notes.extend(checked.notes)
        draft.checks = checked.checks
        return result, checked.body


def _issuer(client: Mapping[str, Any]) -> str | None:
    issuer = client.get("iss")
    return issuer if isinstance(issuer, str) else None


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
