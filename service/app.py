"""The FastAPI application: discovery, the calf-pain hook, errors as OperationOutcomes, audit.

``create_app(settings)`` builds everything; nothing happens at import time.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

import orjson
from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import Response
from pydantic import ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from cds_hooks.errors import (
    CdsHooksError,
)
from cds_hooks.models import HookRequest
from fhir_mappings.terminology import bundled_terminology
from service import metrics
from service.assessment.routes import assessment_router
from service.audit import AuditWriter, make_engine
from service.client_auth import (
    AuthenticatedClient,
    authenticated_client,
    build_authenticator,
    client_record,
    install_auth_errors,
    trusted_issuers,
    warn_dev_mode,
)
from service.config import Settings
from service.discovery import SERVICE_ID, discovery
from service.explanation_routes import Explanations
from service.explanation_routes import router as explanation_router
from service.explanation_store import ExplanationStore
from service.fhir_fetcher import FhirFetcher
from service.fhir_server_guard import FhirServerGuard
from service.governance.database import prepare as prepare_database
from service.governance.routes import feedback_router, report_router
from service.governance.runtime import Governance
from service.health import StoreProbe
from service.http_body import BodyTooLargeError, read_body_with_overflow
from service.jwks import new_jwks_http_client
from service.middleware import RequestObserver, log_fields
from service.openapi import install_openapi
from service.outcome import IssueType, error_outcome, operation_outcome
from service.packs import PackRegistry
from service.pinned_transport import Resolver, system_resolver
from service.pipeline import CalfPainService, CallRecord, Fetcher, new_record
from service.request_guard import (
    JsonLimits,
    LimitExceededError,
    check_json_limits,
    check_prefetch_subjects,
    is_json_media_type,
)
from service.response_check import check_response
from service.terminology_server import TerminologyServer, extend_terminology
from service.workers import tune_gc

log = logging.getLogger("calf_cds.service")
JSON_MEDIA = "application/json"
# At shutdown, after uvicorn has drained in-flight calls (``service.cli.DRAIN_SECONDS``): how long
# the audit writer may take to write what is queued before it spools the rest to disk. Together
# they fit Kubernetes' 30 s grace period, less its 5 s preStop pause.
AUDIT_FLUSH_SECONDS = 8.0


@dataclass
class Runtime:
    """Everything one app instance owns, built at start-up."""

    settings: Settings
    service: CalfPainService
    audit: AuditWriter
    fetcher: Fetcher | None
    guard: FhirServerGuard
    store_probe: StoreProbe | None = None


async def get_runtime(request: Request) -> Runtime:
    """The runtime of the app serving ``request`` (built in the lifespan).

    ``async`` on purpose: FastAPI runs a plain ``def`` dependency on a worker thread, a thread
    hop per call for a field lookup.
    """
    value: Runtime = request.app.state.runtime
    return value


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(body), status_code=status, media_type=JSON_MEDIA, headers=headers)


def outcome_response(
    status: int, diagnostics: str, *, code: IssueType, expression: str | None = None
) -> Response:
    return json_response(operation_outcome(diagnostics, code=code, expression=expression), status)


def _pointer(error: ValidationError) -> str:
    first = error.errors()[0]
    return "/" + "/".join(str(part) for part in first.get("loc", ()))


def app_from_env() -> FastAPI:
    """The app with settings from ``CALF_CDS_*`` variables: what each ``calf-cds serve`` worker runs.

    It owns its process, so it also tunes the garbage collector once started (``service.workers``).
    """
    app = create_app(Settings())
    app.state.tune_gc = True
    return app


def wall_clock() -> datetime:
    """The real time. ``create_app`` is an entry point: only it (and ``service.cli.main``) reads it."""
    return datetime.now(UTC)


def create_app(
    settings: Settings,
    *,
    clock: Callable[[], datetime] = wall_clock,
    token_clock: Callable[[], float] = time.time,
    fetcher: Fetcher | None = None,
    resolver: Resolver = system_resolver,
) -> FastAPI:
    """Build the app. ``clock``, ``token_clock``, ``fetcher`` and ``resolver`` (DNS) are injectable
    for tests.

    ``clock`` is "now" for everything clinical and for the audit trail (look-back windows,
    received times, retention, the report); ``token_clock`` (seconds since the epoch) is what
    client JWTs' ``exp``, ``nbf`` and ``iat`` and the JWK Set cache are checked against. Tests
    fix the first at their fixtures' date and keep the second real, since their tokens are
    signed now.

    Without a ``fetcher``, missing prefetch is fetched from the request's ``fhirServer`` with a
    :class:`FhirFetcher` on the settings' limits, unless ``settings.fhir_fetch`` is off. Any
    fetcher reads only a ``fhirServer`` the :class:`FhirServerGuard` approves for the caller.
    """
    if fetcher is None and settings.fhir_fetch:
        fetcher = FhirFetcher.from_settings(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        warn_dev_mode(settings)
        registry = PackRegistry.load(settings)
        engine = make_engine(settings.resolved_database_url(), pool_size=settings.db_pool_size)
        prepare_database(settings, engine)  # migrations: see service/governance/database.py
        jwks_client = new_jwks_http_client()
        try:
            app.state.authenticator = build_authenticator(settings, engine, jwks_client, clock=token_clock)
        except Exception:
            await jwks_client.aclose()
            engine.dispose()
            raise
        writer = AuditWriter(engine, settings.data_dir / "spool")
        writer.start()
        if isinstance(fetcher, FhirFetcher):
            await fetcher.open()  # one HTTP client per worker, in its event loop
        app.state.governance = Governance.start(settings, engine, clock=clock)
        store = ExplanationStore(engine, capacity=settings.explanation_cache_size)
        app.state.explanations = Explanations.from_settings(settings, store, clock)
        probe = StoreProbe(engine, writer.spool_dir, writer_alive=lambda: writer.alive)
        terminology = await extend_terminology(
            bundled_terminology(),
            server=TerminologyServer(settings.terminology_server) if settings.terminology_server else None,
            expansions=settings.terminology_expansions,
            cache_dir=settings.data_dir,
            max_age=timedelta(days=settings.terminology_cache_days),
            now=clock(),
        )
        app.state.runtime = Runtime(
            settings=settings,
            service=registry.service(clock=clock, terminology=terminology),
            audit=writer,
            fetcher=fetcher,
            guard=FhirServerGuard.from_settings(settings, trusted_issuers(settings), resolver=resolver),
            store_probe=probe,
        )
        metrics.set_rule_packs(
            (registry.active.id, registry.active.version, registry.active.content_hash),
            [(pack.id, pack.version, pack.content_hash) for pack in registry.shadows],
        )
        if getattr(app.state, "tune_gc", False):
            tune_gc()
        log.info("calf-cds ready: active pack %s", registry.active.key)
        try:
            yield
        finally:
            started = time.monotonic()
            writer.stop(AUDIT_FLUSH_SECONDS)  # the calls' records first
            app.state.governance.stop(max(1.0, AUDIT_FLUSH_SECONDS - (time.monotonic() - started)))
            await jwks_client.aclose()
            if isinstance(fetcher, FhirFetcher):
                await fetcher.aclose()
            probe.close()
            engine.dispose()
            metrics.process_stopping()

    app = FastAPI(
        title="calf-cds",
        version="0.1.0",
        description="CDS Hooks service for calf pain (CDS Hooks 2.0.1, FHIR R4).",
        lifespan=lifespan,
    )
    app.add_middleware(
        CORSMiddleware,
        allow_origins=list(settings.cors_origins),
        allow_methods=["GET", "POST", "OPTIONS"],
        allow_headers=["Authorization", "Content-Type", "X-Request-ID"],
        expose_headers=["X-Request-ID"],
        max_age=600,
    )
    install_auth_errors(app)
    install_openapi(app)
    app.add_middleware(RequestObserver, services=frozenset({SERVICE_ID}))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, error: StarletteHTTPException) -> Response:
        code: IssueType = "not-found" if error.status_code == 404 else "not-supported"
        response = outcome_response(error.status_code, str(error.detail), code=code)
        response.headers.update(error.headers or {})  # e.g. a 405's `Allow` (RFC 9110)
        return response

    @app.exception_handler(RequestValidationError)
    async def validation_error(_: Request, error: RequestValidationError) -> Response:
        return outcome_response(400, "the request is not valid", code="invalid")

    @app.exception_handler(Exception)
    async def unexpected(_: Request, error: Exception) -> Response:
        log.error("unexpected error: %s", type(error).__name__)
        return outcome_response(500, "internal error; the call was recorded", code="exception")

    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> Response:
        """Liveness: the process answers."""
        return json_response({"status": "ok"})

    @app.get("/readyz", include_in_schema=False)
    async def readyz(request: Request) -> Response:
        """Readiness: rules loaded, and the audit store reachable or spooling to disk."""
        rt: Runtime | None = getattr(request.app.state, "runtime", None)
        if rt is None or rt.store_probe is None:
            return json_response({"status": "starting"}, 503)
        store = await rt.store_probe.status()
        body = {
            "active_pack": rt.service.active.key,
            "audit": store.audit,
            "database": store.database,
            "spooled": rt.audit.spool_depth(),  # this worker's; the metric sums every worker's
            "dead_letters": store.dead_letters,  # refused records kept with their reason (None: unknown)
        }
        if not store.ready:
            return json_response({"status": "not ready", **body}, 503)
        return json_response({"status": "ready", **body})

    @app.get("/metrics", include_in_schema=False)
    async def get_metrics(request: Request) -> Response:
        """Prometheus text exposition, summed over worker processes."""
        rt: Runtime | None = getattr(request.app.state, "runtime", None)
        if rt is not None:
            rt.audit.report_metrics()
        return Response(metrics.render(), media_type=metrics.CONTENT_TYPE)

    @app.get("/cds-services")
    async def get_discovery(_client: AuthenticatedClient) -> Response:
        """CDS Hooks discovery: the services offered here (needs a client JWT)."""
        return json_response(discovery().to_json())

    # A card's explanation page: opened by the clinician's browser, the signed link is the credential.
    app.include_router(explanation_router)
    signed = [Depends(authenticated_client)]  # the same client JWT as the hook itself
    app.include_router(feedback_router, dependencies=signed)  # CDS Hooks feedback
    app.include_router(report_router, dependencies=signed)  # GET /governance/report
    app.include_router(assessment_router(settings, clock))  # the assessment: /fhir/..., $extract, /app/

    @app.post("/cds-services/{service_id}")
    async def call_service(
        service_id: str, request: Request, rt: RuntimeDep, client: AuthenticatedClient
    ) -> Response:
        """Call a CDS service (needs a client JWT whose `aud` is this URL)."""
        record = new_record(None, service_id=_storable_service_id(service_id), now=clock())
        record.client = client_record(client)
        try:
            response = await _handle(service_id, request, rt, record)
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

    return app


def _storable_service_id(service_id: str) -> str:
    """The path's service id as the audit column can hold it: ours as is; another one (404) escaped and
    cut to the column's 64 characters (``_handle`` keeps it in full in the record's ``error``)."""
    if service_id == SERVICE_ID:
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


async def _handle(service_id: str, request: Request, rt: Runtime, record: CallRecord) -> Response:
    if service_id != SERVICE_ID:
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
        check_prefetch_subjects(hook_request)
        fetcher = None
        if rt.fetcher is not None:  # the one place a fetcher meets the caller's identity
            fetcher = rt.guard.bind(rt.fetcher, issuer=record.client.get("iss"), notes=record.notes)
        explanations: Explanations = request.app.state.explanations
        now = rt.service.clock()
        link, expires_at = explanations.links(request, now)
        result = await rt.service.call(
            hook_request,
            record,
            fetcher=fetcher,
            explanation_link=link,
            app_base_url=explanations.base_url(request),
        )
    except CdsHooksError as error:
        record.error = f"{type(error).__name__}: {error}"
        status, outcome = error_outcome(error)
        return json_response(outcome, status)
    await explanations.keep(
        result, result.facts, rt.service.vocabulary, result.assessment, now=now, expires_at=expires_at
    )
    return json_response(check_response(result.response.to_json(), record))
