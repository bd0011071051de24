"""One hook call, end to end: request → resources → facts → assessment(s) → cards + audit record.

The hook is a :class:`~service.hooks.registry.HookDefinition`: its context model, prefetch
templates and handler. Used by the web app and by ``calf-cds try`` alike, so both give the same cards.
"""

from __future__ import annotations

import time
from typing import Any

from cds_hooks.models import HookRequest
from cds_hooks.prefetch_plan import Fetcher, gather_patient_data
from service.hooks.call_record import CallDraft, CallRecord, card_entries
from service.hooks.registry import CalfPainService, CardLinks, HookDefinition, HookKit, HookResult

__all__ = ["CalfPainService", "CallDraft", "CallRecord", "Fetcher", "HookResult", "call_hook"]


async def call_hook(
    definition: HookDefinition[Any],
    services: CalfPainService,
    request: HookRequest,
    draft: CallDraft,
    *,
    fetcher: Fetcher | None = None,
    links: CardLinks | None = None,
) -> HookResult:
    """Run ``definition``'s hook, noting what it learns in ``draft``; raises ``CdsHooksError`` leaves
    for the web layer to map.

    ``links`` are what the cards link to: each card's explanation page and the base of the
    assessment app that cards lacking findings link to (web app only).
    """
    started = time.perf_counter()
    context = definition.read_context(request)
    draft.patient_id, draft.user_id = context.patient_id, context.user_id
    draft.fhir_server = request.fhir_server
    now = services.clock()
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
    result = definition.handler(context, data, HookKit(services, now, links or CardLinks(), draft.notes))
    entries = card_entries(result.cards)
    draft.decide(result.assessment, result.facts, entries, result.shadows, time.perf_counter() - started)
    return result
