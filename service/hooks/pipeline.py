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
   check (:mod:`service.hooks.response_check`);
8. the audit record, built once (:mod:`service.hooks.call_record`), whatever step the call ended at.

It answers an :class:`Answer`: the status, the body (the cards, or an OperationOutcome) and the
record, which the entry point keeps (the web app submits it to the audit store). Something no step
expected is answered with status 500 and the ``error``, for the entry point to raise once it has
kept the record.
"""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from cds_hooks.errors import CdsHooksError
from cds_hooks.models import HookRequest
from cds_hooks.outcome import error_outcome
from cds_hooks.prefetch_plan import Fetcher, check_prefetch_subjects, gather_patient_data
from service.hooks.call_record import CallDraft, CallRecord, card_entries
from service.hooks.fhir_server_guard import FhirServerGuard
from service.hooks.registry import (
    CalfPainService,
    CallOrigin,
    CardLinks,
    HookDefinition,
    HookKit,
    HookRegistry,
    HookResult,
)
from service.hooks.request_guard import (
    BodyTooLargeError,
    LimitExceededError,
    RequestLimits,
    RequestRefusedError,
    check_json_limits,
    decode_json_object,
    is_json_media_type,
    over_limit,
)
from service.hooks.response_check import check_response

__all__ = [
    "Answer",
    "BodyReader",
    "CalfPainService",
    "CallDraft",
    "CallRecord",
    "Fetcher",
    "FrontDoor",
    "HookCall",
    "HookResult",
    "body_reader",
]

#: Reads the request body, refusing more than the given number of bytes (:class:`BodyTooLargeError`).
BodyReader = Callable[[int], Awaitable[bytes]]


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


def body_reader(body: bytes) -> BodyReader:
    """A :data:`BodyReader` of a body already in hand (``calf-cds try``, tests)."""

    async def read(limit: int) -> bytes:
        if len(body) > limit:
            raise BodyTooLargeError
        return body

    return read


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
        request = _hook_request(await self._document(call, draft))
        draft.hook, draft.hook_instance = request.hook, request.hook_instance
        check_prefetch_subjects(request, definition.search_types)
        return await self._decide(call, definition, request, draft)

    async def _document(self, call: HookCall, draft: CallDraft) -> dict[str, Any]:
        """The request body as a JSON object within the limits; an oversized chart's prefetch dropped."""
        limits = self.limits
        body = await call.read_body(max(limits.max_body_bytes, limits.max_oversized_body_bytes))
        document = decode_json_object(body)
        if len(body) > limits.max_body_bytes:
            _drop_oversized_prefetch(document, len(body), draft)
        try:
            check_json_limits(document, limits.json, body_size=len(body))
        except LimitExceededError as error:
            within_prefetch = (error.pointer or "").startswith("/prefetch")
            if not (within_prefetch and isinstance(document.get("fhirServer"), str)):
                raise over_limit(error) from None
            # a chart too big for the JSON limits: fetch it narrowly, like an oversized body
            _drop_oversized_prefetch(document, len(body), draft)
        return document

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


def _hook_request(document: dict[str, Any]) -> HookRequest:
    try:
        return HookRequest.model_validate(document)
    except ValidationError as error:
        first = error.errors()[0]
        pointer = "/" + "/".join(str(part) for part in first.get("loc", ()))
        raise RequestRefusedError(
            400,
            f"invalid hook request at {pointer}",
            code="invalid",
            reason="invalid request",
            expression=pointer,
        ) from None


def _drop_oversized_prefetch(document: dict[str, Any], size: int, draft: CallDraft) -> None:
    """A whole-chart prefetch over the body limit must not blank the patient: with a fhirServer,
    the prefetch is discarded and every key is fetched with the narrowed templates; without one,
    413 (nothing else could be read)."""
    if not isinstance(document.get("fhirServer"), str):
        raise BodyTooLargeError(
            "request body too large; send the prefetch of the discovery document's narrowed templates, "
            "or a fhirServer to fetch from"
        )
    document["prefetch"] = {}
    draft.notes.append(
        f"prefetch discarded: the request body ({size} bytes) is over the body or JSON limits; "
        "every key was fetched from fhirServer with the narrowed templates"
    )
