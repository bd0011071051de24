"""The CDS Hooks routes: discovery, and a call to a service, answered by the front door.

The route turns the HTTP request into a :class:`~service.hooks.pipeline.HookCall` (the body reader,
the calling client, the cards' explanation links), asks the
:class:`~service.hooks.pipeline.FrontDoor`, submits the call's audit record and answers.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from functools import partial

from fastapi import APIRouter, Request
from fastapi.responses import Response

from service.auth.verifier import client_record
from service.hooks.discovery import standard_hooks
from service.hooks.explanation import Explanations
from service.hooks.pipeline import FrontDoor, HookCall, HookResult
from service.hooks.registry import CardLinks, HookRegistry
from service.http.deps import AuthenticatedClient, RuntimeDep, json_response, read_body
from service.http.middleware import log_fields
from service.ops import telemetry

__all__ = ["hooks_router"]


def hooks_router(clock: Callable[[], datetime], hooks: HookRegistry | None = None) -> APIRouter:
    """Discovery and the hook route for ``hooks`` (by default the standard ones); ``clock`` dates the
    cards' explanation links."""
    router = APIRouter()
    registry = hooks if hooks is not None else standard_hooks()

    @router.get("/cds-services")
    async def get_discovery(_client: AuthenticatedClient, rt: RuntimeDep) -> Response:
        """CDS Hooks discovery: the services offered here, those whose hook the active rule pack
        answers (needs a client JWT)."""
        return json_response(registry.discovery(rt.service.hooks).to_json())

    @router.post("/cds-services/{service_id}")
    async def call_service(
        service_id: str, request: Request, rt: RuntimeDep, client: AuthenticatedClient
    ) -> Response:
        """Call a CDS service (needs a client JWT whose `aud` is this URL)."""
        explanations: Explanations = request.app.state.explanations
        now = clock()
        base = explanations.base_url(f"{request.url.scheme}://{request.url.netloc}")
        link, expires_at = explanations.links(base, now)

        async def keep(result: HookResult) -> None:
            await explanations.keep(
                result, result.facts, rt.service.vocabulary, result.assessment, now=now, expires_at=expires_at
            )

        call = HookCall(
            service_id=service_id,
            content_type=request.headers.get("content-type"),
            read_body=partial(read_body, request),
            client=client_record(client),
            links=CardLinks(link, base),
            keep=keep,
        )
        door = FrontDoor(registry, rt.service, rt.limits, rt.fetcher, rt.guard)
        answer = await door.answer(call)
        record = answer.record
        rt.audit.submit(record.to_json())
        if answer.error is not None:
            raise answer.error  # answered as a 500 OperationOutcome (service.http.errors)
        if record.cards or record.rule_errors:
            telemetry.observe_hook_call(
                service_id, record.cards, record.rule_errors, (record.pack_id, record.pack_version)
            )
        fields = log_fields()
        fields["call_id"], fields["cards"] = record.call_id, len(record.cards)
        return json_response(answer.body, answer.status)

    return router
