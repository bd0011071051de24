"""The CDS Hooks routes: discovery, and a call to a service (guards, pipeline, response check, audit)."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime
from typing import Any

import orjson
from fastapi import APIRouter, Request
from fastapi.responses import Response
from pydantic import ValidationError

from cds_hooks.errors import CdsHooksError
from cds_hooks.models import HookRequest
from cds_hooks.outcome import error_outcome
from cds_hooks.prefetch_plan import check_prefetch_subjects
from service.auth.clients import AuthenticatedClient, client_record
from service.hooks.discovery import standard_hooks
from service.hooks.pipeline import CallRecord, call_hook, new_record
from service.hooks.registry import CardLinks, HookRegistry
from service.hooks.request_guard import (
    JsonLimits,
    LimitExceededError,
    check_json_limits,
    is_json_media_type,
)
from service.hooks.response_check import check_response
from service.http.body import BodyTooLargeError, read_body_with_overflow
from service.http.deps import Runtime, RuntimeDep
from service.http.middleware import log_fields
from service.http.responses import json_response, outcome_response
from service.http.routes.explanations import Explanations
from service.ops import metrics

__all__ = ["hooks_router"]


def hooks_router(clock: Callable[[], datetime], hooks: HookRegistry | None = None) -> APIRouter:
    """Discovery and the hook route for ``hooks`` (by default, the standard ones); ``clock`` stamps
    each call's audit record."""
    router = APIRouter()
    registry = hooks if hooks is not None else standard_hooks()

    @router.get("/cds-services")
    async def get_discovery(_client: AuthenticatedClient) -> Response:
        """CDS Hooks discovery: the services offered here (needs a client JWT)."""
        return json_response(registry.discovery().to_json())

    @router.post("/cds-services/{service_id}")
    async def call_service(
        service_id: str, request: Request, rt: RuntimeDep, client: AuthenticatedClient
    ) -> Response:
        """Call a CDS service (needs a client JWT whose `aud` is this URL)."""
        record = new_record(None, service_id=_storable_service_id(service_id, registry), now=clock())
        record.client = client_record(client)
        try:
            response = await _handle(registry, service_id, request, rt, record)
        except Exception as error:
            record.status_code, record.error = 500, type(error).__name__
            rt.audit.submit(record.to_json())
            raise
        record.status_code = response.status_code
        rt.audit.submit(record.to_json())
        if record.cards or record.rule_errors:
            metrics.observe_hook_call(
                service_id, record.cards, record.rule_errors, (record.pack_id, record.pack_version)
            )
        fields = log_fields()
        fields["call_id"], fields["cards"] = record.call_id, len(record.cards)
        return response

    return router


def _pointer(error: ValidationError) -> str:
    first = error.errors()[0]
    return "/" + "/".join(str(part) for part in first.get("loc", ()))


def _storable_service_id(service_id: str, hooks: HookRegistry) -> str:
    """The path's service id as the audit column can hold it: ours as is; another one (404) escaped and
    cut to the column's 64 characters (``_handle`` keeps it in full in the record's ``error``)."""
    if service_id in hooks:
        return service_id
    return json.dumps(service_id)[1:-1][:64]


def _drop_oversized_prefetch(document: dict[str, Any], size: int, record: CallRecord) -> Response | None:
    """A whole-chart prefetch over the body limit must not blank the patient: with a fhirServer,
    the prefetch is discarded and every key is fetched with the narrowed templates; without one,
    413 (nothing else could be read)."""
    if not isinstance(document.get("fhirServer"), str):
        record.error = "body too large"
        return outcome_response(
            413,
            "request body too large; send the prefetch of the discovery document's narrowed templates, "
            "or a fhirServer to fetch from",
            code="too-long",
        )
    document["prefetch"] = {}
    record.notes.append(
        f"prefetch discarded: the request body ({size} bytes) is over the body or JSON limits; "
        "every key was fetched from fhirServer with the narrowed templates"
    )
    return None


async def _handle(
    hooks: HookRegistry, service_id: str, request: Request, rt: Runtime, record: CallRecord
) -> Response:
    definition = hooks.get(service_id)
    if definition is None:
        record.error = f"unknown service {json.dumps(service_id)}"  # the id as sent, in full (escaped)
        return outcome_response(404, f"no CDS service {service_id!r} here", code="not-found")
    if not is_json_media_type(request.headers.get("content-type")):
        record.error = "not JSON"
        return outcome_response(415, "the body must be application/json", code="not-supported")
    try:
        body, oversized = await read_body_with_overflow(
            request, rt.settings.max_body_bytes, rt.settings.max_oversized_body_bytes
        )
    except BodyTooLargeError:
        record.error = "body too large"
        return outcome_response(413, "request body too large", code="too-long")
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError:
        record.error = "malformed JSON"
        return outcome_response(400, "the body is not valid JSON", code="structure")
    if not isinstance(document, dict):
        record.error = "not an object"
        return outcome_response(400, "the body must be a JSON object", code="structure")
    if oversized:
        refused = _drop_oversized_prefetch(document, len(body), record)
        if refused is not None:
            return refused
    try:
        check_json_limits(document, JsonLimits.from_settings(rt.settings), body_size=len(body))
    except LimitExceededError as error:
        within_prefetch = (error.pointer or "").startswith("/prefetch")
        if not (within_prefetch and isinstance(document.get("fhirServer"), str)):
            record.error = f"JSON limit: {error.limit}"
            return outcome_response(400, str(error), code="too-long", expression=error.pointer or None)
        # a chart too big for the JSON limits: fetch it narrowly, like an oversized body
        _drop_oversized_prefetch(document, len(body), record)
    try:
        hook_request = HookRequest.model_validate(document)
    except ValidationError as error:
        record.error = "invalid request"
        pointer = _pointer(error)
        return outcome_response(400, f"invalid hook request at {pointer}", code="invalid", expression=pointer)
    record.hook, record.hook_instance = hook_request.hook, hook_request.hook_instance
    try:
        check_prefetch_subjects(hook_request, definition.search_types)
        fetcher = None
        if rt.fetcher is not None:  # the one place a fetcher meets the caller's identity
            fetcher = rt.guard.bind(rt.fetcher, issuer=record.client.get("iss"), notes=record.notes)
        explanations: Explanations = request.app.state.explanations
        now = rt.service.clock()
        link, expires_at = explanations.links(request, now)
        result = await call_hook(
            definition,
            rt.service,
            hook_request,
            record,
            fetcher=fetcher,
            links=CardLinks(link, explanations.base_url(request)),
        )
    except CdsHooksError as error:
        record.error = f"{type(error).__name__}: {error}"
        status, outcome = error_outcome(error)
        return json_response(outcome, status)
    await explanations.keep(
        result, result.facts, rt.service.vocabulary, result.assessment, now=now, expires_at=expires_at
    )
    checked = check_response(result.response.to_json(), record.cards)
    record.notes.extend(checked.notes)
    for entry in record.cards:
        if entry.get("uuid") in checked.checks:
            entry["check"] = checked.checks[entry["uuid"]]
    return json_response(checked.body)
