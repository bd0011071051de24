"""The order hooks' handlers: ``order-select`` and ``order-sign`` (issue 17).

Both read the same patient data as ``patient-view`` (the same prefetch templates) and, from the
context, the draft orders (:mod:`fhir_mappings.orders`, with the service's order catalogue: the
bundled one or a site's, ``CALF_CDS_SITE_ORDERABLES``). The order facts are added to the patient's
facts and the active pack answers for the call's hook; a suggestion that replaces an order deletes
the drafts of that kind and creates its request (:func:`service.hooks.cards.suggestion_actions`).

Draft orders about another patient are answered as prefetch about another patient is: 400.

``order-select`` keeps the patient facts it mapped for a short time; the ``order-sign`` of the same
session reuses them only when everything that decides them is the same (client, FHIR server,
patient, encounter, user and the data read: :mod:`service.hooks.facts_cache`). The draft orders
are always read afresh; ``order-sign`` is authoritative.
"""

from __future__ import annotations

from dataclasses import replace

from cds_hooks.errors import RequestError
from cds_hooks.models import OrderSelectContext, OrderSignContext
from cds_hooks.prefetch_plan import PatientData
from service.hooks.registry import HookKit, HookResult

__all__ = ["order_select", "order_sign"]


def order_select(context: OrderSelectContext, data: PatientData, kit: HookKit) -> HookResult:
    """The selected orders, with the patient's record: cards about what is being ordered now."""
    return _decide(context, data, kit, hook="order-select", selections=list(context.selections))


def order_sign(context: OrderSignContext, data: PatientData, kit: HookKit) -> HookResult:
    """Every draft order about to be signed, with the patient's record (authoritative)."""
    return _decide(context, data, kit, hook="order-sign", selections=None)


def _decide(
    context: OrderSignContext, data: PatientData, kit: HookKit, *, hook: str, selections: list[str] | None
) -> HookResult:
    drafts, order_facts = kit.services.orders.read(
        context.draft_orders, patient_id=context.patient_id, hook=hook, selections=selections
    )
    if drafts.foreign:
        raise RequestError(
            f"draftOrders hold {len(drafts.foreign)} order(s) about another patient than the context's",
            pointer="/context/draftOrders",
        )
    facts, reused_from = kit.reusable_facts(
        context, data, keep=hook == "order-select", reuse=hook == "order-sign"
    )
    kit.notes.extend(drafts.notes)
    facts = facts.with_facts(order_facts.values(), notes=drafts.notes)
    result = kit.decide(
        facts, patient_id=context.patient_id, hook=hook, drafts=drafts, encounter_id=context.encounter_id
    )
    return replace(result, facts_reused_from=reused_from)
