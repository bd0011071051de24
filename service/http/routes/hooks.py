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
from service.hooks.pipeline import CallDraft, call_hook
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
        storable = _storable_service_id(service_id, registry)
        draft = CallDraft.start(storable, clock(), client_record(client))
        try:
            response, error = await _handle(registry, service_id, request, rt, draft)
        except Exception as failure:
            rt.audit.submit(draft.record(500, type(failure).__name__).to_json())
            raise
        record = draft.record(response.status_code, error)
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


def _drop_oversized_prefetch(
    document: dict[str, Any], size: int, draft: CallDraft
) -> tuple[Response, str] | None:
    """A whole-chart prefetch over the body limit must not blank the patient: with a fhirServer,
    the prefetch is discarded and every key is fetched with the narrowed templates; without one,
    413 (nothing else could be read)."""
    if not isinstance(document.get("fhirServer"), str):
        return outcome_response(
            413,
            "request body too large; send the prefetch of the discovery document's narrowed templates, "
            "or a fhirServer to fetch from",
            code="too-long",
        ), "body too large"
    document["prefetch"] = {}
    draft.notes.append(
        f"prefetch discarded: the request body ({size} bytes) is over the body or JSON limits; "
        "every key was fetched from fhirServer with the narrowed templates"
    )
    return None


async def _handle(
    hooks: HookRegistry, service_id: str, request: Request, rt: Runtime, draft: CallDraft
) -> tuple[Response, str | None]:
    """The response, and the error the audit record keeps (``None`` for the cards)."""
    definition = hooks.get(service_id)
    if definition is None:
        return outcome_response(
            404, f"no CDS service {service_id!r} here", code="not-found"
        ), f"unknown service {json.dumps(service_id)}"  # the id as sent, in full (escaped)
    if not is_json_media_type(request.headers.get("content-type")):
        return outcome_response(415, "the body must be application/json", code="not-supported"), "not JSON"
    try:
        body, oversized = await read_body_with_overflow(
            request, rt.settings.max_body_bytes, rt.settings.max_oversized_body_bytes
        )
    except BodyTooLargeError:
        return outcome_response(413, "request body too large", code="too-long"), "body too large"
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError:
        return outcome_response(400, "the body is not valid JSON", code="structure"), "malformed JSON"
    if not isinstance(document, dict):
        return outcome_response(400, "the body must be a JSON object", code="structure"), "not an object"
    if oversized:
        refused = _drop_oversized_prefetch(document, len(body), draft)
        if refused is not None:
            return refused
    try:
        check_json_limits(document, JsonLimits.from_settings(rt.settings), body_size=len(body))
    except LimitExceededError as error:
        within_prefetch = (error.pointer or "").startswith("/prefetch")
        if not (within_prefetch and isinstance(document.get("fhirServer"), str)):
            outcome = outcome_response(400, str(error), code="too-long", expression=error.pointer or None)
            return outcome, f"JSON limit: {error.limit}"
        # a chart too big for the JSON limits: fetch it narrowly, like an oversized body
        _drop_oversized_prefetch(document, len(body), draft)
    try:
        hook_request = HookRequest.model_validate(document)
    except ValidationError as error:
        pointer = _pointer(error)
        outcome = outcome_response(
            400, f"invalid hook request at {pointer}", code="invalid", expression=pointer
        )
        return outcome, "invalid request"
    draft.hook, draft.hook_instance = hook_request.hook, hook_request.hook_instance
    try:
        check_prefetch_subjects(hook_request, definition.search_types)
        fetcher = None
        if rt.fetcher is not None:  # the one place a fetcher meets the caller's identity
            fetcher = rt.guard.bind(rt.fetcher, issuer=draft.client.get("iss"), notes=draft.notes)
        explanations: Explanations = request.app.state.explanations
        now = rt.service.clock()
        link, expires_at = explanations.links(request, now)
        result = await call_hook(
            definition,
            rt.service,
            hook_request,
            draft,
            fetcher=fetcher,
            links=CardLinks(link, explanations.base_url(request)),
        )
    except CdsHooksError as error:
        status, body_of_error = error_outcome(error)
        return json_response(body_of_error, status), f"{type(error).__name__}: {error}"
    await explanations.keep(
        result, result.facts, rt.service.vocabulary, result.assessment, now=now, expires_at=expires_at
    )
    checked = check_response(result.response.to_json(), draft.cards)
    draft.notes.extend(checked.notes)
    draft.checks = checked.checks
    return json_response(checked.body), None
