"""The ASGI app factory, the composition root: it builds every room and wires them into one FastAPI app.

``create_app(settings)`` builds everything; nothing happens at import time.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta

from fastapi import Depends, FastAPI
from fastapi.middleware.cors import CORSMiddleware

from fhir_mappings.terminology import bundled_terminology
from service.assessment.routes import assessment_router
from service.auth.jwks import new_jwks_http_client
from service.auth.trust import build_authenticator, trusted_issuers, warn_dev_mode
from service.config import Settings
from service.governance.database import prepare as prepare_database
from service.governance.routes import feedback_router, report_router
from service.governance.runtime import Governance
from service.hooks.discovery import standard_hooks
from service.hooks.explanation import Explanations
from service.hooks.fhir_fetcher import FhirFetcher
from service.hooks.fhir_server_guard import FhirServerGuard
from service.hooks.packs import PackRegistry
from service.hooks.pipeline import Fetcher
from service.hooks.registry import HookRegistry
from service.http.deps import Runtime, authenticated_client
from service.http.errors import install_error_handlers
from service.http.middleware import RequestObserver
from service.http.openapi import install_openapi
from service.http.routes.explanations import router as explanation_router
from service.http.routes.hooks import hooks_router
from service.http.routes.ops import router as ops_router
from service.ops import telemetry
from service.ops.workers import tune_gc
from service.outbound.pinned_transport import Resolver, system_resolver
from service.outbound.terminology_server import TerminologyServer, extend_terminology
from service.store.probe import StoreProbe
from service.store.schema import make_engine, open_replay_store
from service.store.writers import AuditWriter, ExplanationStore

__all__ = ["AUDIT_FLUSH_SECONDS", "app_from_env", "create_app", "wall_clock"]

log = logging.getLogger("calf_cds.service")
# At shutdown, after uvicorn has drained in-flight calls (``service.cli.DRAIN_SECONDS``): how long
# the audit writer may take to write what is queued before it spools the rest to disk. Together
# they fit Kubernetes' 30 s grace period, less its 5 s preStop pause.
AUDIT_FLUSH_SECONDS = 8.0


def app_from_env() -> FastAPI:
    """The app with settings from ``CALF_CDS_*`` variables: what each ``calf-cds serve`` worker runs.

    It owns its process, so it also tunes the garbage collector once started (``service.ops.workers``).
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
    hooks: HookRegistry | None = None,
) -> FastAPI:
    """Build the app. ``clock``, ``token_clock``, ``fetcher``, ``resolver`` (DNS) and ``hooks`` (the
    CDS services offered: by default :func:`~service.hooks.discovery.standard_hooks`) are
    injectable for tests.

    ``clock`` is "now" for everything clinical and for the audit trail (look-back windows,
    received times, retention, the report); ``token_clock`` (seconds since the epoch) is what
    client JWTs' ``exp``, ``nbf`` and ``iat`` and the JWK Set cache are checked against. Tests
    fix the first at their fixtures' date and keep the second real, since their tokens are
    signed now.

    Without a ``fetcher``, missing prefetch is fetched from the request's ``fhirServer`` with a
    :class:`FhirFetcher` on the settings' limits, unless ``settings.fhir_fetch`` is off. Any
    fetcher reads only a ``fhirServer`` the :class:`FhirServerGuard` approves for the caller.
    """
    hooks = hooks if hooks is not None else standard_hooks()
    if fetcher is None and settings.fhir_fetch:
        fetcher = FhirFetcher.from_settings(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        warn_dev_mode(settings)
        registry = PackRegistry.load(settings)
        engine = make_engine(settings.resolved_database_url(), pool_size=settings.db_pool_size)
        prepare_database(settings, engine)  # migrations: see service/governance/database.py
        replay_engine = open_replay_store(engine)  # a SQLite file's own file beside it (issue 15)
        jwks_client = new_jwks_http_client()
        try:
            app.state.authenticator = build_authenticator(
                settings, replay_engine, jwks_client, clock=token_clock
            )
        except Exception:
            await jwks_client.aclose()
            replay_engine.dispose()
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
        telemetry.set_rule_packs(
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
            store.close(max(1.0, AUDIT_FLUSH_SECONDS - (time.monotonic() - started)))  # explanations
            await jwks_client.aclose()
            if isinstance(fetcher, FhirFetcher):
                await fetcher.aclose()
            probe.close()
            replay_engine.dispose()
            engine.dispose()
            telemetry.process_stopping()

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
    install_openapi(app)
    app.add_middleware(RequestObserver, services=frozenset(definition.id for definition in hooks))

    install_error_handlers(app)
    app.include_router(ops_router)
    app.state.hooks = hooks  # the services that take feedback (service.governance.routes)
    app.include_router(hooks_router(clock, hooks))  # GET /cds-services and POST /cds-services/{id}
    # A card's explanation page: opened by the clinician's browser, the signed link is the credential.
    app.include_router(explanation_router)
    signed = [Depends(authenticated_client)]  # the same client JWT as the hook itself
    app.include_router(feedback_router, dependencies=signed)  # CDS Hooks feedback
    app.include_router(report_router, dependencies=signed)  # GET /governance/report
    app.include_router(assessment_router(settings, clock))  # the assessment: /fhir/..., $extract, /app/
    return app
